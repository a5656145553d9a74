"""Turn what a caller passes to :func:`~.inference.predict` into a checked prediction job.

Everything that can be wrong with the input is found here, before any slow
work: the model (a loaded model or a plain module), the image and its axes,
the channels, the tile size against the network's minimum, the overlap, the
blend mode, the device. :func:`prepare_job` returns a :class:`PredictionJob`
holding the plane views, tile plans, runner and output sink that
:mod:`.tile_loop` then runs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..io.checks import ImageValidationError, validate_image
from ..io.image_data import ImageData
from ..models.base import (
    CHANNEL_KINDS,
    ModelCard,
    ModelError,
    SegmentationModel,
    wrap_module,
)
from .batch_size import CPU_BATCH, UNMEASURED_GPU_BATCH
from .forward import BY_CLASSES, InferenceWarning, RunnerSettings, TileRunner, cpu_has_fast_bfloat16
from .normalize import Normalizer, resolve_spec
from .options import DEFAULT_TILE, PredictOptions
from .planes import (
    OutputSink,
    View,
    as_lazy_or_numpy,
    count_tiles,
    group_size,
    make_views,
    padded_shape,
)
from .tiling import TilePlan

#: ITU-R BT.601 weights of R, G and B in a grey value (``colour_to_grey: "luminance"``).
LUMINANCE = (0.299, 0.587, 0.114)


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


def resolve_image(image: Any, axes: str | None, model: SegmentationModel) -> tuple[Any, str]:
    """The pixels (NumPy or dask) and their axis letters, fitted to the model's channels.

    Axes are guessed for 2D and 3D arrays. An RGB or RGBA image given to a grey
    model, or a grey image given to an RGB model, is converted as
    :func:`match_channels` says, with an :class:`InferenceWarning` saying how
    (``microseg`` prints it, the widgets show it).

    Parameters
    ----------
    image : array-like or ImageData
        The image.
    axes : str or None
        Its axis letters; guessed for 2D and 3D arrays when None.
    model : SegmentationModel
        The model (from :func:`as_model`).

    Returns
    -------
    data : ndarray or dask array
        The image as the model takes it.
    axes : str
        Its axis letters.

    Raises
    ------
    ImageValidationError
        Axes that are missing, do not fit the image, or lack Y and X.
    """
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
        elif len(shape) == 3 and model.in_channels > 1 and shape[0] == model.in_channels:
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
    if getattr(model, "channels_unknown", False):
        return data, axes
    data, axes, notice = match_channels(data, axes, model.card)
    if notice:
        warnings.warn(notice, InferenceWarning, stacklevel=3)
    return data, axes


def match_channels(data: Any, axes: str, card: ModelCard) -> tuple[Any, str, str | None]:
    """Fit an image's colour channels to the model's input, the way its training data were.

    An RGB image given to a grey model becomes grey as the card's
    ``colour_to_grey`` says (the channel mean by default); an RGBA image loses
    its alpha channel first (for an RGB model, that is all). A grey image given
    to an RGB model is repeated over R, G and B. Any other mismatch is left
    for :meth:`SegmentationModel.check_channels` to refuse.

    Parameters
    ----------
    data : ndarray or dask array
        The image, axes as in ``axes``; RGB channels under ``C``.
    axes : str
        Its axis letters.
    card : ModelCard
        The model's card (input channels, context slices, ``colour_to_grey``).

    Returns
    -------
    data : ndarray or dask array
        The image as the model takes it: without ``C`` (float32) for a grey model,
        ``C`` = 3 for an RGB one; ``data`` itself when nothing changed. Dask stays lazy.
    axes : str
        Its axis letters.
    notice : str or None
        One sentence saying what was converted, or None.
    """
    neighbours = 2 * int(card.context_slices or 0) + 1
    wanted = card.in_channels // neighbours if card.in_channels % neighbours == 0 else None
    channels = int(data.shape[axes.index("C")]) if "C" in axes else 1
    if (wanted, channels) not in ((1, 3), (1, 4), (3, 1), (3, 4)):
        return data, axes, None
    model = f"Model {card.name!r} takes {CHANNEL_KINDS[wanted]} input"
    c = axes.find("C")
    if channels == 4:  # alpha carries no intensity; the training data dropped it too
        data = data[(slice(None),) * c + (slice(0, 3),)]
        if wanted == 3:
            return data, axes, f"{model}; the alpha channel of the RGBA image was dropped."
    if wanted == 3:
        if c >= 0:
            data = np.concatenate([data] * 3, axis=c)
        else:
            data, axes = np.stack([data] * 3, axis=-1), axes + "C"
        return data, axes, f"{model}; the greyscale image was repeated over R, G and B."
    if card.colour_to_grey == "luminance":
        weights = np.asarray(LUMINANCE, np.float32).reshape((3,) + (1,) * (len(axes) - c - 1))
        grey = (data * weights).sum(axis=c, dtype=np.float32)
        how = "luminance (0.299 R + 0.587 G + 0.114 B)"
    else:
        grey = data.mean(axis=c, dtype=np.float32)
        how = "the mean of R, G and B"
    what = "the RGBA image lost its alpha channel and" if channels == 4 else "the RGB image"
    notice = f"{model}; {what} was made grey by {how}, as the model's training data were."
    return grey, axes.replace("C", ""), notice


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


def _amp(requested: bool | None, kind: str, *, instance: bool = False) -> bool:
    """AMP by default on CUDA, and on CPUs with native bfloat16 for semantic models.

    On a CPU with AVX512-BF16 or AMX, bfloat16 convolutions run 2-3x faster than
    float32 and the labels agree with float32 to Dice > 0.99 (measured in
    benchmarks/bench_inference.py); elsewhere they would be slower, so float32
    stays. Instance models keep float32 on the CPU: torchvision's detection
    heads are not checked under CPU autocast.
    """
    if requested is None:
        if kind == "cuda":
            return True
        return kind == "cpu" and not instance and cpu_has_fast_bfloat16()
    if requested and kind == "cpu" and not cpu_has_fast_bfloat16():
        warnings.warn(
            "amp=True: this processor has no native bfloat16 (AVX512-BF16 or AMX), where "
            "mixed precision would be slower; running in float32.",
            InferenceWarning,
            stacklevel=5,
        )
        return False
    return bool(requested) and kind in ("cuda", "cpu")


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
class PredictionJob:
    """Everything a prediction needs, checked; the normalizer is fitted when it starts."""

    model: SegmentationModel
    views: list[View]
    plans: list[TilePlan]
    spec: dict[str, Any]
    runner: TileRunner
    sink: OutputSink
    context: int
    group_sizes: list[int]
    batch_size: int | None
    total: int
    device_name: str
    iou_threshold: float
    normalizer: Normalizer | None = None


def prepare_job(
    model: SegmentationModel, data: Any, axes: str, out: Any, options: PredictOptions
) -> PredictionJob:
    """Check the model against the image and plan the prediction; nothing slow happens here.

    Parameters
    ----------
    model : SegmentationModel
        From :func:`as_model`.
    data : ndarray or dask array
        The image, axes as in ``axes`` (from :func:`resolve_image`).
    axes : str
        Axis letters of ``data``.
    out : array or None
        Where to write the result.
    options : PredictOptions
        Validated settings.

    Returns
    -------
    PredictionJob

    Raises
    ------
    ModelError
        Channels that do not fit the model; TTA or ortho with an instance model.
    ValueError
        A tile smaller than the network's minimum; a bad slice axis or ``out``.
    """
    from ..models.device import select_device

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
    batch = options.batch_size or model.card.recommended.get("batch_size")
    if batch is None and instance:
        # Semantic models get their batch when the run starts (.batch_size: measured on
        # CUDA, one tile at a time on the CPU); detection heads' memory is not probed.
        batch = CPU_BATCH if choice.kind == "cpu" else UNMEASURED_GPU_BATCH
    channels_last = options.channels_last
    if channels_last is None:
        # NHWC speeds up oneDNN convolutions on the CPU and tensor cores on CUDA; not MPS.
        channels_last = choice.kind != "mps"
    settings = RunnerSettings(
        device=choice.device,
        batch_size=None if batch is None else int(batch),
        amp=_amp(options.amp, choice.kind, instance=instance),
        channels_last=channels_last,
        tta=options.tta,
        activation=_activation(model, options.activation),
        overlap=options.overlap,
        blend=options.blend,  # type: ignore[arg-type]
        min_tile=min_tile(model),
        compile=options.compile,
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
    return PredictionJob(
        model=model,
        views=views,
        plans=plans,
        spec=spec,
        runner=TileRunner(model, settings),
        sink=sink,
        context=context,
        group_sizes=sizes,
        batch_size=None if batch is None else int(batch),
        total=count_tiles(views, plans),
        device_name=str(choice),
        iou_threshold=options.iou_threshold,
    )
