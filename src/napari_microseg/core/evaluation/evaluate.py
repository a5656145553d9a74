"""Score predictions against ground truth: one row of metrics per image pair, and a CSV.

The columns are fixed (:data:`COLUMNS`), so CSVs from different runs line
up. Masks are accepted on both sides: a boolean image, or an integer image
whose non-zero pixels share one value (0/1, 0/255), is read as foreground
``> 0`` with its connected components as objects; any other integer image is
a label image. Float images are refused (threshold them first).

Pairs of files are matched by name: the same file stem, or the same stem
once a usual suffix such as ``_pred``, ``_labels``, ``_mask`` or ``_gt`` is
taken off.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path
from .contingency import as_instances, check_pair, overlap
from .hausdorff import object_hausdorff_from
from .metrics import adapted_rand_error, variation_of_information
from .objects import (
    match_objects_from,
    mean_average_precision_from,
    object_dice_from,
    object_f1_from,
)
from .uncertainty import MIN_IMAGES, Interval, bootstrap_interval

#: CSV columns, in order; the first holds the image name (``"mean"`` in the last row).
COLUMNS: tuple[str, ...] = (
    "image",
    "accuracy",
    "precision",
    "recall",
    "pixel_f1",
    "iou",
    "object_f1",
    "object_dice",
    "object_hausdorff",
    "ap_50_95",
    "adapted_rand_error",
    "vi_split",
    "vi_merge",
    "n_true",
    "n_pred",
    "n_matched",
)

#: Groups of columns selectable by one name (``--metrics pixel object``).
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "pixel": ("accuracy", "precision", "recall", "pixel_f1", "iou"),
    "object": ("object_f1", "object_dice", "object_hausdorff"),
    "ap": ("ap_50_95",),
    "rand": ("adapted_rand_error", "vi_split", "vi_merge"),
    "counts": ("n_true", "n_pred", "n_matched"),
}

#: Columns that count objects (printed as integers).
COUNT_COLUMNS = METRIC_GROUPS["counts"]

_NAME_SUFFIXES = (
    "pred",
    "prediction",
    "predicted",
    "labels",
    "label",
    "mask",
    "masks",
    "seg",
    "segmentation",
    "gt",
    "truth",
    "ground_truth",
    "groundtruth",
    "annotation",
    "anno",
    "instances",
)
_SUFFIX_PATTERN = re.compile(r"[_\-. ](" + "|".join(_NAME_SUFFIXES) + r")$", re.IGNORECASE)


def is_scores_header(header: str) -> bool:
    """True for the header row of a scores CSV :func:`write_csv` wrote (the fixed :data:`COLUMNS`).

    Examples
    --------
    >>> is_scores_header(",".join(COLUMNS))
    True
    >>> is_scores_header("name,score")
    False
    """
    return header == ",".join(COLUMNS)


def select_metrics(names: Iterable[str] | None) -> tuple[str, ...]:
    """Metric columns for group or column names; None or ``"all"`` selects every column.

    Object counts are always included: they are cheap and say what the scores mean.

    Examples
    --------
    >>> select_metrics(["pixel_f1", "ap"])
    ('pixel_f1', 'ap_50_95', 'n_true', 'n_pred', 'n_matched')
    """
    if names is None:
        return COLUMNS[1:]
    chosen: set[str] = set(COUNT_COLUMNS)
    for raw in names:
        for name in (part.strip().lower() for part in raw.split(",")):
            if not name:
                continue
            if name == "all":
                return COLUMNS[1:]
            if name in METRIC_GROUPS:
                chosen.update(METRIC_GROUPS[name])
            elif name in COLUMNS[1:]:
                chosen.add(name)
            else:
                known = ", ".join([*METRIC_GROUPS, *COLUMNS[1:]])
                raise ValueError(f"Unknown metric {name!r}; choose from all, {known}.")
    return tuple(c for c in COLUMNS[1:] if c in chosen)


def evaluate_images(
    truth: Any,
    pred: Any,
    *,
    metrics: Iterable[str] | None = None,
    spacing: Sequence[float] | None = None,
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """Every selected metric for one (truth, pred) pair of label images.

    Parameters
    ----------
    truth, pred : (M, N[, P]) ndarray of int or bool
        Ground truth and prediction, same shape; masks (boolean, 0/1, 0/255) are
        split into connected components for the object metrics, Rand and VI.
    metrics : iterable of str, optional
        Group names (``pixel``, ``object``, ``ap``, ``rand``, ``counts``) or
        column names; all by default.
    spacing : sequence of float, optional
        Voxel size for the object Hausdorff distance (pixels without it).
    iou_threshold : float
        IoU above which objects count as matched for ``n_matched``.

    Returns
    -------
    dict
        Column name -> value for the selected columns (see :data:`COLUMNS`).

    Examples
    --------
    >>> row = evaluate_images(np.array([[1, 1, 0, 2]]), np.array([[1, 1, 0, 0]]))
    >>> row["pixel_f1"], row["n_true"], row["n_matched"]
    (0.8, 2, 1)
    """
    columns = select_metrics(metrics)
    truth, pred = check_pair(truth, pred)
    # Masks become their connected components once, for the object metrics and Rand/VI
    # alike (a 0/255 mask is many objects, not one).
    truth = as_instances(truth, name="The ground truth")
    pred = as_instances(pred, name="The prediction")
    ov = overlap(truth, pred)
    row: dict[str, float] = {}
    both_empty = ov.tp + ov.fp + ov.fn == 0

    def ratio(num: float, den: float) -> float:
        return (1.0 if both_empty else 0.0) if den == 0 else num / den

    tp, fp, fn, tn = ov.tp, ov.fp, ov.fn, ov.tn
    pixel = {
        "accuracy": (tp + tn) / (tp + tn + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "pixel_f1": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
    }
    row.update({k: v for k, v in pixel.items() if k in columns})
    if "object_f1" in columns:
        row["object_f1"] = object_f1_from(ov)
    if "object_dice" in columns:
        row["object_dice"] = object_dice_from(ov)
    if "object_hausdorff" in columns:
        row["object_hausdorff"] = object_hausdorff_from(ov, spacing=spacing)
    if "ap_50_95" in columns:
        row["ap_50_95"] = mean_average_precision_from(ov)
    if "adapted_rand_error" in columns:
        row["adapted_rand_error"] = adapted_rand_error(truth, pred)
    if "vi_split" in columns or "vi_merge" in columns:
        split, merge = variation_of_information(truth, pred)
        row.update({k: v for k, v in (("vi_split", split), ("vi_merge", merge)) if k in columns})
    matches = match_objects_from(ov, iou_threshold=iou_threshold)
    row.update(n_true=matches.n_true, n_pred=matches.n_pred, n_matched=matches.matched)
    return row


def mean_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``mean`` row: each column's mean over the rows that have it (inf stays inf)."""
    mean: dict[str, Any] = {"image": "mean"}
    for column in COLUMNS[1:]:
        values = [float(r[column]) for r in rows if _present(r.get(column))]
        if values:
            mean[column] = float(np.mean(values))
    return mean


