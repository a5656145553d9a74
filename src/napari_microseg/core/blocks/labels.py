"""Labels of volumes larger than memory: per-block labels, global ids, merged across blocks.

A :class:`~.postprocess.PostprocessPipeline` turns probabilities into labels
on an array that fits in memory. :func:`label_to_zarr` runs the same recipe
on a zarr probability map of any size, block by block, in three passes of
independent block tasks (in this process, or on a Dask cluster through
:class:`~.cluster.DaskExecutor`):

1. **label**: each block binarizes its probabilities with thresholds
   resolved once for the whole volume (Otsu on an evenly strided sample),
   applies the opening and closing on the block plus a halo as wide as
   their reach, and labels its connected components (or splits them by
   watershed) with local ids ``1..n``. It returns, per local id, the voxel
   count, the global raster index of its first voxel and, for hysteresis,
   whether it holds a seed above the high threshold.
2. **faces** (:mod:`.faces`): global ids are the local ids plus the block's offset (the
   counts of the blocks before it). Each block reads the last plane of its
   labels along every axis and the first plane of the next blocks, grown by
   one voxel sideways for diagonal connectivity, and returns the pairs of
   global ids that touch across the face (for watershed, only pairs whose
   contact covers half of the smaller face, so that two cells split by a
   watershed line that happens to lie on a block face stay two).
3. **relabel**: the driver joins the pairs (connected components of the
   id graph, i.e. a union-find), drops objects below ``min_size`` (their
   size summed over blocks) and hysteresis objects without a seed, and
   numbers the rest by their first voxel in raster order; each block then
   maps its local ids to the final ones.

With ``"threshold"``, ``"otsu"`` and ``"hysteresis"`` and a given
threshold, the result equals the in-memory pipeline voxel for voxel, ids
included: an object crossing any number of blocks, corners included, is one
label. Two things remain per block: filling holes (a hole cut by a block
face is not filled) and the watershed's markers near block faces.

The labels are recomputed in full when a job is restarted (they are cheap
next to the prediction, whose blocks :mod:`.predict` resumes); the output is
marked ``attrs["complete"]`` only at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..postprocess import PostprocessPipeline
from ..postprocess.cleanup import pixels_for, relabel_sequential
from ..progress import Job, Progress
from .executors import LocalExecutor, run_tasks
from .faces import face_pairs
from .grid import BlockGrid, Region
from .label_task import LabelTask
from .predict import choose_block
from .store import ChunkedError, decode_probabilities, fingerprint, open_output


@dataclass
class BlockSummary:
    """Pass 1's report of one block.

    Attributes
    ----------
    count : int
        Local ids ``1..count``.
    sizes : (count + 1,) ndarray of int64
        Voxels per local id (index 0: background).
    first : (count + 1,) ndarray of int64
        Global raster index of each id's first voxel.
    seeds : (count + 1,) ndarray of bool or None
        Hysteresis: the id holds a voxel above the high threshold.
    """

    count: int
    sizes: np.ndarray
    first: np.ndarray
    seeds: np.ndarray | None


@dataclass
class LabelResult:
    """What :func:`label_to_zarr` wrote.

    Attributes
    ----------
    labels : zarr array
        uint32 ids over the spatial shape.
    n_objects : int
        Objects kept.
    pipeline : dict
        The resolved pipeline, as stored in model cards.
    seconds : float
        Wall time.
    """

    labels: Any
    n_objects: int
    pipeline: dict[str, Any]
    seconds: float


# ----------------------------------------------------------------------------- pass 1


def _halo(pipeline: PostprocessPipeline, spacing: Sequence[float] | None) -> int:
    """Voxels of context the binarization and labelling of a block need."""
    unit = min(spacing) if (pipeline.physical_units and spacing) else 1.0
    reach = 2 * math.ceil(pipeline.opening_radius / unit) + 2 * math.ceil(
        pipeline.closing_radius / unit
    )
    if pipeline.method == "watershed":
        reach = max(reach, 16)
    return reach + (1 if reach else 0)


def _grown(interior: Region, shape: Sequence[int], halo: int) -> Region:
    return tuple(
        slice(max(s.start - halo, 0), min(s.stop + halo, n)) for s, n in zip(interior, shape)
    )


def label_block(task: LabelTask, index: int) -> BlockSummary:
    """Pass 1: label one block with local ids, write them, report per-id facts.

    Parameters
    ----------
    task : LabelTask
        The job's shared settings.
    index : int
        The block's flat index.

    Returns
    -------
    BlockSummary
    """
    pipeline = task.pipeline
    interior = task.grid.interior(index)
    region = _grown(interior, task.grid.shape, task.halo)
    crop = tuple(slice(i.start - r.start, i.stop - r.start) for i, r in zip(interior, region))
    prob = decode_probabilities(task.prob[(slice(None), *region)])  # uint8, float16 -> float32
    foreground, boundary = pipeline.select(prob, class_axis=0)
    # Hysteresis: every voxel above ``low`` now; whether an object holds a seed is decided
    # after the merge, since its seed may lie in another block.
    mask, area = pipeline.binarize(foreground, boundary, seeded=False)
    seeds_map = (foreground > pipeline.high)[crop] if pipeline.method == "hysteresis" else None
    mask, area = pipeline.clean_mask(mask, area, spacing=task.spacing)
    if pipeline.method == "watershed":
        # The split's markers and flooding need the halo; the block is cut out afterwards.
        labels = pipeline.label_mask(
            mask, foreground, region=area, boundary=boundary, spacing=task.spacing
        )[crop]
        labels = _raster_order(relabel_sequential(np.ascontiguousarray(labels)))
    else:
        labels = pipeline.label_mask(mask[crop], foreground[crop])
    labels = pipeline.fill(labels, spacing=task.spacing)
    count = int(labels.max()) if labels.size else 0
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=count + 1).astype(np.int64)
    local_first = _first_voxels(flat, count)
    starts = [s.start for s in interior]
    coords = np.unravel_index(local_first, labels.shape)
    first = np.ravel_multi_index(
        tuple(c + s for c, s in zip(coords, starts)), task.grid.shape
    ).astype(np.int64)
    first[0] = -1
    seeds = None
    if seeds_map is not None:
        seeds = np.zeros(count + 1, bool)
        seeds[labels[seeds_map]] = True
        seeds[0] = False
    task.out[interior] = labels
    return BlockSummary(count, sizes, first, seeds)


def _first_voxels(flat: np.ndarray, count: int) -> np.ndarray:
    """Raster index of the first voxel of ids ``0..count`` (ids numbered in raster order)."""
    running = np.maximum.accumulate(flat)
    new = np.flatnonzero(flat[1:] > running[:-1]) + 1
    if flat.size and flat[0] > 0:
        new = np.concatenate([[0], new])
    if new.size == count and np.array_equal(flat[new], np.arange(1, count + 1)):
        return np.concatenate([[0], new]).astype(np.int64)
    ids, where = np.unique(flat, return_index=True)
    first = np.zeros(count + 1, np.int64)
    first[ids] = where
    return first


def _raster_order(labels: np.ndarray) -> np.ndarray:
    """Renumber ids ``1..n`` in the order of their first voxel in raster order."""
    flat = labels.ravel()
    ids, where = np.unique(flat, return_index=True)
    ids, where = ids[ids > 0], where[ids > 0]
    lut = np.zeros(int(flat.max()) + 1 if flat.size else 1, np.uint32)
    lut[ids[np.argsort(where)]] = np.arange(1, ids.size + 1, dtype=np.uint32)
    return lut[labels]


# ----------------------------------------------------------------------------- pass 3


def relabel_block(task: LabelTask, offsets: np.ndarray, lut: np.ndarray, index: int) -> int:
    """Pass 3: map one block's local ids to the final ids; returns ``index``."""
    interior = task.grid.interior(index)
    local = np.asarray(task.out[interior])
    ids = np.where(local > 0, local.astype(np.int64) + offsets[index], 0)
    task.out[interior] = lut[ids]
    return index


