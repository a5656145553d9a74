"""Histogram matching to a model's training reference (``normalization["match"]``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_microseg.core.inference.device_tiles import DeviceNormalizer, apply_curve
from napari_microseg.core.inference.normalize import (
    fit_normalizer,
    intensity_quantiles,
    normalize,
    resolve_spec,
)


def spec_with_reference(image: np.ndarray, **extra) -> dict:
    """The default percentile spec, with the reference of ``image`` as a trainer records it."""
    scaled = normalize(image, {"kind": "percentile"})
    return {"kind": "percentile", "reference": intensity_quantiles(scaled).tolist(), **extra}


def test_matching_undoes_a_gamma_change_that_scaling_alone_leaves():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4096, (96, 96)).astype(np.uint16)
    expected = normalize(image, {"kind": "percentile"})
    changed = (4095.0 * (image / 4095.0) ** 2.2).astype(np.float32)

    scaled_only = normalize(changed, spec_with_reference(image))
    matched = normalize(changed, spec_with_reference(image, match=True))

    assert np.abs(scaled_only - expected).mean() > 0.1  # a gamma is not a linear change
    np.testing.assert_allclose(matched, expected, atol=0.02)
    assert matched.dtype == np.float32


def test_matching_is_one_curve_for_the_whole_image_so_tiles_agree():
    rng = np.random.default_rng(1)
    image = rng.gamma(2.0, 300.0, (64, 64)).astype(np.float32)
    normalizer = fit_normalizer(image, spec_with_reference(image[::-1] ** 0.5, match=True))
    whole = normalizer(image)
    np.testing.assert_array_equal(normalizer(image[:32]), whole[:32])
    np.testing.assert_array_equal(normalizer(image[:, 17:40]), whole[:, 17:40])
    # Monotonic: brighter stays brighter.
    order = np.argsort(image.ravel())
    assert np.all(np.diff(whole.ravel()[order]) >= 0)


def test_a_constant_image_is_not_matched_and_nan_stays_zero():
    image = np.full((8, 8), 5.0, np.float32)
    with pytest.warns(UserWarning):
        normalizer = fit_normalizer(image, spec_with_reference(np.arange(64.0), match=True))
    assert normalizer.curve is None
    rng = np.random.default_rng(2)
    noisy = rng.random((16, 16)).astype(np.float32)
    noisy[3, 4] = np.nan
    out = normalize(noisy, spec_with_reference(np.arange(256.0).reshape(16, 16), match=True))
    assert out[3, 4] == 0.0 and np.isfinite(out).all()


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "percentile", "match": True},
        {"kind": "percentile", "match": True, "reference": [0.0, 1.0]},
        {"kind": "percentile", "match": True, "reference": list(np.linspace(1, 0, 101))},
    ],
)
def test_matching_without_a_valid_reference_is_a_clear_error(spec):
    with pytest.raises(ValueError, match="reference"):
        resolve_spec(spec)


def test_a_reference_without_match_changes_nothing():
    rng = np.random.default_rng(3)
    image = rng.random((32, 32)).astype(np.float32)
    plain = normalize(image, {"kind": "percentile"})
    np.testing.assert_array_equal(normalize(image, spec_with_reference(image**3)), plain)


def test_the_device_curve_is_numpys_interp():
    rng = np.random.default_rng(4)
    xs = np.sort(rng.random(30)) * 2 - 0.5
    ys = np.sort(rng.random(30))
    x = rng.normal(0.5, 0.8, 5000).astype(np.float32)
    x[:3] = [xs[0], xs[-1], xs[7]]  # the ends and a knot exactly
    curve = torch.tensor(np.stack([xs, ys]), dtype=torch.float32)
    got = apply_curve(torch.from_numpy(x), curve).numpy()
    np.testing.assert_allclose(
        got, np.interp(x, xs.astype(np.float32), ys.astype(np.float32)), atol=1e-6
    )


def test_the_device_normalizer_matches_as_the_host_does():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, (40, 50)).astype(np.float32)
    image[0, 0] = np.nan
    normalizer = fit_normalizer(image, spec_with_reference(np.sqrt(image[1:]), match=True))
    assert normalizer.curve is not None
    host = normalizer(image)
    band = torch.from_numpy(image)[None, None]
    device = DeviceNormalizer(normalizer, torch.device("cpu"))(band)[0, 0].numpy()
    np.testing.assert_allclose(device, host, atol=1e-6)
