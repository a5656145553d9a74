"""The few-shot recipe: where a fine-tune starts and which model it keeps (#21).

A fine-tune of a strong model on a few annotated images of a new session may
start from the parent, or from the parent with its batch-norm statistics
re-estimated on the new images (no labels needed). The adapted start is kept
only when the held-out annotated pixels agree twice:

- **on the same images**: statistics from every training image, scored on the
  held-out pixels of those images (what the user will see on this session);
- **cross-fitted**: the held-out pixels of each slice (or image) scored with
  statistics measured *without* that slice, so the statistics never judge the
  pixels they came from. One small image gives statistics that fit its own
  pixels and mislead on the next image of the session (the bundled nuclei model:
  Dice 0.87 -> 0.39 with one image's statistics, 0.86 with four); the
  cross-fit is what catches it. With a single 2D image there is nothing to
  cross-fit on, so the parent is the start.

A model whose card records that its benchmark found label-free adaptation harmful
(``recommended["adaptation"]``, :func:`~.adapt.label_free_advice`) always starts
from the parent: a benchmark's many images outweigh a few held-out pixels.

Before either, the fine-tune tries a flat-field correction of uneven illumination
(:mod:`~..inference.illumination`): the parent scores the held-out pixels of the
corrected images and of the images as they are, and the corrected ones become the
data (and the correction part of the new model's card) only when they gain at least
:data:`FLAT_FIELD_MIN_GAIN` Dice, or any Dice where the planes' background varies
by :data:`~..inference.illumination.UNEVEN_LIGHT` or more (:func:`flat_field_worth`,
:func:`illumination_start`). The correction of
an image depends on that image alone, so no cross-fit is needed.

A session much noisier than the training data learns from smoothed images, decided
without labels (:mod:`.smoothing`).

After training, the result is kept only when it beats its start on the held-out
pixels (:func:`better_of`); a fine-tune that beats neither saves nothing.

A model whose card says its fine-tunes from one image were worse on the session's
other images takes no gradient step when every annotation lies in one image
(:mod:`.one_plane`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..inference.illumination import UNEVEN_LIGHT
from ..progress import Job, Progress
from .adapt import (
    ADAPT_MAX_PIXELS,
    adapt_batchnorm,
    batchnorm_layers,
    input_batches,
    label_free_advice,
)
from .scoring import capped_regions, evaluate_regions, metrics_text
from .state import cpu_state

if TYPE_CHECKING:
    from ..models.base import SegmentationModel
    from .data import PreparedData, Region, TrainingPair
    from .loop import Outcome
    from .settings import TrainSettings

__all__ = [
    "CROSS_FIT_FOLDS",
    "FLAT_FIELD_MIN_GAIN",
    "KEPT_PARENT",
    "AdaptedStart",
    "adapted_start",
    "better_of",
    "cross_fit",
    "illumination_start",
    "kept_parent_event",
    "score",
    "statistics_batches",
    "tries_flat_field",
    "with_flat_field",
    "with_normalization",
    "with_planes",
]

#: The note of a fine-tune whose result was no better than the parent.
KEPT_PARENT = (
    "Neither the batch-norm adaptation nor the fine-tuning beat the parent on the held-out "
    "annotated pixels, so the parent is kept and nothing was saved. Annotate more (or other) "
    "objects, or give more time."
)

#: Slices (or images) whose held-out pixels judge statistics measured without them; more
#: would cost one forward pass over the statistics crops each and say little more.
CROSS_FIT_FOLDS = 4

#: Held-out Dice the parent must gain on flat-field corrected images for the fine-tune to
#: use them. The correction can cost up to 0.009 Dice on evenly lit images
#: (benchmarks/bench_flatfield.py), and a small held-out gain did not carry over to unseen
#: images: mito-em under blur + noise gained 0.013 on the held-out pixels, and the fine-tune
#: that used the correction scored 0.868 on unseen slices against 0.892 without it
#: (bench_adapt, docs/benchmarks.md). Where the light really is uneven the gain is large
#: (gland-he 0.028-0.099, mito-em 0.675). Where the planes' own background says the light
#: is uneven (:data:`~..inference.illumination.UNEVEN_LIGHT`), any gain is enough: with the
#: annotated images 0 and 3 of gland-he's pool under its illumination field, the held-out
#: pixels gained only 0.009 where the correction gains 0.068 on unseen images.
FLAT_FIELD_MIN_GAIN = 0.02

#: Where a fine-tune starts: ``"parent"`` or ``"adapted"``, the parent's held-out metrics
#: (None when not measured) and facts for the caller (``"adapted_state"``).
AdaptedStart = tuple[str, "dict[str, float] | None", "dict[str, Any]"]


def score(metrics: dict[str, float], monitor: str) -> float:
    """The monitored validation metric as a score to maximise (a loss is negated)."""
    value = metrics.get(monitor, metrics.get("dice", 0.0))
    return -value if monitor == "val_loss" else value


def statistics_batches(
    model: SegmentationModel,
    pairs: Sequence[TrainingPair],
    *,
    leave_out: tuple[int, int | None] | None = None,
) -> list[np.ndarray]:
    """Normalised crops of the training images for measuring batch-norm statistics.

    Parameters
    ----------
    model : SegmentationModel
        The parent: its card says how inputs are prepared.
    pairs : sequence of TrainingPair
        The fine-tune's images; each gives an equal share of the pixels.
    leave_out : (int, int or None), optional
        ``(pair index, slice)`` never used: that slice of a stack, or the whole
        image when the slice is None.

    Returns
    -------
    list of (1, C, h, w) ndarray of float32
        Empty when nothing is left.
    """
    share = max(1, ADAPT_MAX_PIXELS // max(1, len(pairs)))
    batches: list[np.ndarray] = []
    for number, pair in enumerate(pairs):
        exclude: tuple[int, ...] = ()
        if leave_out is not None and leave_out[0] == number:
            if leave_out[1] is None:
                continue
            exclude = (leave_out[1],)
        axes = pair.axes or getattr(pair.image, "axes", None)
        batches += input_batches(
            model, pair.image, axes=axes, exclude=exclude, max_pixels=share, spacing=pair.spacing
        )
    return batches


def cross_fit(
    working: SegmentationModel,
    parent: SegmentationModel,
    pairs: Sequence[TrainingPair],
    regions: Sequence[Region],
    original: dict[str, Any],
    settings: TrainSettings,
    device: Any,
) -> tuple[float, float, int] | None:
    """Parent and adapted scores on held-out pixels the statistics never saw.

    The held-out regions are grouped by the slice (or 2D image) they lie in; up to
    :data:`CROSS_FIT_FOLDS` groups, evenly spread, are each scored with the parent
    and with the parent adapted to every training image except that slice.

    Parameters
    ----------
    working : SegmentationModel
        Changed in place; holds ``original`` again on return.
    parent : SegmentationModel
        Its card prepares the inputs.
    pairs : sequence of TrainingPair
        The training images (regions' ``plane.source`` index them).
    regions : sequence of Region
        Held-out regions of those images.
    original : dict
        The parent's state dict.
    settings : TrainSettings
        ``monitor`` and ``loss``.
    device : torch.device

    Returns
    -------
    (float, float, int) or None
        Pixel-weighted mean score of the parent and of the adapted copies, and the
        number of groups used; None when no group has other pixels to adapt on.
    """
    groups: dict[tuple[int, int | None], list[Region]] = defaultdict(list)
    for region in regions:
        groups[(region.plane.source, region.plane.z)].append(region)
    keys = sorted(groups, key=lambda key: (key[0], -1 if key[1] is None else key[1]))
    if len(keys) > CROSS_FIT_FOLDS:
        picks = np.unique(np.linspace(0, len(keys) - 1, CROSS_FIT_FOLDS).round().astype(int))
        keys = [keys[i] for i in picks]
    totals, weight, used = np.zeros(2), 0, 0
    try:
        for key in keys:
            batches = statistics_batches(parent, pairs, leave_out=key)
            if not batches:
                continue
            fold = groups[key]
            pixels = sum(region.pixels for region in fold)
            working.module.load_state_dict(original)
            parent_score = score(
                evaluate_regions(working, fold, device=device, loss_kind=settings.loss),
                settings.monitor,
            )
            adapt_batchnorm(working.module, batches, device=device)
            adapted_score = score(
                evaluate_regions(working, fold, device=device, loss_kind=settings.loss),
                settings.monitor,
            )
            totals += pixels * np.array([parent_score, adapted_score])
            weight += pixels
            used += 1
    finally:
        working.module.load_state_dict(original)
    if not used or not weight:
        return None
    parent_mean, adapted_mean = totals / weight
    return float(parent_mean), float(adapted_mean), used


def adapted_start(
    working: SegmentationModel,
    parent: SegmentationModel,
    pairs: Sequence[TrainingPair],
    val_regions: Sequence[Region],
    settings: TrainSettings,
    device: Any,
    *,
    separate_validation: bool = False,
) -> Job[AdaptedStart]:
    """Label-free adaptation before any gradient step, kept when the held-out pixels agree.

    Parameters
    ----------
    working : SegmentationModel
        The copy that will be trained; changed in place to the chosen start.
    parent : SegmentationModel
        The model as the user has it.
    pairs : sequence of TrainingPair
        The training images; their batch-norm statistics make the adapted start.
    val_regions : sequence of Region
        The held-out regions the trainer validates on (capped the same way), so
        every comparison is like for like.
    settings : TrainSettings
        ``adapt_batchnorm`` turns the step on; ``monitor``, ``loss`` and
        ``val_max_pixels`` as in training.
    device : torch.device
        Where ``working`` is.
    separate_validation : bool
        The held-out regions come from images that are not among ``pairs``: the
        statistics never saw them, so no cross-fit is needed.

    Returns
    -------
    (str, dict or None, dict)
        See :data:`AdaptedStart`; ``"adapted_state"`` is set whenever the
        adaptation ran, kept or not.

    Yields
    ------
    Progress
        ``phase="adapt"``: one event before, one with the metrics and the choice.
    """
    event: dict[str, Any] = {}
    if not settings.adapt_batchnorm or not batchnorm_layers(working.module):
        return "parent", None, event
    advice = label_free_advice(parent.card)
    if advice:
        # Measured on many more images than a few-shot session can hold out (bench_adapt).
        text = f"Starting from the parent, without new batch-norm statistics: {advice}"
        yield Progress(0, settings.steps, text, None, {"phase": "adapt", "start": "parent"})
        return "parent", None, event
    yield Progress(0, settings.steps, "Adapting to the image (no labels)", None, {"phase": "adapt"})
    regions = capped_regions(val_regions, settings.val_max_pixels)
    before = evaluate_regions(working, regions, device=device, loss_kind=settings.loss)
    original = cpu_state(working.module)
    adapt_batchnorm(working.module, statistics_batches(parent, pairs), device=device)
    adapted = evaluate_regions(working, regions, device=device, loss_kind=settings.loss)
    event["adapted_state"] = cpu_state(working.module)
    same_images = score(adapted, settings.monitor) > score(before, settings.monitor)
    crossed = None
    if same_images and not separate_validation:
        crossed = cross_fit(working, parent, pairs, regions, original, settings, device)
    if separate_validation:
        better, why = same_images, ""
    elif crossed is None:
        better = False
        why = "; not checked on other pixels (a single image cannot be)" if same_images else ""
    else:
        parent_score, adapted_score, folds = crossed
        better = same_images and adapted_score > parent_score
        why = (
            f"; statistics from the other {'slices' if _stacked(regions) else 'images'} on "
            f"{folds} held-out part(s): {parent_score:.3f} -> {adapted_score:.3f}"
        )
    working.module.load_state_dict(event["adapted_state"] if better else original)
    start = "adapted" if better else "parent"
    dice = adapted.get("dice", float("nan"))
    text = (
        f"{metrics_text('Parent', before)}; with the images' batch-norm statistics: Dice "
        f"{dice:.3f}{why} ({'kept' if better else 'not kept'})"
    )
    info = {
        "phase": "adapt",
        "metrics_parent": before,
        "metrics_adapted": adapted,
        "start": start,
        "cross_fit": None if crossed is None else {"parent": crossed[0], "adapted": crossed[1]},
    }
    yield Progress(0, settings.steps, text, None, info)
    return start, before, event


def _stacked(regions: Sequence[Region]) -> bool:
    return any(region.plane.z is not None for region in regions)


def better_of(outcome: Outcome, start: str, settings: TrainSettings) -> str:
    """``"trained"`` when it beats the starting model on the held-out pixels, else the start.

    A tie keeps the start: training that changed nothing measurable is not worth a new model.
    """
    if score(outcome.after, settings.monitor) > score(outcome.before, settings.monitor):
        return "trained"
    return start


def kept_parent_event(
    parent: SegmentationModel, metrics: dict[str, float], outcome: Outcome, *, trained: bool = True
) -> Progress:
    """The last event of a fine-tune that kept the parent (nothing saved).

    ``trained`` False: a one-image fine-tune that took no gradient step
    (:func:`~.one_plane.untrained_outcome`), judged on all the annotated pixels.
    """
    dice = f"Dice {metrics.get('dice', float('nan')):.3f}"
    if trained:
        why = (
            f"neither adaptation nor fine-tuning beat it on the held-out annotated pixels ({dice})"
        )
    else:
        why = (
            f"no label-free correction beat it on the annotated pixels ({dice}; one image: no "
            "training)"
        )
    return Progress(
        outcome.steps,
        outcome.steps,
        f"Kept the parent {parent.name}: {why}; nothing saved",
        0.0,
        {
            "phase": "done",
            "name": parent.name,
            "path": None,
            "metrics_before": dict(metrics),
            "metrics_after": dict(metrics),
            "steps": outcome.steps,
            "stopped": outcome.stopped,
            "kept": "parent",
            "start": "parent",
        },
    )


def with_normalization(model: SegmentationModel, **entries: Any) -> SegmentationModel:
    """A shallow copy of ``model`` whose card's normalization has ``entries`` too (same weights).

    How a fine-tune tries an input correction (flat field, smoothing) on the parent
    without changing it.
    """
    import copy
    import dataclasses

    changed = copy.copy(model)
    normalization = {**model.card.normalization, **entries}
    changed.card = dataclasses.replace(model.card, normalization=normalization)
    return changed


def with_flat_field(model: SegmentationModel) -> SegmentationModel:
    """A shallow copy of ``model`` whose card asks for flat-field correction (same weights)."""
    from ..inference.illumination import FLAT_FIELD_FRACTION

    return with_normalization(model, flat_field=FLAT_FIELD_FRACTION)


def with_planes(regions: Sequence[Region], old: Sequence[Any], new: Sequence[Any]) -> list[Region]:
    """``regions`` of the planes ``old``, moved to the same-shaped planes ``new``."""
    from .data import Region

    index = {id(plane): number for number, plane in enumerate(old)}
    return [Region(new[index[id(region.plane)]], region.mask) for region in regions]


def tries_flat_field(model: SegmentationModel) -> bool:
    """Whether a fine-tune of ``model`` checks a flat-field correction (semantic, none yet)."""
    from ..inference.illumination import flat_field_fraction

    return model.task != "instance" and flat_field_fraction(model.card.normalization) is None


def flat_field_worth(gain: float, light: float | None) -> bool:
    """Whether the fine-tune learns from flat-field corrected images.

    Parameters
    ----------
    gain : float
        The parent's held-out Dice on the corrected images minus on the images as they are.
    light : float or None
        :func:`unevenness` of the annotated planes.

    Examples
    --------
    >>> flat_field_worth(0.03, None), flat_field_worth(0.009, 1.1), flat_field_worth(0.009, 1.5)
    (True, False, True)
    >>> flat_field_worth(0.0, 1.5)
    False
    """
    # A few held-out pixels may lie where the light is even: where the planes' background
    # says the light is uneven, any held-out gain is enough.
    lit_unevenly = light is not None and light >= UNEVEN_LIGHT
    return bool(gain >= FLAT_FIELD_MIN_GAIN or (lit_unevenly and gain > 0))


def unevenness(regions: Sequence[Region]) -> float | None:
    """The median :func:`~..inference.illumination.light_range` of the regions' planes.

    None when no plane can tell (dark backgrounds: fluorescence).
    """
    from ..inference.illumination import light_range

    planes = {id(region.plane): region.plane for region in regions}
    ranges = [light_range(plane.image.mean(axis=0)) for plane in planes.values()]
    known = [value for value in ranges if value is not None]
    return float(np.median(known)) if known else None


def illumination_start(
    parent: SegmentationModel,
    plain: Sequence[Region],
    corrected: Sequence[Region],
    settings: TrainSettings,
) -> Job[tuple[bool, dict[str, float], dict[str, float]]]:
    """Whether the fine-tune learns from flat-field corrected images.

    Parameters
    ----------
    parent : SegmentationModel
        Scores both; its module is only evaluated.
    plain, corrected : sequence of Region
        The same held-out regions, of the images as they are and corrected.
    settings : TrainSettings
        ``monitor``, ``loss`` and ``val_max_pixels`` as in training.

    Returns
    -------
    (bool, dict, dict)
        Use the corrected images; the parent's held-out metrics on the plain and
        on the corrected images.

    Yields
    ------
    Progress
        ``phase="illumination"`` with both metrics and the choice.
    """
    import torch

    # Scored where the user's model already is; the working copy does not exist yet.
    device = next(parent.module.parameters(), torch.zeros(0)).device
    picks = capped_regions(plain, settings.val_max_pixels)
    chosen = {id(region) for region in picks}
    twins = [c for p, c in zip(plain, corrected) if id(p) in chosen]
    as_is = evaluate_regions(parent, picks, device=device, loss_kind=settings.loss)
    flat = evaluate_regions(parent, twins, device=device, loss_kind=settings.loss)
    gain = flat.get("dice", float("nan")) - as_is.get("dice", float("nan"))
    uneven = unevenness(plain)
    use = flat_field_worth(gain, uneven)
    light = "" if uneven is None else f"; background varies {uneven:.2f}x"
    text = (
        f"Uneven illumination: held-out Dice {as_is.get('dice', float('nan')):.3f} as the images "
        f"are, {flat.get('dice', float('nan')):.3f} flat-field corrected{light} "
        f"({'corrected, as the new model will be' if use else 'left as they are'})"
    )
    info = {
        "phase": "illumination",
        "metrics_plain": as_is,
        "metrics_flat": flat,
        "flat": use,
        "light_range": uneven,
    }
    yield Progress(0, settings.steps, text, None, info)
    return use, as_is, flat


def flat_field_start(
    parent: SegmentationModel,
    pairs: Sequence[TrainingPair],
    data: PreparedData,
    train: Sequence[Region],
    val: Sequence[Region],
    settings: TrainSettings,
) -> Job[tuple[SegmentationModel, PreparedData, list[Region], list[Region], dict] | None]:
    """The fine-tune's start on flat-field corrected images, when they score better.

    The annotations are prepared again for the parent with the correction in its
    card (:func:`with_flat_field`), the held-out regions are scored both ways
    (:func:`illumination_start`), and the corrected twins are taken when they
    gain at least :data:`FLAT_FIELD_MIN_GAIN` Dice.

    Parameters
    ----------
    parent : SegmentationModel
        The model fine-tuned; never changed.
    pairs : sequence of TrainingPair
        The annotated images.
    data : PreparedData
        ``pairs`` prepared for ``parent``.
    train, val : sequence of Region
        The training and held-out regions, both on ``data``'s planes.
    settings : TrainSettings
        As for :func:`illumination_start`.

    Returns
    -------
    tuple or None
        The corrected parent, data, training and held-out regions, and the
        parent's held-out metrics on the images as they are; None to train on
        the images as they are.
    """
    from .data import prepare

    corrected = with_flat_field(parent)
    flat_data = prepare(pairs, corrected, boundary_width=settings.boundary_width)
    old, new = data.planes, flat_data.planes
    flat_val = with_planes(val, old, new)
    use, plain_metrics, _ = yield from illumination_start(parent, val, flat_val, settings)
    if not use:
        return None
    return corrected, flat_data, with_planes(train, old, new), flat_val, plain_metrics
