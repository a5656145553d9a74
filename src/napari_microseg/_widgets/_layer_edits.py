"""Putting a result into a labels layer without losing the user's edits.

A labels layer a widget makes carries a fingerprint of its data in
``layer.metadata``; a layer whose data no longer match it was edited by hand
(painted, corrected, changed in the console) and is never replaced silently.
A replacement that is allowed is written with ``Labels.data_setitem`` as one
step of napari's undo history, so Ctrl+Z brings the previous labels back.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from napari.layers import Labels

#: Metadata key holding the fingerprint of the data a widget put into a layer.
FINGERPRINT = "microseg_fingerprint"


def fingerprint(data: Any) -> str | None:
    """Shape, dtype and CRC-32 of an in-memory label array; None for a lazy (zarr, dask) one.

    Parameters
    ----------
    data : (M, N) or (P, M, N) array
        The labels.
    """
    if not isinstance(data, np.ndarray):
        return None  # reading a whole store to fingerprint it would be too slow
    crc = zlib.crc32(np.ascontiguousarray(data).view(np.uint8).ravel())
    return f"{data.shape}:{data.dtype.str}:{crc:08x}"


def mark_made(layer: Labels) -> None:
    """Record that the layer's current data are a widget's result, not the user's edits."""
    layer.metadata = {**layer.metadata, FINGERPRINT: fingerprint(layer.data)}


def edited_since_made(layer: Labels) -> bool:
    """Whether the layer's data changed since a widget made them (True when not made by one)."""
    made = layer.metadata.get(FINGERPRINT)
    return made is None or made != fingerprint(layer.data)


def replace_undoably(layer: Labels, labels: np.ndarray) -> bool:
    """Write ``labels`` into ``layer`` as one undoable step (Ctrl+Z restores the previous data).

    Parameters
    ----------
    layer : Labels
        The layer to write into; its data must be an in-memory array.
    labels : ndarray of int, the layer's shape
        The new labels.

    Returns
    -------
    bool
        False, with nothing changed, when the replacement cannot be recorded in
        napari's undo history: another shape, ids too large for the layer's
        dtype, or lazy data.
    """
    data = layer.data
    if not isinstance(data, np.ndarray) or data.shape != labels.shape:
        return False
    if labels.size and int(labels.max()) > np.iinfo(data.dtype).max:
        return False
    changed = data != labels
    # One data_setitem call is one step in napari's undo history.
    layer.data_setitem(np.nonzero(changed), labels[changed].astype(data.dtype, copy=False))
    mark_made(layer)
    return True