def merge_table(
    summaries: dict[int, BlockSummary],
    pairs: np.ndarray,
    offsets: np.ndarray,
    total: int,
    *,
    min_pixels: float = 0.0,
    seeded: bool = False,
) -> tuple[np.ndarray, int]:
    """Join touching ids, drop small or unseeded objects, number the rest in raster order.

    Parameters
    ----------
    summaries : dict
        Pass 1's :class:`BlockSummary` per block index.
    pairs : (n, 2) ndarray of int64
        Global ids to merge (pass 2).
    offsets : (n_blocks,) ndarray of int64
        Global id of each block's local id 0.
    total : int
        Largest global id.
    min_pixels : float
        Objects with fewer voxels go.
    seeded : bool
        Keep only objects with a hysteresis seed.

    Returns
    -------
    lut : (total + 1,) ndarray of uint32
        Final id of every global id (0: background or dropped).
    n_objects : int
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = total + 1
    sizes = np.zeros(n, np.int64)
    first = np.full(n, np.iinfo(np.int64).max, np.int64)
    seeds = np.zeros(n, bool)
    for block, summary in summaries.items():
        ids = slice(offsets[block] + 1, offsets[block] + summary.count + 1)
        sizes[ids] = summary.sizes[1:]
        first[ids] = summary.first[1:]
        if summary.seeds is not None:
            seeds[ids] = summary.seeds[1:]
    graph = coo_matrix(
        (np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n)
    ).tocsr()
    n_comp, comp = connected_components(graph, directed=False)
    comp_size = np.bincount(comp, weights=sizes, minlength=n_comp)
    comp_first = np.full(n_comp, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(comp_first, comp, first)
    keep = comp_size >= max(min_pixels, 1)
    if seeded:
        keep &= np.bincount(comp, weights=seeds, minlength=n_comp) > 0
    keep[comp[0]] = False
    kept = np.flatnonzero(keep)
    order = kept[np.argsort(comp_first[kept], kind="stable")]
    final = np.zeros(n_comp, np.uint32)
    final[order] = np.arange(1, order.size + 1, dtype=np.uint32)
    return final[comp], int(order.size)


# ----------------------------------------------------------------------------- the job


def resolve_pipeline(pipeline: PostprocessPipeline, prob: Any) -> PostprocessPipeline:
    """Fix the data-derived thresholds on an evenly strided sample of the whole map."""
    if pipeline.method == "threshold" or (
        pipeline.method in ("otsu", "watershed") and pipeline.threshold is not None
    ):
        return replace(pipeline)
    if pipeline.method == "hysteresis" and pipeline.low is not None and pipeline.high is not None:
        return replace(pipeline)
    import dask.array as da

    from ..inference.normalize import sample_values

    lazy = da.from_zarr(prob) if not isinstance(prob, np.ndarray) else prob
    sample = decode_probabilities(sample_values(lazy[pipeline.foreground_class]))
    resolved = replace(pipeline, boundary_class=None).resolve(sample.reshape(1, -1).astype("f4"))
    return replace(resolved, boundary_class=pipeline.boundary_class)


def label_to_zarr(
    prob: Any,
    out: Any,
    pipeline: PostprocessPipeline,
    *,
    spacing: Sequence[float] | None = None,
    block: Sequence[int] | None = None,
    executor: Any = None,
    overwrite: bool = False,
) -> Job[LabelResult]:
    """Post-process a zarr probability map of any size into zarr labels, block by block.

    Parameters
    ----------
    prob : zarr array or path-like
        ``(K, *spatial)`` probabilities (2D or 3D spatial), e.g. from
        :func:`~.predict.predict_to_zarr`; a uint8 map holds ``p * 255``.
    out : zarr array or path-like
        Where the uint32 labels go (chunked like ``prob``).
    pipeline : PostprocessPipeline
        The recipe; data-derived thresholds are resolved on a sample of the
        whole map (:func:`resolve_pipeline`).
    spacing : sequence of float, optional
        Voxel size in µm (for pipelines in µm).
    block : sequence of int, optional
        Work unit, whole chunks of ``prob`` (default: chunks grown to about
        1024 voxels along Y and X).
    executor : LocalExecutor or DaskExecutor, optional
        Where the block tasks run.
    overwrite : bool
        Replace an existing output made from other probabilities or settings.

    Returns
    -------
    LabelResult
        Yields a :class:`Progress` per block and pass.

    Raises
    ------
    ChunkedError
        For a map that is not ``(K, Y, X)`` or ``(K, Z, Y, X)``, or an
        output path holding something else.
    """
    import zarr

    started = time.perf_counter()
    if isinstance(prob, str) or hasattr(prob, "__fspath__"):
        prob = zarr.open_array(str(prob), mode="r")
    if len(prob.shape) not in (3, 4):
        raise ChunkedError(
            f"The probability map has shape {tuple(prob.shape)}; expected (K, Y, X) or "
            "(K, Z, Y, X) with the classes first."
        )
    shape = tuple(int(s) for s in prob.shape[1:])
    spatial = "ZYX"[-len(shape) :]
    spacing = tuple(float(s) for s in spacing) if spacing is not None else None
    if pipeline.physical_units and spacing is None:
        raise ChunkedError(
            "This pipeline gives sizes in µm; pass the voxel size (spacing) or switch "
            "physical_units off."
        )
    yield Progress(0, None, "Resolving thresholds on a sample of the whole map")
    pipeline = resolve_pipeline(pipeline, prob)
    chunks = tuple(int(c) for c in prob.chunks[1:])
    block = choose_block(spatial, shape, chunks, block)
    grid = BlockGrid(shape, block)
    source = dict(prob.attrs).get("microseg_job") or str(getattr(prob, "store", ""))
    key = fingerprint({"prob": source, "pipeline": pipeline.to_dict(), "block": block})
    labels = open_output(
        out, shape, chunks, "uint32", axes=list(spatial.lower()), key=key, overwrite=overwrite
    )
    if dict(labels.attrs).get("complete") and dict(labels.attrs).get("microseg_job") == key:
        yield Progress(1, 1, "Labels already complete")
        return LabelResult(labels, int(labels.attrs.get("n_objects", 0)), pipeline.to_dict(), 0.0)
    labels.attrs["complete"] = False
    task = LabelTask(prob, labels, pipeline, grid, _halo(pipeline, spacing), spacing)
    executor = executor or LocalExecutor()
    items = list(range(len(grid)))
    summaries = yield from run_tasks(executor, label_block, items, task, label="label block")
    counts = np.array([summaries[i].count for i in items], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    total = int(counts.sum())
    found = yield from run_tasks(executor, face_pairs, items, task, offsets, label="face")
    pairs = np.concatenate([found[i] for i in items]) if items else np.zeros((0, 2), np.int64)
    min_pixels = pixels_for(
        pipeline.min_size, spacing if pipeline.physical_units else None, len(shape)
    )
    lut, n_objects = merge_table(
        summaries,
        pairs.reshape(-1, 2),
        offsets,
        total,
        min_pixels=min_pixels,
        seeded=pipeline.method == "hysteresis",
    )
    yield Progress(0, len(grid), f"{total} pieces, {len(pairs)} face contacts -> {n_objects}")
    yield from run_tasks(executor, relabel_block, items, task, offsets, lut, label="relabel")
    labels.attrs["complete"] = True
    labels.attrs["pipeline"] = pipeline.to_dict()
    labels.attrs["n_objects"] = n_objects
    return LabelResult(labels, n_objects, pipeline.to_dict(), time.perf_counter() - started)
