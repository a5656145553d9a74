"""Turn probability maps into foreground masks: Otsu, a fixed threshold, hysteresis.

Every function takes a probability map of one class, ``(M, N)`` or
``(P, M, N)`` with values in [0, 1], and works through it in slabs along the
first axis, so a 100 x 1024 x 1024 stack (or a memory-mapped one) needs no
full-size float temporaries: the histogram, the range check and the
comparison each touch one slab at a time.

Otsu's threshold is computed on a fixed histogram over [0, 1] (256 bins by
default), not over the map's own min..max as in
:func:`skimage.filters.threshold_otsu`. Probabilities share one scale, so the
threshold of a slab, a slice or the whole volume is comparable, and the
histogram of a volume is the sum of the histograms of its slabs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage as ndi

#: Voxels per slab: 16 MiB of float32 at a time (4 planes of 1024 x 1024).
SLAB_VOXELS = 1 << 22

#: Voxels per histogram chunk: ``bincount`` needs 8-byte indices, so chunks stay small.
_HISTOGRAM_VOXELS = 1 << 20

#: Tolerance on the [0, 1] range: float32 softmax or blending can overshoot by an ulp or so.
_RANGE_TOLERANCE = 1e-4

#: Otsu's threshold when the map holds a single value (an empty prediction, say).
_DEGENERATE_THRESHOLD = 0.5


class ProbabilityError(ValueError):
    """A probability map cannot be post-processed; the message says why and what to do."""


def iter_slabs(shape: tuple[int, ...], *, voxels: int | None = None) -> Iterator[tuple[slice]]:
    """Cover an array by slabs along its first axis, each of about ``voxels`` elements.

    Parameters
    ----------
    shape : tuple of int
        Shape of the array.
    voxels : int, optional
        Elements per slab (default :data:`SLAB_VOXELS`); a slab holds at least
        one index of the first axis.

    Yields
    ------
    index : tuple of slice
        Index the array with it: ``array[index]``.

    Examples
    --------
    >>> [s[0] for s in iter_slabs((4, 10), voxels=20)]
    [slice(0, 2, None), slice(2, 4, None)]
    """
    if not shape:
        yield (slice(None),)
        return
    per_row = max(int(np.prod(shape[1:], dtype=np.int64)), 1)
    step = max((SLAB_VOXELS if voxels is None else voxels) // per_row, 1)
    for start in range(0, shape[0], step):
        yield (slice(start, min(start + step, shape[0])),)


def check_probability(prob: np.ndarray, *, name: str = "The probability map") -> np.ndarray:
    """Check that ``prob`` holds probabilities in [0, 1] and return it as an ndarray.

    Boolean masks pass (as 0 and 1). Integer arrays pass only when they hold
    0 and 1 alone; 8-bit 0..255 maps are refused with a hint to rescale.

    Parameters
    ----------
    prob : (M, N[, P]) array-like
        The map to check; memory-mapped arrays are read slab by slab.
    name : str
        How to call the map in messages.

    Returns
    -------
    prob : ndarray
        The same data (no copy for ndarrays and memory maps).

    Raises
    ------
    ProbabilityError
        For a map with fewer than 2 axes, NaN values, or values outside [0, 1].
    """
    prob = prob if isinstance(prob, np.ndarray) else np.asarray(prob)
    if prob.ndim < 2 or prob.size == 0:
        raise ProbabilityError(
            f"{name} has shape {prob.shape}; post-processing needs a 2D or 3D map."
        )
    if prob.dtype == bool:
        return prob
    if not (np.issubdtype(prob.dtype, np.floating) or np.issubdtype(prob.dtype, np.integer)):
        raise ProbabilityError(f"{name} holds {prob.dtype} values, not probabilities.")
    low, high = np.inf, -np.inf
    for index in iter_slabs(prob.shape):
        slab = prob[index]
        low, high = np.minimum(low, slab.min()), np.maximum(high, slab.max())  # NaN propagates
    if np.isnan(low) or np.isnan(high):
        raise ProbabilityError(
            f"{name} contains NaN values; probabilities must be numbers in [0, 1]. "
            "Check the model output or the file."
        )
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        hint = (
            " It looks like an 8-bit image: divide by 255 to get probabilities."
            if high <= 255 and low >= 0 and np.issubdtype(prob.dtype, np.integer)
            else " Post-process the probabilities of a model (softmax or sigmoid output), "
            "not raw logits or intensities."
        )
        raise ProbabilityError(
            f"{name} has values in [{float(low):.4g}, {float(high):.4g}], outside [0, 1].{hint}"
        )
    return prob


def probability_histogram(prob: np.ndarray, *, nbins: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of a probability map over [0, 1], computed slab by slab.

    Parameters
    ----------
    prob : (M, N[, P]) ndarray
        Probabilities in [0, 1].
    nbins : int
        Number of equal bins over [0, 1].

    Returns
    -------
    counts : (nbins,) ndarray of int64
        Pixels per bin; 1.0 falls in the last bin.
    centers : (nbins,) ndarray of float64
        Bin centres.
    """
    counts = np.zeros(nbins, dtype=np.int64)
    for index in iter_slabs(prob.shape, voxels=_HISTOGRAM_VOXELS):
        slab = np.asarray(prob[index], dtype=np.float32)
        bins = (slab * nbins).astype(np.intp).ravel()
        np.clip(bins, 0, nbins - 1, out=bins)
        counts += np.bincount(bins, minlength=nbins)
    centers = (np.arange(nbins) + 0.5) / nbins
    return counts, centers


