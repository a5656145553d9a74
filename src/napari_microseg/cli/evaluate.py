"""``microseg evaluate``: score predicted label images against ground truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP_METRICS = (
    "metric groups or columns to compute: pixel (accuracy, precision, recall, pixel_f1, iou), "
    "object (object_f1, object_dice, object_hausdorff), ap (ap_50_95), rand "
    "(adapted_rand_error, vi_split, vi_merge), or column names; default all. Object counts "
    "(n_true, n_pred, n_matched) are always computed."
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted labels against ground truth (pixel, object, AP, Rand/VI)",
        description="Compare predicted label images with ground truth, file to file or folder "
        "to folder (files paired by name, ignoring suffixes such as _pred, _labels, _mask, "
        "_gt). Prints a table and writes a CSV with one row per image and a final mean row. "
        "Masks (0/1, 0/255 or boolean) count as foreground > 0 with connected components as "
        "objects; other integer images are label images.",
    )
    parser.add_argument("pred", type=Path, metavar="PRED", help="predicted labels: file or folder")
    parser.add_argument("truth", type=Path, metavar="TRUTH", help="ground truth: file or folder")
    parser.add_argument("--metrics", nargs="+", metavar="NAME", help=HELP_METRICS)
    parser.add_argument("--csv", type=Path, metavar="OUT.csv", help="write the table as CSV")
    parser.add_argument(
        "--iou-threshold",
        type=float,
        default=0.5,
        help="IoU above which a predicted object matches a true one, for n_matched (0.5)",
    )
    parser.add_argument(
        "--physical-units",
        action="store_true",
        help="object Hausdorff distance in µm, from the ground truth's voxel size (else pixels)",
    )
    from . import add_overwrite_argument

    add_overwrite_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.evaluation.evaluate import (
        COLUMNS,
        evaluate_images,
        format_table,
        is_scores_header,
        mean_intervals,
        mean_row,
        select_metrics,
        write_csv,
    )
    from ..core.io.outputs import Output, check_outputs
    from . import CommandError

    columns = select_metrics(args.metrics)
    if not 0.0 <= args.iou_threshold < 1.0:
        raise CommandError(f"--iou-threshold must be in [0, 1); got {args.iou_threshold}.")
    pairs = _find_pairs(args.pred, args.truth)
    if args.csv is not None:
        inputs = [args.pred, args.truth, *(p for _, *paths in pairs for p in paths)]
        check_outputs(
            [Output(args.csv, "--csv", csv_header=is_scores_header)],
            inputs,
            overwrite=args.overwrite,
        )
    rows = []
    for name, pred_path, truth_path in pairs:
        pred, _ = read_labels(pred_path, "PRED")
        truth, spacing = read_labels(truth_path, "TRUTH")
        try:
            row = evaluate_images(
                truth,
                pred,
                metrics=columns,
                spacing=spacing if args.physical_units else None,
                iou_threshold=args.iou_threshold,
            )
        except ValueError as error:
            raise CommandError(f"{pred_path.name} vs {truth_path.name}: {error}") from error
        rows.append({"image": name, **row})
    table_rows = [*rows, mean_row(rows)]
    shown = ["image", *(c for c in COLUMNS[1:] if c in columns)]
    print(format_table(table_rows, shown))
    found = sum(int(r["n_matched"]) for r in rows)
    total = sum(int(r["n_true"]) for r in rows)
    false = sum(int(r["n_pred"]) - int(r["n_matched"]) for r in rows)
    print(
        f"\nObjects found: {found}/{total} (IoU > {args.iou_threshold:g}) in {len(rows)} "
        f"image(s); {false} predicted object(s) matched nothing."
    )
    intervals = mean_intervals(rows, shown[1:])
    if intervals:
        confidence = next(iter(intervals.values())).confidence
        shown_intervals = "; ".join(f"{column} {value}" for column, value in intervals.items())
        print(
            f"Means with their {confidence:.0%} bootstrap interval over the {len(rows)} images "
            f"(how far the mean can move with other images like these): {shown_intervals}."
        )
    if args.csv is not None:
        written = write_csv(args.csv, table_rows)
        print(f"Wrote {written}")
    return 0


def _is_folder(path: Path) -> bool:
    from ..core.io.image_data import ZARR_SUFFIXES, looks_like_zarr

    return path.is_dir() and not (
        path.name.lower().endswith(ZARR_SUFFIXES) or looks_like_zarr(path)
    )


def _list_images(folder: Path) -> list[Path]:
    from ..core.io.images import is_readable_path

    return sorted(
        p
        for p in folder.iterdir()
        if not p.name.startswith(".") and (p.is_file() or not _is_folder(p)) and is_readable_path(p)
    )


def _find_pairs(pred: Path, truth: Path) -> list[tuple[str, Path, Path]]:
    from ..core.evaluation.evaluate import name_key, pair_files
    from . import CommandError

    for path, role in ((pred, "PRED"), (truth, "TRUTH")):
        if not path.exists():
            raise CommandError(f"{role} {path} does not exist.")
    if _is_folder(pred) != _is_folder(truth):
        raise CommandError(
            f"PRED and TRUTH must both be files or both be folders; got {pred} and {truth}."
        )
    if not _is_folder(pred):
        return [(pred.name[: len(name_key(pred))], pred, truth)]
    preds, truths = _list_images(pred), _list_images(truth)
    pairs, lone_preds, lone_truths = pair_files(preds, truths)
    for path in lone_preds:
        print(f"warning: no ground truth for {path.name}; skipped.", file=sys.stderr)
    for path in lone_truths:
        print(f"warning: no prediction for {path.name}; skipped.", file=sys.stderr)
    if not pairs:
        raise CommandError(
            f"No file of {pred} matches a file of {truth} by name. Name them alike "
            "(img01.tif and img01.tif, or img01_pred.tif and img01_gt.tif)."
        )
    return pairs


def read_labels(path: Path, role: str) -> tuple[Any, tuple[float, ...] | None]:
    """A 2D or 3D grey label image (or mask) and its voxel size in µm (None if unknown).

    ``role`` names the argument in messages (``"PRED"``, ``"LABELS"``).
    """
    import numpy as np

    from ..core.io.images import imread
    from . import CommandError

    image = imread(path)
    if "C" in image.axes or "T" in image.axes:
        raise CommandError(
            f"{role} {path.name} has axes {image.axes}; label images are 2D (YX) or 3D (ZYX) "
            "grey images, without colour channels or time."
        )
    return np.asarray(image.data), image.scale
