"""Grey and colour follow the model card (issue #22, item 6).

An RGB or RGBA image given to a 1-channel model is made grey the way the
model's training data were (the card's ``colour_to_grey``; the channel mean
by default, as the DSB nuclei models were trained); a grey image given to an
RGB model is repeated over R, G and B. Either way the Python API warns
(:class:`InferenceWarning`, which ``microseg`` prints) with the exact sentence
checked here. The real DSB images (RGB, many of them grey with R = G = B) run
through the bundled ``nuclei-fluo`` when the data folder is there.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from napari_microseg.cli import main
from napari_microseg.core.inference.forward import InferenceWarning
from napari_microseg.core.inference.job import LUMINANCE, match_channels
from napari_microseg.core.inference.predict import predict
from napari_microseg.core.io.images import imread
from napari_microseg.core.io.writers import write_image
from napari_microseg.core.models.base import ModelCard, ModelError, wrap_module

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MICROSEG_DATA") or ROOT.parent / "shared" / "data")
GREY_NOTICE = (
    "Model 'grey' takes greyscale (1 channel) input; the RGB image was made grey by the mean "
    "of R, G and B, as the model's training data were."
)
RGBA_NOTICE = (
    "Model 'grey' takes greyscale (1 channel) input; the RGBA image lost its alpha channel and "
    "was made grey by the mean of R, G and B, as the model's training data were."
)
REPEAT_NOTICE = (
    "Model 'colour' takes RGB (3 channels) input; the greyscale image was repeated over R, G and B."
)


def grey_image(shape=(24, 40)) -> np.ndarray:
    return np.random.default_rng(0).integers(1, 254, shape).astype(np.uint8)


def rgb_around(grey: np.ndarray) -> np.ndarray:
    """R, G, B = grey - 1, grey, grey + 1: their mean is exactly ``grey``."""
    return np.stack([grey - 1, grey, grey + 1], axis=-1)


def card(**kwargs) -> ModelCard:
    return ModelCard(**{"name": "grey", "architecture": "unet", **kwargs})


def conv(in_channels: int):
    import torch

    torch.manual_seed(0)
    return torch.nn.Conv2d(in_channels, 2, 3, padding=1).eval()


# ----------------------------------------------------------------------------- exact values


@pytest.mark.parametrize("lazy", [False, True])
def test_rgb_and_rgba_become_the_channel_mean(lazy):
    grey = grey_image()
    rgb = rgb_around(grey)
    rgba = np.concatenate([rgb, np.zeros_like(grey)[..., None]], axis=-1)
    for image, notice in ((rgb, GREY_NOTICE), (rgba, RGBA_NOTICE)):
        image = da.from_array(image, chunks=(8, 8, -1)) if lazy else image
        data, axes, said = match_channels(image, "YXC", card())
        assert (axes, said) == ("YX", notice)
        assert isinstance(data, da.Array) == lazy
        assert data.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(data), grey.astype(np.float32))


def test_luminance_card_weights_the_channels():
    rgb = rgb_around(grey_image())
    data, _, said = match_channels(rgb, "YXC", card(colour_to_grey="luminance"))
    expected = (rgb * np.asarray(LUMINANCE, np.float32)).sum(axis=-1, dtype=np.float32)
    np.testing.assert_array_equal(data, expected)
    assert "made grey by luminance (0.299 R + 0.587 G + 0.114 B)" in said


def test_channels_of_a_stack_and_of_a_2_5d_model():
    stack = np.stack([rgb_around(grey_image()), rgb_around(grey_image()[::-1])])  # Z, Y, X, C
    data, axes, _ = match_channels(np.moveaxis(stack, -1, 1), "ZCYX", card())
    assert axes == "ZYX"
    np.testing.assert_array_equal(data, stack.mean(axis=-1, dtype=np.float32))
    # A 2.5D grey model takes 3 neighbouring grey slices as its 3 channels: still grey.
    data, axes, said = match_channels(stack, "ZYXC", card(in_channels=3, context_slices=1))
    assert axes == "ZYX" and said == GREY_NOTICE


def test_grey_is_repeated_for_an_rgb_model():
    grey = grey_image()
    colour = card(name="colour", in_channels=3)
    for image, axes in ((grey, "YX"), (grey[None], "CYX")):
        data, new_axes, said = match_channels(image, axes, colour)
        assert said == REPEAT_NOTICE and data.dtype == np.uint8
        channels = np.moveaxis(data, new_axes.index("C"), 0)
        assert channels.shape == (3, *grey.shape)
        assert all(np.array_equal(c, grey) for c in channels)
    rgba = np.concatenate([rgb_around(grey), grey[..., None]], axis=-1)
    data, axes, said = match_channels(rgba, "YXC", colour)
    np.testing.assert_array_equal(data, rgb_around(grey))
    assert said == (
        "Model 'colour' takes RGB (3 channels) input; the alpha channel of the RGBA image was "
        "dropped."
    )


def test_matching_and_unfixable_channels_are_left_alone():
    grey = grey_image()
    assert match_channels(grey, "YX", card()) == (grey, "YX", None)
    two = np.stack([grey, grey])
    assert match_channels(two, "CYX", card())[2] is None
    model = wrap_module(conv(1), in_channels=1, classes=2, name="grey")
    with pytest.raises(ModelError, match=r"'grey' takes greyscale .* has 2 channels"):
        predict(model, two, axes="CYX")


# ----------------------------------------------------------------------------- API and CLI


def test_predict_warns_and_gives_the_grey_result():
    grey = grey_image()
    model = wrap_module(conv(1), in_channels=1, classes=2, name="grey")
    with pytest.warns(InferenceWarning) as caught:
        converted = predict(model, rgb_around(grey))
    assert [str(w.message) for w in caught] == [GREY_NOTICE]
    np.testing.assert_array_equal(converted, predict(model, grey.astype(np.float32)))
    colour = wrap_module(conv(3), in_channels=3, classes=2, name="colour")
    with pytest.warns(InferenceWarning, match="repeated over R, G and B"):
        repeated = predict(colour, grey)
    np.testing.assert_array_equal(repeated, predict(colour, np.stack([grey] * 3, axis=-1)))


def test_cards_without_the_field_load_with_the_mean_and_bad_rules_are_refused():
    old = {"name": "old", "architecture": "unet", "in_channels": 1, "classes": ["b", "f"]}
    assert ModelCard.from_dict({**old, "task": "semantic"}).colour_to_grey == "mean"
    refused = "m.json is invalid: colour_to_grey must be one of mean, luminance, not 'max'"
    with pytest.raises(ModelError, match=refused):
        ModelCard.from_dict({**old, "task": "semantic", "colour_to_grey": "max"}, source="m.json")


def test_bundled_cards_convert_by_the_mean():
    from napari_microseg.core.models import registry
    from napari_microseg.core.models.entries import scan_folder

    cards = {e.name: e.card for e in scan_folder(registry.bundled_models_dir(), "bundled")}
    if "nuclei-fluo" not in cards:
        pytest.skip("nuclei-fluo is not bundled in this checkout")
    assert cards["nuclei-fluo"].colour_to_grey == "mean"


@pytest.mark.parametrize("zarr_probabilities", [False, True])
def test_cli_predicts_an_rgb_image_with_a_grey_model(tmp_path, loads, zarr_probabilities, capsys):
    grey = np.full((48, 64), 20, np.uint8)
    grey[10:30, 10:40] = 200
    source = write_image(tmp_path / "cells.png", rgb_around(grey))
    before = source.read_bytes()
    out = tmp_path / "labels.tif"
    args = ["predict", str(source), "--model", "bright", "--out", str(out)]
    if zarr_probabilities:  # block by block: the blocks read the converted image
        args += ["--probabilities", str(tmp_path / "prob.zarr"), "--tile", "16"]
    assert main(args) == 0
    notes = capsys.readouterr().err
    assert re.search(r"microseg predict: note: Model 'bright' takes greyscale .* made grey", notes)
    assert "Warning" not in notes  # one plain line, no source code
    labels = imread(out).data
    assert labels.shape == grey.shape and labels.max() == 1
    np.testing.assert_array_equal(labels > 0, grey > 100)
    assert source.read_bytes() == before


def test_block_by_block_reads_the_converted_zarr(tmp_path):
    import zarr

    from napari_microseg.core.blocks.predict import predict_to_zarr
    from napari_microseg.core.progress import drain

    grey = grey_image((48, 64))
    stored = zarr.open_array(
        str(tmp_path / "rgb.zarr"), mode="w", shape=(48, 64, 3), chunks=(16, 16, 3), dtype="u1"
    )
    stored[:] = rgb_around(grey)
    model = wrap_module(conv(1), in_channels=1, classes=2, name="grey")
    runs = {}
    for name, image, axes in (("rgb", stored, "YXC"), ("grey", grey, "YX")):
        job = predict_to_zarr(
            model, image, tmp_path / f"{name}.prob.zarr", axes=axes, chunks=(16, 16), block=(32, 32)
        )
        runs[name] = drain(job, show=False).probabilities[:]
    np.testing.assert_array_equal(runs["rgb"], runs["grey"])
    np.testing.assert_array_equal(stored[:], rgb_around(grey))  # the input is untouched


# ----------------------------------------------------------------------------- real DSB images


def _dsb_images(count_each: int = 3) -> list[Path]:
    """A few DSB images: colour ones (H&E, brightfield) and grey ones stored as RGB."""
    index = DATA / "dsb2018" / "index.csv"
    if not index.is_file():
        pytest.skip(f"no DSB data at {index.parent} (set MICROSEG_DATA)")
    with open(index, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    picks = [r for r in rows if r["grayscale_rgb"] == "False"][:count_each]
    picks += [r for r in rows if r["grayscale_rgb"] == "True"][:count_each]
    return [DATA / "dsb2018" / "images" / f"{r['image_id']}.png" for r in picks]


@pytest.mark.slow
def test_real_dsb_rgb_images_run_through_nuclei_fluo():
    from napari_microseg.core.inference.segment import segment_job
    from napari_microseg.core.models.registry import load_model
    from napari_microseg.core.progress import drain

    paths = _dsb_images()
    try:
        model = load_model("nuclei-fluo", device="cpu")
    except (ModelError, KeyError, FileNotFoundError) as error:
        pytest.skip(f"nuclei-fluo is not usable here: {error}")
    for path in paths:
        image = imread(path)
        assert image.axes == "YXC" and image.data.shape[-1] == 3
        with pytest.warns(InferenceWarning, match="made grey by the mean of R, G and B"):
            result = drain(segment_job(model, image.data, axes=image.axes), show=False)
        assert result.labels.shape == image.data.shape[:2]
        rgb = np.asarray(image.data)
        if np.array_equal(rgb[..., 0], rgb[..., 2]):  # grey stored as RGB: as its grey channel
            with warnings.catch_warnings():
                warnings.simplefilter("error", InferenceWarning)
                grey = rgb[..., 0].astype(np.float32)
                alone = drain(segment_job(model, grey, axes="YX"), show=False)
            np.testing.assert_array_equal(result.labels, alone.labels)


def test_finetune_makes_an_rgb_image_grey_as_prediction_does():
    from napari_microseg.core.training.data import TrainingPair, prepare

    grey = np.full((32, 32), 20, np.uint8)
    grey[8:20, 8:20] = 200
    labels = (grey > 100).astype(np.uint8)
    from napari_microseg.core.models.build import create_model

    model = create_model("unet", name="grey", in_channels=1, depth=2, base_width=4)
    from_rgb = prepare([TrainingPair(rgb_around(grey), labels, axes="YXC")], model)
    from_grey = prepare([TrainingPair(grey.astype(np.float32), labels, axes="YX")], model)
    assert any("made grey by the mean of R, G and B" in note for note in from_rgb.notes)
    np.testing.assert_allclose(from_rgb.planes[0].image, from_grey.planes[0].image, atol=1e-6)
