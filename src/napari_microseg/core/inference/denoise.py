"""Smoothing of a noisy session: its noise brought back towards the training data's level.

A new microscope session is often noisier than the images a model learned
from (a shorter dwell time, a higher gain, a thinner section). Re-estimated
batch-norm statistics do not undo pixel noise, and a few shots of
fine-tuning learn it only in part; a slight Gaussian smoothing of the input
helps (``benchmarks/bench_adapt.py``, docs/benchmarks.md: the mito-em parent
under blur and noise scores Dice 0.788, 0.900 on inputs smoothed by 0.7 px;
nuclei-fluo fine-tuned on two such images gains 0.126 instead of 0.108).

Whether a session is noisy is decided without labels: the trainer records the
noise level of a model's training inputs in its card
(``normalization["noise"]``, :func:`noise_level`), and an image whose level is
at least :data:`NOISY_RATIO` times that is smoothed with a Gaussian of
:data:`GENTLE_SIGMA`, and one at least :data:`VERY_NOISY_RATIO` times that with
:data:`STRONG_SIGMA` (:func:`choose_sigma`).

A model that wants its input smoothed says so in its normalization
specification: ``{"kind": ..., "smooth": 0.7}`` (the Gaussian sigma in pixels,
along Y and X only: never across channels or slices). Prediction, label-free
adaptation and fine-tuning apply it to the image before the normalization
statistics are measured, as they do the flat field (:mod:`.illumination`).
Block-by-block prediction reads each block grown by the filter's reach, so
blocks agree with the whole image.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> clean = np.kron(rng.random((16, 16)), np.ones((8, 8)))   # smooth structure
>>> noisy = clean + rng.normal(0.0, 0.2, clean.shape)
>>> reference = noise_level(clean + rng.normal(0.0, 0.02, clean.shape))
>>> choose_sigma([clean], reference) is None, choose_sigma([noisy], reference)
(True, 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

#: A session this many times as noisy as the model's training data (or more) is smoothed
#: with GENTLE_SIGMA. bench_adapt's pools (Haar noise on the 1-99.8 % scale, median): clean
#: 0.0067 (DSB), 0.022 (GlaS), 0.032 (ISBI), 0.077 (Lucchi); under blur + noise 14.8, 2.5,
#: 2.9 and 1.38 times that; under gamma or another pixel size 0-1.8 times. At 1.3, mito-em's
#: 1.38x session was smoothed: label-free adaptation gained (0.834 -> 0.866) but the 2-shot
#: fine-tune lost (0.892 -> 0.863), so a session must be clearly noisier than Lucchi's own
#: noisy training images before it is smoothed (docs/benchmarks.md, session 14).
NOISY_RATIO = 1.5
#: ... and at least this many times as noisy, with STRONG_SIGMA.
VERY_NOISY_RATIO = 4.0
#: Gaussian sigmas (px). bench_adapt measured 0.7 for mito-em (Lucchi, 1.4x as noisy) and 1.0
#: for nuclei-fluo (DSB, 15x); wider ones erase thin membranes and small nuclei.
GENTLE_SIGMA = 0.7
STRONG_SIGMA = 1.0
#: Filter radius in sigmas (scipy's default truncate).
TRUNCATE = 4.0
#: Widest sigma a card may ask for, in pixels.
MAX_SIGMA = 8.0
#: Values read at most per plane to measure its noise (a strided subsample above).
_MAX_NOISE_PIXELS = 1_048_576


def smooth_sigma(spec: dict[str, Any] | None) -> float | None:
    """The smoothing sigma (px) a normalization specification asks for, or None.

    Raises
    ------
    ValueError
        A ``smooth`` that is not a number in (0, :data:`MAX_SIGMA`].

    Examples
    --------
    >>> smooth_sigma({"kind": "percentile"}), smooth_sigma({"smooth": 0.7})
    (None, 0.7)
    """
    value = (spec or {}).get("smooth")
    if value is None or value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_SIGMA:
        raise ValueError(
            f'"smooth": {value!r} must be the Gaussian sigma in pixels, in (0, {MAX_SIGMA:g}] '
            f"(for example {GENTLE_SIGMA}), or absent."
        )
    return float(value)


def radius(sigma: float) -> int:
    """Pixels on each side that smoothing with ``sigma`` reads (as scipy's filter does)."""
    return int(TRUNCATE * float(sigma) + 0.5)


def _sigmas(axes: str, sigma: float | tuple[float, float]) -> list[float]:
    along = {"Y": sigma, "X": sigma} if isinstance(sigma, int | float) else dict(zip("YX", sigma))
    return [float(along[letter]) if letter in "YX" else 0.0 for letter in axes]


def smooth_planes(
    data: Any, axes: str, sigma: float | tuple[float, float], *, lazy: bool = False
) -> Any:
    """``data`` smoothed by a Gaussian of ``sigma`` pixels along Y and X, as float32.

    Parameters
    ----------
    data : ndarray, dask array or zarr array
        Image or volume with axes ``axes``.
    axes : str
        Letters of ``data``'s axes; only ``Y`` and ``X`` are smoothed.
    sigma : float or (float, float)
        Gaussian sigma in pixels; a pair gives it along Y and X.
    lazy : bool
        Return a dask array (one whole plane per chunk) for a NumPy or zarr
        stack too, so only the planes read are smoothed. A dask input always
        stays lazy.

    Returns
    -------
    ndarray or dask array of float32
        Same shape and axes; mirrored at the plane's edges.
    """
    from scipy import ndimage as ndi

    sigmas = _sigmas(axes, sigma)

    def smooth_block(block: np.ndarray) -> np.ndarray:
        values = np.asarray(block).astype(np.float32)
        return ndi.gaussian_filter(values, sigmas, mode="reflect", output=values)

    planes = int(np.prod([data.shape[i] for i, a in enumerate(axes) if a not in "YXC"]))
    lazy_input = hasattr(data, "map_blocks")  # dask
    if not lazy_input and not (lazy and planes > 1):
        return smooth_block(data)
    import dask.array as da

    whole_planes = tuple(-1 if a in "YXC" else 1 for a in axes)
    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=whole_planes)
    smoothed = data.rechunk({i: -1 for i, a in enumerate(axes) if a in "YXC"}).map_blocks(
        smooth_block, dtype=np.float32, meta=np.empty((0,) * data.ndim, np.float32)
    )
    return smoothed


