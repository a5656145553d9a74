from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import torch

from napari_microseg.cli import models as cli_models
from napari_microseg.core.models import registry
from napari_microseg.core.models.base import ModelError
from napari_microseg.core.models.build import create_model
from napari_microseg.core.models.checkpoint import save_checkpoint
from napari_microseg.core.models.registry import (
    find_model,
    list_models,
    load_model,
    model_choices,
    save_user_model,
    unique_model_name,
    user_models_dir,
)


def tiny(name: str = "tiny", in_channels: int = 1, **card):
    torch.manual_seed(len(name))
    model = create_model("unet", name=name, in_channels=in_channels, depth=2, base_width=4)
    for key, value in card.items():
        setattr(model.card, key, value)
    return model


def test_empty_or_missing_folders_give_an_empty_list(isolated_registry):
    assert list_models() == []  # bundled folder empty, user folder absent
    isolated_registry["bundled"].rmdir()
    assert list_models() == [] and model_choices() == []


def test_user_folder_comes_from_the_environment(isolated_registry, monkeypatch):
    assert user_models_dir() == isolated_registry["user"]
    monkeypatch.delenv(registry.ENV_VAR)
    assert user_models_dir().name == "models"  # the per-user data folder


def test_bundled_and_user_models_are_listed_with_their_details(isolated_registry):
    save_checkpoint(tiny("bundled-em", modality="EM"), isolated_registry["bundled"] / "em",
                    dtype="float16")  # fmt: skip
    metrics = {"dice": 0.91, "data": "held-out tiles"}
    save_user_model(tiny("mine", in_channels=3, parent="bundled-em", metrics=metrics))
    bundled, mine = list_models()
    assert (bundled.name, bundled.source, bundled.family) == ("bundled-em", "bundled", "unet")
    assert bundled.modality == "EM" and bundled.dtype == "float16"
    assert (mine.source, mine.in_channels, mine.lineage) == ("user", 3, ("bundled-em",))
    assert mine.modality.startswith("RGB") and mine.metrics == metrics
    assert 0 < bundled.size_mb < mine.size_mb
    assert [name for _, name in model_choices()] == ["bundled-em", "mine"]
    assert json.loads(json.dumps(mine.as_dict()))["lineage"] == ["bundled-em"]


def test_lineage_follows_the_whole_chain(isolated_registry):
    save_user_model(tiny("a"))
    save_user_model(tiny("b", parent="a"))
    save_user_model(tiny("c", parent="b"))
    assert {e.name: e.lineage for e in list_models()} == {
        "a": (),
        "b": ("a",),
        "c": ("b", "a"),
    }


def test_broken_and_foreign_files_are_listed_as_unusable(isolated_registry):
    user = isolated_registry["user"]
    save_user_model(tiny("good"))
    (user / "notes.txt").write_text("ignored")
    (user / ".good.json.partial.json").write_text("half-written, ignored")
    (user / "bad.json").write_text("{not json")
    (user / "nocard.safetensors").write_bytes((user / "good.safetensors").read_bytes()[:8])
    (user / "legacy.pth").write_bytes(b"\x80\x02")
    (user / "model.h5").write_bytes(b"HDF")
    good = (user / "good.safetensors").read_bytes()
    (user / "cut.safetensors").write_bytes(good[: len(good) // 2])
    (user / "cut.json").write_text((user / "good.json").read_text().replace('"good"', '"cut"'))
    (user / "unknown.json").write_text(
        (user / "good.json").read_text().replace('"unet"', '"swin"').replace('"good"', '"unk"')
    )
    (user / "unknown.safetensors").write_bytes(good)
    entries = {e.path.name: e for e in list_models()}
    assert set(entries) == {
        "good.safetensors", "bad.json", "nocard.safetensors", "legacy.pth", "model.h5",
        "cut.json", "unknown.json",
    }  # fmt: skip
    assert entries["good.safetensors"].usable
    problems = {name: e.problem for name, e in entries.items() if not e.usable}
    assert "cannot be read" in problems["bad.json"]
    assert "not a valid safetensors" in problems["nocard.safetensors"]
    assert "never loaded automatically" in problems["legacy.pth"]
    assert "not a napari-microseg model" in problems["model.h5"]
    assert "truncated" in problems["cut.json"]
    assert "unknown architecture 'swin'" in problems["unknown.json"]
    assert [name for _, name in model_choices()] == ["good"]
    with pytest.raises(ModelError, match=r"'cut' cannot be used.*truncated"):
        load_model("cut")


def test_duplicate_names_are_flagged(isolated_registry):
    save_checkpoint(tiny("same"), isolated_registry["bundled"] / "same")
    isolated_registry["user"].mkdir()
    save_checkpoint(tiny("same"), isolated_registry["user"] / "copy")
    bundled, user = list_models()
    assert bundled.usable and not user.usable and "already used by the bundled" in user.problem


def test_load_by_name_or_path_and_device_fallback(isolated_registry, monkeypatch, tmp_path):
    model = tiny("mito")
    path = save_user_model(model)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="CUDA GPU was requested"):
        loaded = load_model("mito", device="cuda")
    assert loaded.device.type == "cpu"
    x = torch.rand(1, 1, 13, 17)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model.module.eval()(x))
    assert load_model(path).name == "mito"
    assert load_model(str(path.with_suffix(".json"))).name == "mito"
    assert find_model(path).source == "user"
    outside = save_checkpoint(tiny("elsewhere"), tmp_path / "elsewhere")
    assert find_model(outside).source == "file"
    assert [e.name for e in list_models([outside, path])] == ["mito", "elsewhere"]


