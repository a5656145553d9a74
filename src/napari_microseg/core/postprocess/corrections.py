"""Label-correction operations: merge, split, delete, clean up, relabel, navigate.

Each operation reads a label image and returns a :class:`LabelEdit` (which
pixels change, and to what) instead of changing the array. The napari widget
applies an edit with ``Labels.data_setitem``, so every operation lands in
napari's undo history; scripts call :meth:`LabelEdit.apply`.

All functions accept 2D ``(M, N)`` and 3D ``(P, M, N)`` integer label images,
0 being background.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class LabelEdit:
    """Pixels to change in a label image.

    Parameters
    ----------
    indices : tuple of ndarray
        One integer index array per axis (NumPy fancy indexing).
    values : int or ndarray
        The new id for all those pixels, or one id per pixel.
    description : str
        What the edit does, for notifications and the log.
    """

    indices: tuple[np.ndarray, ...]
    values: int | np.ndarray
    description: str = ""

    @property
    def n_pixels(self) -> int:
        """How many pixels the edit touches."""
        return int(self.indices[0].size) if self.indices else 0

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """Write the edit into ``labels`` in place and return it."""
        if self.n_pixels:
            labels[self.indices] = self.values
        return labels


def _edit(mask: np.ndarray, values: int | np.ndarray, description: str) -> LabelEdit:
    return LabelEdit(tuple(np.nonzero(mask)), values, description)


def _empty(labels: np.ndarray, description: str) -> LabelEdit:
    return LabelEdit(tuple(np.empty(0, np.intp) for _ in range(labels.ndim)), 0, description)


def object_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted ids of the objects present (0 excluded)."""
    ids = np.unique(np.asarray(labels))
    return ids[ids != 0]


def count_objects(labels: np.ndarray) -> int:
    """Number of distinct non-zero ids."""
    return int(object_ids(labels).size)


def merge_labels(labels: np.ndarray, ids: Iterable[int], *, into: int | None = None) -> LabelEdit:
    """Give several objects one id.

    Parameters
    ----------
    labels : (M, N[, P]) ndarray of int
        The label image.
    ids : iterable of int
        Objects to merge (0 is ignored).
    into : int, optional
        The id they all get; the smallest of ``ids`` by default.

    Returns
    -------
    LabelEdit

    Examples
    --------
    >>> labels = np.array([[1, 1, 2, 3]])
    >>> merge_labels(labels, [2, 3]).apply(labels.copy())
    array([[1, 1, 2, 2]])
    """
    ids = sorted({int(i) for i in ids if int(i) != 0})
    if len(ids) < 2:
        return _empty(labels, "merge needs at least two objects")
    target = ids[0] if into is None else int(into)
    mask = np.isin(labels, [i for i in ids if i != target])
    return _edit(mask, target, f"merged {ids} into {target}")


def delete_labels(labels: np.ndarray, ids: Iterable[int]) -> LabelEdit:
    """Erase objects (set them to background)."""
    ids = sorted({int(i) for i in ids if int(i) != 0})
    return _edit(np.isin(labels, ids), 0, f"deleted {ids}")


