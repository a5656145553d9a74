import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import h_maxima

from napari_microseg.core.hmaxima import h_maxima_in_mask


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