def apply_smoothing(
    data: Any,
    axes: str,
    spec: dict[str, Any] | None,
    *,
    lazy: bool = False,
    zoom: tuple[float, float] | None = None,
) -> Any:
    """``data`` smoothed as ``spec["smooth"]`` asks; ``data`` itself when it does not.

    ``spec["smooth"]`` is in the model's pixels, as prediction smooths the image
    after resampling it to the model's pixel size. ``zoom``: the Y and X factors
    (image pixel size / model pixel size) by which ``data`` will be resampled
    afterwards; the sigma is then divided by them, so that smoothing first and
    resampling second blurs as much as prediction does.

    Examples
    --------
    >>> plane = np.zeros((9, 9), np.float32); plane[4, 4] = 1
    >>> wide = apply_smoothing(plane, "YX", {"smooth": 1.0}, zoom=(0.5, 0.5))
    >>> bool(np.allclose(wide, smooth_planes(plane, "YX", 2.0)))
    True
    """
    sigma = smooth_sigma(spec)
    if sigma is None:
        return data
    if zoom is None:
        return smooth_planes(data, axes, sigma, lazy=lazy)
    return smooth_planes(data, axes, (sigma / zoom[0], sigma / zoom[1]), lazy=lazy)


def noise_level(plane: Any) -> float | None:
    """Standard deviation of a plane's pixel noise, on its 1-99.8 % percentile scale.

    The finest diagonal Haar detail holds almost no structure and all of the
    noise; its median absolute value over 0.6745 estimates the noise's
    standard deviation (Donoho and Johnstone's estimator).

    Parameters
    ----------
    plane : array-like, shape (Y, X) or (C, Y, X)
        One plane; channels are averaged.

    Returns
    -------
    float or None
        About 0.01 for a clean fluorescence image and 0.1 for a noisy one;
        None for a constant plane or one narrower than 2 pixels.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> ramp = np.tile(np.linspace(0.0, 1.0, 256), (256, 1))
    >>> noisy = ramp + rng.normal(0.0, 0.1, ramp.shape)  # its 1-99.8 % range is about 1.25
    >>> round(noise_level(ramp), 3), round(noise_level(noisy) * 1.25, 2)
    (0.0, 0.1)
    """
    values = np.asarray(plane, dtype=np.float32)
    if values.ndim == 3:
        values = values.mean(axis=0)
    if values.ndim != 2:
        raise ValueError(f"noise_level needs a (Y, X) or (C, Y, X) plane, not {values.shape}.")
    if min(values.shape) < 2:
        return None
    step = max(1, int(np.sqrt(values.size / _MAX_NOISE_PIXELS)))
    # Strides of 2 * step keep every 2 x 2 neighbourhood whole.
    height, width = (values.shape[0] // 2) * 2, (values.shape[1] // 2) * 2
    values = values[:height, :width]
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    low, high = np.percentile(finite, (1.0, 99.8))
    if not high > low:
        return None
    top_left = values[0 : height : 2 * step, 0 : width : 2 * step]
    bottom_left = values[1 : height : 2 * step, 0 : width : 2 * step]
    top_right = values[0 : height : 2 * step, 1 : width : 2 * step]
    bottom_right = values[1 : height : 2 * step, 1 : width : 2 * step]
    detail = (top_left - bottom_left - top_right + bottom_right) / 2.0
    detail = detail[np.isfinite(detail)]
    return float(np.median(np.abs(detail)) / 0.6745 / (high - low))


def session_noise(planes: Iterable[Any]) -> float | None:
    """The median :func:`noise_level` of ``planes`` (None when none can tell)."""
    levels = [noise_level(plane) for plane in planes]
    known = [level for level in levels if level is not None]
    return float(np.median(known)) if known else None


def choose_sigma(
    planes: Iterable[Any], reference: float | None, *, ratio: float = NOISY_RATIO
) -> float | None:
    """The smoothing a session needs to look as clean as the training data; None: none.

    Parameters
    ----------
    planes : iterable of array-like, each (Y, X) or (C, Y, X)
        Planes of the new session (as they are; any intensity scale).
    reference : float or None
        The training inputs' noise level (``normalization["noise"]``); None:
        unknown, so nothing is smoothed.
    ratio : float
        A session at least this many times as noisy as ``reference`` is smoothed.

    Returns
    -------
    float or None
        :data:`GENTLE_SIGMA` for a session ``ratio`` to :data:`VERY_NOISY_RATIO`
        times as noisy as ``reference``, :data:`STRONG_SIGMA` above; None for a
        session that is not that noisy, or when it cannot be told.
    """
    if reference is None or not reference > 0:
        return None
    level = session_noise(planes)
    if level is None or level < ratio * reference:
        return None
    return STRONG_SIGMA if level >= VERY_NOISY_RATIO * reference else GENTLE_SIGMA
