"""Object-level metrics: GlaS object F1 / Dice / Hausdorff, DSB 2018 mAP, match counts.

All functions take ``(truth, pred)`` label images of one shape, 2D or 3D.
Masks (boolean, or integers with one non-zero value such as 0/255) are read
as foreground ``> 0`` with objects as connected components; see
:func:`.contingency.as_instances`. Overlaps come from the sparse contingency
table of :func:`.contingency.overlap`; only the Hausdorff distance looks at object
shapes (:mod:`.hausdorff`), one pair of bounding-box crops at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .contingency import Overlap, instance_overlap

#: IoU thresholds of the Data Science Bowl 2018: 0.5, 0.55, ..., 0.95.
DSB_IOU_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())


def best_partner(
    keys: np.ndarray, partners: np.ndarray, weights: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``n`` objects, the partner of largest weight (-1 and 0 when none)."""
    best = np.full(n, -1, dtype=np.intp)
    value = np.zeros(n, dtype=weights.dtype)
    if keys.size:
        # Sort by object, then by decreasing weight; the first row of each object wins.
        order = np.lexsort((-weights, keys))
        first = np.ones(order.size, dtype=bool)
        first[1:] = keys[order][1:] != keys[order][:-1]
        winners = order[first]
        best[keys[winners]] = partners[winners]
        value[keys[winners]] = weights[winners]
    return best, value


def empty_case(ov: Overlap, both: float, one: float) -> float | None:
    """The score when either side has no objects: ``both`` if neither has, ``one`` if one has;
    None when both have objects and the score must be computed."""
    if ov.n_true == 0 and ov.n_pred == 0:
        return both
    if ov.n_true == 0 or ov.n_pred == 0:
        return one
    return None


def object_f1(truth: Any, pred: Any) -> float:
    """Object-level F1 score of the GlaS challenge.

    A predicted object is a true positive when it covers more than 50 % of the
    ground-truth object it overlaps most; other predicted objects are false
    positives, and ground-truth objects without a true positive are false
    negatives. ``F1 = 2 TP / (2 TP + FP + FN)``.

    Returns
    -------
    float
        In [0, 1]; 1.0 when both images are empty, 0.0 when only one is.

    References
    ----------
    .. [1] K. Sirinukunwattana et al., "Gland segmentation in colon histology
           images: The GlaS challenge contest", Medical Image Analysis 35,
           489-502 (2017). :DOI:`10.1016/j.media.2016.08.008`

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2, 2, 2]])
    >>> pred = np.array([[1, 1, 0, 0, 0, 3]])   # object 2 only one third covered
    >>> object_f1(truth, pred)
    0.5
    """
    return object_f1_from(instance_overlap(truth, pred))


def object_f1_from(ov: Overlap) -> float:
    """:func:`object_f1` from a precomputed overlap table."""
    empty = empty_case(ov, 1.0, 0.0)
    if empty is not None:
        return empty
    return 2 * _glas_true_positives(ov) / (ov.n_true + ov.n_pred)


def _glas_true_positives(ov: Overlap) -> int:
    best_true, shared = best_partner(ov.pairs_pred, ov.pairs_true, ov.intersections, ov.n_pred)
    hit = best_true >= 0
    return int(np.count_nonzero(shared[hit] > 0.5 * ov.true_areas[best_true[hit]]))


def object_dice(truth: Any, pred: Any) -> float:
    """Object-level Dice of the GlaS challenge, weighted by object area over both sets.

    ``D = ½ [Σ_i γ_i Dice(G_i, S*(G_i)) + Σ_j σ_j Dice(G*(S_j), S_j)]`` with
    ``γ_i = |G_i| / Σ|G|``, ``σ_j = |S_j| / Σ|S|``, and ``S*(G)`` (``G*(S)``)
    the object of the other image overlapping it most; no overlap gives Dice 0.

    Returns
    -------
    float
        In [0, 1]; 1.0 when both images are empty, 0.0 when only one is.

    References
    ----------
    .. [1] K. Sirinukunwattana et al., "Gland segmentation in colon histology
           images: The GlaS challenge contest", Medical Image Analysis 35,
           489-502 (2017). :DOI:`10.1016/j.media.2016.08.008`

    Examples
    --------
    >>> object_dice(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 0]]))
    0.6666666666666666
    """
    return object_dice_from(instance_overlap(truth, pred))


def object_dice_from(ov: Overlap) -> float:
    """:func:`object_dice` from a precomputed overlap table."""
    empty = empty_case(ov, 1.0, 0.0)
    if empty is not None:
        return empty
    dice_pairs = (
        2 * ov.intersections / (ov.true_areas[ov.pairs_true] + ov.pred_areas[ov.pairs_pred])
    )
    halves = []
    for keys, areas, n in (
        (ov.pairs_true, ov.true_areas, ov.n_true),
        (ov.pairs_pred, ov.pred_areas, ov.n_pred),
    ):
        # The partner of largest overlap; its Dice comes with it.
        order_weights = ov.intersections + dice_pairs / 4  # ties in overlap: better Dice
        best, _ = best_partner(keys, np.arange(keys.size), order_weights, n)
        per_object = np.where(best >= 0, dice_pairs[np.maximum(best, 0)], 0.0)
        halves.append(float(np.sum(areas * per_object) / areas.sum()))
    return 0.5 * (halves[0] + halves[1])


