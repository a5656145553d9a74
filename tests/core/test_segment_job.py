"""Segment = predict + the model's recommended post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_microseg.core.models.base import ModelCard, wrap_module
from napari_microseg.core.postprocess import PostprocessPipeline
from napari_microseg.core.progress import drain
from napari_microseg.core.segment import pipeline_spacing, recommended_pipeline, segment_job


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
    from napari_microseg.core.models.base import ModelCard
    from napari_microseg.core.segment import scale_mismatch

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
