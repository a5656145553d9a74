"""Segmentation metrics of the field, on 2D and 3D label images.

Every metric takes ``(truth, pred)`` in this order, like scikit-image's
``(image_true, image_test)``, both label images of one shape: 0 is the
background, every other id one object. Ids may be any non-negative integer
(uint32, uint64: ids above 65535 are kept, never wrapped). Boolean masks are
accepted; their objects are their connected components. Float images are
refused: threshold probability maps into labels first.

Pixel level (this module): :func:`accuracy`, :func:`precision`,
:func:`recall`, :func:`pixel_f1` (= :func:`dice`), :func:`iou`
(= :func:`jaccard`), all on the foreground ``labels > 0``; ISBI-style
:func:`adapted_rand_error` and :func:`variation_of_information`.

Object level (:mod:`.objects` and :mod:`.hausdorff`; all public from
:mod:`napari_microseg.core.evaluation`): GlaS object F1, object Dice and object
Hausdorff; the DSB 2018 mean average precision; and ``match_objects``, the
per-object match table ("300/302 found").

Conventions for empty images: a ratio whose denominator is 0 (for example
precision with no predicted pixel) is 1.0 when truth and prediction are both
empty, since nothing was there and nothing was claimed, and 0.0 otherwise.

Object overlaps come from one sparse contingency table (``bincount`` over
paired ids, :mod:`.contingency`), never from per-object passes over the image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .contingency import as_instances, check_pair, compress_ids

__all__ = [
    "accuracy",
    "adapted_rand_error",
    "confusion_counts",
    "dice",
    "iou",
    "jaccard",
    "pixel_f1",
    "precision",
    "recall",
    "variation_of_information",
]


# ----------------------------------------------------------------------------- pixel level


def _ratio(numerator: float, denominator: float, *, both_empty: bool) -> float:
    if denominator == 0:
        return 1.0 if both_empty else 0.0
    return float(numerator) / float(denominator)


def confusion_counts(truth: Any, pred: Any) -> tuple[int, int, int, int]:
    """Foreground pixel counts ``(tp, fp, fn, tn)``, foreground being ``> 0``.

    Examples
    --------
    >>> confusion_counts(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 1, 0]]))
    (1, 1, 1, 1)
    """
    truth, pred = check_pair(truth, pred)
    t, p = truth != 0, pred != 0
    tp = int(np.count_nonzero(t & p))
    n_t, n_p = int(np.count_nonzero(t)), int(np.count_nonzero(p))
    return tp, n_p - tp, n_t - tp, int(t.size) - n_t - n_p + tp


def accuracy(truth: Any, pred: Any) -> float:
    """Pixel accuracy: the fraction of pixels classified right.

    ``(TP + TN) / (TP + TN + FP + FN)`` on the foreground ``> 0``; the
    pixel-classification accuracy reported for the ISBI 2012 EM data.

    References
    ----------
    .. [1] I. Arganda-Carreras et al., "Crowdsourcing the creation of image
           segmentation algorithms for connectomics", Front. Neuroanat. 9:142
           (2015). :DOI:`10.3389/fnana.2015.00142`

    Examples
    --------
    >>> accuracy(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 0]]))
    0.75
    """
    tp, fp, fn, tn = confusion_counts(truth, pred)
    return (tp + tn) / (tp + tn + fp + fn)


def precision(truth: Any, pred: Any) -> float:
    """Pixel precision ``TP / (TP + FP)``: the fraction of predicted foreground that is right.

    References
    ----------
    .. [1] C. J. van Rijsbergen, Information Retrieval, 2nd ed., ch. 7 (1979).

    Examples
    --------
    >>> precision(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 1, 1]]))
    0.3333333333333333
    """
    tp, fp, fn, _ = confusion_counts(truth, pred)
    return _ratio(tp, tp + fp, both_empty=tp + fp + fn == 0)


def recall(truth: Any, pred: Any) -> float:
    """Pixel recall (sensitivity) ``TP / (TP + FN)``: the fraction of true foreground found.

    References
    ----------
    .. [1] C. J. van Rijsbergen, Information Retrieval, 2nd ed., ch. 7 (1979).

    Examples
    --------
    >>> recall(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 1, 1]]))
    0.5
    """
    tp, fp, fn, _ = confusion_counts(truth, pred)
    return _ratio(tp, tp + fn, both_empty=tp + fp + fn == 0)


def pixel_f1(truth: Any, pred: Any) -> float:
    """Pixel F1 score, equal to the Dice coefficient: ``2 TP / (2 TP + FP + FN)``.

    The harmonic mean of precision and recall, and ``2 |T ∩ P| / (|T| + |P|)``
    for the foreground sets; the "F1 score" of the GlaS challenge's pixel level.

    References
    ----------
    .. [1] L. R. Dice, "Measures of the amount of ecologic association between
           species", Ecology 26(3), 297-302 (1945). :DOI:`10.2307/1932409`

    Examples
    --------
    >>> pixel_f1(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 1, 0]]))
    0.5
    """
    tp, fp, fn, _ = confusion_counts(truth, pred)
    return _ratio(2 * tp, 2 * tp + fp + fn, both_empty=tp + fp + fn == 0)


def iou(truth: Any, pred: Any) -> float:
    """Foreground intersection over union, the Jaccard index: ``TP / (TP + FP + FN)``.

    References
    ----------
    .. [1] P. Jaccard, "The distribution of the flora in the alpine zone",
           New Phytologist 11(2), 37-50 (1912).
           :DOI:`10.1111/j.1469-8137.1912.tb05611.x`

    Examples
    --------
    >>> iou(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 1, 0]]))
    0.3333333333333333
    """
    tp, fp, fn, _ = confusion_counts(truth, pred)
    return _ratio(tp, tp + fp + fn, both_empty=tp + fp + fn == 0)


#: The Dice coefficient is the pixel F1 score.
dice = pixel_f1
#: The Jaccard index is the IoU.
jaccard = iou


# ----------------------------------------------------------------------------- ISBI


def _isbi_images(truth: np.ndarray, pred: np.ndarray) -> tuple[tuple[int, ...], Any, Any]:
    """Compressed ids (scikit-image sizes its table by the largest id) and the ignored ids.

    Masks become their connected components first: a 0/255 mask is many objects (the
    cells of an ISBI membrane mask), not one segment per value.
    """
    _, t = compress_ids(as_instances(truth, name="The ground truth"))
    _, p = compress_ids(as_instances(pred, name="The prediction"))
    if not np.any(t):
        # ISBI scores only pixels inside true objects; with no true object nothing
        # would be scored, so then every pixel counts, background as one segment.
        return (), t, p
    # A pixel of a true object left unlabelled joins no segment: it is a segment
    # of its own, so a missed object scores as badly as a shattered one instead
    # of looking like one perfect segment "0".
    unlabelled = (p == 0) & (t != 0)
    p = p.copy()
    p[unlabelled] = p.max() + 1 + np.arange(np.count_nonzero(unlabelled))
    return (0,), t, p


def adapted_rand_error(truth: Any, pred: Any) -> float:
    """Adapted Rand error of the ISBI 2012 / SNEMI3D challenges: 1 - Rand F-score.

    ``1 - (Σ p_ij² - n) / (½ (Σ s_j² - n) + ½ (Σ t_i² - n))``, counting the pairs of
    the ``n`` scored pixels in the contingency table ``p`` (pred segment sizes ``s``,
    true segment sizes ``t``), restricted to pixels inside true objects (true background is
    ignored, as in ISBI 2012); 0 is a perfect segmentation. Unlabelled
    (background) prediction pixels inside true objects are single-pixel
    segments, so a missed object counts as fully split. When the truth has no
    object, every pixel is scored, the background being one segment.

    Parameters
    ----------
    truth, pred : (M, N[, P]) ndarray of int or bool
        Label images; masks (boolean, 0/1, 0/255) count as their connected
        components (:func:`~.contingency.as_instances`), as in ISBI 2012, where the
        cells of a 0/255 membrane mask are the segments.

    Returns
    -------
    float
        In [0, 1].

    References
    ----------
    .. [1] I. Arganda-Carreras et al., "Crowdsourcing the creation of image
           segmentation algorithms for connectomics", Front. Neuroanat. 9:142
           (2015). :DOI:`10.3389/fnana.2015.00142`

    Examples
    --------
    >>> adapted_rand_error(np.array([[1, 1, 2, 2]]), np.array([[3, 3, 4, 4]]))
    0.0
    """
    from skimage.metrics import adapted_rand_error as _skimage_are

    truth, pred = check_pair(truth, pred)
    ignore, t, p = _isbi_images(truth, pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        error = _skimage_are(t, p, ignore_labels=ignore)[0]
    if np.isnan(error):
        return 0.0  # 0/0: every segment one pixel in both, identical partitions
    return float(error)


def variation_of_information(truth: Any, pred: Any) -> tuple[float, float]:
    """Variation of information split into its false-split and false-merge parts.

    ``VI = H(P | T) + H(T | P)`` in bits: ``H(P | T)`` (split) grows when
    predicted objects cut true objects apart, ``H(T | P)`` (merge) when
    predicted objects join true ones. Pixels of the true background are
    ignored and unlabelled predicted pixels are single-pixel segments, and masks
    count as their connected components, as for :func:`adapted_rand_error`.

    Parameters
    ----------
    truth, pred : (M, N[, P]) ndarray of int or bool
        Label images or masks.

    Returns
    -------
    split, merge : float
        Conditional entropies in bits; 0 each for a perfect segmentation.

    References
    ----------
    .. [1] M. Meilă, "Comparing clusterings: an axiomatic view", ICML 2005.
           :DOI:`10.1145/1102351.1102424`
    .. [2] J. Nunez-Iglesias et al., "Machine learning of hierarchical clustering
           to segment 2D and 3D images", PLoS ONE 8(8): e71715 (2013).
           :DOI:`10.1371/journal.pone.0071715`

    Examples
    --------
    >>> variation_of_information(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 2, 2]]))
    (1.0, 0.0)
    """
    from skimage.metrics import variation_of_information as _skimage_vi

    truth, pred = check_pair(truth, pred)
    ignore, t, p = _isbi_images(truth, pred)
    split, merge = _skimage_vi(t, p, ignore_labels=ignore)
    # Entropies of identical partitions can come out as -0.0 or -1e-16.
    return max(float(split), 0.0), max(float(merge), 0.0)
