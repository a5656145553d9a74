"""In-plane resampling to a model's pixel size and back (core/inference/resample.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.core.inference.resample import (
    in_plane_spacing,
    nearest_planes,
    resample_plan,
    resample_plane_job,
)
from napari_microseg.core.progress import Progress, drain


def test_in_plane_spacing_knows_unknown_sizes():
    assert in_plane_spacing((0.05, 0.01, 0.02), "ZYX") == (0.01, 0.02)
    assert in_plane_spacing((0.01, 0.02), "YXC") == (0.01, 0.02)  # no C in the spacing
    assert in_plane_spacing((0.01, 0.02), "CYX") == (0.01, 0.02)
    assert in_plane_spacing((0.3, 0.01, 0.02), "YXZ") == (0.3, 0.01)  # by letter
    assert in_plane_spacing(None, "YX") is None
    assert in_plane_spacing((1.0, 1.0), "YX") is None  # napari's unitless default
    assert in_plane_spacing((2.0, 1.0, 1.0), "ZYX") is None
    assert in_plane_spacing((0.0, 0.01), "YX") is None
    assert in_plane_spacing((0.01,), "YX") is None


def test_plan_resamples_only_y_and_x_outside_the_tolerance():
    plan = resample_plan(0.005, (0.05, 0.01, 0.01), "ZYX", (4, 100, 61))
    assert plan is not None
    assert plan.factor == (2.0, 2.0) and plan.shape == (4, 200, 122)  # Z kept
    assert plan.area_factor == 4.0
    rgb = resample_plan(0.02, (0.01, 0.01), "YXC", (100, 60, 3))
    assert rgb is not None and rgb.shape == (50, 30, 3)  # channels kept
    assert resample_plan(0.005, (0.006, 0.006), "YX", (10, 10)) is None  # 1.2x: within 1.25x
    assert resample_plan(0.005, (0.0041, 0.0041), "YX", (10, 10)) is None  # 0.82x
    assert resample_plan(0.005, (0.0065, 0.0065), "YX", (10, 10)) is not None  # 1.3x
    assert resample_plan(None, (0.01, 0.01), "YX", (10, 10)) is None
    assert resample_plan(0.005, None, "YX", (10, 10)) is None
    assert resample_plan(0.005, (1.0, 1.0), "YX", (10, 10)) is None
    assert "5 nm" in plan.describe(0.005) and "100x61 to 200x122" in plan.describe(0.005)


def test_round_trip_keeps_the_shape_and_constant_images():
    image = np.full((3, 17, 23), 0.25, np.float32)
    up = drain(resample_plane_job(image, 1, 2, (34, 46)), show=False)
    assert up.shape == (3, 34, 46) and up.dtype == np.float32
    back = drain(resample_plane_job(up, 1, 2, (17, 23)), show=False)
    assert back.shape == image.shape
    np.testing.assert_allclose(back, image, atol=1e-6)


def test_upsampling_is_linear_on_pixel_centres():
    ramp = np.tile(np.arange(8, dtype=np.float64), (4, 1))  # value = x
    up = drain(resample_plane_job(ramp, 0, 1, (8, 16)), show=False)
    assert up.dtype == np.float32  # never float64
    centres = (np.arange(16) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(up[2, 1:-1], centres[1:-1], atol=1e-5)  # borders clamp
    assert up[0, 0] == 0 and up[0, -1] == 7


def test_integer_images_keep_their_dtype_and_axis_order_is_respected():
    image = np.zeros((8, 6, 2), np.uint8)  # YXC
    image[2:6, 1:3, 1] = 200
    out = drain(resample_plane_job(image, 0, 1, (16, 12)), show=False)
    assert out.dtype == np.uint8 and out.shape == (16, 12, 2)
    assert out[..., 0].max() == 0 and out[8, 4, 1] == 200
    xy = np.ascontiguousarray(np.arange(12, dtype=np.float32).reshape(3, 4).T)  # (X, Y)
    swapped = drain(resample_plane_job(xy, 1, 0, (3, 8)), show=False)  # Y axis 1, X axis 0
    assert swapped.shape == (8, 3)
    expected = drain(resample_plane_job(xy.T, 0, 1, (3, 8)), show=False)
    np.testing.assert_allclose(swapped, expected.T)


def test_progress_counts_planes():
    events = []
    job = resample_plane_job(np.zeros((5, 2, 4, 4), np.float32), 2, 3, (8, 8), message="m")
    drain(job, show=False, on_progress=events.append)
    assert all(isinstance(e, Progress) and e.total == 10 for e in events)
    assert events[0].step == 0 and events[-1].step == 10
    assert [e.step for e in events] == sorted(e.step for e in events)


def test_nearest_planes_keeps_ids():
    labels = np.array([[[1, 2], [3, 4]]], np.uint32)
    up = nearest_planes(labels, 1, 2, (4, 4))
    assert up.dtype == np.uint32
    np.testing.assert_array_equal(up[0], np.kron([[1, 2], [3, 4]], np.ones((2, 2), int)))
    np.testing.assert_array_equal(nearest_planes(up, 1, 2, (2, 2)), labels)


@pytest.mark.parametrize("size", [(5, 7), (40, 3)])
def test_any_size_comes_back_exactly(size):
    image = np.random.default_rng(0).random((11, 13)).astype(np.float32)
    out = drain(resample_plane_job(image, 0, 1, size), show=False)
    assert out.shape == size
    back = drain(resample_plane_job(out, 0, 1, (11, 13)), show=False)
    assert back.shape == (11, 13) and 0 <= back.min() and back.max() <= 1
