"""npe2 finds the installed plugin, the manifest validates, every python_name imports."""

from __future__ import annotations

import importlib
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
from npe2 import PluginManager, PluginManifest
from npe2.manifest.contributions import ReaderContribution

from napari_microseg.core.io.image_data import IMAGE_SUFFIXES, ZARR_SUFFIXES

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


def test_reader_claims_every_format_the_plugin_reads():
    [reader] = manifest().contributions.readers
    for suffix in IMAGE_SUFFIXES + ZARR_SUFFIXES:
        name = f"image{suffix}"
        assert any(fnmatch(name, pattern) for pattern in reader.filename_patterns), name
    assert reader.accepts_directories  # folders of slices and zarr stores


def test_npe2_has_no_reader_priority_field():
    """Why the widgets read the voxel size from the layer's file (tests/widgets/test_first_session).

    napari picks a reader by a user setting (``plugins.extension2reader``), or
    its own when ``viewer.open`` names no plugin; a manifest cannot make ours the
    default. If npe2 grows such a field, set it in napari.yaml.
    """
    assert set(ReaderContribution.model_fields) == {
        "command",
        "filename_patterns",
        "accepts_directories",
    }
