"""Stage 6, evaluation: label images scored against ground truth, measured and exported.

Pixel metrics and Rand/VI (:mod:`.metrics`), object F1, Dice, Hausdorff and mean AP
(:mod:`.objects`, :mod:`.hausdorff`) on one contingency table (:mod:`.contingency`); where
pixel errors lie against the annotated boundary (:mod:`.boundary`);
:func:`evaluate_images` makes one row per image pair, and :mod:`.uncertainty` says how far
a mean over a few images can be trusted; :func:`measure_objects` and
:func:`export_job` give per-object measurements in physical units and write them.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_HOMES = {
    "accuracy": "metrics",
    "precision": "metrics",
    "recall": "metrics",
    "pixel_f1": "metrics",
    "iou": "metrics",
    "dice": "metrics",
    "jaccard": "metrics",
    "confusion_counts": "metrics",
    "adapted_rand_error": "metrics",
    "boundary_distance": "boundary",
    "errors_by_boundary_distance": "boundary",
    "shifted_self_accuracy": "boundary",
    "variation_of_information": "metrics",
    "object_f1": "objects",
    "object_dice": "objects",
    "average_precision": "objects",
    "mean_average_precision": "objects",
    "match_objects": "objects",
    "ObjectMatches": "objects",
    "DSB_IOU_THRESHOLDS": "objects",
    "object_hausdorff": "hausdorff",
    "LabelImageError": "contingency",
    "as_instances": "contingency",
    "overlap": "contingency",
    "evaluate_images": "evaluate",
    "mean_intervals": "evaluate",
    "bootstrap_interval": "uncertainty",
    "paired_difference": "uncertainty",
    "measure_objects": "measure",
    "summarize": "measure",
    "export_job": "export",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