def split_label(
    labels: np.ndarray, label_id: int, seeds: np.ndarray, *, intensity: np.ndarray | None = None
) -> LabelEdit:
    """Split one object into as many parts as there are seeds, by watershed.

    Parameters
    ----------
    labels : (M, N[, P]) ndarray of int
        The label image.
    label_id : int
        The object to split.
    seeds : (S, ndim) array of float
        Clicked points (pixel coordinates), at least two inside the object.
    intensity : ndarray, optional
        The image; when given, the split follows dark valleys of its smoothed
        intensity instead of the object's shape alone.

    Returns
    -------
    LabelEdit
        The first seed's part keeps ``label_id``; the others get new ids above
        the current maximum.

    Raises
    ------
    ValueError
        If fewer than two seeds fall inside the object.
    """
    from skimage.segmentation import watershed

    label_id = int(label_id)
    boxes = ndi.find_objects((labels == label_id).astype(np.uint8))
    if not boxes or boxes[0] is None:
        raise ValueError(f"There is no object {label_id} to split.")
    box = boxes[0]
    mask = labels[box] == label_id
    points = np.round(np.atleast_2d(np.asarray(seeds, float))).astype(int)
    starts = np.array([s.start for s in box])
    local = points - starts
    inside = [
        tuple(p) for p in local if np.all(p >= 0) and np.all(p < mask.shape) and mask[tuple(p)]
    ]
    if len(inside) < 2:
        raise ValueError(
            f"Place at least two seed points inside object {label_id} to split it "
            f"({len(inside)} inside)."
        )
    markers = np.zeros(mask.shape, np.int32)
    for index, point in enumerate(inside, start=1):
        markers[point] = index
    if intensity is not None:
        surface = ndi.gaussian_filter(np.asarray(intensity[box], np.float32), 1.0)
        surface = -surface if surface[mask].mean() > np.median(surface) else surface
        surface = (surface - surface.min()) / max(float(np.ptp(surface)), 1e-6) * 3
    else:
        surface = -ndi.distance_transform_edt(mask)
    # Compactness keeps the cut between the seeds on flat plateaus while still preferring necks.
    parts = watershed(surface, markers, mask=mask, compactness=1.0)
    top = int(labels.max())
    new_ids = np.array([0, label_id, *range(top + 1, top + len(inside))], dtype=labels.dtype)
    changed = parts > 1
    indices = tuple(ix + start for ix, start in zip(np.nonzero(changed), starts))
    return LabelEdit(indices, new_ids[parts[changed]], f"split {label_id} into {len(inside)}")


def remove_small(labels: np.ndarray, min_size: int) -> LabelEdit:
    """Erase every object smaller than ``min_size`` pixels (voxels)."""
    flat = np.asarray(labels).ravel()
    sizes = np.bincount(flat.astype(np.int64)) if flat.size else np.zeros(1, np.int64)
    small = np.nonzero((sizes < min_size) & (sizes > 0))[0]
    small = small[small != 0]
    return _edit(np.isin(labels, small), 0, f"removed {small.size} objects under {min_size} px")


def fill_holes(labels: np.ndarray, ids: Iterable[int] | None = None) -> LabelEdit:
    """Fill background holes enclosed by an object, for the given ids or all of them."""
    wanted = None if ids is None else {int(i) for i in ids}
    edits_idx: list[np.ndarray] = []
    edits_val: list[np.ndarray] = []
    for label_id, box in enumerate(ndi.find_objects(np.asarray(labels)), start=1):
        if box is None or (wanted is not None and label_id not in wanted):
            continue
        region = labels[box]
        filled = ndi.binary_fill_holes(region == label_id)
        new = filled & (region == 0)
        if new.any():
            local = np.nonzero(new)
            edits_idx.append(np.stack([ix + s.start for ix, s in zip(local, box)]))
            edits_val.append(np.full(local[0].size, label_id, dtype=labels.dtype))
    if not edits_idx:
        return _empty(labels, "no holes to fill")
    stacked = np.concatenate(edits_idx, axis=1)
    return LabelEdit(tuple(stacked), np.concatenate(edits_val), "filled holes")


def relabel_sequential(labels: np.ndarray) -> LabelEdit:
    """Renumber objects 1..N in order of their current ids (gaps removed)."""
    from skimage.segmentation import relabel_sequential as _relabel

    relabelled, _, _ = _relabel(np.asarray(labels))
    changed = relabelled != labels
    return _edit(changed, relabelled[changed], "relabelled 1..N")


def neighbour_object(
    labels: np.ndarray, current: int, step: int = 1
) -> tuple[int, tuple[float, ...]] | None:
    """The next (``step=1``) or previous (``step=-1``) object id and its centroid.

    Wraps around; returns None for an image without objects.
    """
    ids = object_ids(labels)
    if ids.size == 0:
        return None
    position = int(np.searchsorted(ids, current, side="right" if step > 0 else "left"))
    index = position % ids.size if step > 0 else (position - 1) % ids.size
    target = int(ids[index])
    centroid = ndi.center_of_mass(labels == target)
    return target, tuple(float(c) for c in centroid)
