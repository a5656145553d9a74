"""Suite-wide fixtures: no test touches the user's real model, autosave or config folders."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_user_folders(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.mktemp("user-data")
    monkeypatch.setenv("NAPARI_MICROSEG_AUTOSAVE", str(base / "autosave"))
    monkeypatch.setenv("NAPARI_MICROSEG_MODELS", str(base / "models"))
    monkeypatch.setenv("NAPARI_MICROSEG_CONFIG", str(base / "config"))


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

        from napari_microseg.bundling.bundle import save_bundled
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


# --- a tiny model for the `microseg predict` tests ---------------------------------------


def bright_model():
    """Logits for (background, foreground): foreground where the input is above 0.5."""
    import torch

    from napari_microseg.core.models.base import ModelCard, SegmentationModel

    class Bright(torch.nn.Module):
        def forward(self, x):
            return torch.cat([(0.5 - x) * 20, (x - 0.5) * 20], dim=1)

    card = ModelCard(
        name="bright",
        architecture="custom",
        classes=["background", "foreground"],
        normalization={"kind": "range", "min": 0, "max": 255},
        recommended={"tile_size": 32, "postprocess": {"method": "threshold", "threshold": 0.5}},
    )
    return SegmentationModel(Bright(), card)


@pytest.fixture
def thresholding_model():
    """:func:`bright_model`: foreground exactly where the input is above half its 0-255 range."""
    return bright_model()


class CallRecorded(Exception):
    """Raised by :func:`record_call`'s stand-in once it has kept the call's keyword arguments."""


@pytest.fixture
def record_call(monkeypatch):
    """Replace a function (dotted path) by one that keeps its keyword arguments and stops.

    Returns ``patch(target) -> kwargs``: a dict filled by the call, which then raises
    :class:`CallRecorded` (``pytest.raises(record_call.stop)``), so nothing runs.
    """

    def patch(target: str) -> dict:
        seen: dict = {}

        def stand_in(*args, **kwargs):
            seen.update(kwargs)
            raise CallRecorded(target)

        monkeypatch.setattr(target, stand_in)
        return seen

    patch.stop = CallRecorded
    return patch


@pytest.fixture
def loads(monkeypatch):
    """``microseg predict`` loads a tiny thresholding model; the list of names asked for."""
    from napari_microseg.cli import predict as cli_predict

    calls = []

    def load(name, device):
        calls.append(name)
        return bright_model()

    monkeypatch.setattr(cli_predict, "load", load)
    return calls


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """An empty model registry in tmp_path, trained on one thread (the test machine's cores are
    shared); returns the user model folder. Training test modules use it for every test."""
    import torch

    from napari_microseg.core.models import registry

    bundled, user = tmp_path / "bundled", tmp_path / "user"
    bundled.mkdir()
    monkeypatch.setenv(registry.ENV_VAR, str(user))
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: bundled)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield user
    torch.set_num_threads(threads)
