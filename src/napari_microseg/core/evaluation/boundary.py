"""Where pixel errors lie: at the annotated boundary or away from it.

Pixel accuracy on thin structures (ssTEM membranes, gland outlines) is bound by
how exactly a network can place a boundary the annotator drew by hand.
:func:`errors_by_boundary_distance` splits a prediction's wrong pixels by their
distance to the true boundary, and :func:`shifted_self_accuracy` says what the
truth itself scores when every boundary moves by one pixel: together they tell a
network that misses structures from one that draws them a pixel off.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .contingency import check_pair

__all__ = ["boundary_distance", "errors_by_boundary_distance", "shifted_self_accuracy"]


def boundary_distance(truth: Any) -> np.ndarray:
    """Each pixel's Euclidean distance to the nearest pixel of the other class.

    Parameters
    ----------
    truth : (M, N[, P]) array
        Label image or mask; its foreground is ``truth > 0``.

    Returns
    -------
    distance : (M, N[, P]) ndarray of float
        1.0 for a pixel beside the boundary (on either side), 2.0 one pixel
        further, and so on; ``inf`` everywhere when the image holds one class only.

    Examples
    --------
    >>> boundary_distance(np.array([[1, 1, 1, 0, 0]]))
    array([[3., 2., 1., 1., 2.]])
    """
    from scipy import ndimage as ndi

    foreground = np.asarray(truth) > 0
    if foreground.all() or not foreground.any():
        return np.full(foreground.shape, np.inf)
    inside = ndi.distance_transform_edt(foreground)
    outside = ndi.distance_transform_edt(~foreground)
    return np.where(foreground, inside, outside)


def errors_by_boundary_distance(
    truth: Any, pred: Any, edges: Sequence[float] = (1.0, 2.0, 4.0)
) -> dict[str, float]:
    """Share of all pixels that are wrong, split by distance to the true boundary.

    Parameters
    ----------
    truth, pred : (M, N[, P]) array
        Label images or masks of one shape; each is compared as ``labels > 0``.
    edges : sequence of float
        Increasing upper distances (pixels, inclusive) of the bands; a last band
        holds everything further.

    Returns
    -------
    dict of str to float
        ``"<= 1"``, ``"1-2"``, ``"2-4"``, ``"> 4"`` (for the default ``edges``):
        wrong pixels in that band over all pixels, so the bands add up to
        ``1 - accuracy``; ``"error"`` is that sum.

    Examples
    --------
    >>> truth = np.array([[1, 1, 1, 1, 1, 0, 0, 0]])
    >>> pred = np.array([[0, 1, 1, 1, 0, 0, 0, 0]])   # one pixel off, one far
    >>> errors_by_boundary_distance(truth, pred)
    {'<= 1': 0.125, '1-2': 0.0, '2-4': 0.0, '> 4': 0.125, 'error': 0.25}
    """
    truth, pred = check_pair(truth, pred)
    bounds = [float(edge) for edge in edges]
    if not bounds or any(b <= a for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"edges must be increasing distances, got {list(edges)}.")
    wrong = (truth > 0) != (pred > 0)
    distance = boundary_distance(truth)[wrong]
    total = wrong.size
    bands: dict[str, float] = {}
    lower = 0.0
    for index, upper in enumerate(bounds):
        name = f"<= {upper:g}" if index == 0 else f"{lower:g}-{upper:g}"
        bands[name] = int(np.count_nonzero((distance > lower) & (distance <= upper))) / total
        lower = upper
    bands[f"> {lower:g}"] = int(np.count_nonzero(distance > lower)) / total
    bands["error"] = int(np.count_nonzero(wrong)) / total
    return bands


def shifted_self_accuracy(truth: Any, shift: int = 1) -> float:
    """Pixel accuracy of the truth against itself moved by ``shift`` pixels.

    The mean over moves along each spatial axis, scored on the pixels both
    copies cover: what a prediction that draws every boundary ``shift`` pixels
    off, and is otherwise perfect, would score.

    Parameters
    ----------
    truth : (M, N[, P]) array
        Label image or mask; its foreground is ``truth > 0``.
    shift : int
        Pixels to move by, at least 1.

    Returns
    -------
    float
        In [0, 1].

    Examples
    --------
    >>> shifted_self_accuracy(np.array([[1, 1, 0, 0, 1], [1, 1, 0, 0, 1]]))
    0.75
    """
    if shift < 1:
        raise ValueError(f"shift must be at least 1 pixel, got {shift}.")
    foreground = np.asarray(truth) > 0
    if min(foreground.shape) <= shift:
        raise ValueError(
            f"An image of shape {foreground.shape} cannot be moved by {shift} pixel(s) "
            "along every axis."
        )
    scores = []
    for axis in range(foreground.ndim):
        ahead = np.take(foreground, np.arange(shift, foreground.shape[axis]), axis=axis)
        behind = np.take(foreground, np.arange(foreground.shape[axis] - shift), axis=axis)
        scores.append(float(np.mean(ahead == behind)))
    return float(np.mean(scores))