def mean_intervals(
    rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None
) -> dict[str, Interval]:
    """Each score column's mean with its bootstrap interval over the rows (images).

    Parameters
    ----------
    rows : sequence of dict
        Per-image rows of :func:`evaluate_images` (no ``mean`` row).
    columns : sequence of str, optional
        Columns to give; default every column of :data:`COLUMNS`.

    Returns
    -------
    dict of str to Interval
        Only score columns (no counts) with at least :data:`~.uncertainty.MIN_IMAGES`
        values, all finite (an infinite Hausdorff distance gives none).
    """
    intervals: dict[str, Interval] = {}
    for column in columns or COLUMNS[1:]:
        if column == "image" or column in COUNT_COLUMNS:
            continue
        values = [float(r[column]) for r in rows if _present(r.get(column))]
        if len(values) >= MIN_IMAGES and all(math.isfinite(v) for v in values):
            intervals[column] = bootstrap_interval(values)
    return intervals


def _present(value: Any) -> bool:
    return (
        value is not None and value != "" and not (isinstance(value, float) and math.isnan(value))
    )


def format_value(column: str, value: Any, *, digits: int = 6) -> str:
    """A CSV / table cell: empty for missing, ``inf`` for infinity, integers for counts."""
    if not _present(value):
        return ""
    if column == "image":
        return str(value)
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if column in COUNT_COLUMNS and value == int(value):
        return str(int(value))
    return f"{value:.{digits}g}"


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write rows (plus nothing else) with the fixed :data:`COLUMNS`, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([format_value(c, row.get(c)) for c in COLUMNS])
    dest = Path(path)
    with atomic_path(dest) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    return dest


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text table of the rows for the terminal (3 decimals, counts as integers)."""
    columns = list(columns or COLUMNS)
    cells = [[format_value(c, r.get(c), digits=3) for c in columns] for r in rows]
    cells = [[cell[:28] for cell in line] for line in cells]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(columns, widths)))
    ]
    for line in cells:
        lines.append(
            "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(line, widths)))
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- file pairs


def name_key(path: Path) -> str:
    """The name that pairs files: the stem without ``.ome``, lower case."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)].lower()
    return path.stem.lower() if path.suffix else name.lower()


def loose_key(path: Path) -> str:
    """:func:`name_key` without trailing suffixes like ``_pred``, ``_labels``, ``_gt``."""
    key = name_key(path)
    while True:
        shorter = _SUFFIX_PATTERN.sub("", key)
        if shorter == key or not shorter:
            return key
        key = shorter


def pair_files(
    preds: Sequence[Path], truths: Sequence[Path]
) -> tuple[list[tuple[str, Path, Path]], list[Path], list[Path]]:
    """Pair prediction and truth files by name.

    Exact stems pair first; the rest pair by :func:`loose_key` when that is
    unambiguous.

    Returns
    -------
    pairs : list of (name, pred, truth)
        Sorted by name.
    unmatched_preds, unmatched_truths : list of Path

    Examples
    --------
    >>> pairs, _, _ = pair_files([Path("a_pred.tif")], [Path("a.tif")])
    >>> pairs[0][0]
    'a'
    """
    pairs: list[tuple[str, Path, Path]] = []
    truth_by_key = {name_key(t): t for t in truths}
    rest_preds = []
    for p in preds:
        t = truth_by_key.pop(name_key(p), None)
        if t is None:
            rest_preds.append(p)
        else:
            pairs.append((p.name[: len(name_key(p))], p, t))
    loose_truths: dict[str, list[Path]] = {}
    for t in truth_by_key.values():
        loose_truths.setdefault(loose_key(t), []).append(t)
    loose_preds: dict[str, list[Path]] = {}
    for p in rest_preds:
        loose_preds.setdefault(loose_key(p), []).append(p)
    unmatched_preds: list[Path] = []
    used: set[Path] = set()
    for key, group in loose_preds.items():
        candidates = loose_truths.get(key, [])
        if len(group) == 1 and len(candidates) == 1:
            pairs.append((group[0].name[: len(key)], group[0], candidates[0]))
            used.add(candidates[0])
        else:
            unmatched_preds.extend(group)
    unmatched_truths = [t for t in truth_by_key.values() if t not in used]
    return sorted(pairs, key=lambda item: item[0].lower()), unmatched_preds, unmatched_truths
