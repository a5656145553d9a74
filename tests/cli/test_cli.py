"""The ``microseg`` command: help, version, the headless demo."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_microseg import __version__
from napari_microseg.cli import main
from napari_microseg.core.io.images import imread


def test_help_lists_demo(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "napari_microseg", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and __version__ in result.stdout


def test_demo_writes_labels_and_preview(tmp_path, capsys, monkeypatch):
    from napari_microseg.core.models import registry

    # Without bundled models the demo falls back to classical segmentation
    # (tests/test_cli_demo_bundled.py covers the bundled model).
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: tmp_path / "no-bundled-models")
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "classical segmentation" in out
    labels = imread(tmp_path / "fibsem_mitochondria_labels.tif")
    assert labels.kind == "labels" and labels.data.ndim == 3 and labels.data.max() > 10
    np.testing.assert_allclose(labels.scale, (0.01, 0.01, 0.01))
    preview = imread(tmp_path / "fibsem_mitochondria_preview.png")
    assert preview.is_rgb


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is Linux-only")
def test_demo_gui_without_display_says_what_to_do(monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["demo", "--gui"]) == 2
    assert "xvfb-run" in capsys.readouterr().err


def test_models_table_shortens_a_long_validation_description():
    from napari_microseg.cli.models import _metrics_text

    long = "validation split: " + ", ".join(f"image-{i}" for i in range(100))
    text = _metrics_text({"dice": 0.9, "data": long})
    assert text.startswith("dice=0.9 (validation split: image-0")
    assert text.endswith("…)") and len(text) < 100
    assert _metrics_text({"dice": 0.9, "data": "val"}) == "dice=0.9 (val)"
