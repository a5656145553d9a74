"""Intensity normalization of model inputs, computed once per image or volume.

A model is trained on inputs scaled a certain way; its card says how
(:attr:`ModelCard.normalization`). The statistics (percentiles, mean and
standard deviation) are computed once over the whole image or volume, never
per tile: per-tile statistics would give every tile its own contrast and
visible seams. For big or lazy (dask, zarr) volumes they are computed on an
evenly strided subsample, which reads a few planes instead of the whole
volume.

Supported specifications (``kind`` and its keys):

* ``{"kind": "percentile", "low": 1.0, "high": 99.8}``: ``low`` maps to 0 and
  ``high`` to 1 (the default; csbdeep/StarDist style). ``"per_channel": True``
  scales each channel by its own percentiles (RGB is scaled jointly by
  default, which keeps its colours); ``"clip": True`` clips to [0, 1].
* ``{"kind": "range", "min": 0, "max": 255}``: fixed values map to 0 and 1.
* ``{"kind": "zscore"}``: zero mean and unit standard deviation.
* ``{"kind": "none"}``: the values as float32.

Any kind but ``"none"`` may also carry ``"reference"``: the quantiles 0, 1,
..., 100 % of the model's training inputs *after* scaling (the trainer records
them, :func:`intensity_quantiles`). With ``"match": True`` the scaled image's
own quantiles are mapped onto them by one monotonic piecewise-linear curve,
fitted once per image like the rest (histogram matching): a gamma, a
different detector response or a new contrast then looks to the model as its
training data did. Scaling alone undoes only linear changes.

Any kind may carry ``"flat_field"``: each plane is first divided by its own
smoothed brightness (:mod:`.illumination`); the callers that read an image
for a model (prediction, adaptation, training data) apply it before these
statistics are measured, so it is not part of :class:`Normalizer`. So may
``"smooth"``: a Gaussian of that many pixels along Y and X for a noisy session
(:mod:`.denoise`), applied after the flat field. ``"noise"`` records the noise
level of the model's training inputs, which decides when a session is noisy.

NaN pixels are set to 0 after scaling. A constant image cannot be scaled; it
becomes all zeros, with a :class:`NormalizationWarning` that says so.

Examples
--------
>>> image = np.arange(100, dtype=np.uint16).reshape(10, 10)
>>> norm = fit_normalizer(image, {"kind": "range", "min": 0, "max": 99})
>>> out = norm(image)
>>> out.dtype, float(out.min()), float(out.max())
(dtype('float32'), 0.0, 1.0)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.checks import ImageValidationError
from .denoise import smooth_sigma
from .illumination import flat_field_fraction

#: Default specification: percentiles 1 and 99.8 over the whole image or volume.
DEFAULT_SPEC: dict[str, Any] = {"kind": "percentile", "low": 1.0, "high": 99.8}
#: Values sampled at most for the statistics of a big image.
MAX_SAMPLES = 4_000_000
#: Planes read at most from a lazy volume for its statistics.
MAX_SAMPLE_PLANES = 16
_KINDS = ("percentile", "range", "zscore", "none")
#: Quantiles (in %) of an intensity reference: 0, 1, ..., 100.
REFERENCE_QUANTILES = np.linspace(0.0, 100.0, 101)


class NormalizationWarning(UserWarning):
    """An image could not be normalized as asked; the message says what was done instead."""


@dataclass(frozen=True)
class Normalizer:
    """Maps raw intensities to float32 ``(x - offset) / scale``, the same for every tile.

    Attributes
    ----------
    offset, scale : (C,) ndarray of float64
        Per channel; one value repeated when channels are scaled jointly.
    clip : bool
        Clip the result to [0, 1].
    spec : dict
        The specification it was fitted from.
    curve : (2, K) ndarray of float64, optional
        Histogram matching applied after scaling: the image's scaled quantiles
        (row 0, increasing) map to the training reference's (row 1); None for none.
    """

    offset: np.ndarray
    scale: np.ndarray
    clip: bool = False
    spec: dict[str, Any] = field(default_factory=dict)
    curve: np.ndarray | None = None

    def __call__(self, block: Any, channel_axis: int | None = None) -> np.ndarray:
        """Normalize a block of the image (any tile, plane or slab).

        Parameters
        ----------
        block : array-like
            Pixels with the image's dtype.
        channel_axis : int, optional
            Axis of ``block`` holding the channels; None for single-channel data.

        Returns
        -------
        ndarray of float32
            Same shape as ``block``, NaN replaced by 0.
        """
        data = np.asarray(block)
        shape = [1] * data.ndim
        if channel_axis is not None and self.offset.size > 1:
            shape[channel_axis] = self.offset.size
        offset = self.offset.reshape(shape) if self.offset.size > 1 else self.offset[0]
        scale = self.scale.reshape(shape) if self.scale.size > 1 else self.scale[0]
        # float32 arithmetic is exact enough for 8/16-bit data and halves memory traffic.
        out = data.astype(np.float32)
        out -= np.float32(offset) if np.isscalar(offset) else offset.astype(np.float32)
        out *= (1.0 / np.asarray(scale)).astype(np.float32)
        if self.curve is not None:
            out = np.interp(out, self.curve[0], self.curve[1]).astype(np.float32)
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        if np.issubdtype(data.dtype, np.floating):
            np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        return out


def resolve_spec(spec: dict[str, Any] | str | None) -> dict[str, Any]:
    """Return a complete specification dict, or raise a clear ``ValueError``.

    ``None`` means the default percentile normalization; a string is a kind.
    """
    if spec is None:
        return dict(DEFAULT_SPEC)
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict) or spec.get("kind") not in _KINDS:
        raise ValueError(
            f"Unknown normalization {spec!r}; use a dict with 'kind' one of {', '.join(_KINDS)}, "
            'for example {"kind": "percentile", "low": 1.0, "high": 99.8}.'
        )
    full = dict(spec)
    if full["kind"] == "percentile":
        full.setdefault("low", DEFAULT_SPEC["low"])
        full.setdefault("high", DEFAULT_SPEC["high"])
        if not 0.0 <= float(full["low"]) < float(full["high"]) <= 100.0:
            raise ValueError(
                f"Percentiles low={full['low']} and high={full['high']} must satisfy "
                "0 <= low < high <= 100."
            )
    if full["kind"] == "range" and ("min" not in full or "max" not in full):
        raise ValueError('A "range" normalization needs "min" and "max" values.')
    flat_field_fraction(full)  # checks its value
    smooth_sigma(full)  # likewise
    if full.get("match"):
        reference = np.asarray(full.get("reference", ()), dtype=np.float64)
        if (
            reference.shape != REFERENCE_QUANTILES.shape
            or not np.all(np.isfinite(reference))
            or np.any(np.diff(reference) < 0)
        ):
            raise ValueError(
                "Matching intensities needs the model's training reference: 101 increasing "
                '"reference" quantiles. This model has none; turn matching off (no "match").'
            )
    return full


def intensity_quantiles(values: Any, *, max_samples: int = 2_000_000) -> np.ndarray:
    """Quantiles 0, 1, ..., 100 % of intensities: an intensity reference.

    Parameters
    ----------
    values : array-like
        Any shape; colour images are pooled over their channels. NaN and
        infinite values are ignored.
    max_samples : int
        Above this many values, an evenly strided subsample is used.

    Returns
    -------
    (101,) ndarray of float64
        Increasing.
    """
    flat = np.asarray(values).ravel()
    step = max(1, flat.size // max_samples)
    sample = flat[::step].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        raise ImageValidationError("There are no finite intensities to take quantiles of.")
    return np.percentile(sample, REFERENCE_QUANTILES)


def matching_curve(scaled: np.ndarray, reference: Any) -> np.ndarray | None:
    """The monotonic curve that maps the quantiles of ``scaled`` onto ``reference``.

    Parameters
    ----------
    scaled : ndarray
        Sampled intensities of the image, already scaled.
    reference : (101,) array-like
        :func:`intensity_quantiles` of the training inputs (scaled the same way).

    Returns
    -------
    (2, K) ndarray of float64 or None
        Row 0 strictly increasing (the image's quantiles), row 1 the
        reference's; None for a constant image (nothing to match).
    """
    own = intensity_quantiles(scaled)
    if own[-1] <= own[0]:
        return None
    # Equal quantiles (many pixels of one value) would make the curve ill-defined: keep the
    # first of each run, which maps that value to the lowest reference quantile it spans.
    keep = np.concatenate([[True], np.diff(own) > 0])
    return np.stack([own[keep], np.asarray(reference, np.float64)[keep]])


def fit_normalizer(
    data: Any,
    spec: dict[str, Any] | str | None = None,
    *,
    channel_axis: int | None = None,
    max_samples: int = MAX_SAMPLES,
) -> Normalizer:
    """Compute the normalization of a whole image or volume.

    Parameters
    ----------
    data : ndarray, dask array or zarr array
        The image, any dtype (uint8, uint16, int32, float32...), any number of axes.
    spec : dict or str, optional
        What to compute (see the module docstring); the default percentiles if omitted.
    channel_axis : int, optional
        The channel axis of ``data`` (RGB or multichannel), None for grey.
    max_samples : int
        Above this many values, statistics come from an evenly strided subsample.

    Returns
    -------
    Normalizer
        Apply it to any block of ``data``.

    Raises
    ------
    ImageValidationError
        If the sampled values are all NaN or infinite.

    Warns
    -----
    NormalizationWarning
        If the image is constant; it then normalizes to zeros.
    """
    spec = resolve_spec(spec)
    kind = spec["kind"]
    n_channels = 1 if channel_axis is None else int(data.shape[channel_axis])
    if kind == "none":
        return Normalizer(np.zeros(1), np.ones(1), False, spec)
    if kind == "range":
        low, high = float(spec["min"]), float(spec["max"])
        if high <= low:
            raise ValueError(f"A range normalization needs max > min, got {low} and {high}.")
        clip = bool(spec.get("clip"))
        normalizer = Normalizer(np.array([low]), np.array([high - low]), clip, spec)
        if not spec.get("match"):
            return normalizer
        sample = sample_values(data, channel_axis=channel_axis, max_samples=max_samples)
        return _with_matching(normalizer, spec, sample, channel_axis)
    sample = sample_values(data, channel_axis=channel_axis, max_samples=max_samples)
    per_channel = bool(spec.get("per_channel")) and n_channels > 1
    rows = sample if per_channel else sample.reshape(1, -1)
    offsets, scales = [], []
    for values in rows:
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if finite.size == 0:
            raise ImageValidationError(
                "The image contains only NaN or infinite values; there is nothing to normalize "
                "or segment."
            )
        if kind == "percentile":
            low, high = np.percentile(finite, [float(spec["low"]), float(spec["high"])])
        else:  # zscore
            low = float(finite.mean(dtype=np.float64))
            high = low + float(finite.std(dtype=np.float64))
        offsets.append(float(low))
        scales.append(float(high) - float(low))
    scales_arr = np.asarray(scales)
    if np.any(scales_arr <= 0) or not np.all(np.isfinite(scales_arr)):
        value = offsets[int(np.argmin(scales_arr))]
        warnings.warn(
            f"The image is constant (every sampled pixel is {value:g}); it cannot be contrast-"
            "normalized, so the model sees an all-zero input. The result is whatever the model "
            "predicts for a blank image.",
            NormalizationWarning,
            stacklevel=2,
        )
        scales_arr = np.where(scales_arr > 0, scales_arr, 1.0)
    normalizer = Normalizer(np.asarray(offsets), scales_arr, bool(spec.get("clip")), spec)
    return _with_matching(normalizer, spec, sample, channel_axis)


def _with_matching(
    normalizer: Normalizer, spec: dict[str, Any], sample: np.ndarray, channel_axis: int | None
) -> Normalizer:
    """``normalizer`` plus the histogram matching the spec asks for (if any)."""
    if not spec.get("match"):
        return normalizer
    # ``sample`` is (C, n) with channel_axis, else flat; scale it as the image will be.
    rows = sample if channel_axis is not None else sample.reshape(1, -1)
    scaled = normalizer(rows, channel_axis=0 if channel_axis is not None else None)
    curve = matching_curve(scaled, spec["reference"])
    return Normalizer(normalizer.offset, normalizer.scale, normalizer.clip, spec, curve)


def normalize(
    image: Any, spec: dict[str, Any] | str | None = None, *, channel_axis: int | None = None
) -> np.ndarray:
    """Normalize a whole in-memory image at once; see :func:`fit_normalizer`.

    Returns
    -------
    ndarray of float32
        Same shape as ``image``.
    """
    return fit_normalizer(image, spec, channel_axis=channel_axis)(image, channel_axis)


def sample_values(
    data: Any, *, channel_axis: int | None = None, max_samples: int = MAX_SAMPLES
) -> np.ndarray:
    """An evenly strided subsample of ``data``, as ``(C, n)`` values per channel.

    Lazy arrays (dask, zarr) are read only at up to :data:`MAX_SAMPLE_PLANES`
    evenly spaced planes along their first non-channel axis when they have
    three or more spatial axes, so a volume far larger than memory costs a few
    plane reads.
    """
    ndim = len(data.shape)
    channel = None if channel_axis is None else channel_axis % ndim
    spatial = [a for a in range(ndim) if a != channel]
    n_channels = 1 if channel is None else int(data.shape[channel])
    index: list[Any] = [slice(None)] * ndim
    lazy = not isinstance(data, np.ndarray)
    budget = max(max_samples // n_channels, 1)
    if lazy and len(spatial) >= 3 and data.shape[spatial[0]] > MAX_SAMPLE_PLANES:
        first = spatial[0]
        picks = np.linspace(0, data.shape[first] - 1, MAX_SAMPLE_PLANES).round().astype(int)
        index[first] = sorted(set(picks.tolist()))
        shape = {first: len(index[first])}
        rest = spatial[1:]
    else:
        shape, rest = {}, spatial
    size = math.prod(shape.get(a, data.shape[a]) for a in spatial)
    if size > budget:
        step = math.ceil((size / budget) ** (1.0 / len(rest)))
        for axis in rest:
            index[axis] = slice(None, None, step)
    picked = _read(data, tuple(index))
    if picked.dtype == bool:  # percentiles need numbers
        picked = picked.view(np.uint8)
    if channel is not None:
        picked = np.moveaxis(picked, channel, 0)
    return picked.reshape(n_channels, -1)


def _read(data: Any, index: tuple[Any, ...]) -> np.ndarray:
    lists = [i for i, part in enumerate(index) if isinstance(part, list)]
    if not lists:
        return np.asarray(data[index])
    # One list index (planes), the rest slices: read plane by plane so a lazy array
    # never materialises more than one plane at a time.
    axis = lists[0]
    planes = []
    for plane in index[axis]:
        part = list(index)
        part[axis] = slice(plane, plane + 1)
        planes.append(np.asarray(data[tuple(part)]))
    return np.concatenate(planes, axis=axis)
