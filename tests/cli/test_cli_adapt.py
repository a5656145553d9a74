"""``microseg adapt``: label-free adaptation from the command line (#21)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from napari_microseg.cli import main
from napari_microseg.core.io import synthetic
from napari_microseg.core.models import registry
from napari_microseg.core.models.build import create_model


def test_adapt_saves_a_named_version(user_folder, tmp_path, capsys):
    torch.manual_seed(0)
    registry.save_user_model(
        create_model("unet", name="tiny-bn", depth=2, base_width=4, batch_norm=True)
    )
    image = tmp_path / "session2.tif"
    tifffile.imwrite(image, synthetic.fibsem_mitochondria((5, 64, 64), seed=2).image)
    code = main(["adapt", "--model", "tiny-bn", "--image", str(image), "--name", "s2", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["name"] == "s2" and summary["parent"] == "tiny-bn"
    assert summary["batchnorm_layers"] > 0
    assert registry.load_model("s2", device="cpu").card.lineage["kind"] == "adapt"


def test_adapt_refuses_a_model_without_batch_norm(user_folder, tmp_path, capsys):
    registry.save_user_model(create_model("unet", name="plain", depth=2, base_width=4))
    image = tmp_path / "x.tif"
    tifffile.imwrite(image, np.zeros((32, 32), np.uint8))
    assert main(["adapt", "--model", "plain", "--image", str(image)]) == 2
    assert "batch-norm" in capsys.readouterr().err


def test_adapt_matches_intensities_only_when_asked(user_folder, tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("unet", name="ref-bn", depth=2, base_width=4, batch_norm=True)
    model.card.normalization = {
        **model.card.normalization,
        "reference": np.linspace(-0.1, 1.1, 101).tolist(),
    }
    registry.save_user_model(model)
    image = tmp_path / "session2.tif"
    tifffile.imwrite(image, synthetic.fibsem_mitochondria((5, 64, 64), seed=2).image)
    args = ["adapt", "--model", "ref-bn", "--image", str(image), "--json"]
    assert main([*args, "--name", "matched", "--match"]) == 0
    assert json.loads(capsys.readouterr().out)["matched_intensities"] is True
    assert registry.load_model("matched", device="cpu").card.normalization["match"] is True
    assert main([*args, "--name", "plain-bn"]) == 0
    assert json.loads(capsys.readouterr().out)["matched_intensities"] is False
    assert "match" not in registry.load_model("plain-bn", device="cpu").card.normalization


def test_adapt_corrects_uneven_illumination_when_asked(user_folder, tmp_path, capsys):
    registry.save_user_model(create_model("unet", name="plain", depth=2, base_width=4))
    image = tmp_path / "session2.tif"
    tifffile.imwrite(image, synthetic.fibsem_mitochondria((5, 64, 64), seed=2).image)
    args = ["adapt", "--model", "plain", "--image", str(image), "--json"]
    # No batch norm, but the illumination can still be adapted.
    assert main([*args, "--name", "flat", "--flat-field"]) == 0
    assert json.loads(capsys.readouterr().out)["flat_field"] is True
    saved = registry.load_model("flat", device="cpu")
    assert saved.card.normalization["flat_field"] > 0
    assert "flat field" in saved.card.lineage["method"]


def test_adapt_smooths_as_asked_and_refuses_a_bad_sigma(user_folder, tmp_path, capsys):
    registry.save_user_model(create_model("unet", name="plain", depth=2, base_width=4))
    image = tmp_path / "session2.tif"
    tifffile.imwrite(image, synthetic.fibsem_mitochondria((5, 64, 64), seed=2).image)
    args = ["adapt", "--model", "plain", "--image", str(image), "--json"]
    # No batch norm and no recorded noise level: smoothing by hand is still an adaptation.
    assert main([*args, "--name", "smoothed", "--smooth", "0.7"]) == 0
    assert json.loads(capsys.readouterr().out)["smooth"] == 0.7
    assert registry.load_model("smoothed", device="cpu").card.normalization["smooth"] == 0.7
    assert main([*args, "--name", "bad", "--smooth", "lots"]) == 2
    assert "--smooth 'lots': use auto, on, off or a Gaussian sigma" in capsys.readouterr().err
    assert main([*args, "--name", "bad", "--smooth", "-2"]) == 2
    assert "Gaussian sigma in pixels" in capsys.readouterr().err
    assert not (user_folder / "bad.json").exists()


def test_adapt_passes_the_file_pixel_size_on(user_folder, tmp_path, record_call):
    from napari_microseg.core.io.writers import write_image

    sample = synthetic.fibsem_mitochondria((3, 48, 48), seed=2)
    image = write_image(tmp_path / "s2.tif", sample.image, axes="ZYX", scale=(0.01, 0.01, 0.01))
    seen = record_call("napari_microseg.core.training.adapt.adapt")
    with pytest.raises(record_call.stop):
        main(["adapt", "--model", "tiny-bn", "--image", str(image)])
    # The statistics are measured at the model's pixel size, as prediction resamples.
    assert tuple(seen["spacing"]) == pytest.approx((0.01, 0.01, 0.01))


def test_adapt_says_it_resampled_the_image(user_folder, tmp_path, capsys):
    from dataclasses import replace

    from napari_microseg.core.io.writers import write_image

    torch.manual_seed(0)
    model = create_model("unet", name="tiny-5nm", depth=2, base_width=4, batch_norm=True)
    model.card = replace(model.card, pixel_size_um=0.005)
    registry.save_user_model(model)
    sample = synthetic.fibsem_mitochondria((3, 48, 48), seed=2)
    image = write_image(tmp_path / "s2.tif", sample.image, axes="ZYX", scale=(0.01, 0.01, 0.01))
    assert main(["adapt", "--model", "tiny-5nm", "--image", str(image), "--json"]) == 0
    captured = capsys.readouterr()
    # 10 nm pixels for a 5 nm model: measured on planes twice as large, and said so.
    assert "note: Resampling 48x48 to 96x96 pixels (2x), the model's 5 nm per pixel" in captured.err
    assert json.loads(captured.out)["pixels"] % (96 * 96) == 0
