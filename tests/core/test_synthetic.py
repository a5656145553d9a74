"""The synthetic samples: reproducible, realistic shapes, labels aligned with objects."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.core import synthetic
from napari_microseg.core.io import imread


@pytest.mark.parametrize("name", list(synthetic.SAMPLES))
def test_same_seed_same_arrays_other_seed_other_arrays(name):
    make = synthetic.SAMPLES[name]
    a, b = make(), make()
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(make(seed=1).labels, a.labels)


def test_fibsem_objects_are_darker_than_cytoplasm_and_many():
    sample = synthetic.fibsem_mitochondria()
    assert sample.image.dtype == np.uint8 and sample.axes == "ZYX"
    inside = sample.image[sample.labels > 0].mean()
    outside = sample.image[sample.labels == 0].mean()
    assert inside < outside - 30
    assert sample.labels.max() >= 40
    assert 0.03 < (sample.labels > 0).mean() < 0.2


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
    from napari_microseg.core.classical import segment_dark_objects

    sample = synthetic.fibsem_mitochondria()
    found = segment_dark_objects(sample.image) > 0
    truth = sample.labels > 0
    dice = 2 * (found & truth).sum() / (found.sum() + truth.sum())
    assert 0.4 < dice < 0.85


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

    folder = Path(__file__).resolve().parents[2] / "sample_data"
    for name, make in synthetic.SAMPLES.items():
        sample = make()
        np.testing.assert_array_equal(imread(folder / f"{name}.tif").data, sample.image)
        np.testing.assert_array_equal(imread(folder / f"{name}_labels.tif").data, sample.labels)
