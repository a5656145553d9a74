"""Are two models (or two post-processing settings) apart on the same validation images?

Reads two ``microseg evaluate`` CSVs (``bundle_model.py --evaluate-only --keep DIR``
writes ``DIR/evaluate.csv``), pairs their rows by image, and prints the mean
per-image difference of one metric with its bootstrap interval
(:func:`napari_microseg.core.evaluation.uncertainty.paired_difference`). When
the interval holds 0, the images cannot tell the two apart.

Example
-------
::

    python scripts/compare_scores.py /tmp/third/evaluate.csv /tmp/half/evaluate.csv \
        --metric object_f1
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path


def read_scores(path: Path, metric: str) -> dict[str, float]:
    """Image name -> ``metric`` of a ``microseg evaluate`` CSV (its mean row left out)."""
    if not path.is_file():
        raise SystemExit(f"compare_scores: {path} is not a file; give a microseg evaluate CSV.")
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        if metric not in (reader.fieldnames or []):
            raise SystemExit(
                f"compare_scores: {path} has no column {metric!r}; its columns are "
                f"{', '.join(reader.fieldnames or [])}."
            )
        scores = {}
        for row in reader:
            if row["image"] != "mean" and row[metric] not in ("", None):
                scores[row["image"]] = float(row[metric])
    return scores


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compare_scores.py",
        description="Mean per-image difference of one metric between two microseg evaluate "
        "CSVs of the same images, with its bootstrap interval.",
    )
    parser.add_argument("first", type=Path, help="evaluate CSV of the first model")
    parser.add_argument("second", type=Path, help="evaluate CSV of the second model")
    parser.add_argument("--metric", default="object_f1", help="column to compare (object_f1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from napari_microseg.core.evaluation.uncertainty import (
        bootstrap_interval,
        paired_difference,
    )

    first = read_scores(args.first, args.metric)
    second = read_scores(args.second, args.metric)
    shared = sorted(set(first) & set(second))
    alone = sorted(set(first) ^ set(second))
    if alone:
        print(f"Only in one of the two, left out: {', '.join(alone)}")
    values = [(first[n], second[n]) for n in shared]
    if any(not math.isfinite(a) or not math.isfinite(b) for a, b in values):
        raise SystemExit(f"compare_scores: {args.metric} is not finite on every image.")
    try:
        difference = paired_difference([a for a, _ in values], [b for _, b in values])
        one = bootstrap_interval([a for a, _ in values])
        two = bootstrap_interval([b for _, b in values])
    except ValueError as error:
        raise SystemExit(f"compare_scores: {error}") from error
    print(f"{args.metric} on {len(shared)} images ({difference.confidence:.0%} intervals):")
    print(f"  first   {one}")
    print(f"  second  {two}")
    print(
        f"  first - second  {difference.mean:+.3f} [{difference.low:+.3f}, {difference.high:+.3f}]"
    )
    better = sum(a > b for a, b in values)
    worse = sum(a < b for a, b in values)
    equal = len(values) - better - worse
    print(f"  first better on {better} image(s), worse on {worse}, equal on {equal}")
    verdict = (
        "not apart on these images (the interval holds 0)"
        if 0.0 in difference
        else ("first is better" if difference.mean > 0 else "second is better")
    )
    print(f"  verdict: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
