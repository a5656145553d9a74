from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from napari_microseg.core.models.base import ModelError, wrap_module
from napari_microseg.core.models.build import create_model
from napari_microseg.core.models.checkpoint import (
    inspect_checkpoint,
    load_checkpoint,
    read_card,
    save_checkpoint,
)
from napari_microseg.core.models.state_dict_import import import_state_dict

TINY = {
    "unet": {"depth": 3, "base_width": 4, "batch_norm": True},
    "segnet": {"depth": 3, "base_width": 4},
    "micronet": {"base_width": 4},
}


def trained_a_little(architecture: str, in_channels: int = 1):
    """A model whose weights and batch-norm statistics differ from a fresh one."""
    torch.manual_seed(0)
    model = create_model(
        architecture, name=f"tiny-{architecture}", in_channels=in_channels, **TINY[architecture]
    )
    model.module.train()
    model.module(torch.rand(2, in_channels, 32, 32))  # moves the running statistics
    return model.eval()


@pytest.mark.parametrize("architecture", sorted(TINY))
def test_round_trip_gives_identical_outputs(tmp_path, architecture):
    model = trained_a_little(architecture)
    x = torch.rand(1, 1, 37, 53)
    path = save_checkpoint(model, tmp_path / "m")
    assert path.name == "m.safetensors" and (tmp_path / "m.json").is_file()
    loaded = load_checkpoint(path)
    assert not loaded.module.training
    with torch.no_grad():
        assert torch.equal(model.module(x), loaded.module(x))
    assert loaded.card.to_dict() | {"version": None} == model.card.to_dict() | {"version": None}


def test_mask_rcnn_round_trip_gives_identical_detections(tmp_path):
    torch.manual_seed(0)
    tiny = {"fpn_channels": 16, "box_head_size": 32, "mask_head_channels": 16, "min_size": 32}
    model = create_model("maskrcnn", name="mrcnn", **tiny)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "mrcnn.safetensors"))
    assert type(loaded).__name__ == "MaskRCNNModel"
    x = torch.rand(1, 1, 40, 48)
    before, after = model.predict_instances(x)[0], loaded.predict_instances(x)[0]
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_card_records_what_the_issue_asks_for(tmp_path):
    model = trained_a_little("unet")
    model.card.pixel_size_um = 0.25
    model.card.trained_on = "synthetic squares"
    model.card.metrics = {"dice": 0.9, "data": "synthetic validation"}
    model.card.parent = "base-unet"
    save_checkpoint(model, tmp_path / "m")
    data = json.loads((tmp_path / "m.json").read_text())
    for key in ("name", "architecture", "hyperparameters", "in_channels", "normalization",
                "classes", "pixel_size_um", "trained_on", "metrics", "parent", "created",
                "version"):  # fmt: skip
        assert key in data, key
    assert data["format"]["sha256"] and data["format"]["dtype"] == "float32"


def test_float16_halves_the_file_and_loads_as_float32(tmp_path):
    model = trained_a_little("micronet")
    full = save_checkpoint(model, tmp_path / "full")
    half = save_checkpoint(model, tmp_path / "half", dtype="float16")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    info = inspect_checkpoint(half)
    assert info.dtype == "float16"
    loaded = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.module.parameters())
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.module(x), loaded.module(x), atol=1e-2)


def test_lone_safetensors_file_uses_the_embedded_card(tmp_path):
    path = save_checkpoint(trained_a_little("unet"), tmp_path / "m")
    (tmp_path / "m.json").unlink()
    assert read_card(path).name == "tiny-unet"
    assert load_checkpoint(path).name == "tiny-unet"


def test_saving_is_atomic_and_does_not_overwrite_by_default(tmp_path, monkeypatch):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    model = trained_a_little("unet")
    path = save_checkpoint(model, tmp_path / "m")
    original = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        save_checkpoint(model, tmp_path / "m")

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(trained_a_little("segnet"), tmp_path / "m", overwrite=True)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(model, tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    assert path.read_bytes() == original


def test_truncated_weights_name_the_model_and_what_to_do(tmp_path):
    path = save_checkpoint(trained_a_little("unet"), tmp_path / "m")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match=r"'tiny-unet'.*truncated.*copy or download it again"):
        load_checkpoint(path)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ModelError, match="not a valid safetensors file"):
        load_checkpoint(path)


