"""Stitch per-tile instance detections into one label plane.

An instance model (Mask R-CNN) sees one tile at a time, so an object lying on
a tile border is detected twice: cut in one tile, whole or cut differently in
its neighbour. :class:`InstanceStitcher` pastes the tiles' label images into
the plane in raster order and merges a new object into an existing one when
both saw the same pixels: their IoU *measured only where both tiles looked*
(the overlap of their windows) reaches a threshold. Inside that shared area
two views of one object agree almost pixel for pixel, while two different
objects do not, however the tile borders cut them. The merged object is the
union of its pieces, so an object on a border becomes one label, not two.

Examples
--------
>>> stitcher = InstanceStitcher((4, 6))
>>> left = np.array([[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0]])
>>> right = np.array([[0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]])
>>> stitcher.add(left, np.array([0.0, 0.75]), (0, 0))
>>> stitcher.add(right, np.array([0.0, 0.5]), (0, 2))
>>> labels, scores = stitcher.result()
>>> labels
array([[0, 0, 0, 0, 0, 0],
       [0, 1, 1, 1, 1, 0],
       [0, 1, 1, 1, 1, 0],
       [0, 0, 0, 0, 0, 0]], dtype=uint32)
>>> scores.tolist()
[0.0, 0.75]
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class Instances(NamedTuple):
    """The result of an instance model.

    Attributes
    ----------
    labels : ndarray of uint32
        Object ids (0 = background), the image's spatial shape.
    scores : (n + 1,) ndarray of float32
        Detection score of each object: ``scores[label]``; ``scores[0]`` is 0.
    """

    labels: np.ndarray
    scores: np.ndarray


#: Objects of two tiles are one object when their IoU inside the shared area reaches this.
IOU_THRESHOLD = 0.5
#: Mask probability above which a pixel belongs to a detection (without a model rule).
MASK_THRESHOLD = 0.5


def detections_to_tile_labels(
    model: Any, detections: dict[str, np.ndarray], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """One tile's detections as a label image plus a score per label.

    Parameters
    ----------
    model : SegmentationModel
        When it has ``to_labels(detections)`` (Mask R-CNN: score, pixel and
        NMS thresholds from its card), that rule makes the label image;
        otherwise masks above 0.5 are painted by decreasing score.
    detections : dict
        ``masks`` ``(M, h, w)`` probabilities and ``scores`` ``(M,)``.
    shape : tuple of int
        ``(h, w)`` of the tile.

    Returns
    -------
    labels : (h, w) ndarray of int32
        0 for background, 1..n for objects.
    scores : (n + 1,) ndarray of float32
        ``scores[label]``; ``scores[0]`` is 0.
    """
    masks = np.asarray(detections.get("masks", np.zeros((0, *shape))), dtype=np.float32)
    if masks.ndim == 4:  # (M, 1, h, w) as torchvision returns them
        masks = masks[:, 0]
    scores = np.asarray(detections.get("scores", np.ones(len(masks))), dtype=np.float32)
    to_labels = getattr(model, "to_labels", None)
    if callable(to_labels):
        labels = np.asarray(to_labels({**detections, "masks": masks, "scores": scores}))
        labels = labels.astype(np.int32, copy=False)
        n = int(labels.max(initial=0))
        label_scores = np.zeros(n + 1, np.float32)
        for label in range(1, n + 1):
            pixels = labels == label
            if pixels.any() and len(masks):
                # The detection that covers the object most strongly gave it.
                label_scores[label] = scores[int(np.argmax(masks[:, pixels].sum(axis=1)))]
        return labels, label_scores
    labels = np.zeros(shape, np.int32)
    label_scores = [0.0]
    for index in np.argsort(-scores, kind="stable"):
        paint = (masks[index] > MASK_THRESHOLD) & (labels == 0)
        if paint.any():
            label_scores.append(float(scores[index]))
            labels[paint] = len(label_scores) - 1
    return labels, np.asarray(label_scores, np.float32)


class InstanceStitcher:
    """Paste tile label images into a plane, merging objects cut by tile borders.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the (padded) plane.
    iou_threshold : float
        IoU inside the shared area above which two pieces are one object.
    """

    def __init__(self, shape: tuple[int, int], *, iou_threshold: float = IOU_THRESHOLD) -> None:
        self.labels = np.zeros(shape, np.int32)
        self.iou_threshold = float(iou_threshold)
        self._windows: dict[int, list[tuple[int, int, int, int]]] = {}
        self._scores: list[float] = [0.0]

    def add(self, tile_labels: np.ndarray, scores: np.ndarray, origin: tuple[int, int]) -> None:
        """Paste one tile's objects.

        Parameters
        ----------
        tile_labels : (h, w) ndarray of int
            The tile's label image (0 = background).
        scores : (n + 1,) ndarray
            Score of each tile label (``scores[label]``).
        origin : tuple of int
            ``(y0, x0)`` of the tile in the plane.
        """
        y0, x0 = origin
        h, w = tile_labels.shape
        window = (y0, x0, h, w)
        region = self.labels[y0 : y0 + h, x0 : x0 + w]
        ids = [int(i) for i in np.unique(tile_labels) if i > 0]
        for label in sorted(ids, key=lambda i: -float(scores[i]) if i < len(scores) else 0.0):
            mask = tile_labels == label
            score = float(scores[label]) if label < len(scores) else 0.0
            target = self._match(mask, region, window)
            paint = mask & (region == 0)
            if target:
                region[paint] = target
                self._windows[target].append(window)
                self._scores[target] = max(self._scores[target], score)
            elif paint.any():
                self._scores.append(score)
                target = len(self._scores) - 1
                region[paint] = target
                self._windows[target] = [window]

    def _match(self, mask: np.ndarray, region: np.ndarray, window: tuple[int, ...]) -> int:
        """The existing object this piece belongs to, or 0."""
        found, counts = np.unique(region[mask], return_counts=True)
        best, best_iou = 0, self.iou_threshold
        for other, shared_pixels in zip(found.tolist(), counts.tolist()):
            if other == 0:
                continue
            seen_by_both = self._coverage(other, window)
            mine = np.count_nonzero(mask & seen_by_both)
            theirs = np.count_nonzero(region == other)
            iou = shared_pixels / max(mine + theirs - shared_pixels, 1)
            if iou >= best_iou:
                best, best_iou = other, iou
        return best

    def _coverage(self, label: int, window: tuple[int, ...]) -> np.ndarray:
        """Pixels of ``window`` that the tiles of ``label`` also looked at."""
        y0, x0, h, w = window
        seen = np.zeros((h, w), bool)
        for oy, ox, oh, ow in self._windows[label]:
            top, left = max(oy, y0), max(ox, x0)
            bottom, right = min(oy + oh, y0 + h), min(ox + ow, x0 + w)
            if bottom > top and right > left:
                seen[top - y0 : bottom - y0, left - x0 : right - x0] = True
        return seen

    def result(
        self, height: int | None = None, width: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The stitched plane, cropped to ``(height, width)``, with ids renumbered 1..n.

        Returns
        -------
        labels : (height, width) ndarray of uint32
        scores : (n + 1,) ndarray of float32
            ``scores[label]``; ``scores[0]`` is 0.
        """
        labels = self.labels[:height, :width]
        present = np.unique(labels)
        present = present[present > 0]
        lookup = np.zeros(len(self._scores), np.uint32)
        lookup[present] = np.arange(1, len(present) + 1, dtype=np.uint32)
        scores = np.zeros(len(present) + 1, np.float32)
        scores[1:] = np.asarray(self._scores, np.float32)[present]
        return lookup[labels], scores
