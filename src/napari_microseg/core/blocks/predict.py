"""Out-of-core prediction into a zarr array, block by block, resumable.

A volume larger than memory is cut into *blocks*: whole chunks of the output
zarr array (:class:`BlockGrid`). Each block is predicted from its *region*:
the block grown by the halo of context it needs (:class:`HaloPlan`), that is
every tile of the whole-volume tile plan that touches the block, plus the
neighbouring slices a 2.5D model reads. The region is predicted with the very
tile loop of :mod:`.tile_loop` and the normalizer fitted once on the whole
volume, so the tile positions, the blending weights and the summation order
at every pixel of the block are the ones of the single-machine path: the
block's interior equals :func:`~.inference.predict` on the whole volume.

Blocks are independent, so they run one after another in this process
(:class:`LocalExecutor`) or spread over a Dask cluster
(:mod:`.cluster`). A block is written in full, then marked done in the
output's attributes (:class:`DoneLog`); a job started again on the same
output skips the blocks already done, and a block interrupted while being
written is not marked, so it is redone.

Peak memory is one region's input and probabilities plus one batch of
tiles, whatever the size of the volume. Probabilities can be stored
compactly (``probability_dtype``: float16 or uint8, see
:data:`~.store.PROBABILITY_DTYPES`).

The block geometry lives in :mod:`.blocks`, the executors in
:mod:`.executors`, the output array and its resume record in
:mod:`.store`; their names are importable from here too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..inference.denoise import radius, smooth_planes, smooth_sigma
from ..inference.illumination import (
    PlaneGains,
    correct_illumination,
    flat_field_fraction,
    iter_measure_planes,
)
from ..inference.job import PredictionJob, as_model, prepare_job, resolve_image
from ..inference.normalize import Normalizer, fit_normalizer
from ..inference.options import PredictOptions
from ..models.base import SegmentationModel
from ..progress import Job, Progress
from .executors import LocalExecutor, run_tasks, torch_threads
from .grid import BlockGrid, HaloPlan, Region, read_region
from .store import (
    ChunkedError,
    DoneLog,
    check_probability_dtype,
    encode_probabilities,
    fingerprint,
    model_token,
    open_output,
)

__all__ = [
    "BlockGrid",
    "BlockTask",
    "ChunkedError",
    "ChunkedResult",
    "HaloPlan",
    "LocalExecutor",
    "Region",
    "choose_block",
    "default_chunks",
    "iter_blocks",
    "predict_and_write_block",
    "predict_block",
    "predict_to_zarr",
    "read_region",
    "run_tasks",
]

#: Default block side along the plane (Y, X) axes: large blocks waste fewer halo tiles.
DEFAULT_BLOCK_SIDE = 1024
#: Default output chunk: 16 slices of 256 x 256.
DEFAULT_CHUNK = {"Y": 256, "X": 256}
DEFAULT_CHUNK_OTHER = 16


# ----------------------------------------------------------------------------- block shape


def default_chunks(spatial_axes: str, shape: Sequence[int]) -> tuple[int, ...]:
    """Output chunks: 256 along Y and X, 16 along other axes, capped by the shape."""
    return tuple(
        min(int(s), DEFAULT_CHUNK.get(a, DEFAULT_CHUNK_OTHER)) for a, s in zip(spatial_axes, shape)
    )


def choose_block(
    spatial_axes: str,
    shape: Sequence[int],
    chunks: Sequence[int],
    block: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """The block shape: given, or whole chunks reaching :data:`DEFAULT_BLOCK_SIDE` along Y, X.

    Parameters
    ----------
    spatial_axes : str
        Letters of the spatial axes, e.g. ``"ZYX"``.
    shape, chunks : sequence of int
        The spatial shape and the output's chunk shape.
    block : sequence of int, optional
        Requested block shape; must be whole chunks (the last block of an axis
        may still be shorter when the chunks do not divide the volume).

    Raises
    ------
    ChunkedError
        If ``block`` is not a multiple of the chunks or has the wrong length.
    """
    shape = tuple(int(s) for s in shape)
    chunks = tuple(int(c) for c in chunks)
    if block is None:
        out = []
        for axis, size, chunk in zip(spatial_axes, shape, chunks):
            if axis in "YX":
                out.append(min(math.ceil(DEFAULT_BLOCK_SIDE / chunk) * chunk, size))
            else:
                out.append(min(chunk, size))
        return tuple(out)
    block = tuple(int(b) for b in block)
    if len(block) != len(shape) or min(block) < 1:
        raise ChunkedError(
            f"block={block} must give one positive size per spatial axis {spatial_axes!r} "
            f"(shape {shape})."
        )
    for size, chunk, value in zip(shape, chunks, block):
        if value % chunk and value < size:
            raise ChunkedError(
                f"block={block} is not made of whole output chunks {chunks}; use multiples of "
                "the chunks so that no chunk is written by two blocks."
            )
    return tuple(min(b, s) for b, s in zip(block, shape))


# ----------------------------------------------------------------------------- block task


@dataclass(frozen=True)
class BlockTask:
    """Everything a worker needs to predict and write blocks (small, picklable).

    Attributes
    ----------
    source : ndarray, zarr array or dask array
        The input image.
    axes : str
        Its axis letters.
    options : PredictOptions
        Validated settings, as for the whole volume.
    normalizer : Normalizer
        Fitted once on the whole volume.
    halo : HaloPlan
        The whole-volume tile plan's reach.
    grid : BlockGrid
        The blocks.
    out : zarr array
        ``(K, *spatial)`` probabilities, stored as its dtype says
        (:func:`~.store.encode_probabilities`).
    gains : PlaneGains, optional
        Every plane's background, for a model that corrects uneven illumination.
    smooth : float, optional
        The Gaussian sigma (px) of a model that smooths its input (:mod:`~..inference.denoise`).
    """

    source: Any
    axes: str
    options: PredictOptions
    normalizer: Normalizer
    halo: HaloPlan
    grid: BlockGrid
    out: Any
    gains: PlaneGains | None = None
    smooth: float | None = None


def read_region_as_whole(task: BlockTask, region: Region) -> np.ndarray:
    """The pixels of ``region``, flat-field corrected when the model asks for it."""
    data = read_region(task.source, task.axes, region)
    return data if task.gains is None else task.gains.apply(data, region)


def read_smoothed_region(task: BlockTask, region: Region) -> np.ndarray:
    """The pixels of ``region`` smoothed exactly as the whole image would be.

    The region is read grown by the filter's reach along Y and X (clipped to
    the image, where both mirror alike), smoothed, and cropped back.
    """
    reach = radius(task.smooth)
    spatial = task.axes.replace("C", "")
    shape = [int(task.source.shape[task.axes.index(a)]) for a in spatial]
    grown = tuple(
        slice(max(0, span.start - reach), min(size, span.stop + reach)) if a in "YX" else span
        for a, span, size in zip(spatial, region, shape)
    )
    smoothed = smooth_planes(read_region_as_whole(task, grown), task.axes, task.smooth)
    spans = iter(
        slice(span.start - outer.start, span.stop - outer.start)
        for span, outer in zip(region, grown)
    )
    return smoothed[tuple(slice(None) if a == "C" else next(spans) for a in task.axes)]


def predict_block(model: SegmentationModel, task: BlockTask, index: int) -> Job[np.ndarray]:
    """Predict one block as the whole-volume prediction would.

    Parameters
    ----------
    model : SegmentationModel
        The model (semantic).
    task : BlockTask
        The job's shared settings.
    index : int
        The block's flat index in ``task.grid``.

    Returns
    -------
    (K, *block_shape) ndarray of float32
        The block's probabilities (or logits, as ``options.activation`` says).
    """
    from ..inference.tile_loop import predict_semantic

    interior = task.grid.interior(index)
    region = task.halo.region(interior)
    data = read_smoothed_region(task, region) if task.smooth else read_region_as_whole(task, region)
    job = prepare_job(model, data, task.axes, None, task.options)
    job.normalizer = task.normalizer
    with job.runner:
        result = yield from predict_semantic(job)
    crop = tuple(slice(i.start - r.start, i.stop - r.start) for i, r in zip(interior, region))
    return np.ascontiguousarray(result[(slice(None), *crop)])


def predict_and_write_block(model: Any, task: BlockTask, index: int) -> Job[int]:
    """Predict one block and write it into ``task.out``; returns ``index`` once written.

    ``model`` is a loaded model or a :class:`~.cluster.ModelRef` that
    workers load once (see :func:`~.cluster.resolve_model`).
    """
    from .cluster import model_lock, resolve_model

    model = resolve_model(model)
    with model_lock(model):
        values = yield from predict_block(model, task, index)
    interior = task.grid.interior(index)
    task.out[(slice(None), *interior)] = encode_probabilities(values, task.out.dtype)
    return index


# ----------------------------------------------------------------------------- the job


@dataclass
class ChunkedResult:
    """What a chunked prediction wrote.

    Attributes
    ----------
    probabilities : zarr array
        ``(K, *spatial)``, float32 or the compact type asked for.
    blocks : int
        Blocks in the job.
    skipped : int
        Blocks found done (resumed) and not predicted again.
    seconds : float
        Wall time of the job.
    """

    probabilities: Any
    blocks: int
    skipped: int
    seconds: float


def predict_to_zarr(
    model: Any,
    image: Any,
    out: Any,
    *,
    axes: str | None = None,
    options: PredictOptions | None = None,
    chunks: Sequence[int] | None = None,
    block: Sequence[int] | None = None,
    executor: Any = None,
    overwrite: bool = False,
    model_ref: Any = None,
    probability_dtype: str = "float32",
    threads: int | None = None,
) -> Job[ChunkedResult]:
    """Predict a volume of any size into a zarr array, block by block; resumable.

    Parameters
    ----------
    model : SegmentationModel or torch.nn.Module
        A semantic model.
    image : zarr array, dask array, ndarray, memmap or ImageData
        The input, axes as in ``axes`` (e.g. ``"ZYX"``, ``"YX"``, ``"TZCYX"``).
    out : path-like or zarr array
        Where the ``(K, *spatial)`` probabilities go. An existing array
        written by the same job is resumed: its done blocks are skipped.
    axes : str, optional
        Axis letters, guessed for 2D and 3D images as in :func:`~.inference.predict`.
    options : PredictOptions, optional
        Tiling, device and normalization settings (ortho is not supported); by
        default those the model card recommends (tile size, overlap, TTA).
    chunks : sequence of int, optional
        Output chunk shape over the spatial axes (default :func:`default_chunks`).
    block : sequence of int, optional
        Work unit, whole chunks (default :func:`choose_block`).
    executor : LocalExecutor or DaskExecutor, optional
        Where blocks run; this process by default.
    overwrite : bool
        Replace an existing output that belongs to another job.
    model_ref : ModelRef, optional
        How workers load the model themselves (a registry name or file);
        by default the model object is shipped to each worker once.
    probability_dtype : {"float32", "float16", "uint8"}
        How probabilities are stored: exact float32 (4 bytes per voxel and
        class); float16 (2 bytes, within 0.00025); uint8 ``round(p * 255)``
        (1 byte, within 1/510; not for logits). Compact maps are compressed
        with Zstandard level 1; :func:`~.labels.label_to_zarr` reads any.
    threads : int, optional
        Torch threads in this process while the job runs (None: torch's
        default, one per core). Dask workers keep their own setting. On cores
        shared with other busy processes, 1 can be several times faster.

    Returns
    -------
    ChunkedResult
        Yields a :class:`Progress` per block done (and per batch of tiles
        when running in this process).

    Raises
    ------
    ChunkedError
        For an instance model, the ortho mode, a bad block shape, a
        ``probability_dtype`` that cannot hold the output, or an output path
        holding something else.
    """
    started = time.perf_counter()
    model = as_model(model)
    options = options or PredictOptions.for_card(model.card)
    if options.ortho:
        raise ChunkedError(
            "The ortho-plane mode is not available block by block; predict without ortho, "
            "or in memory."
        )
    dtype = check_probability_dtype(probability_dtype)
    if model.task == "instance":
        raise ChunkedError(
            f"Model {model.name!r} is an instance model; block-by-block prediction needs a "
            "semantic model (probabilities), so run it in memory instead."
        )
    data, axes = resolve_image(image, axes, model)
    source = _source(image, data)
    spatial = axes.replace("C", "")
    shape = tuple(int(data.shape[axes.index(a)]) for a in spatial)
    whole = prepare_job(model, data, axes, None, options)  # checks model, tiles; plans the halo
    halo = HaloPlan.from_job(whole, spatial, shape)
    if dtype == "uint8" and whole.runner.settings.activation == "none":
        raise ChunkedError(
            "probability_dtype='uint8' stores probabilities in [0, 1]; this job gives logits "
            "(activation None). Use float32 or float16, or an activation."
        )
    chunks = tuple(chunks) if chunks is not None else default_chunks(spatial, shape)
    if len(chunks) != len(shape) or min(chunks) < 1:
        raise ChunkedError(
            f"chunks={chunks} must give one positive size per spatial axis {spatial!r}."
        )
    block = choose_block(spatial, shape, chunks, block)
    grid = BlockGrid(shape, block)
    fraction = flat_field_fraction(whole.spec)
    gains = None
    measured = data
    if fraction is not None:
        # A plane's background needs the whole plane; blocks hold parts of planes.
        gains = yield from iter_measure_planes(source, axes, fraction, total=len(grid))
        measured = correct_illumination(data, axes, fraction, lazy=True)
    sigma = smooth_sigma(whole.spec)
    if sigma is not None:
        measured = smooth_planes(measured, axes, sigma, lazy=True)
    yield Progress(0, len(grid), "Computing the normalization")
    channel_axis = axes.index("C") if "C" in axes else None
    normalizer = fit_normalizer(measured, whole.spec, channel_axis=channel_axis)
    n_classes = _probe_classes(whole)
    parts = {
        "model": model_token(model),
        "options": {k: v for k, v in asdict(options).items() if k not in _RUNTIME_ONLY},
        "normalizer": [normalizer.offset.tolist(), normalizer.scale.tolist()],
        "input": [shape, str(data.dtype), axes],
        "block": block,
    }
    if dtype != "float32":  # float32 keys stay as before, so older outputs still resume
        parts["probability_dtype"] = dtype
    if fraction is not None:
        parts["flat_field"] = fraction
    if sigma is not None:
        parts["smooth"] = sigma
    key = fingerprint(parts)
    array = open_output(
        out,
        (n_classes, *shape),
        (1, *chunks),
        dtype,
        axes=["c", *spatial.lower()],
        key=key,
        overwrite=overwrite,
        zstd_level=None if dtype == "float32" else COMPACT_ZSTD_LEVEL,
    )
    log = DoneLog(array, key, len(grid))
    todo = [i for i in range(len(grid)) if i not in log.done]
    skipped = len(grid) - len(todo)
    if skipped:
        yield Progress(skipped, len(grid), f"Resuming: {skipped} of {len(grid)} blocks done")
    task = BlockTask(source, axes, options, normalizer, halo, grid, array, gains, sigma)
    executor = executor or LocalExecutor()
    try:
        with torch_threads(threads):
            yield from _offset(
                run_tasks(
                    executor,
                    predict_and_write_block,
                    todo,
                    model_ref if model_ref is not None else model,
                    task,
                    on_result=lambda index, _: log.mark(index),
                ),
                skipped,
                len(grid),
            )
    finally:
        log.flush()
    return ChunkedResult(array, len(grid), skipped, time.perf_counter() - started)


#: Zstandard level of float16 and uint8 maps: faster than zarr's default (3) and, on
#: probability maps, about as small.
COMPACT_ZSTD_LEVEL = 1

#: Settings that change where and how fast, not what is computed.
_RUNTIME_ONLY = ("device", "batch_size", "channels_last", "memory_budget_mb", "compile")


def _offset(job: Job[Any], skipped: int, total: int) -> Job[Any]:
    """Pass a task runner's events on, counted over the whole job."""
    try:
        while True:
            event = next(job)
            yield Progress(event.step + skipped, total, event.message, event.eta_s, event.info)
    except StopIteration as stop:
        return stop.value


def _source(image: Any, data: Any) -> Any:
    """What blocks read from: the zarr array itself (picklable, read directly) when given."""
    from ..io.image_data import ImageData

    raw = image.data if isinstance(image, ImageData) else image
    if type(raw).__module__.startswith("zarr") or isinstance(raw, np.ndarray):
        return raw if raw.shape == data.shape else data  # unless its colours were converted
    return data


def _probe_classes(job: PredictionJob) -> int:
    """K, the model's output channels, from one blank tile."""
    (plan,) = job.plans
    channels = job.views[0].channels * (2 * job.context + 1)
    with job.runner:
        values = job.runner.semantic(np.zeros((1, channels, *plan.tile), np.float32))
    return int(values.shape[1])


def iter_blocks(grid: BlockGrid) -> Iterator[tuple[int, Region]]:
    """``(index, interior)`` of every block in raster order."""
    for index in range(len(grid)):
        yield index, grid.interior(index)
