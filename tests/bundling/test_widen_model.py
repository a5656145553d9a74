"""bundling.widen and its script: a wider U-Net starts computing what the narrow one did."""

from __future__ import annotations

import pytest
import torch
from script_loader import load_script

from napari_microseg.bundling.widen import channel_map, widened
from napari_microseg.core.models.build import create_model
from napari_microseg.core.models.checkpoint import load_checkpoint, save_checkpoint


def narrow_unet(batch_norm=True):
    torch.manual_seed(0)
    model = create_model(
        "unet", name="narrow", in_channels=3, classes=["background", "gland", "boundary"],
        depth=3, base_width=4, batch_norm=batch_norm, pixel_size_um=1.86,
    )  # fmt: skip
    if batch_norm:  # running statistics that are not the fresh 0 and 1
        model.module.train()
        with torch.no_grad():
            for _ in range(3):
                model.module(torch.rand(2, 3, 32, 32) * 3)
    return model.eval()


def test_channel_map_spreads_the_copies():
    source, copies = channel_map(3, 8)
    assert source.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert copies.tolist() == [3, 3, 2, 3, 3, 2, 3, 3]


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("base_width", [8, 6])
def test_without_noise_the_wide_network_computes_the_same(batch_norm, base_width):
    narrow = narrow_unet(batch_norm)
    wide = widened(narrow, base_width, noise=0.0)
    assert wide.card.hyperparameters["base_width"] == base_width
    assert wide.module.encoders[2][0].weight.shape[0] == base_width * 4
    x = torch.rand(2, 3, 40, 36)
    with torch.no_grad():
        torch.testing.assert_close(wide.module(x), narrow.module(x), atol=1e-5, rtol=1e-4)


def test_noise_tells_the_copies_apart_and_barely_moves_the_output():
    narrow = narrow_unet()
    wide = widened(narrow, 8, noise=0.01, seed=1)
    first = wide.module.encoders[0][0].weight
    # The original channels are untouched; their copies differ from them a little.
    torch.testing.assert_close(first[:4], narrow.module.encoders[0][0].weight)
    assert not torch.equal(first[4:], first[:4])
    torch.testing.assert_close(first[4:], first[:4], atol=0.05, rtol=0.0)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        difference = (wide.module(x) - narrow.module(x)).abs().max()
    assert 0 < difference < 0.05
    again = widened(narrow, 8, noise=0.01, seed=1)
    assert torch.equal(again.module.encoders[0][0].weight, first)


def test_the_script_saves_a_wide_model_with_its_lineage(tmp_path, capsys):
    source = save_checkpoint(narrow_unet(), tmp_path / "narrow")
    script = load_script("widen_model")
    assert (
        script.main([str(source), "--base-width", "8", "--out", str(tmp_path / "w"), "--name", "w"])
        == 0
    )
    assert "base width 8" in capsys.readouterr().out
    wide = load_checkpoint(tmp_path / "w")
    assert wide.card.name == "w" and wide.card.pixel_size_um == pytest.approx(1.86)
    assert wide.card.lineage["widened"]["base_width_from"] == 4
    assert wide.card.lineage["widened"]["base_width_to"] == 8


def test_only_a_wider_unet(tmp_path):
    with pytest.raises(ValueError, match="above 'narrow'"):
        widened(narrow_unet(), 4)
    with pytest.raises(ValueError, match="noise"):
        widened(narrow_unet(), 8, noise=-1.0)
    segnet = create_model("segnet", name="s", depth=2, base_width=4)
    with pytest.raises(ValueError, match="not a U-Net"):
        widened(segnet, 8)
    source = save_checkpoint(narrow_unet(), tmp_path / "narrow")
    with pytest.raises(SystemExit, match=r"widen_model: .*above"):
        load_script("widen_model").main(
            [str(source), "--base-width", "2", "--out", str(tmp_path / "x")]
        )


def test_a_run_started_from_a_wide_model_records_how_it_was_made(tmp_path):
    from napari_microseg.cli.train import initialise_from

    source = save_checkpoint(widened(narrow_unet(), 8), tmp_path / "narrow-w8")
    fresh = create_model(
        "unet", name="wide", in_channels=3, classes=["background", "gland", "boundary"],
        depth=3, base_width=8, batch_norm=True,
    )  # fmt: skip
    initialise_from(fresh, str(source))
    start = fresh.card.lineage["initial_weights"]
    assert start["widened"]["model"] == "narrow" and start["widened"]["base_width_to"] == 8
