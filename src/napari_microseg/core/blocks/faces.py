"""Pass 2 of :func:`~.labels.label_to_zarr`: which global ids touch across block faces.

Each block reads the last plane of its labels along every axis and the first
plane of the next blocks (grown by one voxel sideways for diagonal
connectivity) and returns the pairs of global ids that touch there. For
watershed labels only pairs whose contact covers :data:`WATERSHED_CONTACT` of
the smaller face are kept, so that two cells split by a watershed line lying on
a block face stay two.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from .label_task import LabelTask

#: For watershed labels: merge two ids across a face when their contact covers this
#: fraction of the smaller one's area on the face.
WATERSHED_CONTACT = 0.5


def face_pairs(task: LabelTask, offsets: np.ndarray, index: int) -> np.ndarray:
    """Pass 2: pairs of global ids touching across the block's far faces.

    Parameters
    ----------
    task : LabelTask
        The job's shared settings (``task.out`` holds pass 1's local ids).
    offsets : (n_blocks,) ndarray of int64
        Global id of each block's local id 0 (local id k is ``offsets[b] + k``).
    index : int
        The block's flat index.

    Returns
    -------
    (n, 2) ndarray of int64
        Global ids ``(a, b)`` to merge.
    """
    grid, shape = task.grid, task.grid.shape
    interior, position = grid.interior(index), grid.position(index)
    connectivity = task.pipeline.connectivity
    reach = 1 if connectivity > 1 else 0
    found: list[np.ndarray] = []
    for axis in range(len(shape)):
        if position[axis] + 1 >= grid.grid[axis]:
            continue
        face = interior[axis].stop
        others = [a for a in range(len(shape)) if a != axis]
        low_span = [interior[a] for a in others]
        high_span = [
            slice(max(interior[a].start - reach, 0), min(interior[a].stop + reach, shape[a]))
            for a in others
        ]
        low = _global_ids(task, offsets, axis, face - 1, others, low_span)
        high = _global_ids(task, offsets, axis, face, others, high_span)
        origin = [lo.start - hi.start for lo, hi in zip(low_span, high_span)]
        for shift in itertools.product((-1, 0, 1), repeat=len(others)):
            if sum(map(abs, shift)) + 1 > connectivity:
                continue
            a, b = _aligned(low, high, origin, shift)
            both = (a > 0) & (b > 0)
            if task.pipeline.method == "watershed":
                found.append(_dominant_contacts(a[both], b[both], low, high))
            else:
                found.append(np.stack([a[both], b[both]], axis=1))
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(found), axis=0)


def _global_ids(
    task: LabelTask,
    offsets: np.ndarray,
    axis: int,
    plane: int,
    others: list[int],
    spans: list[slice],
) -> np.ndarray:
    """One plane of local ids, made global with the offset of the block each voxel is in."""
    index: list[Any] = [None] * len(task.grid.shape)
    index[axis] = plane
    for a, span in zip(others, spans):
        index[a] = span
    local = np.asarray(task.out[tuple(index)]).astype(np.int64)
    block_axes = []
    for a in range(len(task.grid.shape)):
        if a == axis:
            block_axes.append(np.array([plane // task.grid.block[a]]))
        else:
            span = spans[others.index(a)]
            block_axes.append(np.arange(span.start, span.stop) // task.grid.block[a])
    mesh = np.meshgrid(*block_axes, indexing="ij")
    blocks = np.ravel_multi_index(tuple(mesh), task.grid.grid)
    blocks = blocks.reshape(local.shape)
    return np.where(local > 0, local + offsets[blocks], 0)


def _aligned(
    low: np.ndarray, high: np.ndarray, origin: list[int], shift: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """``low[p]`` and ``high[p + origin + shift]`` over every ``p`` where both exist."""
    low_index, high_index = [], []
    for size_low, size_high, o, d in zip(low.shape, high.shape, origin, shift):
        move = o + d
        start, stop = max(0, -move), min(size_low, size_high - move)
        stop = max(stop, start)
        low_index.append(slice(start, stop))
        high_index.append(slice(start + move, stop + move))
    return low[tuple(low_index)].ravel(), high[tuple(high_index)].ravel()


def _dominant_contacts(
    a: np.ndarray, b: np.ndarray, low: np.ndarray, high: np.ndarray
) -> np.ndarray:
    """Watershed pairs whose contact covers :data:`WATERSHED_CONTACT` of the smaller face."""
    if not a.size:
        return np.zeros((0, 2), np.int64)
    pairs, contact = np.unique(np.stack([a, b], axis=1), axis=0, return_counts=True)
    ids_low, area_low = np.unique(low[low > 0], return_counts=True)
    ids_high, area_high = np.unique(high[high > 0], return_counts=True)
    face_a = area_low[np.searchsorted(ids_low, pairs[:, 0])]
    face_b = area_high[np.searchsorted(ids_high, pairs[:, 1])]
    keep = contact >= WATERSHED_CONTACT * np.minimum(face_a, face_b)
    return pairs[keep]
