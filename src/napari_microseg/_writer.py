"""npe2 writer: a Labels layer to TIFF (2D/3D, ids and voxel size kept) or PNG (2D)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .core.io.writers import write_labels as _write_labels


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a labels layer atomically; returns the written path for napari."""
    scale = meta.get("scale")
    scale = tuple(float(s) for s in scale) if scale is not None else None
    if scale is not None and all(s == 1.0 for s in scale):
        scale = None  # napari's default scale says nothing about physical size
    written = _write_labels(path, np.asarray(data), scale=scale)
    return [str(written)]
