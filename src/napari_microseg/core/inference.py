"""Tiled inference of any size, 2D or 3D, on any device: :func:`predict` and :func:`iter_predict`.

The image is normalized once (as the model card says), cut into 2D planes
(:mod:`.planes`), each plane into overlapping tiles (:mod:`.tiling`); tiles
are batched through the network (:mod:`.forward`) and blended back, band by
band, into the result: a NumPy array, a memmap or a zarr array. Peak memory
is one batch of tiles plus one band of a group of planes, whatever the size
of the image, and a lazy (dask, zarr) input is read slab by slab.

:func:`iter_predict` is the generator the widgets run: it yields a
:class:`~.progress.Progress` after every batch and returns the result;
closing it stops within one batch and leaves no partial result behind.
:func:`predict` drains it.

Examples
--------
>>> import torch
>>> class PlusOne(torch.nn.Module):
...     def forward(self, x):
...         return x + 1
>>> image = np.arange(35, dtype=np.float32).reshape(5, 7)
>>> result = predict(PlusOne(), image, tile_size=4, activation=None)
>>> result.shape, bool(np.array_equal(result[0], image + 1))
((1, 5, 7), True)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .forward import BY_CLASSES, InferenceWarning, RunnerSettings, TileRunner
from .instances import InstanceStitcher, detections_to_tile_labels
from .io import ImageData
from .models.base import ModelError, SegmentationModel, wrap_module
from .normalize import Normalizer, fit_normalizer, resolve_spec
from .planes import (
    OutputSink,
    View,
    as_lazy_or_numpy,
    count_tiles,
    group_size,
    make_views,
    padded_shape,
)
from .progress import EtaClock, Job, Progress, drain
from .tiling import TileMerger, TilePlan, check_blend, check_overlap
from .validation import ImageValidationError, validate_image

if TYPE_CHECKING:
    import torch

#: Tile side when neither the caller nor the model card gives one.
DEFAULT_TILE = 256


class Instances(NamedTuple):
    """The result of an instance model.

    Attributes
    ----------
    labels : ndarray of uint32
        Object ids (0 = background), the image's spatial shape.
    scores : (n + 1,) ndarray of float32
        Detection score of each object: ``scores[label]``; ``scores[0]`` is 0.
    """

    labels: np.ndarray
    scores: np.ndarray


@dataclass
class PredictOptions:
    """Settings of a tiled prediction; see :func:`predict` for each one."""

    tile_size: int | tuple[int, int] | None = None
    overlap: float = 0.25
    blend: str = "gaussian"
    batch_size: int | None = None
    device: Any = "auto"
    tta: bool = False
    activation: str | None = "auto"
    normalization: dict[str, Any] | str | None = "auto"
    slice_axis: str | None = None
    ortho: bool = False
    amp: bool | None = None
    channels_last: bool | None = None
    memory_budget_mb: float = 512.0
    iou_threshold: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> PredictOptions:
        """Check every value; return a copy with canonical blend and overlap."""
        blend = check_blend(self.blend)
        overlap = check_overlap(self.overlap)
        if self.batch_size is not None and (int(self.batch_size) < 1):
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.activation not in ("auto", None, "none", "softmax", "sigmoid"):
            raise ValueError(
                f"activation={self.activation!r}; use 'auto', 'softmax', 'sigmoid' or None."
            )
        return replace(self, blend=blend, overlap=overlap)


def predict(
    model: SegmentationModel | torch.nn.Module,
    image: Any,
    *,
    axes: str | None = None,
    tile_size: int | tuple[int, int] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int | None = None,
    device: Any = "auto",
    tta: bool = False,
    out: Any = None,
    activation: str | None = "auto",
    normalization: dict[str, Any] | str | None = "auto",
    slice_axis: str | None = None,
    ortho: bool = False,
    amp: bool | None = None,
) -> np.ndarray | Instances:
    """Predict a whole image or volume tile by tile.

    Parameters
    ----------
    model : SegmentationModel or torch.nn.Module
        A loaded model (:func:`load_model`), or any module mapping
        ``(N, C, H, W)`` to logits ``(N, K, H, W)``.
    image : ndarray, dask array, zarr array or ImageData
        2D (``YX``, ``YXC``) or 3D and beyond (``ZYX``, ``TZCYX``...).
    axes : str, optional
        Letters from ``"TZCYX"``, one per axis. Needed for 4D and 5D arrays;
        2D and 3D ones are guessed (``YX``; ``YXC`` when the last axis is 3 or
        4 long; ``CYX`` for a 3-channel model; ``ZYX`` otherwise).
    tile_size : int or (int, int), optional
        Tile side; the model card's recommendation, else 256. Images smaller
        than a tile use a smaller tile (or are mirrored up to the network's minimum).
    overlap : float
        Fraction of a tile shared with its neighbour, in [0, 1).
    blend : {"gaussian", "average"}
        Gaussian importance weights (sigma = tile/8), or plain averaging.
    batch_size : int, optional
        Tiles per forward pass; halved automatically on out-of-memory errors.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``,
        ``"mps"``; an unavailable device falls back to the CPU with a warning.
    tta : bool
        Average the 8 flips and rotations of every tile (8x slower).
    out : ndarray, memmap or zarr array, optional
        Where to write the result, shaped like it; streams results larger than
        memory to disk. A zarr result has ``attrs["complete"]`` True only when
        finished; a cancelled memmap's file is removed.
    activation : {"auto", "softmax", "sigmoid", None}
        ``"auto"``: the model's; for a plain module softmax over K, sigmoid when
        K == 1. None returns logits.
    normalization : dict, str or None
        ``"auto"``: as the model card says (a plain module gets none); or a
        specification for :func:`~.normalize.fit_normalizer`; None for none.
    slice_axis : str, optional
        For 3D: the axis to cut 2D planes along (default Z).
    ortho : bool
        For isotropic volumes: predict along Z, Y and X planes and average.
    amp : bool, optional
        Mixed precision; on by default on CUDA, never on the CPU.

    Returns
    -------
    ndarray of float32 or Instances
        Semantic models: probabilities ``(K, *spatial)`` (``out`` if given).
        Instance models: :class:`Instances` (labels, scores).
    """
    return drain(
        iter_predict(
            model,
            image,
            axes=axes,
            tile_size=tile_size,
            overlap=overlap,
            blend=blend,
            batch_size=batch_size,
            device=device,
            tta=tta,
            out=out,
            activation=activation,
            normalization=normalization,
            slice_axis=slice_axis,
            ortho=ortho,
            amp=amp,
        ),
        show=False,
    )


def iter_predict(
    model: SegmentationModel | torch.nn.Module,
    image: Any,
    *,
    axes: str | None = None,
    tile_size: int | tuple[int, int] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int | None = None,
    device: Any = "auto",
    tta: bool = False,
    out: Any = None,
    activation: str | None = "auto",
    normalization: dict[str, Any] | str | None = "auto",
    slice_axis: str | None = None,
    ortho: bool = False,
    amp: bool | None = None,
) -> Job[np.ndarray | Instances]:
    """The generator twin of :func:`predict`: yields :class:`Progress`, returns the result.

    Takes the same parameters as :func:`predict`. At least one event comes
    per batch of tiles, with tiles done, total and an ETA. Closing the
    generator stops it within one batch and leaves no partial result.
    """
    options = PredictOptions(
        tile_size=tile_size,
        overlap=overlap,
        blend=blend,
        batch_size=batch_size,
        device=device,
        tta=tta,
        activation=activation,
        normalization=normalization,
        slice_axis=slice_axis,
        ortho=ortho,
        amp=amp,
    )
    return run_prediction(model, image, axes=axes, out=out, options=options)


def run_prediction(
    model: SegmentationModel | torch.nn.Module,
    image: Any,
    *,
    axes: str | None = None,
    out: Any = None,
    options: PredictOptions | None = None,
) -> Job[np.ndarray | Instances]:
    """:func:`iter_predict` with its settings in one :class:`PredictOptions` (for widgets)."""
    options = (options or PredictOptions()).validate()
    model = as_model(model)
    data, axes = resolve_image(image, axes, model.in_channels)
    # Bad input fails here, at the call; the slow parts run in the generator.
    job = _prepare(model, data, axes, out, options)
    return _execute(job, data, axes)


def _execute(job: _Job, data: Any, axes: str) -> Job[np.ndarray | Instances]:
    yield Progress(0, job.total, "Computing the normalization")
    channel_axis = axes.index("C") if "C" in axes else None
    job.normalizer = fit_normalizer(data, job.spec, channel_axis=channel_axis)
    yield Progress(0, job.total, f"Predicting on {job.device_name}")
    model = job.model
    try:
        with job.runner:
            if model.task == "instance":
                result = yield from _predict_instances(job)
            else:
                result = yield from _predict_semantic(job)
    except BaseException:
        job.sink.abort()
        raise
    return result


# ----------------------------------------------------------------------------- set-up


def as_model(model: Any) -> SegmentationModel:
    """A :class:`SegmentationModel` for a loaded model or a plain ``torch.nn.Module``.

    A plain module is wrapped with no normalization, its input channels read
    from its first convolution (unchecked when it has none), and softmax over
    K (sigmoid when K == 1) decided from its output.
    """
    import torch

    if isinstance(model, SegmentationModel):
        return model
    if isinstance(model, torch.nn.Module):
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        in_channels = convs[0].in_channels if convs else 1
        wrapped = wrap_module(model, in_channels=in_channels, classes=1, name=type(model).__name__)
        wrapped.activation = BY_CLASSES  # type: ignore[assignment]
        wrapped.channels_unknown = not convs  # type: ignore[attr-defined]
        return wrapped
    raise TypeError(
        f"model must be a loaded model (load_model) or a torch.nn.Module, not {type(model)}."
    )


def resolve_image(image: Any, axes: str | None, in_channels: int) -> tuple[Any, str]:
    """The pixels (NumPy or dask) and their axis letters, guessed for 2D and 3D arrays."""
    if isinstance(image, ImageData):
        axes = axes or image.axes
        image = image.data
    data = as_lazy_or_numpy(image)
    shape = tuple(data.shape)
    if axes is None:
        if len(shape) == 2:
            axes = "YX"
        elif len(shape) == 3 and shape[-1] in (3, 4):
            axes = "YXC"
        elif len(shape) == 3 and in_channels > 1 and shape[0] == in_channels:
            axes = "CYX"
        elif len(shape) == 3:
            axes = "ZYX"
        else:
            raise ImageValidationError(
                f"The image has {len(shape)} dimensions {shape} and no axis names; pass axes= "
                "(for example axes='ZCYX' or 'TZYX') so its channels and slices are not mixed up."
            )
    axes = axes.upper()
    validate_image(data, axes, name="The image")
    if not {"Y", "X"} <= set(axes):
        raise ImageValidationError(f"axes={axes!r} must include Y and X.")
    return data, axes


def min_tile(model: SegmentationModel) -> int:
    """The smallest tile side the network takes (its down-sampling factor, when it says)."""
    candidates = (
        getattr(model.module, "min_tile", None),
        model.card.recommended.get("min_tile"),
        getattr(model.module, "multiple", None),
    )
    for value in candidates:
        if isinstance(value, int) and value > 0:
            return value
    return 1


def _activation(model: SegmentationModel, requested: str | None) -> str:
    if requested == "auto":
        return model.activation
    return requested or "none"


def _tile_shape(tile: Any, model: SegmentationModel) -> tuple[int, int]:
    value = tile if tile is not None else model.card.recommended.get("tile_size", DEFAULT_TILE)
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) and v > 0 for v in pair):
        raise ValueError(f"tile_size={tile!r} must be a positive integer or a pair of them.")
    smallest = min_tile(model)
    if min(pair) < smallest:
        raise ValueError(
            f"tile_size={tile!r} is smaller than the network's minimum input of {smallest} "
            f"pixels (it down-samples by {smallest}); use tiles of at least {smallest}, "
            "preferably 128 or more."
        )
    return int(pair[0]), int(pair[1])


def _view_tile(view: View, tile: tuple[int, int], multiple: int) -> tuple[int, int]:
    """Shrink the tile to a plane smaller than it (rounded up to the network's multiple)."""
    return tuple(  # type: ignore[return-value]
        min(t, math.ceil(size / multiple) * multiple) for t, size in zip(tile, view.plane_shape)
    )


@dataclass
class _Job:
    model: SegmentationModel
    views: list[View]
    plans: list[TilePlan]
    spec: dict[str, Any]
    runner: TileRunner
    sink: OutputSink
    context: int
    group_sizes: list[int]
    batch_size: int
    total: int
    device_name: str
    iou_threshold: float
    normalizer: Normalizer | None = None


def _prepare(
    model: SegmentationModel, data: Any, axes: str, out: Any, options: PredictOptions
) -> _Job:
    from .device import select_device

    channels = int(data.shape[axes.index("C")]) if "C" in axes else 1
    context = int(model.card.context_slices or 0)
    if not getattr(model, "channels_unknown", False):
        model.check_channels(channels * (2 * context + 1))
    instance = model.task == "instance"
    if instance and (options.tta or options.ortho):
        raise ModelError(
            "Test-time augmentation and the ortho-plane mode average probabilities; instance "
            f"model {model.name!r} gives objects. Run it without tta and ortho."
        )
    spatial = axes.replace("C", "")
    if context and len(spatial) == 2:
        warnings.warn(
            f"Model {model.name!r} takes {2 * context + 1} neighbouring slices; a 2D image has "
            "none, so its one plane is repeated as its own neighbours.",
            InferenceWarning,
            stacklevel=4,
        )
    choice = select_device(options.device)
    tile = _tile_shape(options.tile_size, model)
    spec = model.normalization if options.normalization == "auto" else options.normalization
    spec = resolve_spec(spec if spec is not None else "none")
    views = make_views(data, axes, slice_axis=options.slice_axis, ortho=options.ortho)
    tiles = [_view_tile(v, tile, min_tile(model)) for v in views]
    plans = [
        TilePlan.create(padded_shape(v.plane_shape, t), t, options.overlap)
        for v, t in zip(views, tiles)
    ]
    gpu = choice.kind == "cuda"
    batch = options.batch_size or model.card.recommended.get("batch_size") or (8 if gpu else 2)
    settings = RunnerSettings(
        device=choice.device,
        batch_size=int(batch),
        amp=gpu if options.amp is None else bool(options.amp) and gpu,
        channels_last=choice.kind != "mps"
        if options.channels_last is None
        else options.channels_last,
        tta=options.tta,
        activation=_activation(model, options.activation),
        overlap=options.overlap,
        blend=options.blend,  # type: ignore[arg-type]
        min_tile=min_tile(model),
    )
    in_channels = channels * (2 * context + 1)
    sizes = [
        group_size(
            v,
            tile=max(t),
            in_channels=in_channels,
            n_classes=max(model.n_classes, 2),
            budget_bytes=options.memory_budget_mb * 2**20,
            labels=instance,
        )
        for v, t in zip(views, tiles)
    ]
    sink = OutputSink(
        out, spatial, tuple(data.shape[axes.index(a)] for a in spatial), labels=instance
    )
    return _Job(
        model=model,
        views=views,
        plans=plans,
        spec=spec,
        runner=TileRunner(model, settings),
        sink=sink,
        context=context,
        group_sizes=sizes,
        batch_size=int(batch),
        total=count_tiles(views, plans),
        device_name=str(choice),
        iou_threshold=options.iou_threshold,
    )


# ----------------------------------------------------------------------------- the loops


class _Group:
    """A group of planes of one view in flight: its merger or stitchers."""

    def __init__(self, index: int, view: View, plan: TilePlan, outer: tuple, planes: tuple):
        self.index = index  # the view's position; views after the first accumulate
        self.view = view
        self.plan = plan
        self.outer = outer
        self.planes = planes
        self.size = planes[1] - planes[0]
        self.merger: TileMerger | None = None
        self.stitchers: list[InstanceStitcher] = []
        self.done = 0


def _tile_stream(job: _Job) -> Iterator[tuple[_Group, tuple[int, int, int], np.ndarray]]:
    """Every tile of every view, in raster order within groups of planes."""
    for index, (view, plan, size) in enumerate(zip(job.views, job.plans, job.group_sizes)):
        rows, cols = plan.tile
        for outer, planes in view.groups(size):
            group = _Group(index, view, plan, outer, planes)
            for y0 in plan.starts[0]:
                band = view.read_band(
                    outer,
                    planes,
                    (y0, y0 + rows),
                    normalizer=job.normalizer,  # type: ignore[arg-type]
                    context=job.context,
                    min_shape=plan.shape,
                )
                for plane in range(group.size):
                    for x0 in plan.starts[1]:
                        yield group, (plane, y0, x0), band[plane, :, :, x0 : x0 + cols]


def _batches(job: _Job) -> Iterator[list[tuple[_Group, tuple[int, int, int], np.ndarray]]]:
    batch: list[tuple[_Group, tuple[int, int, int], np.ndarray]] = []
    for item in _tile_stream(job):
        batch.append(item)
        if len(batch) >= job.batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress(job: _Job, clock: EtaClock, done: int, seen: int) -> tuple[Progress, int]:
    notices = job.runner.notices
    message = notices[-1] if len(notices) > seen else f"Predicting on {job.device_name}"
    info = {"batch_size": job.runner.batch_size, "notices": list(notices)}
    return clock.progress(done, message, **info), len(notices)


def _row_align(job: _Job, view: View) -> int:
    chunks = getattr(job.sink.out, "chunks", None)
    if chunks is None or job.sink.labels:
        return 1
    axis = 1 + job.sink.spatial_axes.index(view.plane[0])
    return int(chunks[axis]) if isinstance(chunks, tuple) else 1


def _predict_semantic(job: _Job) -> Job[np.ndarray]:
    clock = EtaClock(job.total)
    done = seen = 0
    for batch in _batches(job):
        values = job.runner.semantic(np.stack([tile for _, _, tile in batch]))
        n_classes = values.shape[1]
        job.sink.prepare(n_classes)
        touched: dict[int, _Group] = {}
        for (group, location, _), value in zip(batch, values):
            if group.merger is None:
                height, width = group.view.plane_shape
                group.merger = TileMerger(
                    group.plan,
                    n_planes=group.size,
                    n_channels=n_classes,
                    height=height,
                    width=width,
                    blend=job.runner.settings.blend,
                    row_align=_row_align(job, group.view),
                )
            group.merger.aggregate(value, location)
            touched[id(group)] = group
        for group in touched.values():
            for first_row, block in group.merger.pop_ready():  # type: ignore[union-attr]
                if group.view.weight != 1.0:
                    block *= np.float32(group.view.weight)
                job.sink.write(
                    group.view,
                    group.outer,
                    group.planes,
                    first_row,
                    block,
                    accumulate=group.index > 0,
                )
        done += len(batch)
        event, seen = _progress(job, clock, done, seen)
        yield event
    return job.sink.finish()


def _predict_instances(job: _Job) -> Job[Instances]:
    clock = EtaClock(job.total)
    done = seen = 0
    scores: list[np.ndarray] = [np.zeros(1, np.float32)]
    next_id = 1
    for batch in _batches(job):
        detections = job.runner.instances(np.stack([tile for _, _, tile in batch]))
        job.sink.prepare()
        for (group, (plane, y0, x0), tile), found in zip(batch, detections):
            if not group.stitchers:
                group.stitchers = [
                    InstanceStitcher(group.plan.shape, iou_threshold=job.iou_threshold)
                    for _ in range(group.size)
                ]
            labels, label_scores = detections_to_tile_labels(job.model, found, tile.shape[-2:])
            group.stitchers[plane].add(labels, label_scores, (y0, x0))
            group.done += 1
            if group.done < group.size * group.plan.n_tiles:
                continue
            height, width = group.view.plane_shape
            planes = []
            for stitcher in group.stitchers:
                plane_labels, plane_scores = stitcher.result(height, width)
                # Ids stay unique over the whole stack; slices are not linked in 3D.
                plane_labels[plane_labels > 0] += np.uint32(next_id - 1)
                next_id += len(plane_scores) - 1
                scores.append(plane_scores[1:])
                planes.append(plane_labels)
            job.sink.write(group.view, group.outer, group.planes, 0, np.stack(planes))
            group.stitchers = []
        done += len(batch)
        event, seen = _progress(job, clock, done, seen)
        yield event
    return Instances(job.sink.finish(), np.concatenate(scores))
