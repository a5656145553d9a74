"""The synthetic samples: reproducible, realistic shapes, labels aligned with objects."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.core.io import synthetic
from napari_microseg.core.io.images import imread


@pytest.mark.parametrize("name", list(synthetic.SAMPLES))
def test_same_seed_same_arrays_other_seed_other_arrays(name):
    make = synthetic.SAMPLES[name]
    a, b = make(), make()
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(make(seed=1).labels, a.labels)


def test_fibsem_objects_are_darker_than_cytoplasm_and_as_dense_as_in_neuropil():
    sample = synthetic.fibsem_mitochondria()
    assert sample.image.shape == (32, 384, 384) and sample.scale == (0.01, 0.01, 0.01)
    assert sample.image.dtype == np.uint8 and sample.axes == "ZYX"
    inside = sample.image[sample.labels > 0].mean()
    outside = sample.image[sample.labels == 0].mean()
    assert inside < outside - 30
    assert sample.labels.max() == 14  # every one of the 14 placements fits
    # About a tenth of the volume, as in the Lucchi hippocampus (9.7% of its validation stack).
    assert 0.08 < (sample.labels > 0).mean() < 0.12


def test_fibsem_mitochondria_have_the_thickness_of_real_ones():
    """200-520 nm thick (minor axis) at 10 nm per voxel, as in neuropil; never touching."""
    from scipy import ndimage as ndi

    sample = synthetic.fibsem_mitochondria()
    thickness_nm = []
    for index, box in enumerate(ndi.find_objects(sample.labels), start=1):
        # The largest ball inside the object (the volume's edge counts as outside).
        inside = np.pad(sample.labels[box] == index, 1)
        thickness_nm.append(2 * ndi.distance_transform_edt(inside).max() * 10)
    assert max(thickness_nm) <= 520  # objects cut by the stack's edge are only thinner
    assert 200 <= np.median(thickness_nm) <= 520
    assert sorted(np.unique(sample.labels))[1:] == list(range(1, 15))
    # A shell of cytoplasm separates neighbours: no two ids touch.
    for index, box in enumerate(ndi.find_objects(sample.labels), start=1):
        box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
        grown = ndi.binary_dilation(sample.labels[box] == index)
        assert set(np.unique(sample.labels[box][grown]).tolist()) <= {0, index}


def test_nuclei_touch_each_other():
    from scipy import ndimage as ndi

    sample = synthetic.fluorescence_nuclei()
    labels = sample.labels
    grown = ndi.grey_dilation(labels, size=3)
    touching = (grown != labels) & (labels > 0) & (grown > 0)
    assert touching.sum() > 100  # many nuclei share a border: watershed has work to do
    assert sample.image[labels > 0].mean() > 2 * sample.image[labels == 0].mean()


def test_glands_are_rgb_with_white_lumen():
    sample = synthetic.he_glands()
    assert sample.image.shape[-1] == 3 and sample.axes == "YXC"
    assert sample.labels.max() >= 5
    assert sample.image[sample.labels > 0].max() > 230


def test_classical_baseline_leaves_work_for_a_model():
    from napari_microseg.core.postprocess.classical import segment_dark_objects

    sample = synthetic.fibsem_mitochondria()
    found = segment_dark_objects(sample.image) > 0
    truth = sample.labels > 0
    dice = 2 * (found & truth).sum() / (found.sum() + truth.sum())
    assert 0.8 < dice < 0.9  # measured 0.856; the bundled mito-em reaches 0.97


def test_write_samples_roundtrip(tmp_path):
    files = synthetic.write_samples(tmp_path)
    assert len(files) == 6
    image = imread(tmp_path / "fibsem_mitochondria.tif")
    labels = imread(tmp_path / "fibsem_mitochondria_labels.tif")
    assert image.axes == "ZYX" and labels.kind == "labels"
    np.testing.assert_allclose(image.scale, (0.01, 0.01, 0.01))
    np.testing.assert_array_equal(labels.data, synthetic.fibsem_mitochondria().labels)


def test_committed_sample_files_match_the_generator():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[3] / "sample_data"
    for name, make in synthetic.SAMPLES.items():
        sample = make()
        np.testing.assert_array_equal(imread(folder / f"{name}.tif").data, sample.image)
        np.testing.assert_array_equal(imread(folder / f"{name}_labels.tif").data, sample.labels)