# ----------------------------------------------------------------------------- matching


def _matched_pairs(ov: Overlap, threshold: float) -> np.ndarray:
    """Indices into the overlap pairs of a one-to-one matching with IoU > ``threshold``.

    Above 0.5 every object has at most one partner with IoU > threshold, so
    the matching is unique; below, the assignment maximizing the summed IoU
    (Hungarian algorithm) decides.
    """
    ious = ov.ious
    candidates = np.flatnonzero(ious > threshold)
    if threshold >= 0.5 or candidates.size == 0:
        return candidates
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import csr_array

    rows, row_index = np.unique(ov.pairs_true[candidates], return_inverse=True)
    cols, col_index = np.unique(ov.pairs_pred[candidates], return_inverse=True)
    table = csr_array(
        (ious[candidates], (row_index, col_index)), shape=(rows.size, cols.size)
    ).toarray()
    chosen_rows, chosen_cols = linear_sum_assignment(table, maximize=True)
    keep = table[chosen_rows, chosen_cols] > threshold
    lookup = {(r, c): p for p, r, c in zip(candidates, row_index, col_index)}
    return np.array(
        sorted(lookup[r, c] for r, c in zip(chosen_rows[keep], chosen_cols[keep])), dtype=np.intp
    )


def average_precision(truth: Any, pred: Any, threshold: float = 0.5) -> float:
    """Average precision at one IoU threshold, as defined by the Data Science Bowl 2018.

    ``TP / (TP + FP + FN)`` where a true positive is a one-to-one match of a
    predicted and a true object with IoU above ``threshold``.

    Returns
    -------
    float
        1.0 when both images are empty, 0.0 when only one is.

    References
    ----------
    .. [1] Kaggle, "2018 Data Science Bowl: evaluation",
           https://www.kaggle.com/c/data-science-bowl-2018/overview/evaluation
    .. [2] J. C. Caicedo et al., "Nucleus segmentation across imaging experiments:
           the 2018 Data Science Bowl", Nature Methods 16, 1247-1253 (2019).
           :DOI:`10.1038/s41592-019-0612-7`

    Examples
    --------
    >>> average_precision(np.array([[1, 1, 0, 2]]), np.array([[3, 3, 0, 0]]))
    0.5
    """
    return float(mean_average_precision(truth, pred, thresholds=(threshold,)))


def mean_average_precision(
    truth: Any, pred: Any, *, thresholds: Sequence[float] = DSB_IOU_THRESHOLDS
) -> float:
    """The DSB 2018 score: :func:`average_precision` averaged over IoU 0.5:0.05:0.95.

    Parameters
    ----------
    truth, pred : (M, N[, P]) ndarray of int or bool
        Label images.
    thresholds : sequence of float
        IoU thresholds; a match needs IoU strictly above each.

    Returns
    -------
    float
        In [0, 1].

    References
    ----------
    .. [1] J. C. Caicedo et al., "Nucleus segmentation across imaging experiments:
           the 2018 Data Science Bowl", Nature Methods 16, 1247-1253 (2019).
           :DOI:`10.1038/s41592-019-0612-7`

    Examples
    --------
    >>> truth = np.zeros((1, 10), int); truth[0, :8] = 1
    >>> pred = np.zeros((1, 10), int); pred[0, :6] = 1   # IoU 0.75
    >>> mean_average_precision(truth, pred)   # matched at 0.5, 0.55, ..., 0.7
    0.5
    """
    return mean_average_precision_from(instance_overlap(truth, pred), thresholds=thresholds)


def mean_average_precision_from(
    ov: Overlap, *, thresholds: Sequence[float] = DSB_IOU_THRESHOLDS
) -> float:
    """:func:`mean_average_precision` from a precomputed overlap table."""
    empty = empty_case(ov, 1.0, 0.0)
    if empty is not None:
        return empty
    scores = []
    for t in thresholds:
        tp = _matched_pairs(ov, float(t)).size
        scores.append(tp / (ov.n_true + ov.n_pred - tp))
    return float(np.mean(scores))


