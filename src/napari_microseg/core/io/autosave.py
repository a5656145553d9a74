"""Autosave of label images being corrected, so a crash never loses the user's work.

Autosaves are TIFF label files (ids and voxel size kept) written atomically to
``<user data folder>/autosave/`` (override with the environment variable
``NAPARI_MICROSEG_AUTOSAVE``). The newest autosave of a layer can be restored
after napari crashed or was closed without saving. Each layer has its own file,
named after the layer and a digest of its exact name (:func:`autosave_path`), so
two layers never share one and discarding one never removes the other's.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .writers import write_labels

ENV_FOLDER = "NAPARI_MICROSEG_AUTOSAVE"
#: Every autosave file name ends so.
SUFFIX = ".autosave.tif"
#: Characters of the cleaned layer name kept in a file name (well under the usual 255 bytes).
NAME_CHARS = 80
#: Hex digits of the name's SHA-256 that tell two layers' files apart.
DIGEST_CHARS = 12
_DIGESTED = re.compile(rf"\.[0-9a-f]{{{DIGEST_CHARS}}}$")


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


def autosave_path(layer_name: str) -> Path:
    """The autosave file of ``layer_name``: ``<clean name>.<digest>.autosave.tif``.

    The clean name (ASCII letters, digits, ``._-``; at most :data:`NAME_CHARS`)
    is for the eye; the digest, 12 hex digits of the SHA-256 of the exact
    name, keeps the files of two layers apart whose names clean up alike
    (``cells/nuclei`` and ``cells_nuclei``, any two non-ASCII names) or differ
    only in case (on case-insensitive file systems).
    """
    digest = hashlib.sha256(layer_name.encode("utf-8", "surrogatepass")).hexdigest()
    readable = _safe_name(layer_name)[:NAME_CHARS]
    return autosave_folder() / f"{readable}.{digest[:DIGEST_CHARS]}{SUFFIX}"


@dataclass(frozen=True)
class Autosave:
    """One autosaved label image.

    Attributes
    ----------
    path : Path
        The TIFF file.
    layer_name : str
        The layer's name as cleaned for the file name (exact for plain ASCII names).
    saved_at : float
        Modification time, seconds since the epoch.
    """

    path: Path
    layer_name: str
    saved_at: float

    def describe(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))
        return f"{self.layer_name} (autosaved {stamp})"


def write_autosave(
    labels: np.ndarray, layer_name: str, *, scale: tuple[float, ...] | None = None
) -> Path:
    """Write ``labels`` as the autosave of ``layer_name``, atomically (replacing its last one)."""
    return write_labels(autosave_path(layer_name), labels, scale=scale)


def list_autosaves() -> list[Autosave]:
    """Autosaves present, newest first, including those named the old way (no digest)."""
    found = []
    for path in autosave_folder().glob(f"*{SUFFIX}"):
        stem = path.name[: -len(SUFFIX)]
        # Files written before the digest was added are named <clean name>.autosave.tif.
        name = _DIGESTED.sub("", stem)
        found.append(Autosave(path, name, path.stat().st_mtime))
    return sorted(found, key=lambda a: a.saved_at, reverse=True)


def discard_autosave(layer_name: str) -> None:
    """Remove the autosave of ``layer_name`` (after the user saved for real).

    Only that layer's own file goes: an old-style file without a digest may
    belong to another layer whose name cleans up alike, so it stays.
    """
    autosave_path(layer_name).unlink(missing_ok=True)
