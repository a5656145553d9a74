"""Flat-field correction: uneven illumination removed from each plane, without labels.

A new microscope session often lights the field unevenly (a vignetting
objective, a tilted lamp, a detector whose gain drifts across the frame).
Neither re-estimated batch-norm statistics nor a few shots of fine-tuning
undo that: the same structure is bright in one corner and dark in the other
(``benchmarks/bench_adapt.py``). Dividing each plane by its own heavily
smoothed bright level (its *background*, :func:`coarse_background`) and scaling back
to the plane's mean brightness does: ``benchmarks/bench_flatfield.py`` measured
mito-em under a simulated illumination gradient go from Dice 0.265 to 0.902 and
gland-he from 0.687 to 0.755 with this alone, at a cost of at most 0.009 on
evenly lit images (docs/benchmarks.md).

Block-by-block prediction reads parts of planes, so it first reads every plane
once and keeps its background at 1/64 of the resolution (:func:`measure_planes`,
:class:`PlaneGains`); any block is then corrected exactly as the whole volume.

A model that wants its input corrected says so in its normalization
specification: ``{"kind": ..., "flat_field": 0.125}`` (the Gaussian sigma of
the background as a fraction of the plane's shorter side). Prediction,
label-free adaptation and fine-tuning apply it to the image before the
normalization statistics are measured, so the model sees what it was adapted
or trained on.

Examples
--------
>>> y, x = np.mgrid[0:128, 0:128]
>>> pattern = 100.0 + 50.0 * ((y // 8 + x // 8) % 2)
>>> lit = pattern * (0.5 + x / 128.0)   # three times as bright on the right
>>> out = correct_illumination(lit, "YX", 0.125)
>>> def balance(a):  # left third over right third
...     return float(a[:, 8:40].mean() / a[:, 88:120].mean())
>>> round(balance(lit), 2), bool(abs(balance(out) - 1) < 0.1)
(0.52, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..progress import Job, Progress, drain

#: Gaussian sigma of the background, as a fraction of a plane's shorter side. Of the
#: two tried in bench_flatfield.py (0.125, 0.25), the smaller one recovered more.
FLAT_FIELD_FRACTION = 0.125
#: The background is this percentile of the brightness (its bright level)...
_BACKGROUND_PERCENTILE = 90.0
#: ... measured first in blocks of this fraction of the shorter side (1/64).
_BACKGROUND_BLOCKS = 64


def flat_field_fraction(spec: dict[str, Any] | None) -> float | None:
    """The flat-field fraction a normalization specification asks for, or None.

    Raises
    ------
    ValueError
        A ``flat_field`` that is not a number in (0, 1].
    """
    value = (spec or {}).get("flat_field")
    if value is None or value is False:
        return None
    if value is True:
        return FLAT_FIELD_FRACTION
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(
            f'"flat_field": {value!r} must be the background\'s smoothing as a fraction of the '
            f"plane's shorter side, in (0, 1] (for example {FLAT_FIELD_FRACTION}), or absent."
        )
    return float(value)


#: A plane whose smooth background varies more than this (its 95th over its 5th
#: percentile) is unevenly lit. bench_adapt's pools: 1.03-1.20 for gland-he and mito-em
#: as they are and under gamma, blur + noise or another pixel size; 1.55-2.03 under its
#: illumination field (0.45 to 1.35).
UNEVEN_LIGHT = 1.35
#: A plane whose median lies below this share of its 1st-99.8th percentile range has a
#: dark background (fluorescence): its bright level follows the objects, not the light.
DARK_BACKGROUND_MEDIAN = 0.25


def scaled_median(values: np.ndarray) -> float | None:
    """The median of ``values`` on the scale of their 1st-99.8th percentiles (None: flat).

    Below :data:`DARK_BACKGROUND_MEDIAN`: a dark background with bright objects
    (fluorescence); near 1: a bright background (brightfield).

    Examples
    --------
    >>> scaled_median(np.r_[np.zeros(90), np.ones(10)]), scaled_median(np.ones(5))
    (0.0, None)
    """
    low, high = np.percentile(values, (1.0, 99.8))
    if not high > low:
        return None
    return (float(np.median(values)) - float(low)) / float(high - low)


def light_range(brightness: np.ndarray, fraction: float = FLAT_FIELD_FRACTION) -> float | None:
    """How unevenly a plane is lit: its smooth background's 95th over its 5th percentile.

    Parameters
    ----------
    brightness : ndarray, shape (Y, X)
        The plane's brightness (the mean over channels for colour), finite.
    fraction : float
        As for :func:`coarse_background`.

    Returns
    -------
    float or None
        1 for even light, :data:`UNEVEN_LIGHT` and above for uneven light;
        None for a plane this cannot tell: a dark background (below
        :data:`DARK_BACKGROUND_MEDIAN`), negative values or a constant plane.

    Examples
    --------
    >>> rows, cols = np.mgrid[0:128, 0:128]
    >>> texture = 0.8 + 0.2 * ((rows // 8 + cols // 8) % 2)
    >>> round(light_range(texture), 2)
    1.0
    >>> light_range(texture * np.linspace(0.45, 1.35, 128)) > UNEVEN_LIGHT
    True
    >>> light_range(np.where(texture > 0.9, 1.0, 0.01) * (rows % 16 == 0)) is None
    True
    """
    values = np.asarray(brightness, np.float32)
    # Normalized planes dip a little below 0 under their 1st percentile; zero-centred data
    # (a negative 1st percentile) are not light that a gain multiplied.
    if np.percentile(values, 1.0) < 0:
        return None
    median = scaled_median(values)
    if median is None or median < DARK_BACKGROUND_MEDIAN:
        return None
    background = coarse_background(values, fraction)
    bottom, top = np.percentile(background, (5.0, 95.0))
    return float(top / bottom) if bottom > 0 else None


def coarse_background(brightness: np.ndarray, fraction: float) -> np.ndarray:
    """The smooth background of one plane, its bright level, at 1/64 of its resolution.

    The 90th percentile of the brightness in blocks of 1/64 of the shorter side,
    then over windows as wide as the smoothing, then a Gaussian of ``fraction``
    x the shorter side. Objects that fill part of a window do not pull a high
    percentile down as they pull down a mean, so the background follows the
    light, not the objects (bench: gland-he on evenly lit images, Dice 0.857
    uncorrected, 0.826 with a smoothed mean, 0.863 with this).

    Parameters
    ----------
    brightness : ndarray, shape (Y, X)
        The plane's brightness (the mean over channels for colour), finite.
    fraction : float
        Gaussian sigma as a fraction of the shorter side.

    Returns
    -------
    ndarray of float32, shape (rows, cols)
        About 64 along the shorter side; :func:`expand` brings it to ``(Y, X)``.
    """
    from scipy import ndimage as ndi

    height, width = brightness.shape
    block = max(1, round(min(height, width) / _BACKGROUND_BLOCKS))
    rows, cols = height // block, width // block
    tiles = brightness[: rows * block, : cols * block].astype(np.float32)
    tiles = tiles.reshape(rows, block, cols, block)
    small = np.percentile(tiles, _BACKGROUND_PERCENTILE, axis=(1, 3)).astype(np.float32)
    sigma = fraction * min(rows, cols)
    window = int(2 * sigma) | 1
    if window > 1:
        small = ndi.percentile_filter(small, _BACKGROUND_PERCENTILE, size=window, mode="reflect")
    return ndi.gaussian_filter(small, sigma, mode="reflect")


def expand(coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A coarse background stretched over a plane of ``shape`` (linear interpolation)."""
    from scipy import ndimage as ndi

    height, width = shape
    rows, cols = coarse.shape
    # The block grid may leave a strip of < 1 block; stretching it over the plane is smooth.
    return ndi.zoom(coarse, (height / rows, width / cols), order=1)[:height, :width]


def _brightness(plane: np.ndarray, colour: bool) -> np.ndarray | None:
    """The finite brightness of a ``(Y, X)`` or ``(Y, X, C)`` plane; None to leave it alone.

    A plane with negative values is left as it is: zero-centred or
    background-subtracted data are not light that a gain multiplied.
    """
    values = np.asarray(plane, np.float32)
    brightness = values.mean(axis=-1) if colour else values
    finite = np.isfinite(brightness)
    if not finite.all():
        brightness = np.where(finite, brightness, np.nanmean(brightness) if finite.any() else 0)
    if brightness.size == 0 or float(brightness.min()) < 0:
        return None
    return brightness


def _gain(smooth: np.ndarray, level: float) -> np.ndarray:
    """``level / background``, the background floored at 1 % of its mean (float32)."""
    return level / np.maximum(smooth, np.float32(0.01 * level))


def _correct_plane(plane: np.ndarray, fraction: float, colour: bool, limits: Any) -> np.ndarray:
    """One plane, ``(Y, X)`` or ``(Y, X, C)``, divided by its background (float32)."""
    values = plane.astype(np.float32)
    brightness = _brightness(values, colour)
    if brightness is None:
        return values
    smooth = expand(coarse_background(brightness, fraction), brightness.shape)
    level = float(smooth.mean())
    if not level > 0:  # a black plane
        return values
    factor = _gain(smooth, level)
    values *= factor[..., None] if colour else factor
    if limits is not None:
        np.clip(values, limits[0], limits[1], out=values)
    return values


def _planes_last(axes: str) -> tuple[list[int], list[int]]:
    """The transpose that puts Y, X (and C) last, and its inverse."""
    tail = "YXC" if "C" in axes else "YX"
    order = [axes.index(a) for a in axes if a not in tail] + [axes.index(a) for a in tail]
    return order, [int(i) for i in np.argsort(order)]


def _correct_block(block: np.ndarray, fraction: float, colour: bool, limits: Any) -> np.ndarray:
    """Every plane of ``block``, whose last axes are ``(Y, X)`` or ``(Y, X, C)``."""
    planes = block.shape[: block.ndim - (3 if colour else 2)]
    out = np.empty(block.shape, np.float32)
    for index in np.ndindex(*planes):
        out[index] = _correct_plane(np.asarray(block[index]), fraction, colour, limits)
    return out


def correct_illumination(data: Any, axes: str, fraction: float, *, lazy: bool = False) -> Any:
    """Each YX plane of ``data`` divided by its smoothed brightness, rescaled to its mean.

    Colour channels share one background (their mean), so hues are kept.
    Integer images are clipped to their dtype's range, as the bench did for
    8-bit images; float images are not clipped. NaN pixels stay NaN. A plane
    with negative values (zero-centred or background-subtracted data) or an
    all-black one is left as it is: no gain made it.

    Parameters
    ----------
    data : ndarray or dask array
        The image, axes as in ``axes`` (must hold Y and X; C for colour).
    axes : str
        Its axis letters, e.g. ``"YX"``, ``"ZYX"``, ``"YXC"``.
    fraction : float
        Gaussian sigma of the background as a fraction of a plane's shorter side.
    lazy : bool
        Return a dask array for a NumPy stack too, so only the planes read are
        corrected (training reads a few annotated slices of a big stack). A
        2D image, or prediction, which reads every plane, is corrected at once.

    Returns
    -------
    ndarray or dask array of float32
        Same shape and axes. A dask input stays lazy (one full plane per chunk).
    """
    colour = "C" in axes
    tail = "YXC" if colour else "YX"
    order, inverse = _planes_last(axes)
    limits = _limits(data.dtype)
    planes = int(np.prod([data.shape[axes.index(a)] for a in axes if a not in tail]))
    if isinstance(data, np.ndarray) and not (lazy and planes > 1):
        moved = np.transpose(data, order)
        return np.transpose(_correct_block(moved, fraction, colour, limits), inverse)
    if isinstance(data, np.ndarray):
        import dask.array as da

        data = da.from_array(data, chunks=tuple(1 if a not in tail else -1 for a in axes))
    moved = data.transpose(order)
    whole_planes = {moved.ndim - k: -1 for k in range(1, len(tail) + 1)}
    moved = moved.rechunk(whole_planes)
    meta = np.empty((0,) * moved.ndim, np.float32)
    corrected = moved.map_blocks(
        _correct_block, fraction, colour, limits, dtype=np.float32, meta=meta
    )
    return corrected.transpose(inverse)


def _limits(dtype: Any) -> tuple[float, float] | None:
    """The range an integer (or boolean) image is clipped to after correction; None for float."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return (0.0, 1.0) if dtype.kind == "b" else None


@dataclass(frozen=True)
class PlaneGains:
    """The coarse background of every plane of a volume: corrects any block of it.

    Block-by-block prediction reads parts of planes, but a plane's background
    needs the whole plane; :func:`measure_planes` reads each plane once, and
    :meth:`apply` then corrects any region exactly as :func:`correct_illumination`
    corrects the whole volume. Small: about 64 x 85 values per plane.

    Attributes
    ----------
    axes : str
        The volume's axis letters.
    shape : tuple of int
        The volume's shape.
    coarse : list of ndarray or None
        Per plane (C order over the axes other than Y, X and C), its coarse
        background; None for a plane left as it is.
    levels : list of float
        Per plane, the mean of its background.
    limits : tuple of float, optional
        The clipping range of the volume's dtype.
    """

    axes: str
    shape: tuple[int, ...]
    coarse: list[np.ndarray | None]
    levels: list[float]
    limits: tuple[float, float] | None

    def apply(self, block: np.ndarray, region: tuple[slice, ...]) -> np.ndarray:
        """Correct ``block``, the pixels of ``region`` (one slice per axis but C), as float32."""
        spatial = self.axes.replace("C", "")
        lead = [a for a in spatial if a not in "YX"]
        spans = dict(zip(spatial, region))
        starts = [spans[a].start or 0 for a in lead]
        plane_shape = (self.shape[self.axes.index("Y")], self.shape[self.axes.index("X")])
        window = (spans["Y"], spans["X"])
        lead_shape = [self.shape[self.axes.index(a)] for a in lead]
        colour = "C" in self.axes
        order, inverse = _planes_last(self.axes)
        moved = np.transpose(block, order).astype(np.float32)
        for index in np.ndindex(*moved.shape[: len(lead)]):
            absolute = [start + i for start, i in zip(starts, index)]
            plane = int(np.ravel_multi_index(absolute, lead_shape)) if lead else 0
            coarse = self.coarse[plane]
            if coarse is None:
                continue
            factor = _gain(expand(coarse, plane_shape)[window], self.levels[plane])
            moved[index] *= factor[..., None] if colour else factor
        if self.limits is not None:
            np.clip(moved, self.limits[0], self.limits[1], out=moved)
        return np.transpose(moved, inverse)


def measure_planes(data: Any, axes: str, fraction: float) -> PlaneGains:
    """Read each plane of ``data`` once and keep its coarse background (see :class:`PlaneGains`).

    :func:`iter_measure_planes` without its progress events.
    """
    return drain(iter_measure_planes(data, axes, fraction), show=False)


def iter_measure_planes(
    data: Any, axes: str, fraction: float, *, total: int = 0
) -> Job[PlaneGains]:
    """Read each plane of ``data`` once and keep its coarse background (see :class:`PlaneGains`).

    Parameters
    ----------
    data : ndarray, zarr array or dask array
        The volume, axes as in ``axes``.
    axes : str
        Its axis letters (Y and X; C for colour).
    fraction : float
        Gaussian sigma of the background as a fraction of a plane's shorter side.
    total : int
        The ``total`` of the caller's progress events (its blocks); this pass is step 0.

    Yields
    ------
    Progress
        One per plane read, so a volume of many planes shows it and can be cancelled.
    """
    colour = "C" in axes
    lead = [a for a in axes if a not in "YXC"]
    plane_order, _ = _planes_last("".join(a for a in axes if a in "YXC"))
    coarse: list[np.ndarray | None] = []
    levels: list[float] = []
    lead_shape = [int(data.shape[axes.index(a)]) for a in lead]
    count = int(np.prod(lead_shape))
    for number, index in enumerate(np.ndindex(*lead_shape)):
        yield Progress(0, total, f"Measuring the illumination: plane {number + 1} of {count}")
        selection: list[Any] = [slice(None)] * len(axes)
        for letter, i in zip(lead, index):
            selection[axes.index(letter)] = i
        plane = data[tuple(selection)]
        plane = np.asarray(plane.compute() if hasattr(plane, "compute") else plane)
        brightness = _brightness(np.transpose(plane, plane_order), colour)
        found = None if brightness is None else coarse_background(brightness, fraction)
        # The level as the whole-plane correction computes it, so blocks match it bit for bit.
        level = 0.0 if found is None else float(expand(found, brightness.shape).mean())
        coarse.append(found if level > 0 else None)
        levels.append(level)
    return PlaneGains(axes, tuple(int(n) for n in data.shape), coarse, levels, _limits(data.dtype))


def apply_flat_field(
    data: Any, axes: str, spec: dict[str, Any] | None, *, lazy: bool = False
) -> Any:
    """``data`` corrected as ``spec["flat_field"]`` asks; ``data`` itself when it does not."""
    fraction = flat_field_fraction(spec)
    return data if fraction is None else correct_illumination(data, axes, fraction, lazy=lazy)