def test_unknown_names_and_paths_say_what_to_do(isolated_registry, tmp_path):
    save_user_model(tiny("known"))
    with pytest.raises(ModelError, match=r"No model named 'nope'. Available models: known"):
        load_model("nope")
    with pytest.raises(ModelError, match="No model file"):
        load_model(tmp_path / "missing.safetensors")
    torch.save({"w": torch.zeros(1)}, tmp_path / "net.pt")
    with pytest.raises(ModelError, match="microseg models import"):
        load_model(tmp_path / "net.pt")


def test_save_user_model_never_overwrites_a_different_model_silently(isolated_registry):
    first = tiny("mine")
    path = save_user_model(first)
    stamp = path.stat().st_mtime_ns
    assert save_user_model(first) == path  # the same model again: nothing changes
    assert path.stat().st_mtime_ns == stamp
    other = tiny("other-weights")
    with pytest.raises(ModelError, match=r"different model.*'mine-2'.*overwrite=True"):
        save_user_model(other, "mine")
    assert unique_model_name("mine") == "mine-2"
    assert save_user_model(other, "mine", overwrite=True) == path
    assert load_model("mine").card.name == "mine"
    save_checkpoint(tiny("shipped"), isolated_registry["bundled"] / "shipped")
    with pytest.raises(ModelError, match="bundled model named 'shipped'"):
        save_user_model(tiny("x"), "shipped", overwrite=True)


def test_listing_imports_no_torch(isolated_registry):
    save_user_model(tiny("light"))
    code = (
        "import sys; from napari_microseg.core.models.registry import list_models; "
        "entries = list_models(); assert 'light' in [e.name for e in entries], entries; "
        "import napari_microseg.core.models, napari_microseg.core.models.build; "
        "print(any(m.split('.')[0] == 'torch' for m in sys.modules))"
    )
    env = {**__import__("os").environ, registry.ENV_VAR: str(isolated_registry["user"])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --- `microseg models` --------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="microseg")
    cli_models.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_lists_models_as_a_table_and_as_json(isolated_registry, capsys):
    save_user_model(tiny("listed", metrics={"dice": 0.8765, "data": "val"}))
    (isolated_registry["user"] / "broken.json").write_text("{")
    assert run_cli("models") == 0
    table = capsys.readouterr().out
    assert "listed" in table and "unet" in table and "dice=0.876 (val)" in table
    assert "Unusable files:" in table and "broken.json" in table
    assert run_cli("models", "--json", "list", "--usable") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == ["listed"]


def test_cli_info_and_import(isolated_registry, tmp_path, capsys):
    net = tiny("src").module
    torch.save(net.state_dict(), tmp_path / "net.pth")
    hyper = json.dumps({"depth": 2, "base_width": 4})
    assert run_cli("models", "import", str(tmp_path / "net.pth"), "--architecture", "unet",
                   "--name", "imported", "--hyperparameters", hyper, "--float16") == 0  # fmt: skip
    assert "Imported 'imported'" in capsys.readouterr().out
    assert run_cli("models", "info", "imported") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dtype"] == "float16" and info["card"]["trained_on"] == "imported from net.pth"
    for argv in (("info", "imported", "--json"), ("--json", "info", "imported")):
        assert run_cli("models", *argv) == 0
        assert json.loads(capsys.readouterr().out) == info


def test_cli_help_names_the_actions_it_has():
    parser = argparse.ArgumentParser(prog="microseg")
    cli_models.register(parser.add_subparsers(dest="command"))
    text = parser.format_help()
    assert "show a model card (info)" in text and "describe" not in text
