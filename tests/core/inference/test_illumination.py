"""Flat-field correction of uneven illumination (#21), and prediction with a model that wants it."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_microseg.core.inference.illumination import (
    FLAT_FIELD_FRACTION,
    apply_flat_field,
    correct_illumination,
    flat_field_fraction,
)
from napari_microseg.core.inference.normalize import resolve_spec
from napari_microseg.core.inference.predict import predict


def checkerboard(size: int = 128, square: int = 8) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return 100.0 + 50.0 * ((y // square + x // square) % 2)


def gradient(size: int = 128) -> np.ndarray:
    """Illumination from 0.5 on the left to 1.5 on the right."""
    return np.broadcast_to(0.5 + np.arange(size) / size, (size, size))


def thirds(image: np.ndarray) -> tuple[float, float]:
    return float(image[:, 8:40].mean()), float(image[:, 88:120].mean())


def test_a_gradient_is_removed_and_the_mean_brightness_kept():
    lit = checkerboard() * gradient()
    out = correct_illumination(lit, "YX", FLAT_FIELD_FRACTION)
    left, right = thirds(out)
    assert out.dtype == np.float32 and out.shape == lit.shape
    assert abs(left / right - 1) < 0.1  # was 0.52
    assert abs(out.mean() / lit.mean() - 1) < 0.02
    # The pattern survives: neighbouring squares still differ as 100 and 150 do.
    one, other = out[64, 60:64].mean(), out[64, 68:72].mean()
    assert min(one, other) / max(one, other) == pytest.approx(100 / 150, rel=0.05)


def test_an_evenly_lit_image_is_left_nearly_as_it_is():
    even = checkerboard()
    out = correct_illumination(even, "YX", FLAT_FIELD_FRACTION)
    assert np.abs(out - even).max() / even.mean() < 0.05


def test_colour_channels_share_one_gain_so_hues_are_kept():
    rgb = np.stack([checkerboard(), 0.5 * checkerboard(), np.full((128, 128), 60.0)], axis=-1)
    lit = rgb * gradient()[..., None]
    out = correct_illumination(lit, "YXC", FLAT_FIELD_FRACTION)
    np.testing.assert_allclose(out[..., 1] / out[..., 0], 0.5, rtol=1e-5)
    left, right = thirds(out[..., 2])
    assert abs(left / right - 1) < 0.1


def test_each_plane_of_a_stack_is_corrected_alone_whatever_the_axis_order():
    lit = np.stack([checkerboard() * gradient(), checkerboard() * gradient()[:, ::-1]])
    out = correct_illumination(lit, "ZYX", 0.2)
    for z in range(2):
        np.testing.assert_array_equal(out[z], correct_illumination(lit[z], "YX", 0.2))
    moved = correct_illumination(np.moveaxis(lit, 0, -1), "YXZ", 0.2)
    np.testing.assert_array_equal(np.moveaxis(moved, -1, 0), out)


def test_dask_and_lazy_results_equal_the_eager_ones_and_stay_lazy():
    lit = np.stack([checkerboard() * gradient()] * 3).astype(np.uint16)
    eager = correct_illumination(lit, "ZYX", FLAT_FIELD_FRACTION)
    lazy = correct_illumination(lit, "ZYX", FLAT_FIELD_FRACTION, lazy=True)
    from_dask = correct_illumination(
        da.from_array(lit, chunks=(2, 64, 64)), "ZYX", FLAT_FIELD_FRACTION
    )
    for result in (lazy, from_dask):
        assert isinstance(result, da.Array) and result.dtype == np.float32
        np.testing.assert_array_equal(result.compute(), eager)
    # One 2D image is corrected at once, lazy or not.
    assert isinstance(correct_illumination(lit[0], "YX", 0.125, lazy=True), np.ndarray)


def test_integer_images_stay_in_their_range_and_zero_centred_data_are_untouched():
    lit = np.clip(checkerboard() * gradient() * 1.6, 0, 255).astype(np.uint8)
    out = correct_illumination(lit, "YX", FLAT_FIELD_FRACTION)
    assert out.min() >= 0 and out.max() <= 255
    centred = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    centred -= centred.mean() + 0.5  # no positive brightness to divide by
    np.testing.assert_array_equal(correct_illumination(centred, "YX", 0.125), centred)


def test_the_spec_says_whether_and_how_much():
    assert flat_field_fraction(None) is None
    assert flat_field_fraction({"kind": "none"}) is None
    assert flat_field_fraction({"flat_field": False}) is None
    assert flat_field_fraction({"flat_field": True}) == FLAT_FIELD_FRACTION
    assert flat_field_fraction({"flat_field": 0.25}) == 0.25
    image = np.ones((4, 4))
    assert apply_flat_field(image, "YX", {"kind": "none"}) is image
    for bad in (0, -0.1, 2, "wide"):
        with pytest.raises(ValueError, match="fraction of the plane's shorter side"):
            resolve_spec({"kind": "none", "flat_field": bad})


@pytest.mark.parametrize("lazy", [False, True])
def test_prediction_corrects_the_image_when_the_model_asks(lazy, identity_model):
    lit = (checkerboard() * gradient()).astype(np.float32)
    stack = np.stack([lit, lit[:, ::-1]])
    image = da.from_array(stack, chunks=(1, 64, 64)) if lazy else stack
    model = identity_model({"kind": "none", "flat_field": FLAT_FIELD_FRACTION})
    result = predict(model, image, axes="ZYX", tile_size=64, amp=False, device="cpu")
    expected = correct_illumination(stack, "ZYX", FLAT_FIELD_FRACTION)
    np.testing.assert_allclose(np.asarray(result)[0], expected, rtol=1e-5, atol=1e-3)
    # Without it the gradient is still there.
    plain = predict(identity_model({"kind": "none"}), stack, axes="ZYX", tile_size=64, amp=False)
    np.testing.assert_allclose(plain[0], stack, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("axes", ["ZYXC", "YXZ", "YX"])
def test_a_region_is_corrected_as_the_whole_volume_is(axes):
    """What block-by-block prediction uses: every plane's background, applied to a part."""
    from napari_microseg.core.inference.illumination import measure_planes

    shape = {"Z": 3, "Y": 40, "X": 50, "C": 3}
    rng = np.random.default_rng(1)
    volume = rng.integers(20, 200, [shape[a] for a in axes]).astype(np.float32)
    ramp = np.linspace(0.4, 1.6, shape["X"]).reshape([-1 if a == "X" else 1 for a in axes])
    volume = np.clip(volume * ramp, 0, 255).astype(np.uint8)
    whole = correct_illumination(volume, axes, FLAT_FIELD_FRACTION)
    gains = measure_planes(volume, axes, FLAT_FIELD_FRACTION)
    spans = {"Z": slice(1, 3), "Y": slice(5, 30), "X": slice(10, 45)}
    region = tuple(spans[a] for a in axes if a != "C")
    index = tuple(spans.get(a, slice(None)) for a in axes)
    np.testing.assert_array_equal(gains.apply(volume[index], region), whole[index])
