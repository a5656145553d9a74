"""Turn instance detections (Mask R-CNN) into a label image; NumPy only.

The rule follows the source report's Mask R-CNN post-processing: drop boxes
scoring under 0.4 and overlapping boxes by non-maximum suppression, zero the
mask pixels under 0.3, sum the remaining masks and keep pixels whose sum
reaches 0.9. We add what a label image needs: where masks overlap, a pixel
goes to the instance with the highest mask probability there (ties to the
higher-scoring instance), and labels are numbered 1..n by decreasing score.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: Defaults from the source report.
SCORE_THRESHOLD = 0.4
PIXEL_THRESHOLD = 0.3
SUMMED_THRESHOLD = 0.9
NMS_IOU = 0.5


def _numpy(value: Any) -> np.ndarray:
    # Accept torch tensors without importing torch.
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one ``(4,)`` box with ``(M, 4)`` boxes (x0, y0, x1, y1)."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Parameters
    ----------
    boxes : (M, 4) ndarray
        ``x0, y0, x1, y1`` in pixels.
    scores : (M,) ndarray
        Confidence of each box.
    iou_threshold : float
        A box overlapping a better one by more than this IoU is dropped.

    Returns
    -------
    keep : (M',) ndarray of int
        Indices of the kept boxes, by decreasing score.
    """
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def detections_to_labels(
    detections: Mapping[str, Any],
    *,
    score_threshold: float = SCORE_THRESHOLD,
    pixel_threshold: float = PIXEL_THRESHOLD,
    summed_threshold: float = SUMMED_THRESHOLD,
    nms_iou: float = NMS_IOU,
    min_area: int = 0,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resolve one image's detections into a label image.

    Parameters
    ----------
    detections : mapping
        ``masks`` ``(M, H, W)`` or ``(M, 1, H, W)`` probabilities in [0, 1],
        ``scores`` ``(M,)`` and ``boxes`` ``(M, 4)`` (x0, y0, x1, y1); NumPy
        arrays or torch tensors, as returned by ``predict_instances``. Without
        ``boxes``, each mask's bounding box at ``pixel_threshold`` is used.
    score_threshold : float
        Detections scoring below it are dropped (0.4 in the source report).
    pixel_threshold : float
        Mask probabilities below it are set to 0 (0.3).
    summed_threshold : float
        A pixel is foreground where the kept masks sum to at least this (0.9).
    nms_iou : float
        Boxes overlapping a higher-scoring box by more than this IoU are dropped.
    min_area : int
        Instances with fewer pixels after overlap resolution are dropped.
    shape : tuple of int, optional
        ``(H, W)`` of the output when there are no masks to take it from.

    Returns
    -------
    labels : (H, W) ndarray of int32
        0 for background, 1..n for instances by decreasing score.

    Examples
    --------
    >>> masks = np.zeros((2, 4, 4), np.float32)
    >>> masks[0, :2, :2] = 0.95; masks[1, 2:, 2:] = 0.95
    >>> detections_to_labels({"masks": masks, "scores": np.array([0.9, 0.2]),
    ...                       "boxes": np.array([[0, 0, 2, 2], [2, 2, 4, 4]])})
    array([[1, 1, 0, 0],
           [1, 1, 0, 0],
           [0, 0, 0, 0],
           [0, 0, 0, 0]], dtype=int32)
    """
    masks = _numpy(detections["masks"]).astype(np.float32, copy=False)
    if masks.ndim == 4:
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"masks must be shaped (M, H, W) or (M, 1, H, W), got {masks.shape}.")
    height, width = masks.shape[1:] if masks.shape[0] or shape is None else shape
    scores = _numpy(detections["scores"]).astype(np.float64).reshape(-1)
    if detections.get("boxes") is None:
        boxes = _boxes_from_masks(masks, pixel_threshold)
    else:
        boxes = _numpy(detections["boxes"]).astype(np.float64).reshape(-1, 4)
    if not len(scores) == len(boxes) == len(masks):
        raise ValueError(
            f"Got {len(masks)} masks, {len(scores)} scores and {len(boxes)} boxes; "
            "they must describe the same detections."
        )
    candidates = np.flatnonzero(scores >= score_threshold)
    kept = candidates[nms(boxes[candidates], scores[candidates], nms_iou)]

    # One pass over the kept masks, in score order, with O(H * W) memory: the running
    # sum decides foreground, the running maximum decides which instance owns a pixel.
    summed = np.zeros((height, width), np.float32)
    best = np.zeros((height, width), np.float32)
    owner = np.zeros((height, width), np.int32)
    for label, index in enumerate(kept, start=1):
        mask = np.where(masks[index] >= pixel_threshold, masks[index], 0.0)
        summed += mask
        wins = mask > best  # strict: ties stay with the earlier, higher-scoring instance
        owner[wins] = label
        best[wins] = mask[wins]
    owner[summed < summed_threshold] = 0
    return _relabel(owner, min_area)


def _boxes_from_masks(masks: np.ndarray, threshold: float) -> np.ndarray:
    """``(M, 4)`` bounding boxes (x0, y0, x1, y1) of the mask pixels at or above ``threshold``."""
    boxes = np.zeros((len(masks), 4), np.float64)
    for index, mask in enumerate(masks):
        rows = np.flatnonzero((mask >= threshold).any(axis=1))
        cols = np.flatnonzero((mask >= threshold).any(axis=0))
        if rows.size:
            boxes[index] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def _relabel(owner: np.ndarray, min_area: int) -> np.ndarray:
    """Drop labels smaller than ``min_area`` (or empty) and renumber 1..n in order."""
    counts = np.bincount(owner.ravel())
    keep = counts >= max(min_area, 1)
    keep[0] = False
    lookup = np.zeros(counts.size, np.int32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lookup[owner]
