"""Percentile (and other) normalization, computed once per image or volume."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_microseg.core.inference.normalize import (
    MAX_SAMPLE_PLANES,
    NormalizationWarning,
    fit_normalizer,
    normalize,
    resolve_spec,
    sample_values,
)
from napari_microseg.core.io.checks import ImageValidationError


def _ramp(dtype, shape=(40, 50), top=1000):
    values = np.linspace(0, top, np.prod(shape)).reshape(shape)
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_percentiles_map_to_zero_and_one(dtype):
    top = 250 if dtype == np.uint8 else 60000 if dtype == np.uint16 else 1e6
    image = _ramp(dtype, top=top)
    out = normalize(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    low, high = np.percentile(image, [1.0, 99.8])
    np.testing.assert_allclose(out[image == image.min()], -low / (high - low), rtol=1e-5)
    assert abs(float(np.percentile(out, 1.0))) < 1e-3
    assert abs(float(np.percentile(out, 99.8)) - 1.0) < 1e-3


def test_rgb_is_scaled_jointly_unless_per_channel():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 100, size=(30, 30, 3)).astype(np.uint8)
    rgb[..., 2] += 100  # a bluish image stays bluish with joint scaling
    joint = normalize(rgb, channel_axis=-1)
    assert joint[..., 2].mean() > joint[..., 0].mean() + 0.3
    per = normalize(
        rgb, {"kind": "percentile", "low": 0, "high": 100, "per_channel": True}, channel_axis=-1
    )
    for c in range(3):
        assert per[..., c].min() == 0.0 and per[..., c].max() == 1.0


@pytest.mark.parametrize("value", [0, 7])
def test_constant_image_warns_and_gives_zeros(value):
    image = np.full((20, 20), value, np.uint16)
    with pytest.warns(NormalizationWarning, match="constant"):
        out = normalize(image)
    assert np.all(out == 0.0) and np.all(np.isfinite(out))


def test_nans_are_ignored_in_statistics_and_zeroed():
    image = _ramp(np.float32)
    clean = normalize(image)
    image[5:10, 5:10] = np.nan
    norm = fit_normalizer(image)
    out = norm(image)
    assert np.all(np.isfinite(out)) and np.all(out[5:10, 5:10] == 0.0)
    # A few NaN pixels barely move the percentiles.
    np.testing.assert_allclose(out[20:, 20:], clean[20:, 20:], atol=2e-3)


def test_all_nan_image_is_refused():
    with pytest.raises(ImageValidationError, match="NaN"):
        fit_normalizer(np.full((4, 4), np.nan, np.float32))


def test_range_zscore_and_none():
    image = np.array([[0, 50], [100, 255]], np.uint8)
    out = normalize(image, {"kind": "range", "min": 0, "max": 255})
    np.testing.assert_allclose(out, image / 255.0, rtol=1e-6)
    z = normalize(image.astype(np.float32), "zscore")
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5
    raw = normalize(image, {"kind": "none"})
    assert raw.dtype == np.float32 and np.array_equal(raw, image)


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"kind": "magic"}, "Unknown normalization"),
        ({"kind": "percentile", "low": 99, "high": 1}, "low < high"),
        ({"kind": "range", "min": 0}, "needs"),
    ],
)
def test_bad_specifications_are_explained(spec, match):
    with pytest.raises(ValueError, match=match):
        resolve_spec(spec)


def test_statistics_are_per_volume_not_per_block():
    # Blocks normalized with the volume's normalizer line up with the whole volume.
    volume = _ramp(np.uint16, shape=(6, 20, 20), top=5000)
    norm = fit_normalizer(volume)
    whole = norm(volume)
    np.testing.assert_array_equal(norm(volume[2:4, :10]), whole[2:4, :10])
    # A dark block alone would be stretched to [0, 1]; with the volume's statistics it is not.
    assert norm(volume[:1]).max() < 0.2


class _CountingVolume:
    """A read-only lazy-looking volume that records how many values were read."""

    def __init__(self, data):
        self._data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim
        self.read = 0

    def __getitem__(self, index):
        block = self._data[index]
        self.read += block.size
        return block


def test_lazy_volumes_are_sampled_on_a_few_strided_planes():
    rng = np.random.default_rng(2)
    data = rng.integers(0, 4000, size=(100, 64, 64)).astype(np.uint16)
    volume = _CountingVolume(data)
    sample = sample_values(volume, max_samples=20_000)
    assert sample.shape[0] == 1 and sample.shape[1] <= 20_000
    assert volume.read <= MAX_SAMPLE_PLANES * 64 * 64
    norm = fit_normalizer(_CountingVolume(data), max_samples=20_000)
    exact = np.percentile(data, [1.0, 99.8])
    # Percentiles of the sample are within a few grey levels of the full volume's.
    assert abs(norm.offset[0] - exact[0]) < 0.01 * 4000
    assert abs(norm.offset[0] + norm.scale[0] - exact[1]) < 0.01 * 4000


def test_dask_and_zarr_volumes_normalize_like_numpy(tmp_path):
    import dask.array as da
    import zarr

    data = _ramp(np.uint16, shape=(8, 32, 32), top=60000)
    store = zarr.create_array(
        store=str(tmp_path / "v.zarr"), shape=data.shape, chunks=(2, 16, 16), dtype="uint16"
    )
    store[:] = data
    for lazy in (da.from_array(data, chunks=(2, 16, 16)), store):
        norm = fit_normalizer(lazy)
        np.testing.assert_allclose(norm(data), normalize(data), atol=1e-6)


def test_no_warning_for_ordinary_images():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normalize(_ramp(np.uint8, top=200))
