"""Segment = predict + the model's recommended post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_microseg.core.inference.segment import (
    pipeline_spacing,
    recommended_pipeline,
    segment_job,
)
from napari_microseg.core.models.base import ModelCard, wrap_module
from napari_microseg.core.postprocess import PostprocessPipeline
from napari_microseg.core.progress import drain


class Identity2(torch.nn.Module):
    """Two-class logits from the input: class 1 wins where the image is bright."""

    def forward(self, x):
        return torch.cat([-4 * (x - 0.5), 4 * (x - 0.5)], dim=1)


def test_recommended_pipeline_defaults_and_sigmoid_models():
    card = ModelCard(name="m", architecture="unet")
    assert recommended_pipeline(card, 2) == PostprocessPipeline(method="otsu", fill_holes=True)
    card.recommended["postprocess"] = {"method": "hysteresis", "min_size": 5}
    assert recommended_pipeline(card, 1).foreground_class == 0  # one sigmoid channel


def test_pipeline_spacing_falls_back_to_the_model_pixel_size():
    card = ModelCard(name="m", architecture="unet", pixel_size_um=0.5)
    physical = PostprocessPipeline(min_size=2.0, physical_units=True)
    assert pipeline_spacing(physical, card, None, 2) == (0.5, 0.5)
    assert pipeline_spacing(physical, card, (0.1, 0.2), 2) == (0.1, 0.2)
    card.pixel_size_um = None
    with pytest.raises(ValueError, match="no voxel size"):
        pipeline_spacing(physical, card, None, 2)


def test_segment_job_returns_probabilities_and_labels():
    image = np.zeros((40, 50), np.float32)
    image[5:15, 5:15] = 1.0
    image[25:35, 30:45] = 1.0
    model = wrap_module(Identity2(), in_channels=1, classes=["background", "object"])
    result = drain(segment_job(model, image), show=False)
    assert result.probabilities.shape == (2, 40, 50)
    assert result.labels.max() == 2 and result.pipeline["method"] == "otsu"


def test_scale_mismatch_names_both_pixel_sizes_and_the_fix():
    from napari_microseg.core.inference.segment import scale_mismatch
    from napari_microseg.core.models.base import ModelCard

    card = ModelCard(name="mito", architecture="unet", classes=["bg", "mito"], pixel_size_um=0.005)
    message = scale_mismatch(card, (0.05, 0.01, 0.01))
    assert "5 nm" in message and "10 nm" in message and "Rescale the image by 2" in message
    assert "smaller" in message
    assert "larger" in scale_mismatch(card, (0.002, 0.002))
    assert scale_mismatch(card, (0.006, 0.006)) is None  # within 1.5x
    assert scale_mismatch(card, (1.0, 1.0)) is None  # napari's unitless default
    assert scale_mismatch(card, None) is None
    unknown = ModelCard(name="x", architecture="unet", classes=["bg", "fg"])
    assert scale_mismatch(unknown, (0.01, 0.01)) is None


# --- resampling to the model's pixel size ------------------------------------------------


def _bright_at(pixel_size_um):
    """Class 1 where the image is bright; the card says it was trained at ``pixel_size_um``."""
    model = wrap_module(Identity2(), in_channels=1, classes=["background", "object"])
    model.card.pixel_size_um = pixel_size_um
    model.card.normalization = {"kind": "none"}
    model.card.recommended = {"postprocess": {"method": "threshold", "threshold": 0.5}}
    return model


@pytest.fixture
def seen(monkeypatch):
    """The shapes of the images the model is run on."""
    from napari_microseg.core.inference import segment

    shapes = []
    real = segment.run_prediction

    def recording(model, image, **kwargs):
        shapes.append(tuple(np.shape(image)))
        return real(model, image, **kwargs)

    monkeypatch.setattr(segment, "run_prediction", recording)
    return shapes


def _squares():
    image = np.zeros((40, 50), np.float32)
    image[6:16, 4:14] = 1.0
    image[24:34, 30:46] = 1.0
    return image


def test_an_image_at_twice_the_model_pixel_size_is_predicted_at_the_model_scale(seen):
    from napari_microseg.core.progress import Progress

    image = _squares()
    events: list[Progress] = []
    job = segment_job(_bright_at(0.5), image, axes="YX", spacing=(1.0, 1.0))
    assert drain(job, show=False).resampled is None  # 1.0 x 1.0: napari's "unknown"
    job = segment_job(_bright_at(0.5), image, axes="YX", spacing=(0.9, 0.9))
    result = drain(job, show=False, on_progress=events.append)
    assert seen == [(40, 50), (72, 90)]  # 0.9 / 0.5 = 1.8x in Y and X
    assert result.resampled == pytest.approx((1.8, 1.8))
    assert result.probabilities.shape == (2, 40, 50) and result.labels.shape == (40, 50)
    np.testing.assert_array_equal(result.labels > 0, image > 0)  # the squares, exactly
    assert result.labels.max() == 2
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-5)
    messages = [e.message for e in events]
    assert any("Resampling 40x50 to 72x90" in m for m in messages)
    assert any("back" in m or "image's pixel size" in m for m in messages)
    assert all(e.total is None or 0 <= e.step <= e.total for e in events)


def test_no_resampling_when_unknown_within_tolerance_or_switched_off(seen):
    image = _squares()
    runs = [
        {"spacing": None},
        {"spacing": (1.0, 1.0)},
        {"spacing": (0.6, 0.6)},  # 1.2x
        {"spacing": (1.0, 1.0), "match_pixel_size": True},
        {"spacing": (0.9, 0.9), "match_pixel_size": False},
    ]
    for kwargs in runs:
        result = drain(segment_job(_bright_at(0.5), image, axes="YX", **kwargs), show=False)
        assert result.resampled is None and result.labels.shape == (40, 50)
    unknown_model = _bright_at(None)
    drain(segment_job(unknown_model, image, axes="YX", spacing=(0.9, 0.9)), show=False)
    assert seen == [(40, 50)] * (len(runs) + 1)


def test_stacks_are_resampled_in_plane_only_and_rgb_channels_are_kept(seen):
    stack = np.stack([_squares()] * 3)
    result = drain(
        segment_job(_bright_at(0.25), stack, axes="ZYX", spacing=(2.0, 0.5, 0.5)), show=False
    )
    assert seen[-1] == (3, 80, 100)  # Z untouched
    assert result.labels.shape == (3, 40, 50)
    np.testing.assert_array_equal(result.labels > 0, stack > 0)


def test_card_sizes_in_pixels_are_converted_to_the_image_grid(seen):
    model = _bright_at(0.25)
    model.card.recommended["postprocess"]["min_size"] = 200  # model pixels: 50 image pixels
    image = _squares()  # objects of 100 and 160 pixels
    image[36:39, 2:5] = 1.0  # 9 pixels (36 model pixels): removed either way
    result = drain(segment_job(model, image, axes="YX", spacing=(0.5, 0.5)), show=False)
    assert seen == [(80, 100)]
    assert result.pipeline["min_size"] == 50
    assert result.labels.max() == 2
    np.testing.assert_array_equal(result.labels > 0, _squares() > 0)


def test_pixel_sizes_on_image_grid():
    from napari_microseg.core.inference.segment import pixel_sizes_on_image_grid

    pixels = PostprocessPipeline(
        method="watershed", min_size=100, max_hole_size=8, opening_radius=4, h=2, min_distance=6
    )
    converted = pixel_sizes_on_image_grid(pixels, (2.0, 2.0))
    assert converted.min_size == 25 and converted.max_hole_size == 2
    assert converted.opening_radius == 2 and converted.h == 1 and converted.min_distance == 3
    physical = PostprocessPipeline(min_size=0.5, physical_units=True)
    assert pixel_sizes_on_image_grid(physical, (2.0, 2.0)) == physical


def test_instance_labels_come_back_by_nearest_neighbour(monkeypatch):
    from napari_microseg.core.inference import segment
    from napari_microseg.core.inference.stitching import Instances

    def fake(model, image, **kwargs):
        labels = np.zeros(np.shape(image), np.uint32)
        labels[: labels.shape[0] // 2] = 7
        yield from ()
        return Instances(labels, np.zeros(8, np.float32))

    monkeypatch.setattr(segment, "run_prediction", fake)
    result = drain(
        segment_job(_bright_at(0.5), np.zeros((10, 12), np.uint8), axes="YX", spacing=(1.0, 1.1)),
        show=False,
    )
    assert result.labels.shape == (10, 12) and result.resampled == pytest.approx((2.0, 2.2))
    np.testing.assert_array_equal(result.labels[:5], 7)
    np.testing.assert_array_equal(result.labels[5:], 0)


@pytest.mark.slow
def test_mito_em_finds_the_synthetic_mitochondria_best_when_resampled():
    """The bundled mito-em (5 nm) on a small synthetic FIB-SEM stack (10 nm); a few seconds.

    The synthetic mitochondria are as thick as real ones (200-520 nm), so the
    model trained on real ones finds them; resampled to its pixel size it
    outlines them best.
    """
    from napari_microseg.core.inference.options import PredictOptions
    from napari_microseg.core.io import synthetic
    from napari_microseg.core.models.registry import load_model

    sample = synthetic.fibsem_mitochondria((8, 192, 192), n_objects=4)
    model = load_model("mito-em", device="cpu")
    options = PredictOptions(tile_size=256, device="cpu")
    truth = sample.labels > 0
    dice = {}
    for match in (True, False):
        job = segment_job(
            model,
            sample.image,
            axes="ZYX",
            options=options,
            spacing=sample.scale,
            match_pixel_size=match,
        )
        found = drain(job, show=False).labels > 0
        dice[match] = 2 * (truth & found).sum() / (truth.sum() + found.sum())
    assert dice[True] > 0.97 and 0.9 < dice[False] < dice[True]  # measured: 0.985 and 0.952


def test_resampling_note_says_when_and_how_much():
    from napari_microseg.core.inference.segment import resampling_note

    card = ModelCard(name="mito", architecture="unet", classes=["bg", "mito"], pixel_size_um=0.005)
    note = resampling_note(card, (0.05, 0.01, 0.01), "ZYX", (4, 64, 64))
    assert "5 nm" in note and "10 nm" in note and "resampled 2x" in note
    assert resampling_note(card, (0.0055, 0.0055), "YX", (64, 64)) is None  # within 1.25x
    assert resampling_note(card, (1.0, 1.0), "YX", (64, 64)) is None
    assert resampling_note(card, None, "YX", (64, 64)) is None


class Ramp2(torch.nn.Module):
    """Two-class logits that grow from left to right: flips and turns change them."""

    def forward(self, x):
        ramp = torch.linspace(-2.0, 2.0, x.shape[-1]).expand_as(x)
        return torch.cat([-ramp, ramp], dim=1)


def test_without_options_the_card_s_test_time_augmentation_is_used():
    from napari_microseg.core.inference.options import PredictOptions

    model = wrap_module(Ramp2(), in_channels=1, classes=2, normalization={"kind": "none"})
    card = model.card
    image = np.zeros((32, 32), np.float32)

    def probabilities(options=None):
        job = segment_job(model, image, axes="YX", options=options)
        return drain(job, show=False).probabilities

    plain = probabilities()
    card.recommended["tta"] = True
    averaged = probabilities()
    np.testing.assert_allclose(averaged, probabilities(PredictOptions(tta=True)))
    np.testing.assert_allclose(plain, probabilities(PredictOptions(tta=False)))
    assert np.abs(averaged - plain).max() > 0.3  # the ramp averages out over the 8 transforms
    np.testing.assert_allclose(averaged, 0.5, atol=1e-5)
