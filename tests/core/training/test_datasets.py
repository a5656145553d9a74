"""The benchmark data set layouts are read from wherever they lie (fakes made in the test)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_microseg.core.training.data import TrainingDataError
from napari_microseg.core.training.datasets import detect_layout, load_dataset


def stack(path: Path, data: np.ndarray) -> None:
    tifffile.imwrite(path, data, compression="zlib")


@pytest.fixture
def lucchi(tmp_path: Path) -> Path:
    folder = tmp_path / "lucchi"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, depth in (("train", 6), ("val", 3)):
        masks = np.zeros((depth, 16, 20), np.uint8)
        masks[:, 4:8, 5:9] = 255
        stack(folder / f"{split}_images.tif", rng.integers(0, 255, (depth, 16, 20), np.uint8))
        stack(folder / f"{split}_masks.tif", masks)
    return folder


def indexed(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / kind
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    key = "image_id" if kind == "dsb2018" else "name"
    rows = [(f"img{i}", "train" if i < 2 else "other") for i in range(3)]
    with open(folder / "index.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([key, "split", "height", "width"])
        for name, split in rows:
            writer.writerow([name, split, 12, 14])
            grey = np.full((12, 14), 40 * len(name), np.uint8)
            Image.fromarray(np.stack([grey] * 3, axis=-1)).save(folder / "images" / f"{name}.png")
            labels = np.zeros((12, 14), np.uint16)
            labels[2:5, 2:5], labels[6:9, 6:10] = 1, 2
            stack(folder / "labels" / f"{name}.tif", labels)
    return folder


def test_lucchi_stacks_with_their_own_validation(lucchi):
    assert detect_layout(lucchi) == "lucchi"
    data = load_dataset(lucchi)
    pair = data.pairs[0]
    assert pair.image.shape == (6, 16, 20) and pair.axes == "ZYX"
    assert set(np.unique(pair.labels)) == {0, 1}  # 0/255 masks become 0/1
    assert data.validation[0].image.shape == (3, 16, 20)
    assert data.pixel_size_um == 0.005 and data.modality == "EM"
    assert pair.spacing == (0.005, 0.005, 0.005) == data.validation[0].spacing
    assert load_dataset(lucchi, limit=2).pairs[0].image.shape[0] == 2


def test_isbi_membrane_polarity(tmp_path):
    folder = tmp_path / "isbi"
    folder.mkdir()
    labels = np.full((2, 8, 8), 255, np.uint8)
    labels[:, 3] = 0  # a membrane row
    stack(folder / "train_images.tif", np.zeros((2, 8, 8), np.uint8))
    stack(folder / "train_labels.tif", labels)
    assert detect_layout(folder) == "isbi2012"
    membrane = load_dataset(folder).pairs[0].labels
    assert membrane[:, 3].all() and membrane.sum() == 16
    # Sections are cut 50 nm apart, imaged at 4 nm: the pixels resample from these.
    assert load_dataset(folder).pairs[0].spacing == (0.05, 0.004, 0.004)
    cells = load_dataset(folder, target="cells").pairs[0].labels
    assert not cells[:, 3].any()
    with pytest.raises(TrainingDataError, match="membrane"):
        load_dataset(folder, target="both")


@pytest.mark.parametrize("kind", ["glas", "dsb2018"])
def test_indexed_layouts_split_limit_and_grey(tmp_path, kind):
    folder = indexed(tmp_path, kind)
    assert detect_layout(folder) == kind
    everything = load_dataset(folder)
    assert len(everything.pairs) == 3
    train = load_dataset(folder, split="train", grey=True)
    assert [p.name for p in train.pairs] == ["img0", "img1"]
    assert train.pairs[0].image.shape == (12, 14) and train.pairs[0].axes == "YX"
    rgb = load_dataset(folder, limit=1).pairs[0]
    assert rgb.image.shape == (12, 14, 3) and rgb.axes == "YXC"
    assert rgb.labels.max() == 2
    with pytest.raises(TrainingDataError, match="no rows"):
        load_dataset(folder, split="test")
    # GlaS is scanned at 0.62 µm per pixel; DSB 2018 mixes microscopes and says nothing.
    spacing = (0.62, 0.62) if kind == "glas" else None
    assert all(pair.spacing == spacing for pair in everything.pairs)


def test_unknown_folders_are_clear_errors(tmp_path):
    with pytest.raises(TrainingDataError, match="does not exist"):
        detect_layout(tmp_path / "nowhere")
    with pytest.raises(TrainingDataError, match="not a known data set layout"):
        detect_layout(tmp_path)
