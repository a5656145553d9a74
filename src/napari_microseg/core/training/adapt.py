"""Adapting a model to a new microscope session: label-free first, then a few-shot recipe.

A model meets images from another microscope, staining or session and gets
worse. The cheapest lever needs no annotation at all: the batch-norm layers
hold running means and variances of their inputs, measured on the training
data; re-estimating them on the new images (:func:`adapt`, "Adapt to this
image", AdaBN) undoes much of an intensity, contrast, blur or stain change in
about a second. The input normalisation of the card (percentiles over the
whole image) already absorbs linear intensity changes; :func:`~.fewshot.match_intensities`
maps a new image's histogram onto reference quantiles for the non-linear ones
(gamma), where a reference is known.

Fine-tuning on a few corrected slices then uses the few-shot recipe of
:meth:`~.settings.TrainSettings.for_finetune`, run by
:func:`~.jobs.finetune` through the helpers here:

* the batch-norm statistics re-estimated on the image first, kept only if the
  held-out annotated pixels say they help (:func:`adapt_batchnorm`);
* the statistics frozen during training (:func:`frozen_batchnorm`): a batch
  of four object-centred patches is a poor estimate of a session's statistics;
* per-part learning rates (:class:`~.fewshot.FewShotTrainer`): the encoder learns at
  ``encoder_lr_factor`` times the decoder's rate, so a few slices bend the
  decoder without wiping the encoder's general features;
* the input checks a few-shot user needs (:mod:`.annotations`).
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from ..inference.denoise import GENTLE_SIGMA, apply_smoothing, choose_sigma, smooth_sigma
from ..inference.illumination import FLAT_FIELD_FRACTION, apply_flat_field
from ..inference.job import match_channels
from ..inference.normalize import fit_normalizer
from ..inference.resample import resample_plan, resample_plane_job
from ..models.base import ModelCard, ModelError, SegmentationModel
from ..progress import Job, Progress, drain
from .annotations import check_modality, guess_axes
from .data import TrainingDataError, centre_slice, parse_slices
from .settings import TrainingWarning

if TYPE_CHECKING:
    import os

    import torch

__all__ = [
    "adapt",
    "adapt_batchnorm",
    "batchnorm_layers",
    "frozen_batchnorm",
    "input_batches",
    "resolve_model",
]

#: Pixels the statistics are measured on at most (two 512 x 512 crops): enough for stable
#: means and variances even in the deepest layers (2048 positions per crop at depth 4), little
#: enough for about a second of a small U-Net on a 2-core CPU.
ADAPT_MAX_PIXELS = 2 * 512 * 512
#: Side of the crops the statistics are measured on; large, so each crop's batch statistics
#: (which normalise the deeper layers during the pass) are close to the whole image's.
ADAPT_CROP = 512
#: Pixels read at most to measure a session's noise (whole planes, evenly spread).
NOISE_MAX_PIXELS = 8 * 1024 * 1024


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
    exclude: Sequence[int] = (),
    max_pixels: int = ADAPT_MAX_PIXELS,
    crop: int = ADAPT_CROP,
    seed: int = 0,
    spacing: Sequence[float] | None = None,
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
    exclude : sequence of int
        Slices never used (e.g. the ones whose pixels will judge the statistics).
    max_pixels : int
        Pixels used at most, spread over evenly spaced crops.
    crop : int
        Largest crop side.
    seed : int
        Where the crops start inside a plane larger than ``crop``.
    spacing : sequence of float, optional
        The image's voxel size in µm per spatial axis: far from the model's
        pixel size, each crop is resampled to it, as prediction resamples the
        image (:func:`~napari_microseg.core.inference.resample.resample_plan`).

    Returns
    -------
    list of (1, C, h, w) ndarray of float32
        C = the model's input channels (context slices of a 2.5D model included);
        empty when ``exclude`` leaves no slice.

    Raises
    ------
    TrainingDataError
        Axes that do not fit the image, or slices outside the stack.
    ModelError
        An image whose channels the model cannot take.
    """
    data, axes = _image_and_axes(image, axes)
    card = model.card
    data, axes, _ = match_channels(data, axes, card)
    channel_axis = axes.index("C") if "C" in axes else None
    channels = int(data.shape[channel_axis]) if channel_axis is not None else 1
    context = int(card.context_slices or 0)
    model.check_channels(channels * (2 * context + 1))
    plan = resample_plan(card.pixel_size_um, spacing, axes, tuple(data.shape))
    data = apply_flat_field(data, axes, card.normalization, lazy=True)
    # The card's sigma is in the model's pixels; these crops are resampled after smoothing.
    zoom = None if plan is None else plan.factor
    data = apply_smoothing(data, axes, card.normalization, lazy=True, zoom=zoom)
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
    planes = [z for z in planes if z not in set(exclude)]
    if not planes:
        return []
    # Crops spread evenly over the planes; several per plane when there are few planes.
    if n_crops <= len(planes):
        picks = np.unique(np.linspace(0, len(planes) - 1, n_crops).round().astype(int))
        schedule = [planes[i] for i in picks]
    else:
        # Never more crops of a plane than it holds side by side: a small plane is used once.
        fits = (height // side_y) * (width // side_x)
        per_plane = min(n_crops // len(planes), fits)
        schedule = [z for z in planes for _ in range(per_plane)]
    size = None  # every crop's side at the model's pixel size, when it is resampled
    if plan is not None:
        size = (max(1, round(side_y * plan.factor[0])), max(1, round(side_x * plan.factor[1])))
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
        batch = np.concatenate(parts).astype(np.float32, copy=False)
        if size is not None:
            batch = drain(resample_plane_job(batch, 1, 2, size), show=False)
        batches.append(np.ascontiguousarray(batch[None]))
    return batches


def _image_and_axes(image: Any, axes: str | None) -> tuple[Any, str]:
    """The array of an image (or ImageData) and its axes, given or guessed."""
    data = image.data if hasattr(image, "axes") and hasattr(image, "data") else image
    axes = axes or getattr(image, "axes", None)
    data = np.asarray(data) if not hasattr(data, "shape") else data
    return data, guess_axes(tuple(data.shape), axes)


def resampling_note(
    model: SegmentationModel, image: Any, axes: str | None, spacing: Sequence[float] | None
) -> str | None:
    """How the image is resampled to the model's pixel size to adapt it; None: it is not."""
    pixel_size = model.card.pixel_size_um
    if pixel_size is None or spacing is None:
        return None
    # Only Y and X matter here, which fitting the channels leaves as they are.
    data, axes = _image_and_axes(image, axes)
    plan = resample_plan(pixel_size, spacing, axes, tuple(data.shape))
    return None if plan is None else plan.describe(float(pixel_size))


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
    match_intensities: bool | None = None,
    flat_field: bool | None = None,
    smooth: bool | float | None = None,
    spacing: Sequence[float] | None = None,
) -> Job[SegmentationModel]:
    """Adapt to this image: match its intensities and re-estimate batch-norm statistics, no labels.

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
    match_intensities : bool, optional
        Map the image's intensity histogram onto the model's training reference
        (``normalization["match"]`` in the new card, so every later prediction
        does it too) before the statistics are measured. Off by default:
        ``benchmarks/bench_adapt.py`` measured it undo a gamma change on EM but
        ruin fluorescence nuclei (docs/benchmarks.md). Needs a card with a
        reference (models trained by napari-microseg record one).
    flat_field : bool, optional
        Correct uneven illumination: divide each plane by its smoothed
        brightness (:mod:`~.inference.illumination`, ``normalization["flat_field"]``
        in the new card, so every later prediction does it too) before the
        statistics are measured. None keeps the parent's choice (off for the
        bundled models); ``benchmarks/bench_flatfield.py`` measured it rescue an
        illumination gradient (mito-em Dice 0.27 -> 0.90) at a cost of at most
        0.009 on evenly lit images.
    smooth : bool or float, optional
        Smooth a noisy session's input (:mod:`~.inference.denoise`,
        ``normalization["smooth"]`` in the new card) before the statistics are
        measured. None (default): when the image is :data:`~.inference.denoise.
        NOISY_RATIO` times as noisy as the model's training inputs or more
        (the card's ``noise``; no labels needed), with the sigma
        :func:`~.inference.denoise.choose_sigma` gives; a parent that smooths
        keeps its sigma. True: always (that sigma, or the gentle one); False:
        never; a number: that sigma in the model's pixels. ``benchmarks/bench_adapt.py``:
        the mito-em parent under blur and noise scores Dice 0.788 as the images
        are and 0.900 on them smoothed by 0.7 px.
    spacing : sequence of float, optional
        The image's voxel size in µm per spatial axis: far from the model's
        pixel size, the statistics and the noise are measured on crops
        resampled to it, as prediction resamples the image (the flat field, a
        fraction of the plane, is the same on either grid).

    Yields
    ------
    Progress
        ``info["phase"]``: ``"measure"`` per crop, then ``"done"`` with ``name``,
        ``path``, ``layers`` (batch-norm layers re-estimated), ``pixels`` and
        ``advice`` (:func:`label_free_advice`, also given as a ``TrainingWarning``).

    Returns
    -------
    SegmentationModel
        The adapted copy, in eval mode, with ``card.parent`` and ``card.lineage``.

    Raises
    ------
    ModelError
        Nothing to adapt (no batch-norm layers and no intensity reference), the
        model's channels do not fit the image, or the name is taken.
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
    matching = _wants_matching(parent, match_intensities)
    advice = label_free_advice(parent.card)
    if advice:
        warnings.warn(advice, TrainingWarning, stacklevel=2)
    has_batchnorm = bool(batchnorm_layers(parent.module))
    # The image is checked before its noise is measured, so a wrong one gets the clear message.
    check_modality(parent, image, axes)
    resampled = resampling_note(parent, image, axes, spacing)
    if resampled:
        warnings.warn(resampled, TrainingWarning, stacklevel=2)
    sigma = session_smoothing(
        parent, image, axes=axes, slices=slices, smooth=smooth, spacing=spacing
    )
    if not has_batchnorm and not matching and not flat_field and sigma is None:
        raise ModelError(
            f"Model {parent.name!r} has no batch-norm layers and no intensity reference, so "
            "there is nothing to adapt without labels but the illumination (flat_field=True) "
            "or the noise (smooth=True). Correct a few objects and fine-tune it instead."
        )
    if name is None:
        name = default_name(f"{parent.name}-adapted")
    elif save:
        check_new_name(name, folder)
    choice = select_device(device)
    working = working_copy(parent, choice.device)
    normalization = dict(parent.card.normalization)
    if matching:
        normalization["match"] = True
    else:
        normalization.pop("match", None)
    if flat_field:
        normalization["flat_field"] = normalization.get("flat_field") or FLAT_FIELD_FRACTION
    elif flat_field is not None:
        normalization.pop("flat_field", None)
    flattened = bool(normalization.get("flat_field"))
    if sigma is None:
        normalization.pop("smooth", None)
    else:
        normalization["smooth"] = sigma
    # The statistics are measured on the inputs as the adapted model will see them.
    working.card.normalization = normalization
    batches = input_batches(
        working, image, axes=axes, slices=slices, max_pixels=max_pixels, spacing=spacing
    )
    layers = batchnorm_layers(working.module)
    total = len(batches)
    digest = hashlib.sha256()
    for batch in batches:
        digest.update(str(batch.shape).encode())
        digest.update(batch.tobytes())
    yield Progress(
        0, total, "Measuring the image's statistics", None, {"phase": "measure", "crops": total}
    )
    count = 0
    if has_batchnorm:
        with torch.no_grad():
            count = adapt_batchnorm(
                working.module, batches, device=choice.device, strength=strength
            )
    pixels = int(sum(b.shape[0] * b.shape[-1] * b.shape[-2] for b in batches))
    methods = (
        (["uneven illumination corrected (flat field)"] if flattened else [])
        + ([f"noisy input smoothed (Gaussian sigma {sigma:g} px)"] if sigma else [])
        + (["intensities matched to the training reference"] if matching else [])
        + (["batch-norm statistics re-estimated on the new images (AdaBN)"] if count else [])
    )
    lineage = {
        "kind": "adapt",
        "method": "; ".join(methods) + ", no labels",
        "match_intensities": matching,
        "flat_field": flattened,
        "smooth": sigma,
        "parent": parent.name,
        "parent_sha256": _parent_sha(parent),
        "data_sha256": digest.hexdigest(),
        "data": {
            "pixels": pixels,
            "crops": total,
            "slices": parse_slices(slices),
            "resampled": resampled,
        },
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
        trained_on=f"{parent.name} adapted on {pixels} new pixels ({' and '.join(methods)})",
        description=(
            f"{parent.name} adapted to a new session without labels ({' and '.join(methods)}, "
            f"on {pixels} pixels). {parent.card.description}"
        ).strip(),
        parent_name=parent.name,
    )
    card.normalization = normalization
    result = type(working)(working.module, card, working.activation)
    path = save_version(result, folder=folder) if save else None
    yield Progress(
        total,
        total,
        f"{'Saved' if save else 'Adapted'} {name}: "
        + ("illumination corrected, " if flattened else "")
        + (f"noisy input smoothed (sigma {sigma:g} px), " if sigma else "")
        + ("intensities matched, " if matching else "")
        + f"{count} batch-norm layers re-estimated",
        0.0,
        {
            "phase": "done",
            "name": name,
            "path": str(path) if path else None,
            "layers": count,
            "pixels": pixels,
            "matched": matching,
            "flat_field": flattened,
            "smooth": sigma,
            "advice": advice,
        },
    )
    return result.eval()


def session_smoothing(
    model: SegmentationModel,
    image: Any,
    *,
    axes: str | None = None,
    slices: Sequence[int] | str | None = None,
    smooth: bool | float | None = None,
    spacing: Sequence[float] | None = None,
) -> float | None:
    """The smoothing sigma an adapted copy of ``model`` takes for ``image``; None: none.

    The sigma is in the model's pixels, and the noise is measured there too: on
    planes resampled to the model's pixel size when ``spacing`` is far from it,
    as prediction sees them (upsampling by interpolation lowers the noise a
    plane seems to have).

    Parameters
    ----------
    model : SegmentationModel
        The parent; its card's ``noise`` is the training inputs' noise level.
    image, axes, slices, spacing
        As for :func:`adapt`.
    smooth : bool or float, optional
        As for :func:`adapt`.

    Raises
    ------
    ValueError
        A ``smooth`` number outside (0, :data:`~.inference.denoise.MAX_SIGMA`].
    """
    if smooth is False:
        return None
    if smooth is not None and smooth is not True:
        return smooth_sigma({"smooth": smooth})
    spec = model.card.normalization
    current = smooth_sigma(spec)
    if current is not None:
        return current
    sigma = None
    if "noise" in spec and model.task != "instance":
        # Whole planes (a crop this large is the plane), each on its own intensity scale.
        planes = input_batches(
            model,
            image,
            axes=axes,
            slices=slices,
            crop=1 << 16,
            max_pixels=NOISE_MAX_PIXELS,
            spacing=spacing,
        )
        context = int(model.card.context_slices or 0)
        sigma = choose_sigma([centre_slice(p[0], context) for p in planes], spec["noise"])
    return GENTLE_SIGMA if sigma is None and smooth is True else sigma


def label_free_advice(card: ModelCard) -> str | None:
    """A warning for a model whose benchmark found label-free adaptation harmful, else None.

    ``scripts/record_adaptation.py`` writes ``recommended["adaptation"]`` into the
    bundled cards from ``benchmarks/bench_adapt.py``: whether re-estimating the
    batch-norm statistics on a new session, without labels, lowered the model's
    Dice under any simulated shift (fluorescence nuclei: yes, every one). No label
    can check it at run time, so the user is told and pointed to fine-tuning,
    which keeps an adapted start only when held-out annotated pixels agree.
    """
    found = (card.recommended or {}).get("adaptation") or {}
    if found.get("label_free", True):
        return None
    figures = found.get("dice_shifted_vs_adapted") or {}
    shown = ", ".join(
        f"{kind.replace('_', ' ')} {f['shifted']:.2f} -> {f['adapted']:.2f}"
        for kind, f in figures.items()
    )
    return (
        f"Adapting {card.name!r} without labels lowered its Dice on simulated new sessions "
        f"in benchmarks/bench_adapt.py ({shown}). Check the result on your image, or correct "
        "a few objects and fine-tune instead: fine-tuning keeps the adapted statistics only "
        "when held-out annotated pixels agree."
    )


def _wants_matching(model: SegmentationModel, asked: bool | None) -> bool:
    """Whether adapting ``model`` matches intensities (``asked``: the caller's choice)."""
    has_reference = "reference" in model.card.normalization
    if asked and not has_reference:
        raise ModelError(
            f"Model {model.name!r} has no intensity reference (models trained by an older "
            "napari-microseg, or outside it, have none), so intensities cannot be matched. "
            "Adapt without matching."
        )
    # Off unless asked: bench_adapt measured matching undo a gamma on EM (mito-em 0.844 -> 0.930)
    # but wreck fluorescence nuclei, whose histograms are mostly background (0.71 -> 0.06).
    return bool(asked)


def resolve_model(model: Any) -> SegmentationModel:
    """A loaded model as is; a registry name or a file loaded on the CPU."""
    if isinstance(model, SegmentationModel):
        return model
    from ..models.registry import load_model

    return load_model(model, device="cpu")


def _parent_sha(parent: SegmentationModel) -> str | None:
    from ..models.versions import parent_fingerprint

    return parent_fingerprint(parent)
