import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import find_boundaries

from napari_microseg.core.postprocess.hmaxima import h_maxima_in_mask, watershed_from_h_maxima


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


def _flooded_by_skimage(source, cores, h):
    from skimage.segmentation import watershed

    full = ndi.generate_binary_structure(source.ndim, source.ndim)
    seeds, _ = ndi.label(h_maxima(source, h, footprint=full).astype(bool) & cores, structure=full)
    return seeds, watershed(-source, seeds, mask=cores, connectivity=full)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["distance", "probability"])
def test_basin_merge_is_a_watershed_from_the_h_maxima(seed, kind):
    shape = (10, 40, 44) if seed % 2 else (120, 130)
    prob = _blobs(shape, 2.0 + seed / 2, seed, np.float64)
    cores = prob > 0.45
    source = ndi.distance_transform_edt(cores) if kind == "distance" else np.where(cores, prob, 0)
    full = ndi.generate_binary_structure(prob.ndim, prob.ndim)
    for h in (1.0, 2.0) if kind == "distance" else (0.02, 0.1):
        seeds, expected = _flooded_by_skimage(source, cores, h)
        labels = watershed_from_h_maxima(source, cores, h)
        # One object per marker, grown from it, and each object in one piece.
        ids = np.unique(labels[seeds > 0])
        assert ids.size == seeds.max() and 0 not in ids
        # Components no marker reaches (lower than h) stay 0, as in skimage's flooding.
        np.testing.assert_array_equal(labels == 0, expected == 0)
        for i in ids:
            assert ndi.label(labels == i, structure=full)[1] == 1
        # Same cuts as skimage's priority flooding but for pixels next to the cuts
        # (a dropped maximum's basin goes whole to one marker; see the Notes).
        same_ids = np.zeros(labels.max() + 1, dtype=np.int64)
        same_ids[labels[seeds > 0]] = seeds[seeds > 0]
        differ = same_ids[labels] != expected
        assert np.count_nonzero(differ) < (0.04 if kind == "distance" else 0.002) * cores.sum()
        cuts = find_boundaries(expected, connectivity=prob.ndim) & (expected > 0)
        assert (ndi.distance_transform_edt(~cuts)[differ] <= 5).all()


def test_basin_merge_cuts_two_touching_discs_at_the_neck():
    yy, xx = np.mgrid[:21, :40]
    discs = ((yy - 10) ** 2 + (xx - 10) ** 2 <= 64) | ((yy - 10) ** 2 + (xx - 27) ** 2 <= 81)
    distance = ndi.distance_transform_edt(discs)
    labels = watershed_from_h_maxima(distance, discs, 1.0)
    left, right = labels[10, 10], labels[10, 27]
    assert left and right and left != right
    assert set(np.unique(labels[discs])) == {left, right}
    neck = (xx[discs & (labels == left)]).max()
    assert 17 <= neck <= 19  # the narrowest column between the centres is x = 18
    # Peaks 8.06 and 9.06 over a pass at 1: an h above 7.06 keeps only the larger one.
    assert np.unique(watershed_from_h_maxima(distance, discs, 7.0)[discs]).size == 2
    assert np.unique(watershed_from_h_maxima(distance, discs, 7.2)[discs]).size == 1


@pytest.mark.parametrize("shape", [(160, 150), (14, 40, 44)])
def test_ascent_basins_hold_one_peak_each_and_climb_to_it(shape):
    from skimage.morphology import local_maxima

    from napari_microseg.core.postprocess import hmaxima

    prob = _blobs(shape, 2.0, 7, np.float64)
    cores = prob > 0.5
    distance = ndi.distance_transform_edt(cores)
    full = ndi.generate_binary_structure(prob.ndim, prob.ndim)
    plateaus, n = ndi.label(
        local_maxima(distance, footprint=full, allow_borders=True) & cores, structure=full
    )
    basins = hmaxima._ascent_basins(distance, plateaus, cores, full)
    np.testing.assert_array_equal(basins > 0, cores)
    np.testing.assert_array_equal(basins[plateaus > 0], plateaus[plateaus > 0])
    for peak in range(1, n + 1):  # one piece, its peak on top
        inside = basins == peak
        assert ndi.label(inside, structure=full)[1] == 1
        assert distance[inside].max() == distance[plateaus == peak][0]


def test_long_plateaus_fall_back_to_flooding(monkeypatch):
    from skimage.morphology import local_maxima

    from napari_microseg.core.postprocess import hmaxima

    # A ramp with a long flat step: crossing it takes many rounds.
    ramp = np.concatenate([np.linspace(1, 2, 10), np.full(40, 2.0), np.linspace(2.1, 3, 10)])
    image = np.tile(ramp, (5, 1))
    image[:, 25] = 1.5  # and a dip, so that two peaks meet over a pass
    mask = np.ones(image.shape, dtype=bool)
    full = np.ones((3, 3), dtype=bool)
    for rounds in (64, 2):
        monkeypatch.setattr(hmaxima, "PLATEAU_ROUNDS", rounds)
        hmaxima._TREES.clear()
        peaks = ndi.label(local_maxima(image, footprint=full, allow_borders=True), full)[0]
        found = hmaxima._ascent_basins(image, peaks, mask, full)
        assert (found is None) == (rounds == 2)
        for h in (0.4, 0.6, 1.5):
            np.testing.assert_array_equal(
                h_maxima_in_mask(image, mask, h), h_maxima(image, h, footprint=full).astype(bool)
            )
