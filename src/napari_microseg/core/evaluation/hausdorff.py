"""The GlaS object-level Hausdorff distance, computed on bounding-box crops."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .contingency import Overlap, instance_overlap
from .objects import best_partner, empty_case


def object_hausdorff(truth: Any, pred: Any, *, spacing: Sequence[float] | None = None) -> float:
    """Object-level Hausdorff distance of the GlaS challenge, weighted by object area.

    ``H = ½ [Σ_i γ_i H(G_i, S*(G_i)) + Σ_j σ_j H(G*(S_j), S_j)]`` with the
    weights of :func:`object_dice`, ``S*(G)`` the object overlapping ``G``
    most, or, when none overlaps, the object at the smallest Hausdorff
    distance (as in the challenge's evaluation code). ``H(A, B)`` is the
    Hausdorff distance between the pixel sets: the largest distance from a
    pixel of one object to the nearest pixel of the other.

    Parameters
    ----------
    truth, pred : (M, N[, P]) ndarray of int or bool
        Label images.
    spacing : sequence of float, optional
        Voxel size per axis; distances are then in its units (µm) instead of pixels.

    Returns
    -------
    float
        0.0 when both images are empty, ``inf`` when only one is.

    References
    ----------
    .. [1] K. Sirinukunwattana et al., "Gland segmentation in colon histology
           images: The GlaS challenge contest", Medical Image Analysis 35,
           489-502 (2017). :DOI:`10.1016/j.media.2016.08.008`

    Examples
    --------
    >>> object_hausdorff(np.array([[1, 1, 1, 0]]), np.array([[0, 2, 2, 2]]))
    1.0
    """
    return object_hausdorff_from(instance_overlap(truth, pred), spacing=spacing)


def object_hausdorff_from(ov: Overlap, *, spacing: Sequence[float] | None = None) -> float:
    """:func:`object_hausdorff` from a precomputed overlap table."""
    empty = empty_case(ov, 0.0, np.inf)
    if empty is not None:
        return empty
    sampling = None if spacing is None else tuple(float(s) for s in spacing)
    shapes = _Shapes(ov, sampling)
    halves = []
    for side in ("true", "pred"):
        keys = ov.pairs_true if side == "true" else ov.pairs_pred
        partners = ov.pairs_pred if side == "true" else ov.pairs_true
        areas = ov.true_areas if side == "true" else ov.pred_areas
        best, _ = best_partner(keys, partners, ov.intersections, areas.size)
        distances = np.empty(areas.size)
        for k in range(areas.size):
            if best[k] < 0:
                distances[k] = shapes.nearest(side, k)
            elif side == "true":
                distances[k] = shapes.hausdorff(k, int(best[k]))
            else:
                distances[k] = shapes.hausdorff(int(best[k]), k)
        halves.append(float(np.sum(areas * distances) / areas.sum()))
    return 0.5 * (halves[0] + halves[1])


class _Shapes:
    """Hausdorff distances between objects, on bounding-box crops, cached per pair."""

    def __init__(self, ov: Overlap, sampling: tuple[float, ...] | None) -> None:
        self.ov = ov
        self.sampling = sampling
        self.boxes = {
            "true": _boxes(ov.true_compressed, ov.n_true),
            "pred": _boxes(ov.pred_compressed, ov.n_pred),
        }
        self.cache: dict[tuple[int, int], float] = {}

    def hausdorff(self, i: int, j: int) -> float:
        """Hausdorff distance between true object ``i`` and predicted object ``j``."""
        if (i, j) in self.cache:
            return self.cache[i, j]
        lo = np.minimum(self.boxes["true"][i, 0], self.boxes["pred"][j, 0])
        hi = np.maximum(self.boxes["true"][i, 1], self.boxes["pred"][j, 1])
        crop = tuple(slice(a, b) for a, b in zip(lo, hi))
        a = self.ov.true_compressed[crop] == i + 1
        b = self.ov.pred_compressed[crop] == j + 1
        # The distance map of "not A" gives each pixel's distance to A; every pixel
        # of A lies in the crop, so the crop's map is exact.
        to_a = ndi.distance_transform_edt(~a, sampling=self.sampling)
        to_b = ndi.distance_transform_edt(~b, sampling=self.sampling)
        value = float(max(to_a[b].max(), to_b[a].max()))
        self.cache[i, j] = value
        return value

    def nearest(self, side: str, k: int) -> float:
        """Smallest Hausdorff distance from object ``k`` of ``side`` to any object of the other.

        Branch and bound: the gap between bounding boxes is a lower bound of the
        Hausdorff distance, so candidates are tried nearest box first and the
        search stops once no box can beat the best distance found.
        """
        other = "pred" if side == "true" else "true"
        mine, theirs = self.boxes[side][k], self.boxes[other]
        step = np.ones(mine.shape[1]) if self.sampling is None else np.asarray(self.sampling)
        gap = np.maximum(0, np.maximum(theirs[:, 0] - mine[1], mine[0] - theirs[:, 1]) + 1)
        bounds = np.sqrt(((gap * step) ** 2).sum(axis=1))
        best = np.inf
        for m in np.argsort(bounds, kind="stable"):
            if bounds[m] >= best:
                break
            value = self.hausdorff(k, int(m)) if side == "true" else self.hausdorff(int(m), k)
            best = min(best, value)
        return best


def _boxes(compressed: np.ndarray, n: int) -> np.ndarray:
    """Bounding boxes ``(n, 2, ndim)``: start and stop per axis, for ids 1..n."""
    boxes = np.zeros((n, 2, compressed.ndim), dtype=np.intp)
    for index, found in enumerate(ndi.find_objects(compressed, max_label=n)):
        if found is not None:
            boxes[index, 0] = [s.start for s in found]
            boxes[index, 1] = [s.stop for s in found]
    return boxes
