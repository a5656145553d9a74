"""Smoothing a noisy session (core.inference.denoise): the rule, the filter, and prediction."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_microseg.core.inference.denoise import (
    GENTLE_SIGMA,
    NOISY_RATIO,
    STRONG_SIGMA,
    VERY_NOISY_RATIO,
    apply_smoothing,
    choose_sigma,
    noise_level,
    radius,
    smooth_planes,
    smooth_sigma,
)
from napari_microseg.core.inference.normalize import resolve_spec
from napari_microseg.core.inference.predict import predict


def structure(size: int = 128) -> np.ndarray:
    """Flat squares of 8 px in [0, 1]: no fine detail, so no Haar noise of its own."""
    return np.kron(np.random.default_rng(0).random((size // 8, size // 8)), np.ones((8, 8)))


def test_the_noise_level_is_the_noise_standard_deviation_on_the_percentile_scale():
    rng = np.random.default_rng(1)
    clean = structure()
    assert noise_level(clean) < 0.01  # only the squares' edges carry detail
    for sigma in (0.02, 0.05, 0.1):
        noisy = clean + rng.normal(0.0, sigma, clean.shape)
        low, high = np.percentile(noisy, (1.0, 99.8))
        assert noise_level(noisy) * (high - low) == pytest.approx(sigma, rel=0.1)
        # Any brightness and contrast: the level is on the image's own scale.
        assert noise_level(40.0 * noisy + 7.0) == pytest.approx(noise_level(noisy), rel=1e-4)
    # Colour: the channels' mean; constant planes cannot tell.
    rgb = np.stack([clean, clean, clean]) + rng.normal(0.0, 0.05, (3, *clean.shape))
    assert noise_level(rgb) == pytest.approx(noise_level(rgb.mean(axis=0)), rel=1e-5)
    assert noise_level(np.full((8, 8), 3.0)) is None
    assert noise_level(np.arange(5.0)[None]) is None  # one row has no 2 x 2 neighbourhood
    with pytest.raises(ValueError, match="plane"):
        noise_level(np.zeros((2, 3, 4, 5)))


def test_a_session_is_smoothed_by_how_much_noisier_it_is_than_the_training_data():
    rng = np.random.default_rng(2)
    clean = structure()
    reference = noise_level(clean + rng.normal(0.0, 0.02, clean.shape))

    def session(times: float) -> list[np.ndarray]:
        return [clean + rng.normal(0.0, 0.02 * times, clean.shape) for _ in range(3)]

    assert choose_sigma(session(1.0), reference) is None
    assert choose_sigma(session(0.9 * NOISY_RATIO), reference) is None
    assert choose_sigma(session(1.2 * NOISY_RATIO), reference) == GENTLE_SIGMA
    assert choose_sigma(session(1.5 * VERY_NOISY_RATIO), reference) == STRONG_SIGMA
    # Without the training data's level (or with a useless one) nothing is smoothed.
    assert choose_sigma(session(10.0), None) is None
    assert choose_sigma(session(10.0), 0.0) is None
    assert choose_sigma([np.ones((8, 8))], reference) is None


def test_only_y_and_x_are_smoothed_and_lazy_results_equal_eager_ones():
    rng = np.random.default_rng(3)
    stack = rng.integers(0, 255, (3, 24, 20, 2)).astype(np.uint8)  # ZYXC
    out = smooth_planes(stack, "ZYXC", 1.0)
    assert out.dtype == np.float32 and out.shape == stack.shape
    for z in range(3):  # neither slices nor channels mix
        for c in range(2):
            expected = ndi.gaussian_filter(stack[z, :, :, c].astype(np.float32), 1.0)
            np.testing.assert_allclose(out[z, :, :, c], expected, rtol=1e-6, atol=1e-4)
    # The brightness is kept: an impulse spreads, its sum stays.
    impulse = np.zeros((15, 15), np.float32)
    impulse[7, 7] = 1.0
    assert smooth_planes(impulse, "YX", 1.0).sum() == pytest.approx(1.0, rel=1e-5)
    # A stack read lazily, plane by plane: same numbers, still lazy.
    lazy = smooth_planes(stack, "ZYXC", 1.0, lazy=True)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), out)
    dask_input = da.from_array(stack, chunks=(1, 8, 8, 1))
    smoothed = smooth_planes(dask_input, "ZYXC", 1.0)
    assert isinstance(smoothed, da.Array)  # dask input always stays lazy
    np.testing.assert_array_equal(smoothed.compute(), out)
    assert radius(1.0) == 4 and radius(0.7) == 3


def test_a_sigma_in_model_pixels_is_divided_by_the_zoom_still_to_come():
    rng = np.random.default_rng(5)
    plane = rng.random((30, 40)).astype(np.float32)
    spec = {"kind": "none", "smooth": 1.0}
    # Y will be doubled (1 model pixel = 0.5 image pixel), X halved (= 2 image pixels).
    zoomed = apply_smoothing(plane, "YX", spec, zoom=(2.0, 0.5))
    np.testing.assert_array_equal(zoomed, smooth_planes(plane, "YX", (0.5, 2.0)))
    expected = ndi.gaussian_filter(plane, (0.5, 2.0), mode="reflect")
    np.testing.assert_allclose(zoomed, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(apply_smoothing(plane, "YX", spec), smooth_planes(plane, "YX", 1))


def test_the_spec_says_whether_and_how_much():
    assert smooth_sigma(None) is None and smooth_sigma({"kind": "none"}) is None
    assert smooth_sigma({"smooth": 0.7}) == 0.7 and smooth_sigma({"smooth": 1}) == 1.0
    image = np.ones((4, 4))
    assert apply_smoothing(image, "YX", {"kind": "none"}) is image
    for bad in (0, -1.0, 100, True, "wide"):
        with pytest.raises(ValueError, match="Gaussian sigma in pixels"):
            resolve_spec({"kind": "none", "smooth": bad})


@pytest.mark.parametrize("lazy", [False, True])
def test_prediction_smooths_the_image_when_the_model_asks(lazy, identity_model):
    rng = np.random.default_rng(4)
    stack = (structure(96)[None] * 200 + rng.normal(0, 20, (2, 96, 96))).astype(np.float32)
    image = da.from_array(stack, chunks=(1, 48, 48)) if lazy else stack
    model = identity_model({"kind": "none", "smooth": 1.0})
    result = predict(model, image, axes="ZYX", tile_size=64, amp=False, device="cpu")
    expected = smooth_planes(stack, "ZYX", 1.0)
    np.testing.assert_allclose(np.asarray(result)[0], expected, rtol=1e-5, atol=1e-3)
    plain = predict(identity_model({"kind": "none"}), stack, axes="ZYX", tile_size=64, amp=False)
    np.testing.assert_allclose(plain[0], stack, rtol=1e-5, atol=1e-3)
