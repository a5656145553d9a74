"""Where and whether the Segment widget predicts a layer block by block (no Qt here).

A layer goes block by block when its data is not a NumPy array (a lazy dask or
zarr array) or its probabilities would exceed :data:`IN_MEMORY_LIMIT_BYTES`.
The results go next to a writable zarr input, else to :func:`predictions_dir`,
named after the layer and the model, with chunks that follow the input's.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari.layers import Image, Layer

#: Environment variable naming the folder for results of inputs that are not writable zarr.
ENV_FOLDER = "NAPARI_MICROSEG_PREDICTIONS"
#: Above this estimated size of the probabilities (2 classes, float32), predict block by block.
IN_MEMORY_LIMIT_BYTES = 1 << 30
#: Output chunks along Y and X: the input's chunks grown to at least this, at most the max.
MIN_PLANE_CHUNK = 256
MAX_PLANE_CHUNK = 1024
#: Output chunks along other axes (Z, T): the input's chunks, at most this.
MAX_OTHER_CHUNK = 16


class OutputFolderError(OSError):
    """No writable folder for the results; the message says what to do."""


# ----------------------------------------------------------------------------- decisions


def layer_array(layer: Image) -> Any:
    """The layer's full-resolution data (level 0 of a multiscale layer)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def is_lazy(data: Any) -> bool:
    """True for data napari reads on demand (dask, zarr...), not an array in memory."""
    return not isinstance(data, np.ndarray)


def estimated_bytes(data: Any, axes: str) -> int:
    """Bytes of the probabilities of a 2-class model over the image's spatial axes."""
    spatial = [int(s) for s, a in zip(data.shape, axes) if a != "C"]
    return math.prod(spatial) * 2 * 4


def wants_blocks(data: Any, axes: str) -> bool:
    """True when the image should be predicted block by block into zarr.

    Parameters
    ----------
    data : array-like
        The layer's data (see :func:`layer_array`).
    axes : str
        Its axis letters.
    """
    return is_lazy(data) or estimated_bytes(data, axes) > IN_MEMORY_LIMIT_BYTES


def source_zarr_path(layer: Layer) -> Path | None:
    """The zarr store on disk the layer was opened from, if any."""
    candidates = [getattr(getattr(layer, "source", None), "path", None)]
    candidates.append((layer.metadata or {}).get("path"))
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(str(candidate))
        markers = ("zarr.json", ".zarray", ".zgroup")
        is_zarr = path.suffix.lower() == ".zarr" or any((path / m).exists() for m in markers)
        if is_zarr and path.is_dir():
            return path
    return None


def predictions_dir() -> Path:
    """Where results go when the input is not a writable zarr: ``$NAPARI_MICROSEG_PREDICTIONS``.

    Else ``predictions`` in the user's napari-microseg data folder.
    """
    override = os.environ.get(ENV_FOLDER, "").strip()
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_path

    return user_data_path("napari-microseg", appauthor=False) / "predictions"


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def output_folder(layer: Layer) -> Path:
    """The folder for the results: next to a zarr input when writable, else :func:`predictions_dir`.

    Raises
    ------
    OutputFolderError
        If that folder cannot be created or written.
    """
    source = source_zarr_path(layer)
    if source is not None and _writable(source.parent):
        return source.parent
    folder = predictions_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        problem = None if _writable(folder) else "permission denied"
    except OSError as error:
        problem = error.strerror or str(error)
    if problem is not None:
        raise OutputFolderError(
            f"Cannot write the results to {folder} ({problem}); make it writable or set "
            f"{ENV_FOLDER} to a writable folder."
        )
    return folder


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"


@dataclass(frozen=True)
class BlockOutputs:
    """Where a block-by-block segmentation writes.

    Attributes
    ----------
    folder : Path
        The folder of both stores.
    probabilities, labels : Path
        The ``(K, *spatial)`` float32 and ``spatial`` uint32 zarr stores.
    """

    folder: Path
    probabilities: Path
    labels: Path


def output_paths(folder: Path, layer_name: str, model_name: str) -> BlockOutputs:
    """The stores of a layer and a model: ``<layer>_<model>.probabilities.zarr`` and ``.labels``."""
    stem = f"{_safe(layer_name)}_{_safe(model_name)}"
    return BlockOutputs(
        folder, folder / f"{stem}.probabilities.zarr", folder / f"{stem}.labels.zarr"
    )


def output_chunks(data: Any, axes: str) -> tuple[int, ...] | None:
    """Output chunks over the spatial axes, aligned with a chunked input's chunks.

    Along Y and X the input's chunk is grown to a multiple of at least
    :data:`MIN_PLANE_CHUNK` (at most :data:`MAX_PLANE_CHUNK`), so that the halo
    of tiles around a block stays small; along other axes it is kept, at most
    :data:`MAX_OTHER_CHUNK`. None (the core's default) for unchunked input.
    """
    chunks = getattr(data, "chunksize", None)  # dask
    if chunks is None and type(data).__module__.startswith("zarr"):
        chunks = data.chunks
    if chunks is None or len(chunks) != len(axes):
        return None
    out = []
    for axis, chunk, size in zip(axes, chunks, data.shape):
        chunk, size = max(int(chunk), 1), int(size)
        if axis == "C":
            continue
        if axis in "YX":
            value = chunk * math.ceil(MIN_PLANE_CHUNK / chunk) if chunk < MIN_PLANE_CHUNK else chunk
            value = min(value, MAX_PLANE_CHUNK)
        else:
            value = min(chunk, MAX_OTHER_CHUNK)
        out.append(min(value, size))
    return tuple(out)