def threshold_otsu(prob: np.ndarray, *, nbins: int = 256) -> float:
    """Otsu's threshold of a probability map, from a fixed histogram over [0, 1].

    Parameters
    ----------
    prob : (M, N[, P]) ndarray
        Probabilities in [0, 1].
    nbins : int
        Histogram bins over [0, 1]; the threshold is a bin edge.

    Returns
    -------
    threshold : float
        Foreground is ``prob > threshold``. A map holding one value (for
        example an empty prediction, all zeros) has no two classes to separate;
        the threshold is then 0.5.

    References
    ----------
    .. [1] N. Otsu, "A threshold selection method from gray-level histograms",
           IEEE Trans. Syst. Man Cybern. 9(1), 62-66 (1979).
           :DOI:`10.1109/TSMC.1979.4310076`

    Examples
    --------
    >>> prob = np.array([[0.1, 0.1, 0.9], [0.1, 0.8, 0.9]])
    >>> t = threshold_otsu(prob)
    >>> bool(0.1 < t < 0.8)
    True
    """
    from skimage.filters import threshold_otsu as _skimage_otsu

    counts, centers = probability_histogram(check_probability(prob), nbins=nbins)
    if np.count_nonzero(counts) < 2:
        return _DEGENERATE_THRESHOLD
    # skimage returns the centre of the last background bin; its upper edge
    # keeps that whole bin out of the foreground of ``prob > threshold``.
    return float(_skimage_otsu(hist=(counts, centers))) + 0.5 / nbins


def apply_threshold(prob: np.ndarray, threshold: float | str = 0.5) -> np.ndarray:
    """Foreground mask ``prob > threshold``, with a fixed value or Otsu's.

    Parameters
    ----------
    prob : (M, N[, P]) ndarray
        Probabilities in [0, 1].
    threshold : float or "otsu"
        The fixed threshold, or ``"otsu"`` for :func:`threshold_otsu`.

    Returns
    -------
    mask : (M, N[, P]) ndarray of bool
        True where the probability is strictly above the threshold.

    Examples
    --------
    >>> apply_threshold(np.array([[0.2, 0.5], [0.7, 1.0]]), 0.5)
    array([[False, False],
           [ True,  True]])
    """
    prob = check_probability(prob)
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise ValueError(f"threshold must be a number or 'otsu', not {threshold!r}.")
        threshold = threshold_otsu(prob)
    mask = np.empty(prob.shape, dtype=bool)
    for index in iter_slabs(prob.shape):
        np.greater(prob[index], threshold, out=mask[index])
    return mask


