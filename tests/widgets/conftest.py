"""Widget-test fixtures: an isolated model registry holding small trained models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _train_tiny_unet(in_channels: int, name: str):
    """A depth-2 U-Net taught in a few dozen steps that bright blobs are foreground."""
    import torch

    from napari_microseg.core.io.synthetic import fluorescence_nuclei
    from napari_microseg.core.models.build import create_model

    torch.manual_seed(0)
    model = create_model(
        "unet",
        name=name,
        in_channels=in_channels,
        depth=2,
        base_width=8,
        modality="fluorescence",
        description="test model",
    )
    model.card.recommended["postprocess"] = {"method": "otsu", "fill_holes": True, "min_size": 20}
    model.card.recommended["tile_size"] = 128
    sample = fluorescence_nuclei()
    image = sample.image.astype(np.float32)
    image = (image - np.percentile(image, 1)) / (
        np.percentile(image, 99.8) - np.percentile(image, 1)
    )
    x = torch.from_numpy(image[None, None, :128, :128]).repeat(1, in_channels, 1, 1)
    y = torch.from_numpy((sample.labels[None, :128, :128] > 0).astype(np.int64))
    optimizer = torch.optim.Adam(model.module.parameters(), lr=0.02)
    model.module.train()
    for _ in range(40):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.module(x), y)
        loss.backward()
        optimizer.step()
    model.module.eval()
    return model


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory) -> Path:
    """A user-model folder with a 1-channel and a 3-channel tiny U-Net."""
    from napari_microseg.core.models.registry import save_user_model

    folder = tmp_path_factory.mktemp("models")
    for channels, name in ((1, "tiny-grey"), (3, "tiny-rgb")):
        save_user_model(_train_tiny_unet(channels, name), folder=folder)
    return folder


@pytest.fixture
def model_registry(trained_models, monkeypatch, tmp_path):
    """The registry sees a per-test copy of the trained models and an empty bundled folder."""
    import shutil

    from napari_microseg.core.models import registry

    user = tmp_path / "user-models"
    shutil.copytree(trained_models, user)  # models saved by one test stay out of the others
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    monkeypatch.setenv(registry.ENV_VAR, str(user))
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: bundled)
    return user
