"""Shared helpers of the inference tests."""

from __future__ import annotations

import pytest
import torch

from napari_microseg.core.models.base import ModelCard, SegmentationModel


@pytest.fixture
def identity_model():
    """A factory: one 1x1 convolution with weight 1, so the output is the normalized input."""

    def make(normalization: dict) -> SegmentationModel:
        conv = torch.nn.Conv2d(1, 1, 1, bias=False)
        torch.nn.init.ones_(conv.weight)
        card = ModelCard(
            name="identity", architecture="custom", in_channels=1, normalization=normalization
        )
        return SegmentationModel(conv, card, activation="none")

    return make
