"""Putting a result into a labels layer without losing the user's edits.

A labels layer a widget makes carries a fingerprint of its data in
``layer.metadata``; a layer whose data no longer match it was edited by hand
(painted, corrected, changed in the console) and is never replaced silently.
A replacement that is allowed is written with ``Labels.data_setitem`` as one
step of napari's undo history, so Ctrl+Z brings the previous labels back.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_info

if TYPE_CHECKING:
    import napari

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


def put_result(
    viewer: napari.Viewer, name: str, data: np.ndarray, kind: str, **kwargs: Any
) -> None:
    """Put a widget's result into the layer of that name, never losing an edit.

    A labels layer edited since it was made is kept and the result goes beside it;
    an unedited one of the same shape and place is overwritten as one undo step;
    anything else is replaced, so results do not pile up.

    Parameters
    ----------
    viewer : napari.Viewer
    name : str
        The result layer's name.
    data : ndarray
        The result: labels, or an image (probabilities).
    kind : {"labels", "image"}
    **kwargs
        Layer settings (scale, translate, opacity, metadata...).
    """
    old = viewer.layers[name] if name in viewer.layers else None
    if kind == "labels" and old is not None:
        if edited_since_made(old):
            new = viewer.add_labels(data, name=name, **kwargs)
            mark_made(new)
            show_info(f"{name!r} has edits, so it is kept; the new result is {new.name!r}.")
            return
        same_place = all(
            np.allclose(getattr(old, key), kwargs[key])
            for key in ("scale", "translate")
            if key in kwargs
        )
        if same_place and replace_undoably(old, data):
            for key, value in kwargs.items():  # as if added anew: same look, on top
                setattr(old, key, value)
            mark_made(old)  # new metadata must keep the fingerprint
            viewer.layers.move(viewer.layers.index(old), len(viewer.layers))
            return
    if old is not None:
        viewer.layers.remove(old)
    add = viewer.add_image if kind == "image" else viewer.add_labels
    layer = add(data, name=name, **kwargs)
    if kind == "labels":
        mark_made(layer)
