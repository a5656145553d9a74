"""bundling.downsample and its script: a network learnt on resampled images resamples itself."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from script_loader import load_script

from napari_microseg.bundling.downsample import as_trained, downsampled
from napari_microseg.core.models.build import create_model
from napari_microseg.core.models.checkpoint import load_checkpoint, save_checkpoint


def coarse_unet():
    model = create_model(
        "unet", name="coarse", in_channels=3, classes=["background", "gland", "boundary"],
        depth=2, base_width=4, batch_norm=True, pixel_size_um=1.24,
    )  # fmt: skip
    model.card.recommended = {"tile_size": 256, "overlap": 0.25}
    return model.eval()


def test_the_weights_move_into_a_network_that_pools_itself(tmp_path, capsys):
    coarse = coarse_unet()
    source = save_checkpoint(coarse, tmp_path / "coarse")
    assert (
        load_script("downsample_model").main(
            [str(source), "--out", str(tmp_path / "fine"), "--name", "fine"]
        )
        == 0
    )
    assert "downsample 2, 0.62 µm per pixel, tile 512" in capsys.readouterr().out
    fine = load_checkpoint(tmp_path / "fine")
    card = fine.card
    assert card.name == "fine" and card.pixel_size_um == pytest.approx(0.62)
    assert card.hyperparameters["downsample"] == 2 and card.recommended["tile_size"] == 512
    assert card.lineage["downsampled"]["pixel_size_um_learnt"] == 1.24
    # At 0.62 µm the new network predicts what the old one predicted at 1.24 µm.
    x = torch.rand(1, 3, 64, 48)
    with torch.no_grad():
        expected = F.interpolate(
            coarse.module(F.avg_pool2d(x, 2)), size=(64, 48), mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(fine.module(x), expected)


def test_only_a_unet_with_a_pixel_size(tmp_path):
    sizeless = coarse_unet()
    sizeless.card.pixel_size_um = None
    with pytest.raises(ValueError, match="no pixel size"):
        downsampled(sizeless, 2)
    segnet = create_model("segnet", name="s", depth=2, base_width=4, pixel_size_um=1.0)
    with pytest.raises(ValueError, match="not a U-Net"):
        downsampled(segnet, 2)
    with pytest.raises(ValueError, match="2 or more"):
        downsampled(coarse_unet(), 1)
    with pytest.raises(SystemExit, match="factor"):
        load_script("downsample_model").main(["x", "--factor", "1", "--out", str(tmp_path / "y")])


def test_as_trained_gives_back_the_pixel_size_training_saw():
    coarse = coarse_unet()
    assert as_trained(coarse) is coarse
    fine = downsampled(coarse, 2)
    trained = as_trained(fine)
    assert trained.card.pixel_size_um == 1.24 and trained.module is fine.module
