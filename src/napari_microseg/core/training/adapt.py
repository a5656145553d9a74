"""Adapting a model to a new microscope session: label-free first, then a few-shot recipe.

A model meets images from another microscope, staining or session and gets
worse. The cheapest lever needs no annotation at all: the batch-norm layers
hold running means and variances of their inputs, measured on the training
data; re-estimating them on the new images (:func:`adapt`, "Adapt to this
image", AdaBN) undoes much of an intensity, contrast, blur or stain change in
about a second. The input normalisation of the card (percentiles over the
whole image) already absorbs linear intensity changes; :func:`match_intensities`
maps a new image's histogram onto reference quantiles for the non-linear ones
(gamma), where a reference is known.

Fine-tuning on a few corrected slices then uses the few-shot recipe of
:meth:`~.settings.TrainSettings.for_finetune`, run by
:func:`~.jobs.finetune` through the helpers here:

* the batch-norm statistics re-estimated on the image first, kept only if the
  held-out annotated pixels say they help (:func:`adapt_batchnorm`);
* the statistics frozen during training (:func:`frozen_batchnorm`): a batch
  of four object-centred patches is a poor estimate of a session's statistics;
* per-part learning rates (:class:`FewShotTrainer`): the encoder learns at
  ``encoder_lr_factor`` times the decoder's rate, so a few slices bend the
  decoder without wiping the encoder's general features;
* the input checks a few-shot user needs (:func:`check_modality`,
  :func:`check_classes`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from ..inference.job import match_channels
from ..inference.normalize import fit_normalizer
from ..models.base import ModelError, SegmentationModel
from ..progress import Job, Progress
from .data import TrainingDataError, parse_slices
from .loop import Trainer, encoder_modules

if TYPE_CHECKING:
    import os

    import torch

__all__ = [
    "FewShotTrainer",
    "adapt",
    "adapt_batchnorm",
    "batchnorm_layers",
    "check_annotation",
    "check_classes",
    "check_modality",
    "edited_region",
    "frozen_batchnorm",
    "input_batches",
    "intensity_quantiles",
    "match_intensities",
    "resolve_model",
]

#: Pixels the statistics are measured on at most (two 512 x 512 crops): enough for stable
#: means and variances even in the deepest layers (2048 positions per crop at depth 4), little
#: enough for about a second of a small U-Net on a 2-core CPU.
ADAPT_MAX_PIXELS = 2 * 512 * 512
#: Side of the crops the statistics are measured on; large, so each crop's batch statistics
#: (which normalise the deeper layers during the pass) are close to the whole image's.
ADAPT_CROP = 512
#: Quantiles kept as an intensity reference (0, 1, ..., 100 %).
REFERENCE_QUANTILES = np.linspace(0.0, 100.0, 101)
#: Largest mean difference between colour channels (in 8-bit units) of an image still called grey.
GREY_TOLERANCE = 2.0
#: Modalities whose images are colour by nature; a grey model of these takes colour images.
COLOUR_MODALITIES = ("h&e", "brightfield", "histology", "rgb", "colour", "color")


# ----------------------------------------------------------------------------- batch norm


def batchnorm_layers(module: Any) -> list[tuple[str, Any]]:
    """The batch-norm layers of a network, with their names, in forward order.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    list of (str, torch.nn.Module)
        Every ``BatchNorm1d/2d/3d`` that keeps running statistics.
    """
    import torch

    kinds = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
    return [
        (name, layer)
        for name, layer in module.named_modules()
        if isinstance(layer, kinds) and layer.track_running_stats and layer.running_mean is not None
    ]


def _stats_frozen_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as functional

    return functional.batch_norm(
        x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
    )


@contextmanager
def frozen_batchnorm(module: Any, enabled: bool = True) -> Iterator[int]:
    """Normalise with the running statistics even in training mode, and never update them.

    The affine weights and biases still learn. Used while fine-tuning on a few
    patches, whose batch statistics would replace the session's (measured on
    whole images by :func:`adapt_batchnorm`) with those of object-centred crops.

    Parameters
    ----------
    module : torch.nn.Module
    enabled : bool
        False: a no-op (the statistics train as usual).

    Yields
    ------
    int
        The number of layers frozen.
    """
    layers = batchnorm_layers(module) if enabled else []
    for _, layer in layers:
        # An instance attribute shadows the class's forward: the state dict (and the saved
        # model) are unchanged, and the finally below takes it away again.
        layer.forward = _stats_frozen_forward.__get__(layer)
    try:
        yield len(layers)
    finally:
        for _, layer in layers:
            del layer.forward


def input_batches(
    model: SegmentationModel,
    image: Any,
    *,
    axes: str | None = None,
    slices: Sequence[int] | str | None = None,
    max_pixels: int = ADAPT_MAX_PIXELS,
    crop: int = ADAPT_CROP,
    seed: int = 0,
) -> list[np.ndarray]:
    """Normalised crops of an image as the model sees them, for measuring statistics.

    Parameters
    ----------
    model : SegmentationModel
        Its card gives the channels, the colour conversion and the normalisation.
    image : array-like or ImageData
        ``YX``, ``YXC``, ``ZYX``, ``ZYXC``... (see ``axes``).
    axes : str, optional
        Axes of ``image``; ``YX``/``ZYX`` (or ``YXC`` for 3 or 4 trailing channels) by default.
    slices : sequence of int or str, optional
        The slices of a stack to use; all (evenly spread, up to ``max_pixels``) by default.
    max_pixels : int
        Pixels used at most, spread over evenly spaced crops.
    crop : int
        Largest crop side.
    seed : int
        Where the crops start inside a plane larger than ``crop``.

    Returns
    -------
    list of (1, C, h, w) ndarray of float32
        C = the model's input channels (context slices of a 2.5D model included).

    Raises
    ------
    TrainingDataError
        Axes that do not fit the image, or slices outside the stack.
    ModelError
        An image whose channels the model cannot take.
    """
    data = image.data if hasattr(image, "axes") and hasattr(image, "data") else image
    axes = axes or getattr(image, "axes", None)
    data = np.asarray(data) if not hasattr(data, "shape") else data
    axes = _guess_axes(tuple(data.shape), axes)
    card = model.card
    data, axes, _ = match_channels(data, axes, card)
    channel_axis = axes.index("C") if "C" in axes else None
    channels = int(data.shape[channel_axis]) if channel_axis is not None else 1
    context = int(card.context_slices or 0)
    model.check_channels(channels * (2 * context + 1))
    normalizer = fit_normalizer(data, card.normalization, channel_axis=channel_axis)
    order = [axes.index(a) for a in "ZCYX" if a in axes]
    view = np.transpose(data, order) if isinstance(data, np.ndarray) else data.transpose(order)
    if channel_axis is None:
        view = view[:, None] if "Z" in axes else view[None]
    if "Z" not in axes:
        view = view[None]
    depth, height, width = int(view.shape[0]), int(view.shape[-2]), int(view.shape[-1])
    chosen = parse_slices(slices) if slices is not None else None
    if chosen is not None:
        bad = [z for z in chosen if not 0 <= z < depth]
        if bad:
            raise TrainingDataError(
                f"Slice(s) {', '.join(map(str, bad))} are outside the stack (0 to {depth - 1})."
            )
    side_y, side_x = min(crop, height), min(crop, width)
    n_crops = max(1, max_pixels // (side_y * side_x))
    planes = chosen if chosen else list(range(depth))
    # Crops spread evenly over the planes; several per plane when there are few planes.
    if n_crops <= len(planes):
        picks = np.unique(np.linspace(0, len(planes) - 1, n_crops).round().astype(int))
        schedule = [planes[i] for i in picks]
    else:
        # Never more crops of a plane than it holds side by side: a small plane is used once.
        fits = (height // side_y) * (width // side_x)
        per_plane = min(n_crops // len(planes), fits)
        schedule = [z for z in planes for _ in range(per_plane)]
    rng = np.random.default_rng(seed)
    batches = []
    for z in schedule:
        top = int(rng.integers(0, height - side_y + 1))
        left = int(rng.integers(0, width - side_x + 1))
        parts = []
        for dz in range(-context, context + 1):
            zz = min(max(z + dz, 0), depth - 1)
            raw = np.asarray(view[zz, :, top : top + side_y, left : left + side_x])
            parts.append(normalizer(raw, channel_axis=0))
        batches.append(np.ascontiguousarray(np.concatenate(parts)[None], dtype=np.float32))
    return batches


def _guess_axes(shape: tuple[int, ...], axes: str | None) -> str:
    if axes is not None:
        axes = axes.upper()
        if len(axes) != len(shape) or set(axes) - set("ZCYX") or len(set(axes)) != len(axes):
            raise TrainingDataError(
                f"Axes {axes!r} do not fit an image of shape {shape}; use the letters Z, C, Y, "
                "X, one per axis (for example 'ZYX' or 'YXC')."
            )
        return axes
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        return "YXC" if shape[-1] in (3, 4) else "ZYX"
    if len(shape) == 4 and shape[-1] in (3, 4):
        return "ZYXC"
    raise TrainingDataError(
        f"Cannot tell the axes of an image of shape {shape}; give them (for example 'ZYX')."
    )


def adapt_batchnorm(
    module: Any,
    batches: Sequence[np.ndarray],
    *,
    device: Any = None,
    strength: float = 1.0,
) -> int:
    """Re-estimate a network's batch-norm running statistics on new inputs, in place.

    One forward pass over ``batches`` with every batch-norm layer normalising by
    the statistics of the batch it sees (as in training); each layer's inputs are
    pooled over all batches and pixels: its running mean becomes their mean, its
    running variance their (unbiased) variance. With ``strength`` < 1 the new
    statistics are mixed with the old ones.

    Parameters
    ----------
    module : torch.nn.Module
        Changed in place; left in eval mode.
    batches : sequence of (N, C, H, W) ndarray of float32
        Normalised inputs (see :func:`input_batches`).
    device : torch.device, optional
        Where ``module`` is; the CPU by default.
    strength : float
        1 replaces the statistics, 0 keeps them.

    Returns
    -------
    int
        The number of batch-norm layers re-estimated (0: nothing to adapt).
    """
    import torch

    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength!r}.")
    layers = batchnorm_layers(module)
    if not layers or not batches:
        module.eval()
        return 0
    # Per layer: pixels so far, their mean and the sum of squared deviations (M2), combined
    # batch by batch with Chan's parallel formula in float64; each batch's own moments are
    # computed in float32, which is fast and exact enough for one crop.
    moments: dict[int, list[Any]] = {}

    def hook(layer: Any, inputs: tuple[Any, ...]) -> None:
        x = inputs[0].detach()
        dims = [d for d in range(x.dim()) if d != 1]
        n = x.numel() // x.shape[1]
        var, mean = torch.var_mean(x.float(), dim=dims, correction=0)
        mean, m2 = mean.double(), var.double() * n
        if id(layer) not in moments:
            moments[id(layer)] = [n, mean, m2]
            return
        count, old_mean, old_m2 = moments[id(layer)]
        total = count + n
        delta = mean - old_mean
        moments[id(layer)] = [
            total,
            old_mean + delta * (n / total),
            old_m2 + m2 + delta * delta * (count * n / total),
        ]

    handles = [layer.register_forward_pre_hook(hook) for _, layer in layers]
    saved = [
        (layer.momentum, layer.running_mean.double(), layer.running_var.double())
        for _, layer in layers
    ]
    tracked = [layer.num_batches_tracked.clone() for _, layer in layers]
    try:
        module.eval()
        for _, layer in layers:
            layer.train()  # batch statistics normalise, so deeper layers see adapted inputs
            layer.momentum = 0.0  # the pass must not move the parent's statistics itself
        with torch.no_grad():
            for batch in batches:
                x = torch.from_numpy(np.ascontiguousarray(batch))
                module(x.to(device) if device is not None else x)
        for (_, layer), (_, old_mean, old_var) in zip(layers, saved):
            count, mean, m2 = moments[id(layer)]
            var = m2 / max(count - 1, 1)  # unbiased, as torch keeps its running variance
            layer.running_mean.copy_((1 - strength) * old_mean + strength * mean)
            layer.running_var.copy_((1 - strength) * old_var + strength * var)
    finally:
        for (_, layer), (momentum, _, _), count in zip(layers, saved, tracked):
            layer.momentum = momentum
            layer.num_batches_tracked.copy_(count)  # the step count stays the parent's
        for handle in handles:
            handle.remove()
        module.eval()
    return len(layers)


# ----------------------------------------------------------------------------- the job


def adapt(
    model: SegmentationModel | str | os.PathLike,
    image: Any,
    *,
    axes: str | None = None,
    slices: Sequence[int] | str | None = None,
    name: str | None = None,
    strength: float = 1.0,
    max_pixels: int = ADAPT_MAX_PIXELS,
    device: str = "cpu",
    folder: str | os.PathLike | None = None,
    save: bool = True,
) -> Job[SegmentationModel]:
    """Adapt to this image: re-estimate batch-norm statistics on it, no labels needed.

    A progress generator, like every long job (it takes about a second). The
    parent is never modified: a copy is adapted and, with ``save``, saved in
    the user's model folder as a new version whose lineage names the parent and
    the data it saw. Closing the generator before it returns saves nothing.

    Parameters
    ----------
    model : SegmentationModel, str or path-like
        The parent: a loaded model, a registry name or a model file.
    image : array-like or ImageData
        The new session's image or stack (``YX``, ``YXC``, ``ZYX``...).
    axes : str, optional
        Axes of ``image`` when its shape leaves them ambiguous.
    slices : sequence of int or str, optional
        Slices of a stack to measure on (all by default).
    name : str, optional
        Registry name of the new model; ``<parent>-adapted`` (made unique) by default.
    strength : float
        1 replaces the statistics; less mixes them with the parent's.
    max_pixels : int
        Pixels the statistics are measured on at most.
    device : str
        ``"cpu"`` (default), ``"auto"``, ``"cuda"``...
    folder : path-like, optional
        Where to save; the user's model folder by default.
    save : bool
        Save the result.

    Yields
    ------
    Progress
        ``info["phase"]``: ``"measure"`` per crop, then ``"done"`` with ``name``,
        ``path``, ``layers`` (batch-norm layers re-estimated) and ``pixels``.

    Returns
    -------
    SegmentationModel
        The adapted copy, in eval mode, with ``card.parent`` and ``card.lineage``.

    Raises
    ------
    ModelError
        The model has no batch-norm layers (nothing to adapt), its channels do
        not fit the image, or the name is taken.
    TrainingDataError
        A colour image for a grey model of another modality (or the reverse),
        axes that do not fit, slices outside the stack.
    """
    import torch

    from ..models.device import select_device
    from ..models.versions import (
        check_new_name,
        default_name,
        now_iso,
        save_version,
        trained_card,
        working_copy,
    )

    started, started_iso = time.monotonic(), now_iso()
    parent = resolve_model(model)
    if not batchnorm_layers(parent.module):
        raise ModelError(
            f"Model {parent.name!r} has no batch-norm layers, so there are no statistics to "
            "adapt without labels. Correct a few objects and fine-tune it instead."
        )
    if name is None:
        name = default_name(f"{parent.name}-adapted")
    elif save:
        check_new_name(name, folder)
    check_modality(parent, image, axes)
    batches = input_batches(parent, image, axes=axes, slices=slices, max_pixels=max_pixels)
    choice = select_device(device)
    working = working_copy(parent, choice.device)
    layers = batchnorm_layers(working.module)
    total = len(batches)
    digest = hashlib.sha256()
    for batch in batches:
        digest.update(str(batch.shape).encode())
        digest.update(batch.tobytes())
    yield Progress(
        0, total, "Measuring the image's statistics", None, {"phase": "measure", "crops": total}
    )
    with torch.no_grad():
        count = adapt_batchnorm(working.module, batches, device=choice.device, strength=strength)
    pixels = int(sum(b.shape[0] * b.shape[-1] * b.shape[-2] for b in batches))
    lineage = {
        "kind": "adapt",
        "method": "batch-norm statistics re-estimated on the new images (AdaBN), no labels",
        "parent": parent.name,
        "parent_sha256": _parent_sha(parent),
        "data_sha256": digest.hexdigest(),
        "data": {"pixels": pixels, "crops": total, "slices": parse_slices(slices)},
        "settings": {"strength": strength, "max_pixels": max_pixels},
        "batchnorm_layers": [layer_name for layer_name, _ in layers],
        "device": str(choice),
        "started": started_iso,
        "finished": now_iso(),
        "duration_s": round(time.monotonic() - started, 2),
    }
    card = trained_card(
        parent.card,
        name=name,
        lineage=lineage,
        # The parent's scores were measured on its own data, not on this session.
        metrics={},
        trained_on=f"{parent.name} with batch-norm statistics of {pixels} new pixels",
        description=(
            f"{parent.name} adapted to a new session without labels (batch-norm statistics "
            f"re-estimated on {pixels} pixels). {parent.card.description}"
        ).strip(),
        parent_name=parent.name,
    )
    result = type(working)(working.module, card, working.activation)
    path = save_version(result, folder=folder) if save else None
    yield Progress(
        total,
        total,
        f"{'Saved' if save else 'Adapted'} {name}: {count} batch-norm layers re-estimated",
        0.0,
        {
            "phase": "done",
            "name": name,
            "path": str(path) if path else None,
            "layers": count,
            "pixels": pixels,
        },
    )
    return result.eval()


def resolve_model(model: Any) -> SegmentationModel:
    """A loaded model as is; a registry name or a file loaded on the CPU."""
    if isinstance(model, SegmentationModel):
        return model
    from ..models.registry import load_model

    return load_model(model, device="cpu")


def _parent_sha(parent: SegmentationModel) -> str | None:
    from ..models.versions import parent_fingerprint

    return parent_fingerprint(parent)


# ----------------------------------------------------------------------------- input checks


def image_channels(image: Any, axes: str | None) -> tuple[int, bool]:
    """Colour channels of an image and whether it is truly coloured (not R = G = B).

    Returns
    -------
    channels : int
        1 for grey, 3 or 4 for RGB(A).
    coloured : bool
        False for grey images and for RGB copies of grey ones.
    """
    data = image.data if hasattr(image, "axes") and hasattr(image, "data") else image
    axes = _guess_axes(tuple(data.shape), axes or getattr(image, "axes", None))
    if "C" not in axes:
        return 1, False
    c = axes.index("C")
    channels = int(data.shape[c])
    if channels not in (3, 4):
        return channels, False
    moved = np.moveaxis(np.asarray(data), c, -1)
    flat = moved.reshape(-1, channels)[:, :3]
    step = max(1, flat.shape[0] // 200_000)
    sample = flat[::step].astype(np.float32)
    if data.dtype.kind == "f" and np.nanmax(np.abs(sample)) <= 1.0:
        sample = sample * 255.0
    spread = float(np.mean(sample.max(axis=1) - sample.min(axis=1)))
    return channels, spread > GREY_TOLERANCE


def check_modality(model: SegmentationModel, image: Any, axes: str | None = None) -> None:
    """Refuse, before any training, an image of another kind than the model was made for.

    A colour (RGB) image given to a grey model of a grey modality (EM,
    fluorescence), or a grey image given to a colour model: prediction would
    convert it silently, but adapting or fine-tuning on it would teach the
    model a different kind of image. RGB copies of grey images pass, and so do
    grey models of colour modalities (brightfield, H&E), whose training data were
    made grey the same way.

    Raises
    ------
    TrainingDataError
        Saying which model takes which kind of image, and what to do.
    """
    channels, coloured = image_channels(image, axes)
    modality = (model.card.modality or "").lower()
    colour_kind = any(word in modality for word in COLOUR_MODALITIES)
    wanted = model.in_channels // (2 * int(model.card.context_slices or 0) + 1)
    what = f"{model.name!r} ({model.card.modality or 'no modality given'})"
    if wanted == 1 and coloured and not colour_kind:
        raise TrainingDataError(
            f"The image is in colour (RGB) but the model {what} takes greyscale images: adapting "
            "it to a colour image would teach it another modality. Pick a model made for this "
            "kind of image (an RGB one such as gland-he for H&E), or make the image grey first "
            "if it really is a grey image saved in colour."
        )
    if wanted == 3 and channels == 1 and colour_kind:
        raise TrainingDataError(
            f"The image is greyscale but the model {what} takes colour (RGB) images: adapting it "
            "to a grey image would teach it another modality. Pick a greyscale model, or open "
            "the colour image itself."
        )


def check_annotation(labels: Any, annotated: Any = None) -> int:
    """Refuse empty or single-class annotations at once, before anything is prepared.

    Parameters
    ----------
    labels : array-like of int
        Object ids, 0 = background.
    annotated : array-like of bool, optional
        The pixels that count; by default every pixel of the slices (or the
        image) holding any label.

    Returns
    -------
    int
        The number of annotated pixels.

    Raises
    ------
    TrainingDataError
        No annotated pixel, no object, or no background among the annotated pixels.
    """
    labels = np.asarray(labels)
    if annotated is None:
        if labels.ndim == 3:
            painted = (labels.reshape(labels.shape[0], -1) != 0).any(axis=1)
            mask = np.zeros(labels.shape, bool)
            mask[painted] = True
        else:
            mask = np.full(labels.shape, bool(np.any(labels)))
    else:
        mask = np.asarray(annotated, bool)
        if mask.shape != labels.shape:
            raise TrainingDataError(
                f"The annotated region is shaped {mask.shape} but the labels are {labels.shape}."
            )
    count = int(mask.sum())
    if count == 0:
        raise TrainingDataError(
            "The labels have no annotated pixels. Paint or correct objects on at least one "
            "slice first."
        )
    objects = int(np.count_nonzero(labels[mask]))
    if objects == 0:
        raise TrainingDataError(
            "The annotated region contains no object, only background: paint at least one "
            "object (ideally several)."
        )
    if objects == count:
        raise TrainingDataError(
            "Every annotated pixel belongs to an object, so the annotation has a single "
            "class: the model would learn that everything is foreground. Leave the background "
            "unpainted (label 0) around the objects."
        )
    return count


def check_classes(summary: dict[str, Any]) -> None:
    """Refuse annotations whose annotated pixels are all of one class.

    Parameters
    ----------
    summary : dict
        :attr:`~.data.PreparedData.summary`, with ``pixels_per_class``.

    Raises
    ------
    TrainingDataError
        When only one class has annotated pixels: the model would learn that
        every pixel is that class.
    """
    counts = summary.get("pixels_per_class") or {}
    present = [name for name, count in counts.items() if count > 0]
    if len(present) < 2:
        only = present[0] if present else "none"
        raise TrainingDataError(
            f"Every annotated pixel is of one class ({only!r}): the model would learn that "
            "everything is that class. Annotate some pixels of the other class(es) too (leave "
            "background unpainted inside an annotated slice, or include background in the "
            "annotated region)."
        )


# ----------------------------------------------------------------------------- few-shot training


def scaled_adam(groups: list[dict[str, Any]], **kwargs: Any) -> Any:
    """Adam whose parameter groups learn at ``lr_scale`` times the scheduled rate.

    The training loop sets one scheduled rate on every group; this optimizer
    multiplies it by each group's ``lr_scale`` for the step only, so the
    schedule and the per-part rates combine without the loop knowing.

    Parameters
    ----------
    groups : list of dict
        Parameter groups with ``params`` and ``lr_scale`` (see :func:`parameter_groups`).
    **kwargs
        ``torch.optim.Adam``'s (``lr``, ``weight_decay``...).

    Returns
    -------
    torch.optim.Adam
    """
    import torch

    class ScaledAdam(torch.optim.Adam):
        def step(self, closure: Any = None) -> Any:
            rates = [group["lr"] for group in self.param_groups]
            for group in self.param_groups:
                group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
            try:
                return super().step(closure)
            finally:
                for group, rate in zip(self.param_groups, rates):
                    group["lr"] = rate

    return ScaledAdam(groups, **kwargs)


def parameter_groups(module: Any, encoder_lr_factor: float) -> list[dict[str, Any]]:
    """Trainable parameters split into encoder (scaled rate) and the rest.

    Parameters
    ----------
    module : torch.nn.Module
    encoder_lr_factor : float
        The encoder's rate relative to the decoder's; 0 leaves it out.

    Returns
    -------
    list of dict
        Parameter groups with ``params`` and ``lr_scale`` (no empty group).
    """
    encoder_ids = {
        id(p) for part in encoder_modules(module) for p in part.parameters() if p.requires_grad
    }
    encoder = [p for p in module.parameters() if p.requires_grad and id(p) in encoder_ids]
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in encoder_ids]
    groups = [{"params": rest, "lr_scale": 1.0, "part": "decoder"}]
    if encoder and encoder_lr_factor > 0:
        groups.append({"params": encoder, "lr_scale": encoder_lr_factor, "part": "encoder"})
    elif encoder:
        for p in encoder:
            p.requires_grad_(False)
    return [g for g in groups if g["params"]]


class FewShotTrainer(Trainer):
    """The training loop with the few-shot recipe's per-part learning rates.

    Everything else (schedule, validation, early stop, best weights, Cancel) is
    :class:`~.loop.Trainer`'s. The encoder learns at
    ``settings.encoder_lr_factor`` times the scheduled rate.
    """

    def _setup(self) -> None:
        super()._setup()
        s = self.settings
        factor = float(getattr(s, "encoder_lr_factor", 1.0))
        if factor == 1.0:
            return
        groups = parameter_groups(self.model.module, factor)
        self.optimizer = scaled_adam(groups, lr=s.learning_rate, weight_decay=s.weight_decay)


# ----------------------------------------------------------------------------- intensities


def intensity_quantiles(image: Any, *, max_samples: int = 2_000_000) -> np.ndarray:
    """Quantiles 0, 1, ..., 100 % of an image's intensities: a reference to match others to.

    Parameters
    ----------
    image : array-like
        Any shape; colour images pooled over their channels.

    Returns
    -------
    (101,) ndarray of float64
    """
    values = np.asarray(image).ravel()
    step = max(1, values.size // max_samples)
    sample = values[::step].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    return np.percentile(sample, REFERENCE_QUANTILES)


def match_intensities(image: Any, reference: np.ndarray) -> np.ndarray:
    """Map an image's intensities so that its quantiles become ``reference`` (histogram matching).

    Percentile normalisation already undoes a linear change of brightness and
    contrast; matching the whole histogram also undoes a gamma or any other
    monotonic change of the detector's response.

    Parameters
    ----------
    image : (..., ) array-like
        Grey image or stack.
    reference : (101,) ndarray
        :func:`intensity_quantiles` of the data the model was trained on.

    Returns
    -------
    ndarray of float32
        The image's shape.
    """
    data = np.asarray(image)
    own = intensity_quantiles(data)
    # Flat stretches of the quantile curve (many equal pixels) must still map monotonically.
    own = own + np.arange(own.size) * 1e-9 * max(float(own[-1] - own[0]), 1.0)
    return np.interp(data.astype(np.float64), own, np.asarray(reference, np.float64)).astype(
        np.float32
    )


# ----------------------------------------------------------------------------- partial corrections

#: Pixels around the edited objects that count as annotated too: the context a user looked at
#: while correcting (the background next to a fixed object is known to be background).
EDIT_MARGIN = 16


def edited_region(before: Any, after: Any, *, margin: int = EDIT_MARGIN) -> np.ndarray:
    """The annotated region of a partial correction: every touched object plus a margin.

    A user who fixed a few objects of a segmentation knows those objects (and the
    background right around them), not the rest of the slice, which may still
    hold the model's mistakes. The region is every pixel whose label changed,
    grown to the whole of every object it touched (its old and its new id), then
    by ``margin`` pixels in the plane (each slice of a stack on its own).

    Parameters
    ----------
    before : (Y, X) or (Z, Y, X) array-like of int
        The labels as the model made them.
    after : array-like of int, same shape
        The corrected labels.
    margin : int
        Pixels added around the touched objects.

    Returns
    -------
    ndarray of bool, the labels' shape
        True where the corrected labels count for training (all False: nothing edited).

    Raises
    ------
    TrainingDataError
        When the two label images differ in shape.

    Examples
    --------
    >>> before = np.zeros((1, 9), int); before[0, 2:4] = 1
    >>> after = before.copy(); after[0, 6] = 2
    >>> edited_region(before, after, margin=1).astype(int)
    array([[0, 0, 0, 0, 0, 1, 1, 1, 0]])
    """
    from scipy import ndimage as ndi

    old, new = np.asarray(before), np.asarray(after)
    if old.shape != new.shape:
        raise TrainingDataError(
            f"The corrected labels are shaped {new.shape} but the labels they correct are "
            f"{old.shape}; compare labels of the same image."
        )
    changed = old != new
    region = np.zeros(old.shape, bool)
    stack = old.ndim == 3
    for z in range(old.shape[0]) if stack else [None]:
        index = (z,) if stack else ()
        touched = changed[index]
        if not touched.any():
            continue
        plane = touched.copy()
        for labels in (old[index], new[index]):
            ids = np.unique(labels[touched])
            ids = ids[ids != 0]
            if ids.size:
                plane |= np.isin(labels, ids)
        if margin > 0:
            # A square neighbourhood: the margin is the same along rows, columns and diagonals.
            plane = ndi.binary_dilation(plane, np.ones((3, 3), bool), iterations=int(margin))
        region[index] = plane
    return region
