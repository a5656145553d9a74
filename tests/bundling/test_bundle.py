"""The validation split of a training run, rebuilt for bundling, on synthetic data sets.

The lineage a training run records is built here with the training code
itself (prepare + split_validation), so no training is needed.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.bundling.bundle import float16_copy, headline_metrics
from napari_microseg.bundling.split import BundleError, validation_split
from napari_microseg.core.models.build import create_model
from napari_microseg.core.models.bundled import TARGETS
from napari_microseg.core.training.data import prepare
from napari_microseg.core.training.settings import TrainSettings
from napari_microseg.core.training.split import split_tuning, split_validation


def _isbi_folder(folder, depth=6):
    import tifffile

    from napari_microseg.core.io.synthetic import fluorescence_nuclei

    images, labels = [], []
    for z in range(depth):
        sample = fluorescence_nuclei((64, 64), n_objects=6, seed=z)
        images.append((sample.image // 256).astype(np.uint8))
        labels.append(np.where(sample.labels > 0, 255, 0).astype(np.uint8))
    folder.mkdir()
    tifffile.imwrite(folder / "train_images.tif", np.stack(images), photometric="minisblack")
    tifffile.imwrite(folder / "train_labels.tif", np.stack(labels), photometric="minisblack")
    return np.stack(images), np.stack(labels)


def _trained_like(dataset_pairs, pixel_size_um=None, **settings):
    """A fresh model whose lineage is what `microseg train` would record for these pairs."""
    model = create_model(
        "unet", name="m", classes=["membrane", "cell"], depth=2, base_width=4,
        pixel_size_um=pixel_size_um,
    )  # fmt: skip
    settings = TrainSettings(steps=1, **settings)
    data = prepare(dataset_pairs, model, boundary_width=settings.boundary_width)
    train, _, split = split_validation(data.planes, fraction=settings.val_fraction)
    if settings.tune_fraction:
        _, _, split = split_tuning(train, fraction=settings.tune_fraction, validation=split)
    model.card.lineage = {
        "settings": settings.to_dict(),
        "data_sha256": data.data_hash,
        "validation": split,
    }
    return model


CELLS = {"data": {"kind": "isbi2012", "target": "cells"}}


def test_held_out_planes_are_the_ones_training_chose_as_raw_slices(tmp_path):
    from napari_microseg.core.training.datasets import load_dataset

    images, labels = _isbi_folder(tmp_path / "isbi")
    dataset = load_dataset(tmp_path / "isbi", target="cells")
    model = _trained_like(dataset.pairs, val_fraction=0.35)
    split = validation_split(model, tmp_path / "isbi", config=CELLS)
    assert split.kind == "isbi2012" and "2 of 6 annotated planes held out" in split.description
    assert [item.name for item in split.items] == ["isbi2012_cells_z_2", "isbi2012_cells_z_3"]
    for item, z in zip(split.items, (2, 3)):
        assert item.axes == "YX"
        np.testing.assert_array_equal(item.image, images[z])
        np.testing.assert_array_equal(item.truth > 0, labels[z] > 0)


def test_planes_trained_at_another_pixel_size_are_held_out_as_whole_images(tmp_path):
    from napari_microseg.bundling.downsample import downsampled
    from napari_microseg.bundling.split import training_items
    from napari_microseg.core.training.datasets import load_dataset

    images, labels = _isbi_folder(tmp_path / "isbi")  # 64 x 64 pixels of 4 nm
    dataset = load_dataset(tmp_path / "isbi", target="cells")
    model = _trained_like(dataset.pairs, pixel_size_um=0.008, val_fraction=0.35)  # 32 x 32
    # The network that pools 2 x 2 blocks itself (at 4 nm) rebuilds the same split.
    for trained in (model, downsampled(model, 2)):
        split = validation_split(trained, tmp_path / "isbi", config=CELLS)
        assert [item.name for item in split.items] == ["isbi2012_cells_z_2", "isbi2012_cells_z_3"]
        np.testing.assert_array_equal(split.items[0].image, images[2])
        np.testing.assert_array_equal(split.items[1].truth > 0, labels[3] > 0)
        assert [item.image.shape for item in training_items(split, 10)] == [(64, 64)] * 4


def test_other_data_or_another_split_are_refused(tmp_path):
    from napari_microseg.core.training.datasets import load_dataset

    _isbi_folder(tmp_path / "isbi")
    model = _trained_like(load_dataset(tmp_path / "isbi", target="cells").pairs)
    with pytest.raises(BundleError, match="not the data"):
        validation_split(model, tmp_path / "isbi", config=CELLS, limit=4)
    with pytest.raises(BundleError, match="not the data"):  # membranes instead of cells
        validation_split(model, tmp_path / "isbi", config={"data": {"kind": "isbi2012"}})
    model.card.lineage["validation"] = "something else"
    with pytest.raises(BundleError, match="differs"):
        validation_split(model, tmp_path / "isbi", config=CELLS)
    model.card.lineage = {}
    with pytest.raises(BundleError, match="no training record"):
        validation_split(model, tmp_path / "isbi", config=CELLS)


def test_float16_copy_keeps_the_predictions():
    import torch

    model = create_model("unet", name="m", depth=2, base_width=4).eval()
    half = float16_copy(model)
    batch = torch.rand(1, 1, 32, 32)
    full, rounded = model.predict(batch), half.predict(batch)
    assert torch.allclose(full, rounded, atol=1e-2)
    assert all(p.dtype == torch.float32 for p in half.module.parameters())


def test_headline_metrics_put_the_target_first():
    row = {"accuracy": 0.9, "pixel_f1": 0.8, "ap_50_95": 0.3, "n_true": 3}
    assert list(headline_metrics(row, TARGETS["dsb2018"])) == ["ap_50_95", "pixel_f1", "accuracy"]


def test_training_items_never_include_a_held_out_plane(tmp_path):
    from napari_microseg.bundling.split import training_items
    from napari_microseg.core.training.datasets import load_dataset

    images, labels = _isbi_folder(tmp_path / "isbi")
    dataset = load_dataset(tmp_path / "isbi", target="cells")
    model = _trained_like(dataset.pairs, val_fraction=0.35)
    split = validation_split(model, tmp_path / "isbi", config=CELLS)
    items = training_items(split, 10)
    assert [item.name for item in items] == [f"isbi2012_cells_z_{z}" for z in (0, 1, 4, 5)]
    np.testing.assert_array_equal(items[2].image, images[4])
    np.testing.assert_array_equal(items[2].truth > 0, labels[4] > 0)
    drawn = training_items(split, 2, seed=3)
    assert len(drawn) == 2 and {i.name for i in drawn} <= {i.name for i in items}
    with pytest.raises(ValueError, match="at least 1"):
        training_items(split, 0)


def test_tuning_planes_are_rebuilt_and_never_drawn_as_training_images(tmp_path):
    from napari_microseg.bundling.split import training_items, tuning_items
    from napari_microseg.core.training.datasets import load_dataset

    images, labels = _isbi_folder(tmp_path / "isbi", depth=8)
    dataset = load_dataset(tmp_path / "isbi", target="cells")
    model = _trained_like(dataset.pairs, tune_fraction=0.2)
    split = validation_split(model, tmp_path / "isbi", config=CELLS)
    # 8 slices: z=2 and z=5 validate; one of the other six (z=7) is held out for tuning.
    assert [item.name for item in split.items] == ["isbi2012_cells_z_2", "isbi2012_cells_z_5"]
    tuning = tuning_items(split)
    assert [item.name for item in tuning] == ["isbi2012_cells_z_7"]
    np.testing.assert_array_equal(tuning[0].image, images[7])
    np.testing.assert_array_equal(tuning[0].truth > 0, labels[7] > 0)
    trained = [item.name for item in training_items(split, 10)]
    assert trained == [f"isbi2012_cells_z_{z}" for z in (0, 1, 3, 4, 6)]
    assert "1 training plane held out for tuning" in split.description
    # A run without tuning planes has none to give.
    plain = validation_split(_trained_like(dataset.pairs), tmp_path / "isbi", config=CELLS)
    assert tuning_items(plain) == []


def test_tune_postprocess_scores_on_the_tuning_planes_when_the_run_held_some_out(
    tmp_path, monkeypatch, capsys
):
    import yaml
    from script_loader import ROOT, load_script

    from napari_microseg.core.models.checkpoint import save_checkpoint
    from napari_microseg.core.training.datasets import load_dataset

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # as `python scripts/...` runs it
    _isbi_folder(tmp_path / "isbi", depth=8)
    model = _trained_like(load_dataset(tmp_path / "isbi", target="cells").pairs, tune_fraction=0.2)
    model.card.recommended["postprocess"] = {"method": "threshold", "threshold": 0.5}
    save_checkpoint(model, tmp_path / "m.safetensors")
    config = tmp_path / "m.yaml"
    config.write_text(yaml.safe_dump(CELLS))
    script = load_script("tune_postprocess")
    common = ["m.safetensors", "--data", str(tmp_path / "isbi"), "--config", str(config)]
    monkeypatch.chdir(tmp_path)
    assert script.main([*common, "--try", "threshold=0.5"]) == 0
    assert "m: 1 tuning image(s), never trained on, accuracy" in capsys.readouterr().out
    assert script.main([*common, "--try", "threshold=0.5", "--training-images"]) == 0
    assert "m: 5 training image(s), accuracy" in capsys.readouterr().out
