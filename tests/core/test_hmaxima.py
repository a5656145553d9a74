import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import h_maxima

from napari_microseg.core.hmaxima import h_maxima_in_mask, watershed_from_h_maxima


def _blobs(shape, sigma, seed, dtype):
    rng = np.random.default_rng(seed)
    prob = ndi.gaussian_filter(rng.random(shape), sigma)
    return ((prob - prob.min()) / np.ptp(prob)).astype(dtype)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["distance", "probability"])
def test_equals_skimage_h_maxima_inside_the_mask(seed, kind):
    shape = (12, 30, 34) if seed % 3 == 0 else (61, 83)
    prob = _blobs(shape, 1.5 + seed / 2, seed, np.float32 if seed % 2 else np.float64)
    cores = prob > 0.45
    footprint = ndi.generate_binary_structure(prob.ndim, prob.ndim)
    source = ndi.distance_transform_edt(cores) if kind == "distance" else np.where(cores, prob, 0)
    for h in (0.5, 1.0, 2.0, 3.0) if kind == "distance" else (0.01, 0.05, 0.2):
        expected = h_maxima(source, h, footprint=footprint).astype(bool) & cores
        np.testing.assert_array_equal(h_maxima_in_mask(source, cores, h), expected)


def test_two_peaks_kept_or_merged_by_the_depth_of_the_pass_between_them():
    # Two peaks (5 and 4) joined by a pass at 3: the lower one survives h <= 1 only.
    line = np.array([[0, 1, 5, 3, 4, 1, 0]], dtype=float)
    mask = line > 0
    assert h_maxima_in_mask(line, mask, 1.0).tolist() == [[0, 0, 1, 0, 1, 0, 0]]
    assert h_maxima_in_mask(line, mask, 1.5).tolist() == [[0, 0, 1, 0, 0, 0, 0]]
    assert not h_maxima_in_mask(line, mask, 6.0).any()  # higher than the whole image


def test_empty_mask_and_bad_input():
    image = np.zeros((5, 5))
    assert not h_maxima_in_mask(image, image > 0, 1.0).any()
    with pytest.raises(ValueError, match="positive"):
        h_maxima_in_mask(image, image > 0, 0)
    with pytest.raises(ValueError, match="constant outside"):
        h_maxima_in_mask(np.arange(25.0).reshape(5, 5), np.eye(5, dtype=bool), 1.0)


def _skimage_watershed(source, cores, h, connectivity):
    from skimage.segmentation import watershed

    full = ndi.generate_binary_structure(source.ndim, source.ndim)
    seeds, _ = ndi.label(h_maxima(source, h, footprint=full).astype(bool) & cores, structure=full)
    flooding = ndi.generate_binary_structure(source.ndim, connectivity)
    return watershed(-source, seeds, mask=cores, connectivity=flooding)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("connectivity", [1, 2])
def test_basin_merge_is_the_watershed_from_the_h_maxima(seed, connectivity):
    # On a probability map flooding-order ties are rare: equal to skimage's second flooding
    # except for a handful of tied pixels, with the same markers and object sizes.
    shape = (10, 40, 44) if seed % 2 else (90, 110)
    prob = _blobs(shape, 2.0 + seed / 2, seed, np.float64)
    cores = prob > 0.45
    source = np.where(cores, prob, 0)
    connectivity = min(connectivity, prob.ndim)
    for h in (0.02, 0.1):
        expected = _skimage_watershed(source, cores, h, connectivity)
        merged = watershed_from_h_maxima(source, cores, h, connectivity=connectivity)
        assert merged.max() == expected.max()
        assert np.count_nonzero(merged != expected) <= 0.005 * cores.sum()
        assert ((merged > 0) == (expected > 0)).all()


@pytest.mark.parametrize("seed", range(3))
def test_basin_merge_on_a_distance_map_differs_only_where_flooding_ties(seed):
    # Distance maps are full of equal values, where either flooding order is a valid
    # watershed; the objects are the same and differ in a small fraction of pixels.
    prob = _blobs((120, 130), 2.5 + seed, seed, np.float32)
    cores = prob > 0.45
    distance = ndi.distance_transform_edt(cores)
    for h in (1.0, 2.0):
        expected = _skimage_watershed(distance, cores, h, 1)
        merged = watershed_from_h_maxima(distance, cores, h, connectivity=1)
        assert merged.max() == expected.max()
        assert np.count_nonzero(merged != expected) <= 0.03 * cores.sum()
        centres = ndi.label(h_maxima_in_mask(distance, cores, h), structure=np.ones((3, 3)))[0]
        # Every marker keeps its own id under both floodings.
        np.testing.assert_array_equal(merged[centres > 0], expected[centres > 0])


def test_basin_merge_cuts_two_touching_disks_at_their_neck():
    # Disks of radius 8 and 6 joined by a neck where the distance is 4: the smaller
    # one is an object of its own while h <= 6 - 4.
    yy, xx = np.mgrid[:21, :34]
    two = ((yy - 10) ** 2 + (xx - 10) ** 2 < 64) | ((yy - 10) ** 2 + (xx - 23) ** 2 < 36)
    distance = ndi.distance_transform_edt(two)
    labels = watershed_from_h_maxima(distance, two, 2.0)
    assert labels.max() == 2 and ((labels > 0) == two).all()
    assert set(np.unique(labels[:, :16])) == {0, labels[10, 10]}
    assert set(np.unique(labels[:, 19:])) == {0, labels[10, 23]} != {0, labels[10, 10]}
    np.testing.assert_array_equal(labels, _skimage_watershed(distance, two, 2.0, 1))
    merged = watershed_from_h_maxima(distance, two, 3.0)
    assert merged.max() == 1 and ((merged > 0) == two).all()
