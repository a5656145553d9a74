"""Suite-wide fixtures: no test reads or writes the user's real model or autosave folders."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_user_folders(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.mktemp("user-data")
    monkeypatch.setenv("NAPARI_MICROSEG_AUTOSAVE", str(base / "autosave"))
    monkeypatch.setenv("NAPARI_MICROSEG_MODELS", str(base / "models"))
