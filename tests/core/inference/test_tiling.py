"""Tile plans, blend windows and the streaming merger (NumPy only, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.core.inference.tiling import (
    MIN_WEIGHT,
    TileMerger,
    TilePlan,
    blend_window,
    check_blend,
    check_overlap,
    normalized_windows,
    tile_starts,
)

OVERLAPS = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9]


@pytest.mark.parametrize("size", [8, 9, 15, 16, 17, 64, 101])
@pytest.mark.parametrize("tile", [1, 3, 4, 8])
@pytest.mark.parametrize("overlap", OVERLAPS)
def test_tile_starts_cover_every_pixel(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    covered = np.zeros(size, int)
    for start in starts:
        covered[start : start + tile] += 1
    assert covered.min() >= 1
    assert starts[0] == 0 and starts[-1] == size - tile
    assert list(starts) == sorted(set(starts))


def test_tile_starts_match_monai_positions():
    # MONAI's dense_patch_slices for 2048 px, roi 256, overlap 0.25: step 192, last clamped.
    assert tile_starts(2048, 256, 0.25) == (*range(0, 1920, 192), 1792)
    assert tile_starts(512, 256, 0.25) == (0, 192, 256)
    assert tile_starts(256, 256, 0.25) == (0,)


def test_tile_starts_reject_tile_larger_than_axis():
    with pytest.raises(ValueError, match="cannot tile"):
        tile_starts(3, 4, 0.25)


@pytest.mark.parametrize("overlap", [1.0, 1.5, -0.1, float("nan"), "a lot"])
def test_overlap_outside_unit_interval_is_refused(overlap):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        check_overlap(overlap)


def test_blend_names():
    assert check_blend("Gaussian") == "gaussian"
    assert check_blend("constant") == "average"
    with pytest.raises(ValueError, match="blend mode"):
        check_blend("median")


def test_gaussian_window_sigma_is_an_eighth_of_the_tile():
    window = blend_window(64, "gaussian")
    assert window.argmax() in (31, 32) and np.allclose(window, window[::-1])
    # exp(-x^2 / (2 sigma^2)) with sigma = 8: the weight one sigma from the centre.
    x = np.arange(64) - 31.5
    assert np.allclose(window, np.maximum(np.exp(-(x**2) / 128.0), MIN_WEIGHT))
    assert window.min() >= MIN_WEIGHT
    assert np.all(blend_window(5, "average") == 1.0)


@pytest.mark.parametrize("blend", ["gaussian", "average"])
@pytest.mark.parametrize("overlap", OVERLAPS)
def test_normalized_windows_sum_to_one_everywhere(blend, overlap):
    plan = TilePlan.create((37, 29), (8, 5), overlap)
    windows = normalized_windows(plan, blend)
    total = np.zeros(plan.shape)
    for y0, x0 in plan:
        total[y0 : y0 + 8, x0 : x0 + 5] += np.multiply.outer(windows[0][y0], windows[1][x0])
    np.testing.assert_allclose(total, 1.0, rtol=1e-12)


def _blend_plane(plane: np.ndarray, tile: int, overlap: float, blend: str, **kw) -> np.ndarray:
    """Tile ``plane`` (K, H, W), feed every tile to a merger unchanged, return the result."""
    plan = TilePlan.create(plane.shape[1:], tile, overlap)
    merger = TileMerger(
        plan,
        n_planes=1,
        n_channels=plane.shape[0],
        height=plane.shape[1],
        width=plane.shape[2],
        blend=blend,
        **kw,
    )
    pieces = []
    for y0, x0 in plan:
        merger.aggregate(plane[:, y0 : y0 + tile, x0 : x0 + tile], (0, y0, x0))
        pieces += merger.pop_ready()
    pieces += merger.finalize()
    starts = [start for start, _ in pieces]
    assert starts == sorted(starts)
    return np.concatenate([block for _, block in pieces], axis=2)[:, 0]


@pytest.mark.parametrize("shape", [(8, 8), (9, 13), (16, 15), (33, 7)])
@pytest.mark.parametrize("overlap", OVERLAPS)
@pytest.mark.parametrize("blend", ["gaussian", "average"])
def test_blending_identical_tiles_is_exact(shape, overlap, blend):
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(2, *shape)).astype(np.float32) * 1000
    result = _blend_plane(plane, 7, overlap, blend)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, plane)


def test_no_overflow_with_hundreds_of_overlapping_tiles():
    # Step 1: every interior pixel is covered by 32 x 32 = 1024 tiles; a uint8 counter
    # would wrap at 255, a float32 weight sum would drift; the normalized weights do neither.
    plane = np.full((1, 64, 64), 3.0, np.float32)
    result = _blend_plane(plane, 32, 0.99, "average")
    np.testing.assert_array_equal(result, plane)


def test_rows_stream_out_in_a_band_of_bounded_height():
    plane = np.arange(200 * 20, dtype=np.float32).reshape(1, 200, 20)
    plan = TilePlan.create((200, 20), 16, 0.25)
    merger = TileMerger(plan, n_planes=1, n_channels=1, height=200, width=20)
    released = []
    tallest = 0
    for y0, x0 in plan:
        merger.aggregate(plane[:, y0 : y0 + 16, x0 : x0 + 16], (0, y0, x0))
        tallest = max(tallest, merger._acc.shape[2])
        released += merger.pop_ready()
    released += merger.finalize()
    assert len(released) > 10  # released progressively, not at the end
    assert tallest <= 2 * 16  # the band never holds the whole plane
    np.testing.assert_array_equal(np.concatenate([b for _, b in released], axis=2)[0, 0], plane[0])


def test_row_alignment_releases_whole_chunks():
    plane = np.ones((1, 100, 10), np.float32)
    plan = TilePlan.create((100, 10), 10, 0.2)
    merger = TileMerger(plan, n_planes=1, n_channels=1, height=100, width=10, row_align=32)
    starts = []
    for y0, x0 in plan:
        merger.aggregate(plane[:, y0 : y0 + 10, x0 : x0 + 10], (0, y0, x0))
        starts += [s for s, _ in merger.pop_ready()]
    starts += [s for s, _ in merger.finalize()]
    assert all(s % 32 == 0 for s in starts)


def test_padding_rows_and_columns_are_cropped():
    plan = TilePlan.create((8, 8), 8, 0.25)
    merger = TileMerger(plan, n_planes=2, n_channels=3, height=5, width=6)
    for plane in range(2):
        merger.aggregate(np.ones((3, 8, 8), np.float32), (plane, 0, 0))
    [(start, block)] = merger.finalize()
    assert start == 0 and block.shape == (3, 2, 5, 6)


def test_merger_reports_misuse():
    plan = TilePlan.create((8, 8), 4, 0.0)
    merger = TileMerger(plan, n_planes=1, n_channels=1, height=8, width=8)
    with pytest.raises(ValueError, match="shape"):
        merger.aggregate(np.ones((2, 4, 4)), (0, 0, 0))
    merger.aggregate(np.ones((1, 4, 4)), (0, 0, 0))
    with pytest.raises(RuntimeError, match="not complete"):
        merger.finalize()


def test_plan_iterates_in_raster_order():
    plan = TilePlan.create((10, 10), 4, 0.0)
    assert list(plan)[:4] == [(0, 0), (0, 4), (0, 6), (4, 0)]
    assert len(plan) == plan.n_tiles == 9
