"""Suite-wide fixtures: no test reads or writes the user's real model or autosave folders."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_user_folders(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.mktemp("user-data")
    monkeypatch.setenv("NAPARI_MICROSEG_AUTOSAVE", str(base / "autosave"))
    monkeypatch.setenv("NAPARI_MICROSEG_MODELS", str(base / "models"))


@pytest.fixture
def make_bundled_model():
    """Write a tiny untrained model with a complete bundled card into a folder.

    For tests of the bundled-model machinery only (registry, demo, widget
    defaults); such a model never goes into ``src/napari_microseg/models``.
    Returns ``make(folder, name, *, in_channels=1, modality="EM", kind="lucchi", tile=128)``,
    which returns the weights path.
    """

    def make(folder, name, *, in_channels=1, modality="EM", kind="lucchi", seed=0, tile=128):
        import torch

        from napari_microseg.core.bundling import save_bundled
        from napari_microseg.core.models.build import create_model
        from napari_microseg.core.models.bundled import TARGETS

        torch.manual_seed(seed)
        model = create_model(
            "unet", name=name, in_channels=in_channels, depth=2, base_width=4, modality=modality
        )
        target = TARGETS[kind]
        card = model.card
        card.description = f"test model {name}"
        card.trained_on = "synthetic test data"
        card.lineage = {
            "dataset": {"kind": kind, "description": "synthetic test data"},
            "settings": {"steps": 1},
            "steps": 1,
            "duration_s": 1.0,
            "hardware": "test machine",
            "retrain_command": "microseg train --config configs/test.yaml --data test",
        }
        card.recommended = {
            "tile_size": tile,
            "overlap": 0.25,
            "postprocess": {"method": "otsu", "fill_holes": True},
            "mpx_per_s_cpu": 1.0,
            "speed": {"threads": 1, "mpx_per_s_cpu": 1.0},
        }
        card.metrics = {
            target.metric: 0.5,
            "data": "validation split: synthetic",
            "validation": {target.metric: 0.5},
            "target": target.as_dict(0.5),
        }
        return save_bundled(model, card, folder, overwrite=True)

    return make
