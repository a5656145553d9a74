"""The few-shot recipe for a noisy session: learn from smoothed images (#21).

A session much noisier than the model's training data loses more than a few
annotated images can teach back; a slight Gaussian smoothing of the input
helps (:mod:`~..inference.denoise`). Whether a session is noisy is decided
**without labels**, from the annotated images' noise against the noise level
the card records for the training inputs (:func:`~..inference.denoise.choose_sigma`):
the held-out pixels of a few small annotated images are too few to decide it.
In ``benchmarks/bench_adapt.py`` (nuclei-fluo under blur and noise) they
preferred the images as they are, before and after fine-tuning, where
smoothing gained 0.1 Dice on the session's other images.

The held-out pixels still guard the result: the new model (smoothed inputs)
is kept only when it beats the parent on the images as they are by at least
:data:`SMOOTHING_MIN_GAIN` Dice (:func:`smoothing_outcome`); otherwise the
parent is kept and nothing is saved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..inference.denoise import choose_sigma, session_noise, smooth_sigma
from ..progress import Job, Progress
from .recipe import score, with_normalization, with_planes
from .scoring import capped_regions, evaluate_regions

if TYPE_CHECKING:
    from ..models.base import SegmentationModel
    from .data import PreparedData, Region, TrainingPair
    from .settings import TrainSettings

__all__ = [
    "SMOOTHING_MIN_GAIN",
    "smoothing_outcome",
    "smoothing_start",
    "tries_smoothing",
]

#: Held-out Dice a model on smoothed images must gain over the parent on the images as they
#: are: smoothing changes every later prediction, so, like the flat field
#: (:data:`~.recipe.FLAT_FIELD_MIN_GAIN`), it must earn its place. bench_adapt (session 14):
#: membrane-em under another pixel size gained 0.001 on the held-out pixels and lost 0.015 on
#: the session's other images; the smoothed fine-tunes that helped gained 0.027-0.30.
SMOOTHING_MIN_GAIN = 0.02


def tries_smoothing(model: SegmentationModel) -> bool:
    """Whether a fine-tune of ``model`` checks the session's noise.

    A semantic model whose card records its training inputs' noise and does
    not smooth yet.
    """
    spec = model.card.normalization
    return model.task != "instance" and "noise" in spec and smooth_sigma(spec) is None


def smoothing_start(
    parent: SegmentationModel,
    pairs: Sequence[TrainingPair],
    data: PreparedData,
    train: Sequence[Region],
    val: Sequence[Region],
    settings: TrainSettings,
) -> Job[tuple[SegmentationModel, PreparedData, list[Region], list[Region], dict] | None]:
    """The fine-tune's start on smoothed images, when the annotated images are noisy.

    Parameters
    ----------
    parent : SegmentationModel
        The model fine-tuned; never changed. Its card has a ``noise`` level.
    pairs : sequence of TrainingPair
        The annotated images.
    data : PreparedData
        ``pairs`` prepared for ``parent``.
    train, val : sequence of Region
        The training and held-out regions, both on ``data``'s planes.
    settings : TrainSettings
        ``monitor``, ``loss``, ``val_max_pixels`` and ``boundary_width`` as in training.

    Returns
    -------
    tuple or None
        The smoothing parent, its data, training and held-out regions, and the
        parent's held-out metrics on the images as they are; None when the
        images are not noisy (or their noise cannot be told).

    Yields
    ------
    Progress
        ``phase="noise"`` with the session's and the training data's noise and
        the sigma chosen (None: none).
    """
    import torch

    from .data import centre_slice, prepare

    context = int(parent.card.context_slices or 0)
    reference = parent.card.normalization.get("noise")
    images = [centre_slice(plane.image, context) for plane in data.planes]
    level = session_noise(images)
    sigma = choose_sigma(images, reference)
    ratio = "" if level is None or not reference else f" ({level / reference:.1f}x)"
    info = {"phase": "noise", "noise": level, "training_noise": reference, "smooth": sigma}
    if sigma is None:
        yield Progress(
            0,
            settings.steps,
            f"Noise of the annotated images{ratio}: as the training images'; not smoothed",
            None,
            info,
        )
        return None
    device = next(parent.module.parameters(), torch.zeros(0)).device
    plain_metrics = evaluate_regions(
        parent, capped_regions(val, settings.val_max_pixels), device=device, loss_kind=settings.loss
    )
    smoothed = with_normalization(parent, smooth=float(sigma))
    smooth_data = prepare(pairs, smoothed, boundary_width=settings.boundary_width)
    old, new = data.planes, smooth_data.planes
    yield Progress(
        0,
        settings.steps,
        f"Noisy session: the annotated images are{ratio} as noisy as the training images; "
        f"learning from them smoothed (Gaussian sigma {sigma:g} px), as the new model will "
        "segment",
        None,
        {**info, "metrics_plain": plain_metrics},
    )
    return (
        smoothed,
        smooth_data,
        with_planes(train, old, new),
        with_planes(val, old, new),
        (plain_metrics),
    )


def smoothing_outcome(
    kept: str,
    result_metrics: dict[str, float],
    plain_metrics: dict[str, float],
    settings: TrainSettings,
) -> str:
    """What a fine-tune on smoothed images keeps: its result, or the parent as it was.

    Parameters
    ----------
    kept : str
        What the recipe kept among the smoothed starts and the trained weights
        (``"trained"``, ``"adapted"`` or ``"parent"``, the last meaning the
        parent with smoothing).
    result_metrics : dict
        That model's held-out metrics on the smoothed images.
    plain_metrics : dict
        The parent's held-out metrics on the images as they are.
    settings : TrainSettings
        ``monitor``.

    Returns
    -------
    str
        ``kept`` (``"smoothed parent"`` for ``"parent"``) when it beats the
        parent on the images as they are by :data:`SMOOTHING_MIN_GAIN` Dice
        or more (when the metrics hold no Dice: by any margin of the
        monitored metric); ``"parent"`` otherwise.
    """
    gain = result_metrics.get("dice", float("nan")) - plain_metrics.get("dice", float("nan"))
    if not math.isnan(gain):  # both have a Dice
        better = gain >= SMOOTHING_MIN_GAIN
    else:
        better = score(result_metrics, settings.monitor) > score(plain_metrics, settings.monitor)
    if better:
        return "smoothed parent" if kept == "parent" else kept
    return "parent"
