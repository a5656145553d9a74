"""Shared fixtures for the model tests: an isolated registry and a tiny overfitting loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from napari_microseg.core.models import registry


@pytest.fixture(autouse=True)
def isolated_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Empty bundled and user folders in tmp_path, so no test sees or writes real models."""
    folders = {"bundled": tmp_path / "bundled", "user": tmp_path / "user"}
    folders["bundled"].mkdir()
    monkeypatch.setenv(registry.ENV_VAR, str(folders["user"]))
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: folders["bundled"])
    return folders


@pytest.fixture(autouse=True)
def _few_threads():
    # The test machine's cores are shared; tiny networks gain nothing from more threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_batch(channels: int, height: int = 32, width: int = 40, n: int = 2):
    """Bright squares on a dim background, with their two-class labels."""
    generator = torch.Generator().manual_seed(0)
    target = torch.zeros(n, height, width, dtype=torch.long)
    target[0, 4:14, 5:20] = 1
    target[1, 15:28, 10:30] = 1
    noise = 0.05 * torch.randn(n, channels, height, width, generator=generator)
    image = target[:, None].float().expand(-1, channels, -1, -1) * 0.8 + 0.1 + noise
    return image, target


@pytest.fixture
def overfit() -> Callable[..., list[float]]:
    """Train a semantic module on one synthetic batch; return the losses of each step."""

    def run(module: torch.nn.Module, channels: int, steps: int = 40, lr: float = 3e-3):
        torch.manual_seed(0)
        image, target = synthetic_batch(channels)
        optimizer = torch.optim.Adam(module.parameters(), lr=lr)
        module.train()
        losses = []
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(module(image), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    return run
