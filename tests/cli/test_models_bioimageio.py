"""``microseg models export --bioimageio`` and ``microseg models import PACKAGE``."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from napari_microseg.cli import main
from napari_microseg.core.models import registry
from napari_microseg.core.models.build import create_model

pytest.importorskip("bioimageio.spec")


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated registry holding one tiny model."""
    folder = tmp_path / "user"
    monkeypatch.setenv(registry.ENV_VAR, str(folder))
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: tmp_path / "none")
    torch.manual_seed(0)
    registry.save_user_model(create_model("unet", name="tiny", depth=2, base_width=4))
    return folder


def test_export_then_import_lists_the_model(user, tmp_path, capsys):
    out = tmp_path / "tiny.zip"
    assert main(["models", "export", "tiny", "--bioimageio", str(out), "--author", "Me"]) == 0
    assert zipfile.is_zipfile(out) and "Exported" in capsys.readouterr().out
    assert main(["models", "import", str(out), "--name", "tiny-zoo"]) == 0
    assert "tiny-zoo" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed["tiny-zoo"]["usable"] and listed["tiny-zoo"]["family"] == "unet"


def test_torchscript_export_imports_as_a_package(user, tmp_path, capsys):
    out = tmp_path / "ts.zip"
    args = ["models", "export", "tiny", "--bioimageio", str(out), "--weights", "torchscript"]
    assert main(args) == 0
    assert main(["models", "import", str(out), "--name", "tiny-ts"]) == 0
    assert (user / "tiny-ts.bioimageio.zip").is_file()
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "tiny-ts" in capsys.readouterr().out


def test_bad_package_gives_one_clear_line(user, tmp_path, capsys):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("rdf.yaml", "type: model\nformat_version: 7.0.0\nname: future\n")
    assert main(["models", "import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "spec version '7.0.0'" in err and "Traceback" not in err
    # The broken package never breaks the list.
    (user / "bad.zip").write_bytes(bad.read_bytes())
    assert main(["models"]) == 0
    captured = capsys.readouterr().out
    assert "tiny" in captured and "bad.zip" in captured


def test_export_refuses_instance_models_and_state_dict_import_needs_architecture(
    user, tmp_path, capsys
):
    assert main(["models", "export", "tiny", "--bioimageio", str(tmp_path / "x.tar")]) == 2
    assert ".zip" in capsys.readouterr().err
    weights = tmp_path / "net.pth"
    torch.save(create_model("unet", name="n", depth=2, base_width=4).module.state_dict(), weights)
    assert main(["models", "import", str(weights)]) == 2
    assert "--architecture" in capsys.readouterr().err