@dataclass
class ObjectMatches:
    """Which objects were found: the per-object match table and its counts.

    Attributes
    ----------
    iou_threshold : float
        A true and a predicted object match one-to-one when their IoU is above it.
    n_true, n_pred : int
        Objects in the ground truth and in the prediction.
    matched : int
        True objects found (matched pairs).
    missed : int
        True objects with no match (false negatives).
    false : int
        Predicted objects with no match (false positives).
    split : int
        True objects cut into pieces: two or more predicted objects each lie
        mostly (> 50 % of their area) inside them.
    merged : int
        Predicted objects joining several true ones: two or more true objects
        each lie mostly inside them.
    table : dict of ndarray
        One row per object, true objects first: ``kind`` ("true"/"pred"),
        ``id``, ``area``, ``match_id`` (0 if none), ``iou`` (the best IoU
        with any object of the other image) and ``status`` ("matched",
        "missed", "false", "split", "merged"; split and merged replace missed
        and false when they apply).

    Split and merged are counted apart from the match: a true object split in
    a big and a small piece can still be matched to the big one.
    """

    iou_threshold: float
    n_true: int
    n_pred: int
    matched: int
    missed: int
    false: int
    split: int
    merged: int
    table: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def summary(self, noun: str = "objects") -> str:
        """One line such as ``"300/302 objects found (IoU > 0.5): 2 missed, 5 false, ..."``."""
        return (
            f"{self.matched}/{self.n_true} {noun} found (IoU > {self.iou_threshold:g}): "
            f"{self.missed} missed, {self.false} false, {self.split} split, "
            f"{self.merged} merged"
        )


def match_objects(truth: Any, pred: Any, *, iou_threshold: float = 0.5) -> ObjectMatches:
    """Match predicted to true objects one-to-one and count found, missed, false, split, merged.

    Parameters
    ----------
    truth, pred : (M, N[, P]) ndarray of int or bool
        Label images.
    iou_threshold : float
        Objects match when their IoU is above it (one-to-one; below 0.5 the
        matching maximizes the total IoU).

    Returns
    -------
    ObjectMatches

    References
    ----------
    .. [1] J. C. Caicedo et al., "Evaluation of deep learning strategies for
           nucleus segmentation in fluorescence images", Cytometry A 95(9),
           952-965 (2019), for split and merge counts. :DOI:`10.1002/cyto.a.23863`

    Examples
    --------
    >>> truth = np.array([[1, 1, 1, 1, 0, 2, 2, 0, 3, 3]])
    >>> pred = np.array([[4, 4, 5, 5, 0, 6, 6, 6, 6, 6]])
    >>> match_objects(truth, pred).summary()
    '0/3 objects found (IoU > 0.5): 3 missed, 3 false, 1 split, 1 merged'
    """
    return match_objects_from(instance_overlap(truth, pred), iou_threshold=iou_threshold)


def match_objects_from(ov: Overlap, *, iou_threshold: float = 0.5) -> ObjectMatches:
    """:func:`match_objects` from a precomputed overlap table."""
    chosen = _matched_pairs(ov, iou_threshold)
    ious = ov.ious
    match_of_true = np.full(ov.n_true, -1, dtype=np.intp)
    match_of_pred = np.full(ov.n_pred, -1, dtype=np.intp)
    match_of_true[ov.pairs_true[chosen]] = ov.pairs_pred[chosen]
    match_of_pred[ov.pairs_pred[chosen]] = ov.pairs_true[chosen]

    # A piece lies "mostly inside" an object when it has > 50 % of its area there.
    pred_inside = ov.intersections > 0.5 * ov.pred_areas[ov.pairs_pred]
    true_inside = ov.intersections > 0.5 * ov.true_areas[ov.pairs_true]
    is_split = np.bincount(ov.pairs_true[pred_inside], minlength=ov.n_true) >= 2
    is_merged = np.bincount(ov.pairs_pred[true_inside], minlength=ov.n_pred) >= 2

    best_iou_true = np.zeros(ov.n_true)
    best_iou_pred = np.zeros(ov.n_pred)
    np.maximum.at(best_iou_true, ov.pairs_true, ious)
    np.maximum.at(best_iou_pred, ov.pairs_pred, ious)
    status_true = np.where(
        match_of_true >= 0, "matched", np.where(is_split, "split", "missed")
    ).astype(object)
    status_pred = np.where(
        match_of_pred >= 0, "matched", np.where(is_merged, "merged", "false")
    ).astype(object)
    table = {
        "kind": np.array(["true"] * ov.n_true + ["pred"] * ov.n_pred, dtype=object),
        "id": np.concatenate([ov.true_ids, ov.pred_ids]).astype(np.uint64),
        "area": np.concatenate([ov.true_areas, ov.pred_areas]),
        "match_id": np.concatenate(
            [
                np.where(match_of_true >= 0, ov.pred_ids[np.maximum(match_of_true, 0)], 0)
                if ov.n_pred
                else np.zeros(ov.n_true),
                np.where(match_of_pred >= 0, ov.true_ids[np.maximum(match_of_pred, 0)], 0)
                if ov.n_true
                else np.zeros(ov.n_pred),
            ]
        ).astype(np.uint64),
        "iou": np.concatenate([best_iou_true, best_iou_pred]),
        "status": np.concatenate([status_true, status_pred]),
    }
    matched = int(chosen.size)
    return ObjectMatches(
        iou_threshold=float(iou_threshold),
        n_true=ov.n_true,
        n_pred=ov.n_pred,
        matched=matched,
        missed=ov.n_true - matched,
        false=ov.n_pred - matched,
        split=int(np.count_nonzero(is_split)),
        merged=int(np.count_nonzero(is_merged)),
        table=table,
    )
