"""npe2 finds the installed plugin, the manifest validates, every python_name imports."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from npe2 import PluginManager, PluginManifest

ROOT = Path(__file__).resolve().parents[1]


def manifest() -> PluginManifest:
    return PluginManifest.from_file(ROOT / "napari.yaml")


def python_names() -> list[str]:
    return [c.python_name for c in manifest().contributions.commands if c.python_name]


def test_installed_plugin_is_discovered_with_every_contribution():
    manager = PluginManager()
    manager.discover()
    installed = manager.get_manifest("napari-microseg")
    top_level = manifest()
    assert installed.contributions.commands == top_level.contributions.commands
    assert {s.key for s in installed.contributions.sample_data} == {
        "fibsem_mitochondria",
        "fluorescence_nuclei",
        "he_glands",
    }
    assert installed.contributions.readers and installed.contributions.writers


def test_npe2_validate_passes():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-microseg"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("python_name", python_names())
def test_manifest_command_importable(python_name):
    module, _, attribute = python_name.partition(":")
    assert hasattr(importlib.import_module(module), attribute)
