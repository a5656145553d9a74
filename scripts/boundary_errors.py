"""Where a model's pixel errors lie: at the annotated boundary, or away from it.

Reads a ``bundle_model.py --evaluate-only --keep DIR`` folder (``DIR/pred`` and
``DIR/truth``, paired by name) and prints, per image and over all of them, the
share of pixels wrong within 1, 2 and 4 pixels of the true boundary and beyond
(:func:`napari_microseg.core.evaluation.errors_by_boundary_distance`), beside
what the truth itself scores against itself moved by one pixel
(:func:`~napari_microseg.core.evaluation.shifted_self_accuracy`): the accuracy
of a prediction that draws every boundary one pixel off and is otherwise perfect.

Example
-------
::

    python scripts/bundle_model.py membrane-em --data ../shared/data/isbi2012 \
        --model src/napari_microseg/models/membrane-em.safetensors --evaluate-only --keep /tmp/mem
    python scripts/boundary_errors.py /tmp/mem
"""

from __future__ import annotations

import argparse
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boundary_errors.py",
        description="Split a model's wrong pixels by their distance to the true boundary.",
    )
    parser.add_argument(
        "folder", type=Path, help="a bundle_model.py --keep folder, holding pred/ and truth/"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np

    from napari_microseg.core.evaluation import (
        errors_by_boundary_distance,
        shifted_self_accuracy,
    )
    from napari_microseg.core.evaluation.evaluate import pair_files
    from napari_microseg.core.io.images import imread

    pred_dir, truth_dir = args.folder / "pred", args.folder / "truth"
    if not pred_dir.is_dir() or not truth_dir.is_dir():
        raise SystemExit(
            f"boundary_errors: {args.folder} holds no pred/ and truth/ folders; give the "
            "folder that bundle_model.py --evaluate-only --keep wrote."
        )
    pairs, _, _ = pair_files(sorted(pred_dir.iterdir()), sorted(truth_dir.iterdir()))
    if not pairs:
        raise SystemExit(f"boundary_errors: no prediction in {pred_dir} has a truth of its name.")
    rows = []
    for name, pred_path, truth_path in pairs:
        truth = np.asarray(imread(truth_path).data)
        pred = np.asarray(imread(pred_path).data)
        try:
            bands = errors_by_boundary_distance(truth, pred)
        except ValueError as error:
            raise SystemExit(f"boundary_errors: {name}: {error}") from error
        rows.append((name, bands, shifted_self_accuracy(truth)))
    names = [band for band in rows[0][1] if band != "error"]
    print("share of all pixels wrong, by distance (pixels) to the true boundary")
    header = " ".join(f"{n:>7}" for n in names)
    print(f"{'image':<28} {'accuracy':>8} {header}  truth moved 1 px")
    for name, bands, moved in rows:
        cells = " ".join(f"{bands[n]:7.4f}" for n in names)
        print(f"{name:<28} {1 - bands['error']:8.4f} {cells}  {moved:.4f}")
    mean = {n: float(np.mean([bands[n] for _, bands, _ in rows])) for n in [*names, "error"]}
    moved = float(np.mean([m for _, _, m in rows]))
    cells = " ".join(f"{mean[n]:7.4f}" for n in names)
    label = f"mean of {len(rows)} image(s)"
    print(f"{label:<28} {1 - mean['error']:8.4f} {cells}  {moved:.4f}")
    near = mean[names[0]] / mean["error"] if mean["error"] else 0.0
    print(
        f"\n{near:.0%} of the wrong pixels lie {names[0]} pixel of the true boundary; the truth "
        f"moved by one pixel scores {moved:.4f}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
