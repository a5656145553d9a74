"""``microseg demo`` uses the bundled model made for the sample, and falls back without it."""

from __future__ import annotations

import json

import pytest

from napari_microseg.cli import main
from napari_microseg.core.io.images import imread
from napari_microseg.core.models import registry


@pytest.fixture
def bundled(tmp_path, monkeypatch):
    folder = tmp_path / "bundled"
    folder.mkdir()
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: folder)
    return folder


def set_pixel_size(weights, pixel_size_um):
    """Say in a bundled model's card that it was trained at ``pixel_size_um``."""
    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["pixel_size_um"] = pixel_size_um
    card_path.write_text(json.dumps(card), encoding="utf-8")


@pytest.fixture
def small_sample(monkeypatch):
    """A smaller FIB-SEM sample for the demo (same generator, 10 nm voxels), for speed."""
    from napari_microseg.core.io import synthetic

    real = synthetic.fibsem_mitochondria
    monkeypatch.setattr(synthetic, "fibsem_mitochondria", lambda: real((6, 128, 128), n_objects=3))


def test_demo_segments_the_fibsem_sample_with_the_bundled_mito_model(
    bundled, make_bundled_model, tmp_path, capsys
):
    make_bundled_model(bundled, "mito-em", tile=256)
    make_bundled_model(bundled, "gland-he", in_channels=3, modality="H&E", kind="glas")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bundled model 'mito-em'" in text and "classical" not in text
    labels = imread(out / "fibsem_mitochondria_labels.tif")
    assert labels.data.shape == (32, 384, 384)
    assert (out / "fibsem_mitochondria_preview.png").is_file()


def test_demo_without_bundled_models_keeps_the_classical_fallback(bundled, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    assert "classical segmentation" in text and "no bundled deep-learning model" in text


def test_demo_with_a_damaged_bundled_model_says_so_and_falls_back(
    bundled, make_bundled_model, tmp_path, capsys
):
    weights = make_bundled_model(bundled, "mito-em")
    weights.unlink()
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    assert "classical segmentation" in text
    assert "mito-em" in text and "force-reinstall" in text
    assert (tmp_path / "demo" / "fibsem_mitochondria_labels.tif").is_file()


def test_demo_resamples_the_sample_to_the_bundled_model_pixel_size(
    bundled, make_bundled_model, small_sample, tmp_path, capsys
):
    weights = make_bundled_model(bundled, "mito-em", tile=256)
    set_pixel_size(weights, 0.005)  # as the real mito-em: 5 nm; the sample has 10 nm
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    assert "bundled model 'mito-em'" in text and "classical" not in text
    assert "trained at 5 nm per pixel" in text and "this image has 10 nm per pixel" in text
    assert "resampled 2x in Y and X" in text
    labels = imread(tmp_path / "demo" / "fibsem_mitochondria_labels.tif")
    assert labels.data.shape == (6, 128, 128)  # back on the sample's grid


def test_demo_predicts_as_is_with_a_model_trained_at_the_sample_pixel_size(
    bundled, make_bundled_model, small_sample, tmp_path, capsys
):
    weights = make_bundled_model(bundled, "mito-em", tile=256)
    set_pixel_size(weights, 0.011)  # within the 1.25x tolerance of the sample's 10 nm
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    assert "bundled model 'mito-em'" in text and "classical" not in text
    assert "resampled" not in text