def default_hysteresis_thresholds(
    prob: np.ndarray, low: float | None = None, high: float | None = None
) -> tuple[float, float]:
    """The (low, high) pair :func:`hysteresis` uses when either is not given.

    With ``t`` the Otsu threshold and ``m`` the map's maximum, ``low`` defaults
    to ``t`` and ``high`` to ``(t + m) / 2``: objects keep the extent an Otsu
    threshold gives them, and only those reaching halfway from ``t`` to the most
    confident pixel survive, so faint spurious detections go while the
    strongest object always stays. A given ``high`` below ``t`` lowers the
    default ``low`` to it.

    Parameters
    ----------
    prob : (M, N[, P]) ndarray
        Probabilities in [0, 1].
    low, high : float, optional
        Values to keep as given.

    Returns
    -------
    low, high : float
        With ``low <= high``.
    """
    if low is not None and high is not None:
        return float(min(low, high)), float(high)
    t = threshold_otsu(prob)
    if low is None:
        low = t if high is None else min(t, high)
    if high is None:
        top = max(float(prob[index].max()) for index in iter_slabs(prob.shape))
        high = max((max(t, low) + top) / 2, low)
    return float(low), float(high)


def hysteresis(
    prob: np.ndarray,
    low: float | None = None,
    high: float | None = None,
    *,
    connectivity: int = 1,
) -> np.ndarray:
    """Hysteresis threshold: regions above ``low`` that hold a pixel above ``high``.

    Parameters
    ----------
    prob : (M, N[, P]) ndarray
        Probabilities in [0, 1].
    low : float, optional
        Lower threshold: the extent of the objects. Defaults to Otsu's threshold
        (see :func:`default_hysteresis_thresholds`).
    high : float, optional
        Upper threshold: an object must reach it somewhere to be kept. Defaults
        to halfway between Otsu's threshold and the map's maximum.
    connectivity : int
        Neighbourhood of the regions, 1 (faces) to ``prob.ndim`` (corners).

    Returns
    -------
    mask : (M, N[, P]) ndarray of bool
        Pixels ``> low`` connected to at least one pixel ``> high``.

    Notes
    -----
    Same result as :func:`skimage.filters.apply_hysteresis_threshold`, but the
    comparisons run slab by slab and the connected components are written
    into one uint32 buffer, so memory stays at about 5 bytes per voxel on top
    of the input.

    References
    ----------
    .. [1] J. Canny, "A computational approach to edge detection", IEEE Trans.
           Pattern Anal. Mach. Intell. 8(6), 679-698 (1986).
           :DOI:`10.1109/TPAMI.1986.4767851`

    Examples
    --------
    >>> prob = np.array([[0.9, 0.6, 0.0, 0.6, 0.6]])
    >>> hysteresis(prob, 0.5, 0.8)
    array([[ True,  True, False, False, False]])
    """
    prob = check_probability(prob)
    low, high = default_hysteresis_thresholds(prob, low, high)
    mask = apply_threshold(prob, low)
    labels = np.empty(prob.shape, dtype=np.uint32)
    structure = ndi.generate_binary_structure(prob.ndim, connectivity)
    count = ndi.label(mask, structure=structure, output=labels)
    keep = np.zeros(count + 1, dtype=bool)
    for index in iter_slabs(prob.shape):
        strong = labels[index][np.asarray(prob[index]) > high]
        keep[strong] = True
    keep[0] = False
    for index in iter_slabs(prob.shape):
        mask[index] = keep[labels[index]]
    return mask