def test_replaced_or_damaged_weights_are_detected_by_their_hash(tmp_path):
    path = save_checkpoint(trained_a_little("unet"), tmp_path / "m")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256 differs"):
        load_checkpoint(path)


def test_card_with_missing_fields_or_unknown_architecture(tmp_path):
    path = save_checkpoint(trained_a_little("unet"), tmp_path / "m")
    card_file = tmp_path / "m.json"
    data = json.loads(card_file.read_text())
    card_file.write_text(json.dumps({k: v for k, v in data.items() if k != "in_channels"}))
    with pytest.raises(ModelError, match=r"m.json lacks the field\(s\) in_channels"):
        load_checkpoint(path)
    card_file.write_text(json.dumps({**data, "architecture": "unet3d"}))
    with pytest.raises(ModelError, match="'tiny-unet' uses the unknown architecture 'unet3d'"):
        load_checkpoint(path)


@pytest.mark.parametrize(("saved", "used"), [(3, 1), (1, 3)])
def test_channel_mismatch_between_checkpoint_and_image(tmp_path, saved, used):
    model = trained_a_little("unet", in_channels=saved)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "m"))
    with pytest.raises(ModelError, match=r"Model 'tiny-unet' takes .* Pick a model trained"):
        loaded.predict(torch.rand(1, used, 16, 16))
    with pytest.raises(ModelError, match="'tiny-unet'"):
        loaded.check_channels(used, image_name="cells.tif")


def test_card_that_does_not_fit_the_weights(tmp_path):
    path = save_checkpoint(trained_a_little("unet", in_channels=3), tmp_path / "m")
    card_file = tmp_path / "m.json"
    card_file.write_text(json.dumps({**json.loads(card_file.read_text()), "in_channels": 1}))
    with pytest.raises(ModelError, match=r"'tiny-unet'.*weights do not fit.*wrong shape"):
        load_checkpoint(path, verify=False)


def test_custom_modules_load_into_the_users_network(tmp_path):
    model = wrap_module(torch.nn.Conv2d(1, 2, 3, padding=1), in_channels=1, classes=2, name="own")
    path = save_checkpoint(model, tmp_path / "own")
    with pytest.raises(ModelError, match=r"load_checkpoint.*module=your_module"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, module=torch.nn.Conv2d(1, 2, 3, padding=1))
    assert torch.equal(loaded.module.weight, model.module.weight)


# --- importing PyTorch state dicts -------------------------------------------------------


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_importing_a_plain_state_dict(tmp_path):
    model = trained_a_little("unet")
    wrapped = {"state_dict": {f"module.{k}": v for k, v in model.module.state_dict().items()}}
    torch.save(wrapped, tmp_path / "net.pth")
    imported = import_state_dict(tmp_path / "net.pth", "unet", hyperparameters=TINY["unet"])
    assert imported.name == "net" and imported.card.trained_on == "imported from net.pth"
    x = torch.rand(1, 1, 20, 24)
    with torch.no_grad():
        assert torch.equal(imported.module(x), model.module(x))
    with pytest.raises(ModelError, match=r"'net'.*weights do not fit.*hyperparameters"):
        import_state_dict(tmp_path / "net.pth", "unet", hyperparameters={"depth": 2})


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_that_runs_code_is_refused(tmp_path, writer):
    marker = tmp_path / "pwned"
    payload = {"weight": torch.zeros(2), "evil": RunsCode(marker)}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as stream:
            pickle.dump(payload, stream)
    with pytest.raises(ModelError, match=r"Refused to import evil.pt: loading it would run code"):
        import_state_dict(path, "unet")
    assert not marker.exists()


def test_a_pickle_is_never_read_as_model_file(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"evil": RunsCode(marker)}, tmp_path / "evil.safetensors")
    with pytest.raises(ModelError, match="PyTorch pickle checkpoint, not safetensors"):
        load_checkpoint(tmp_path / "evil.safetensors")
    assert not marker.exists()


def test_files_without_a_state_dict(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ModelError, match="holds no state dict"):
        import_state_dict(tmp_path / "list.pt", "unet")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match=r"junk\.pt"):
        import_state_dict(tmp_path / "junk.pt", "unet")
