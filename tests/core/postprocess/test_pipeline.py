"""Post-processing: thresholds, hysteresis, watershed, cleanup and the pipeline, 2D and 3D."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.filters import apply_hysteresis_threshold

from napari_microseg.core.postprocess import (
    PostprocessPipeline,
    ProbabilityError,
    apply_threshold,
    check_probability,
    closing,
    fill_holes,
    hysteresis,
    label_components,
    opening,
    postprocess,
    relabel_sequential,
    remove_small_holes,
    remove_small_objects,
    threshold_otsu,
    thresholds,
    watershed_split,
)
from napari_microseg.core.progress import Progress


def nd(array, ndim: int) -> np.ndarray:
    """A 2D case as is, or stacked into 3 identical slices for 3D."""
    array = np.asarray(array)
    return array if ndim == 2 else np.stack([array] * 3)


def two_blobs(ndim: int, gap: float = 14) -> np.ndarray:
    """Two touching disks (2D) or balls (3D) of radius 9, centres ``gap`` apart."""
    shape = (40, 30, 50)[-ndim:] if ndim == 3 else (30, 50)
    grid = np.indices(shape)
    centre = np.array(shape) / 2
    offset = np.zeros(ndim)
    offset[-1] = gap / 2
    d1 = np.sqrt(((grid.T - (centre - offset)) ** 2).sum(-1)).T
    d2 = np.sqrt(((grid.T - (centre + offset)) ** 2).sum(-1)).T
    return np.minimum(d1, d2) < 9


# ----------------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([[0.0, 1.5]], "outside [0, 1]"),
        ([[-0.2, 0.5]], "outside [0, 1]"),
        ([[np.nan, 0.5]], "NaN"),
    ],
)
def test_probabilities_outside_unit_range_are_refused(values, message):
    with pytest.raises(ProbabilityError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_probability(np.array(values, np.float32))


def test_eight_bit_maps_get_a_rescaling_hint():
    with pytest.raises(ProbabilityError, match="divide by 255"):
        apply_threshold(np.array([[0, 255]], np.uint8), 0.5)


def test_masks_and_unit_floats_pass():
    check_probability(np.array([[True, False]]))
    check_probability(np.array([[0.0, 1.0 + 1e-6]], np.float32))  # float round-off is fine


# ----------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("ndim", [2, 3])
def test_otsu_separates_two_levels(ndim):
    prob = nd([[0.1, 0.1, 0.9], [0.15, 0.8, 0.9]], ndim).astype(np.float32)
    t = threshold_otsu(prob)
    assert 0.15 < t < 0.8
    np.testing.assert_array_equal(apply_threshold(prob, "otsu"), prob > 0.5)


def test_otsu_of_a_constant_map_is_one_half():
    assert threshold_otsu(np.zeros((4, 4))) == 0.5
    assert not apply_threshold(np.zeros((4, 4)), "otsu").any()
    assert apply_threshold(np.ones((4, 4)), "otsu").all()


def test_fixed_threshold_is_strict():
    prob = np.array([[0.2, 0.5], [0.7, 1.0]])
    np.testing.assert_array_equal(apply_threshold(prob, 0.5), [[False, False], [True, True]])


def test_slabs_give_the_whole_volume_answer(monkeypatch):
    rng = np.random.default_rng(1)
    prob = rng.random((5, 6, 7)).astype(np.float32)
    whole = (threshold_otsu(prob), hysteresis(prob), thresholds.probability_histogram(prob)[0])
    pipeline = PostprocessPipeline(fill_holes=True, min_size=3)
    labels = pipeline.run(prob)
    monkeypatch.setattr(thresholds, "SLAB_VOXELS", 50)  # slabs of one z-plane
    assert len(list(thresholds.iter_slabs(prob.shape))) == 5
    assert threshold_otsu(prob) == whole[0]
    np.testing.assert_array_equal(hysteresis(prob), whole[1])
    np.testing.assert_array_equal(thresholds.probability_histogram(prob)[0], whole[2])
    np.testing.assert_array_equal(pipeline.run(prob), labels)


@pytest.mark.parametrize("ndim", [2, 3])
def test_hysteresis_keeps_regions_reaching_high(ndim):
    prob = nd([[0.9, 0.6, 0.0, 0.6, 0.6, 0.0, 0.4]], ndim)
    expected = nd([[1, 1, 0, 0, 0, 0, 0]], ndim).astype(bool)
    np.testing.assert_array_equal(hysteresis(prob, 0.5, 0.8), expected)


@pytest.mark.parametrize("shape", [(17, 23), (4, 9, 11)])
def test_hysteresis_matches_scikit_image(shape):
    prob = np.random.default_rng(2).random(shape)
    np.testing.assert_array_equal(
        hysteresis(prob, 0.4, 0.9), apply_hysteresis_threshold(prob, 0.4, 0.9)
    )


def test_hysteresis_defaults_come_from_otsu():
    prob = np.array([[0.05, 0.1, 0.7, 0.75, 0.95]])
    t = threshold_otsu(prob)
    low, high = thresholds.default_hysteresis_thresholds(prob)
    assert low == t and high == pytest.approx((t + 0.95) / 2)
    assert thresholds.default_hysteresis_thresholds(prob, high=0.05) == (0.05, 0.05)


# ----------------------------------------------------------------------------- cleanup


@pytest.mark.parametrize("ndim", [2, 3])
def test_components_are_sequential_uint32(ndim):
    mask = nd([[1, 0, 1], [1, 0, 0], [0, 1, 1]], ndim).astype(bool)
    labels = label_components(mask)
    assert labels.dtype == np.uint32 and labels.max() == 3
    assert label_components(mask, connectivity=ndim).max() == 2  # corners join


@pytest.mark.parametrize("ndim", [2, 3])
def test_remove_small_objects_in_pixels_and_microns(ndim):
    labels = nd([[1, 1, 0, 2], [1, 1, 0, 0]], ndim)
    expected = nd([[1, 1, 0, 0], [1, 1, 0, 0]], ndim)
    size = 4 if ndim == 2 else 12
    np.testing.assert_array_equal(remove_small_objects(labels, size), expected)
    np.testing.assert_array_equal(remove_small_objects(labels > 0, size), expected > 0)
    spacing = (0.5,) * ndim  # a pixel is 0.25 µm² (0.125 µm³)
    physical = size * 0.5**ndim
    np.testing.assert_array_equal(remove_small_objects(labels, physical, spacing=spacing), expected)


def test_holes_are_enclosed_by_one_object_and_off_the_border():
    labels = np.array(
        [
            [0, 1, 1, 1, 0, 2, 2, 2],
            [0, 1, 0, 1, 0, 2, 0, 0],  # object 2's notch opens to the border
            [0, 1, 1, 1, 3, 3, 3, 0],
            [0, 0, 0, 0, 3, 0, 3, 0],
            [0, 0, 0, 0, 3, 3, 3, 0],
        ]
    )
    filled = fill_holes(labels)
    assert filled[1, 2] == 1 and filled[3, 5] == 3
    assert filled[1, 6] == 0 and filled[1, 7] == 0 and filled[0, 0] == 0
    np.testing.assert_array_equal(fill_holes(labels > 0), filled > 0)


def test_a_gap_between_touching_objects_is_not_a_hole():
    labels = np.array([[1, 1, 2, 2], [1, 0, 0, 2], [1, 1, 2, 2]])
    np.testing.assert_array_equal(fill_holes(labels), labels)
    assert fill_holes(labels > 0).all()  # as a mask, it is one object's hole


@pytest.mark.parametrize("ndim", [2, 3])
def test_remove_small_holes_by_size(ndim):
    ring = np.ones((7, 7, 7)[:ndim] if ndim == 3 else (7, 7), int)
    small = (slice(1, 2),) * ndim
    large = (slice(3, 6),) * ndim
    ring[small] = 0
    ring[large] = 0
    out = remove_small_holes(ring, 1)
    assert out[small].all() and not out[large].any()
    assert remove_small_holes(ring, 3**ndim)[large].all()


def test_opening_removes_specks_and_closing_bridges_gaps():
    mask = np.zeros((9, 9), bool)
    mask[1:8, 1:4] = True
    mask[4, 6] = True  # speck
    assert not opening(mask, 1)[4, 6] and opening(mask, 1)[4, 2]
    gap = np.zeros((5, 9), bool)
    gap[1:4, 1:4] = gap[1:4, 5:8] = True
    assert closing(gap, 1.5)[2, 4]
    with pytest.raises(ValueError, match="label image"):
        opening(mask.astype(int), 1)


def test_relabel_keeps_large_ids_exact():
    labels = np.array([[0, 70000, 70000], [5, 0, 2**40]], np.uint64)
    out = relabel_sequential(labels)
    np.testing.assert_array_equal(out, [[0, 2, 2], [1, 0, 3]])
    assert out.dtype == np.uint32


# ----------------------------------------------------------------------------- watershed


@pytest.mark.parametrize("ndim", [2, 3])
def test_watershed_splits_touching_objects(ndim):
    mask = two_blobs(ndim)
    assert label_components(mask).max() == 1
    labels = watershed_split(mask)
    assert labels.max() == 2 and labels.dtype == np.uint32
    np.testing.assert_array_equal(labels > 0, mask)
    # Each object is centred on its own blob (centres 7 px left and right of the middle).
    x = np.indices(mask.shape)[-1]
    middle = mask.shape[-1] / 2
    for label in (1, 2):
        offset = x[labels == label].mean() - middle
        assert abs(abs(offset) - 7) < 1.5


@pytest.mark.parametrize(
    "options",
    [{}, {"markers": "probability"}, {"min_distance": 5}, {"compactness": 0.01}],
    ids=["distance", "probability", "min-distance", "compact"],
)
def test_watershed_on_probabilities(options):
    mask = two_blobs(2)
    from scipy import ndimage as ndi

    distance = ndi.distance_transform_edt(mask)
    prob = np.clip(distance / 9, 0, 1)
    assert watershed_split(prob, threshold=0.01, **options).max() == 2


def test_watershed_with_a_boundary_class():
    mask = two_blobs(2)
    from scipy import ndimage as ndi

    distance = ndi.distance_transform_edt(mask)
    cores = distance > 3
    boundary = (mask & ~cores).astype(float)
    labels = watershed_split(cores.astype(float), boundary=boundary, threshold=0.5)
    assert labels.max() == 2
    np.testing.assert_array_equal(labels > 0, mask)  # objects include their boundary ring


def test_watershed_keeps_objects_too_small_for_a_marker():
    mask = np.zeros((10, 10), bool)
    mask[2, 2] = True  # distance peak 1 < h = 2
    mask[5:9, 5:9] = True
    assert watershed_split(mask, h=2).max() == 2


# ----------------------------------------------------------------------------- pipeline


def test_pipeline_round_trips_through_json():
    pipeline = PostprocessPipeline(
        method="watershed", boundary_class=2, min_size=30, fill_holes=True, physical_units=True
    )
    stored = json.loads(json.dumps(pipeline.to_dict()))
    assert stored["schema"] == 1
    assert PostprocessPipeline.from_dict(stored) == pipeline


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"method": "magic"}, "method must be"),
        ({"method": "threshold"}, "needs a threshold"),
        ({"threshold": 1.5}, r"\[0, 1\]"),
        ({"min_size": -1}, ">= 0"),
        ({"minsize": 10}, "Unknown post-processing setting"),
    ],
)
def test_pipeline_rejects_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        PostprocessPipeline.from_dict(settings)


@pytest.mark.parametrize("ndim", [2, 3])
def test_pipeline_labels_and_cleans(ndim):
    prob = np.zeros((12, 12), np.float32)
    prob[1:6, 1:6] = 0.9
    prob[8:10, 8:10] = 0.8  # small object
    prob = nd(prob, ndim).copy()
    prob[..., 3, 3] = 0.2  # a hole
    if ndim == 3:
        prob[(0, 2), 3, 3] = 0.9  # enclosed above and below: a cavity, not a tunnel
    labels = PostprocessPipeline(fill_holes=True, min_size=5 * (1 if ndim == 2 else 3)).run(prob)
    assert labels.dtype == np.uint32 and labels.max() == 1
    np.testing.assert_array_equal(labels, nd(np.pad(np.ones((5, 5)), ((1, 6), (1, 6))), ndim))


def test_pipeline_on_a_class_stack_with_boundary():
    mask = two_blobs(2)
    from scipy import ndimage as ndi

    distance = ndi.distance_transform_edt(mask)
    cores = (distance > 3).astype(np.float32)
    boundary = (mask & (distance <= 3)).astype(np.float32)
    stack = np.stack([1 - cores - boundary, cores, boundary])
    pipeline = PostprocessPipeline(method="watershed", boundary_class=2)
    labels = pipeline.run(stack, class_axis=0)
    assert labels.max() == 2
    np.testing.assert_array_equal(labels > 0, mask)
    with pytest.raises(ValueError, match="class stack"):
        pipeline.run(cores)
    with pytest.raises(ValueError, match="3 classes"):
        PostprocessPipeline(foreground_class=5).run(stack, class_axis=0)


def test_pipeline_in_physical_units_needs_the_voxel_size():
    prob = np.zeros((8, 8), np.float32)
    prob[1:3, 1:3] = prob[4:8, 4:8] = 0.9
    pipeline = PostprocessPipeline(min_size=1.0, physical_units=True)  # 1 µm² = 16 px at 0.25 µm
    assert pipeline.run(prob, spacing=(0.25, 0.25)).max() == 1
    with pytest.raises(ValueError, match="voxel size"):
        pipeline.run(prob)


def test_resolved_pipeline_previews_one_slice_like_the_volume():
    rng = np.random.default_rng(3)
    prob = rng.random((4, 16, 16)).astype(np.float32)
    prob[0] *= 0.3  # a dim slice: its own Otsu threshold would differ
    pipeline = PostprocessPipeline(method="hysteresis")
    resolved = pipeline.resolve(prob)
    assert resolved.low is not None and resolved.high is not None
    full = resolved.run(prob)
    for z in range(4):
        preview = resolved.run(prob[z])
        # 3D components may reach the high threshold through another slice.
        assert not (preview.astype(bool) & ~full[z].astype(bool)).any()
    otsu = PostprocessPipeline().resolve(prob)
    np.testing.assert_array_equal(otsu.run(prob[0]) > 0, otsu.run(prob)[0] > 0)


def test_run_job_reports_each_stage():
    events = []
    job = PostprocessPipeline(min_size=2, fill_holes=True).run_job(np.ones((4, 4), np.float32))
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            labels = stop.value
            break
    assert all(isinstance(e, Progress) for e in events)
    assert [e.step for e in events] == [1, 2, 3, 4, 5] and events[-1].total == 5
    assert labels.max() == 1


def test_ids_above_65535_are_kept():
    prob = np.zeros((600, 600), np.float32)
    prob[::2, ::2] = 1.0  # 90,000 single-pixel objects
    labels = postprocess(prob, {"method": "threshold", "threshold": 0.5})
    assert labels.dtype == np.uint32 and labels.max() == 90000
    assert labels[-2, -2] == 90000


def test_postprocess_accepts_settings_on_top_of_a_pipeline():
    prob = np.array([[0.9, 0.9, 0.0, 0.7]], np.float32)
    base = PostprocessPipeline(method="threshold", threshold=0.5)
    np.testing.assert_array_equal(postprocess(prob, base), [[1, 1, 0, 2]])
    np.testing.assert_array_equal(postprocess(prob, base, min_size=2), [[1, 1, 0, 0]])


def test_cleanup_can_work_in_place():
    labels = np.array([[1, 1, 1, 0, 2], [1, 0, 1, 0, 0], [1, 1, 1, 0, 0]], np.uint32)
    same = fill_holes(labels, out=labels)
    assert same is labels and labels[1, 1] == 1
    assert remove_small_objects(labels, 2, out=labels) is labels and labels[0, 4] == 0
    with pytest.raises(ValueError, match="out must be"):
        remove_small_holes(labels, 1, out=np.zeros((2, 2), np.uint32))


@pytest.mark.parametrize("method", ["otsu", "hysteresis", "watershed"])
def test_cleanup_alone_after_finding_objects_equals_the_whole_pipeline(method):
    from scipy import ndimage as ndi

    from napari_microseg.core.postprocess.pipeline import PostprocessPipeline

    rng = np.random.default_rng(1)
    prob = ndi.gaussian_filter(rng.random((120, 130)), 3)
    prob = (prob - prob.min()) / np.ptp(prob)
    pipeline = PostprocessPipeline(method=method, fill_holes=True, min_size=20).resolve(prob)
    whole = pipeline.run(prob)
    assert whole.max() > 3
    np.testing.assert_array_equal(pipeline.clean(pipeline.without_cleanup().run(prob)), whole)


def test_a_resampled_recipe_scales_pixel_sizes_and_lengths_only():
    recipe = PostprocessPipeline(
        method="watershed", threshold=0.5, boundary_class=2, h=40.0, min_size=1000.0,
        max_hole_size=100.0, opening_radius=2.0, closing_radius=4.0, min_distance=6,
    )  # fmt: skip
    half = recipe.resampled((0.5, 0.5))
    assert (half.min_size, half.max_hole_size) == (250.0, 25.0)
    assert (half.opening_radius, half.closing_radius, half.h, half.min_distance) == (1, 2, 20, 3)
    assert (half.threshold, half.boundary_class, half.method) == (0.5, 2, "watershed")
    # Lengths follow the geometric mean of the axes' zooms, areas their product.
    mixed = recipe.resampled((0.25, 1.0))
    assert (mixed.min_size, mixed.h) == (250.0, 20.0)
    assert recipe.resampled((1, 1)) is recipe
    probability = PostprocessPipeline(method="watershed", markers="probability", h=0.1)
    assert probability.resampled((0.5, 0.5)).h == 0.1
    microns = PostprocessPipeline(min_size=2.0, physical_units=True)
    assert microns.resampled((0.5, 0.5)) is microns
    with pytest.raises(ValueError, match="zoom must be positive"):
        recipe.resampled((0.0, 1.0))
