"""Autosave of label images being corrected, so a crash never loses the user's work.

Autosaves are TIFF label files (ids and voxel size kept) written atomically to
``<user data folder>/autosave/`` (override with the environment variable
``NAPARI_MICROSEG_AUTOSAVE``). The newest autosave of a layer can be restored
after napari crashed or was closed without saving.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .writers import write_labels

ENV_FOLDER = "NAPARI_MICROSEG_AUTOSAVE"


def autosave_folder() -> Path:
    """The folder autosaves go to (created on first use)."""
    override = os.environ.get(ENV_FOLDER)
    if override:
        folder = Path(override)
    else:
        from platformdirs import user_data_dir

        folder = Path(user_data_dir("napari-microseg")) / "autosave"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "labels"


@dataclass(frozen=True)
class Autosave:
    """One autosaved label image."""

    path: Path
    layer_name: str
    saved_at: float

    def describe(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))
        return f"{self.layer_name} (autosaved {stamp})"


def write_autosave(
    labels: np.ndarray, layer_name: str, *, scale: tuple[float, ...] | None = None
) -> Path:
    """Write ``labels`` as the autosave of ``layer_name``, atomically (replacing the last one)."""
    path = autosave_folder() / f"{_safe_name(layer_name)}.autosave.tif"
    return write_labels(path, labels, scale=scale)


def list_autosaves() -> list[Autosave]:
    """Autosaves present, newest first."""
    found = []
    for path in autosave_folder().glob("*.autosave.tif"):
        found.append(Autosave(path, path.name[: -len(".autosave.tif")], path.stat().st_mtime))
    return sorted(found, key=lambda a: a.saved_at, reverse=True)


def discard_autosave(layer_name: str) -> None:
    """Remove the autosave of ``layer_name`` (after the user saved for real)."""
    path = autosave_folder() / f"{_safe_name(layer_name)}.autosave.tif"
    path.unlink(missing_ok=True)
