"""``microseg demo`` uses the bundled model made for the sample, and falls back without it."""

from __future__ import annotations

import pytest

from napari_microseg.cli import main
from napari_microseg.core.io import imread
from napari_microseg.core.models import registry


@pytest.fixture
def bundled(tmp_path, monkeypatch):
    folder = tmp_path / "bundled"
    folder.mkdir()
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: folder)
    return folder


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
    assert labels.data.shape == (48, 256, 256)
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


def test_demo_does_not_use_a_bundled_model_trained_at_another_pixel_size(
    bundled, make_bundled_model, tmp_path, capsys, monkeypatch
):
    from napari_microseg.cli import demo

    make_bundled_model(bundled, "mito-em", tile=256)
    real_card = demo._card

    def card_at_5_nm(entry):  # the sample is 10 nm per pixel; say the model was trained at 5 nm
        card = real_card(entry)
        card.pixel_size_um = 0.005
        return card

    monkeypatch.setattr(demo, "_card", card_at_5_nm)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    assert "classical segmentation" in text and "at 5 nm per pixel" in text
    assert "sample has 10 nm per pixel" in text and "resampled to the model's pixel size" in text


def test_demo_uses_a_bundled_model_trained_at_the_sample_pixel_size(
    bundled, make_bundled_model, tmp_path, capsys, monkeypatch
):
    from napari_microseg.cli import demo

    make_bundled_model(bundled, "mito-em", tile=256)
    real_card = demo._card

    def card_at_11_nm(entry):  # within the tolerance of the sample's 10 nm
        card = real_card(entry)
        card.pixel_size_um = 0.011
        return card

    monkeypatch.setattr(demo, "_card", card_at_11_nm)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    assert "bundled model 'mito-em'" in text and "classical" not in text
