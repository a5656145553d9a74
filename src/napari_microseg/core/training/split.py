"""Hold out part of the annotation for validation, even when it is only two slices.

Whole planes are held out when there are enough of them; otherwise a strip of
every plane, chosen so that both parts keep objects and the held-out strip's
share of object pixels resembles the plane's. Nothing is held out of nothing:
a user who corrected two slices still gets an honest validation score.

A training run can also hold out a *tuning* part of its training regions
(:func:`split_tuning`): never learnt from and never validated on, so that
post-processing is chosen on images the network has not seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .data import Plane, Region, TrainingDataError

#: Fewer annotated planes than this are split into strips rather than whole planes.
MIN_PLANES_FOR_PLANE_SPLIT = 4
#: The thinnest validation strip, in pixels.
MIN_STRIP = 16
#: Added to a strip's score when an earlier plane already holds out that side: neighbouring
#: slices of a stack are alike, so the same side twice holds out the same objects twice
#: (mito-em's slices 4 and 6 both held out rows 0-91: six mitochondria, seen twice, chose the
#: parent over a start 0.12 Dice better on every other pixel). Below the 1.0 a strip without
#: objects costs, so a plane still holds out objects rather than a new side.
REUSED_SIDE_COST = 0.25


def split_validation(
    planes: Sequence[Plane], *, fraction: float = 0.2
) -> tuple[list[Region], list[Region], str]:
    """Hold out part of the annotation for validation.

    Parameters
    ----------
    planes : sequence of Plane
    fraction : float
        Share of the annotation held out, in (0, 0.5].

    Returns
    -------
    train, val : list of Region
    description : str
        How the split was made, for the lineage record.

    Notes
    -----
    With at least :data:`MIN_PLANES_FOR_PLANE_SPLIT` planes, whole planes are
    held out, evenly spread (neighbouring slices are alike, so spreading them
    samples the stack's variety). With fewer, a strip of ``fraction`` of every
    plane's annotated box is held out, on the side whose share of object
    pixels is closest to the plane's own while objects remain on both sides,
    and, where another side does about as well, not on a side an earlier plane
    holds out (:data:`REUSED_SIDE_COST`), so that neighbouring slices of a stack
    do not hold out the same region twice.
    """
    if not 0 < fraction <= 0.5:
        raise ValueError(f"The validation fraction must be in (0, 0.5], got {fraction!r}.")
    if len(planes) >= MIN_PLANES_FOR_PLANE_SPLIT:
        n_val = max(1, round(fraction * len(planes)))
        picks = np.unique(np.linspace(0, len(planes) - 1, n_val + 2).round().astype(int)[1:-1])
        if len(picks) == 0:
            picks = np.array([len(planes) // 2])
        chosen = set(int(i) for i in picks)
        train = [Region(p, p.annotated) for i, p in enumerate(planes) if i not in chosen]
        val = [Region(p, p.annotated) for i, p in enumerate(planes) if i in chosen]
        if sum(r.objects for r in train) == 0:
            # Every object lies on the held-out planes: fall back to strips.
            return _strip_split(planes, fraction)
        names = ", ".join(planes[i].name for i in sorted(chosen))
        return train, val, f"{len(val)} of {len(planes)} annotated planes held out ({names})"
    return _strip_split(planes, fraction)


def split_tuning(
    train: Sequence[Region], *, fraction: float, validation: str
) -> tuple[list[Region], list[Region], str]:
    """Hold out whole training regions for choosing post-processing.

    A network is surer on the images it learnt from than on new ones, so
    post-processing chosen on its training images need not transfer: for
    gland-he's shipped weights, trained on the same images over several runs,
    the scores of 30 settings on training and on validation images had a rank
    correlation of -0.24. (On 14 to 17 images such correlations are noise:
    +0.55 and -0.31 for two networks trained alike, and tuning images chose no
    better: docs/models.md, "A tuning split".) The tuning regions are never
    trained on.

    Parameters
    ----------
    train : sequence of Region
        The training regions left by :func:`split_validation`, in plane order.
    fraction : float
        Share of them held out, in (0, 0.5].
    validation : str
        :func:`split_validation`'s description of the validation split.

    Returns
    -------
    train, tuning : list of Region
    description : str
        ``validation`` and which regions were held out for tuning: the
        lineage's split record.

    Raises
    ------
    TrainingDataError
        When fewer than :data:`MIN_PLANES_FOR_PLANE_SPLIT` whole regions remain,
        or when the tuning regions would take every object.
    """
    if not 0 < fraction <= 0.5:
        raise ValueError(f"The tuning fraction must be in (0, 0.5], got {fraction!r}.")
    if len(train) < MIN_PLANES_FOR_PLANE_SPLIT:
        raise TrainingDataError(
            f"Holding out tuning images needs at least {MIN_PLANES_FOR_PLANE_SPLIT} training "
            f"planes after validation, this data has {len(train)}; set tune_fraction to 0."
        )
    count = max(1, round(fraction * len(train)))
    # Offset from the validation picks (the same rule would land next to them).
    picks = set(int(i) for i in np.linspace(0, len(train) - 1, count + 1).round().astype(int)[1:])
    kept = [r for i, r in enumerate(train) if i not in picks]
    tuning = [r for i, r in enumerate(train) if i in picks]
    if sum(r.objects for r in kept) == 0:
        raise TrainingDataError(
            "Every training object lies on the tuning planes; set tune_fraction to 0."
        )
    names = ", ".join(r.plane.name for r in tuning)
    planes = "plane" if len(tuning) == 1 else "planes"
    held_out = f"{len(tuning)} training {planes} held out for tuning ({names})"
    return kept, tuning, f"{validation}; {held_out}"


def _strip_split(
    planes: Sequence[Plane], fraction: float
) -> tuple[list[Region], list[Region], str]:
    train, val, sides = [], [], []
    used: set[tuple[int, int]] = set()
    for plane in planes:
        strip, side, key = _best_strip(plane, fraction, used)
        if strip is None:
            train.append(Region(plane, plane.annotated))
            continue
        train.append(Region(plane, plane.annotated & ~strip))
        val.append(Region(plane, plane.annotated & strip))
        sides.append(f"{plane.name}: {side}")
        used.add(key)
    if not val:
        raise TrainingDataError(
            "The annotated region is too small to hold any of it out for validation; annotate "
            f"a larger region (at least {2 * MIN_STRIP} pixels across)."
        )
    return train, val, f"a strip of {fraction:.0%} of each plane held out ({'; '.join(sides)})"


def _best_strip(
    plane: Plane, fraction: float, used: set[tuple[int, int]]
) -> tuple[np.ndarray | None, str, tuple[int, int]]:
    """The strip to hold out of ``plane``, its description and its side (axis, start or end).

    ``used``: the sides earlier planes hold out.
    """
    annotated = plane.annotated
    rows = np.flatnonzero(annotated.any(axis=1))
    cols = np.flatnonzero(annotated.any(axis=0))
    if rows.size == 0:
        return None, "", (0, 0)
    fg = plane.instances != 0
    total_fg = np.count_nonzero(fg & annotated) / max(int(annotated.sum()), 1)
    best: tuple[float, np.ndarray, str, tuple[int, int]] | None = None
    for axis, (lo, hi) in enumerate(((rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1))):
        length = int(hi - lo)
        thick = max(round(fraction * length), MIN_STRIP)
        if thick * 2 > length:
            continue
        for end, (a, b) in enumerate(((lo, lo + thick), (hi - thick, hi))):
            strip = np.zeros(annotated.shape, bool)
            if axis == 0:
                strip[a:b] = True
            else:
                strip[:, a:b] = True
            val, train = annotated & strip, annotated & ~strip
            if not val.any() or not (fg & train).any():
                continue
            share = np.count_nonzero(fg & val) / max(int(val.sum()), 1)
            # A held-out part without any object can only score the background.
            score = abs(share - total_fg) + (1.0 if share == 0 else 0.0)
            if (axis, end) in used:
                score += REUSED_SIDE_COST
            label = _strip_label(axis, a, b, plane.zoom)
            if best is None or score < best[0]:
                best = (score, strip, label, (axis, end))
    if best is None:
        return None, "", (0, 0)
    return best[1], best[2], best[3]


def _strip_label(axis: int, start: int, stop: int, zoom: tuple[float, float] | None) -> str:
    """``"rows 0-50"``: the strip ``start:stop`` along ``axis`` in the image's own pixels.

    A plane resampled to the model's pixel size (``zoom``) is described on the
    image's grid, which is the one the user annotated, with the model's beside it.
    """
    kind = "rows" if axis == 0 else "columns"
    if zoom is None:
        return f"{kind} {start}-{stop - 1}"
    first, end = image_span(start, stop, zoom[axis])
    return f"{kind} {first}-{end - 1} ({start}-{stop - 1} at the model's pixel size)"


def image_span(start: int, stop: int, factor: float) -> tuple[int, int]:
    """The pixels ``start:stop`` of a plane resampled by ``factor``, on the image's own grid.

    Row ``r`` of the resampled plane is row ``r / factor`` of the image
    (:attr:`~.data.Plane.zoom`); the span covers every image pixel that touches it.
    """
    return math.floor(start / factor), math.ceil(stop / factor)


def annotated_regions(*parts: Sequence[Region]) -> list[Region]:
    """Every annotated pixel of the planes ``parts`` lie on, one region per plane.

    The inverse of a split: what the annotations hold before any pixel is held out.

    Parameters
    ----------
    *parts : sequence of Region
        E.g. a fine-tune's training and held-out regions (strips of the same planes).

    Returns
    -------
    list of Region
        Whole annotated planes, each once, in the order first met.
    """
    planes, seen = [], set()
    for region in (r for part in parts for r in part):
        if id(region.plane) not in seen:
            seen.add(id(region.plane))
            planes.append(region.plane)
    return [Region(p, p.annotated) for p in planes]
