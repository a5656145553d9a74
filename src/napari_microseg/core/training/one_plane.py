"""A one-image fine-tune that takes no gradient step (#21).

A model whose card says its fine-tunes from one annotated image scored worse on
the session's other images than not adapting
(:func:`~.settings.finetune_trains_one_plane`, written by
``scripts/record_adaptation.py`` from ``benchmarks/bench_adapt.py --shots 1``
runs) is not trained when every annotation lies in one slice or image: one
image's held-out pixels approved every such result (nuclei-fluo, session 22).
Only the corrections that need no training are tried, the smoothing of a noisy
session and a fixed threshold, each judged on all the annotated pixels, which no
step learns from (:func:`untrained_outcome` gives the start as the run's outcome).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..progress import Job, Progress
from .loop import Outcome
from .scoring import capped_regions, evaluate_regions, metrics_text, prefixed
from .state import cpu_state

if TYPE_CHECKING:
    from ..models.base import SegmentationModel
    from .data import Region
    from .settings import TrainSettings

__all__ = ["KEPT_PARENT_UNTRAINED", "one_plane_levers_note", "untrained_outcome"]

#: The note of a one-image fine-tune without gradient steps whose corrections did not help.
KEPT_PARENT_UNTRAINED = (
    "No correction that needs no training (smoothing, threshold) beat the parent on the "
    "annotated pixels, so the parent is kept and nothing was saved. Correct a second image "
    "to fine-tune."
)


def one_plane_levers_note(model_name: str) -> str:
    """Said when a one-image fine-tune of ``model_name`` takes no gradient step."""
    return (
        f"All annotations are in one slice or image, and {model_name}'s card says that its "
        "fine-tunes from one image scored worse on the session's other images than not "
        "adapting (benchmarks/bench_adapt.py). So no gradient step is taken: only the "
        "corrections that need no training (smoothing a noisy session, a fixed threshold) are "
        "tried, each judged on all your annotated pixels. Correct a second slice or image to "
        "fine-tune."
    )


def untrained_outcome(
    model: SegmentationModel,
    regions: Sequence[Region],
    settings: TrainSettings,
    device: Any,
) -> Job[Outcome]:
    """The start as a run's outcome, without a gradient step.

    Parameters
    ----------
    model : SegmentationModel
        The chosen start (its module unchanged).
    regions : sequence of Region
        The pixels that judge it: all the annotated pixels, as nothing learns from them.
    settings : TrainSettings
        ``val_max_pixels``, ``loss``, ``steps`` (for the progress events).
    device : torch.device
        Where ``model`` is.

    Returns
    -------
    Outcome
        ``before`` = ``after`` = the start's metrics on ``regions``, 0 steps,
        ``stopped="one image"``.

    Yields
    ------
    Progress
        ``phase="baseline"``, as a trainer's first validation.
    """
    yield Progress(0, settings.steps, "Validating the starting model", None, {"phase": "baseline"})
    metrics = evaluate_regions(
        model,
        capped_regions(regions, settings.val_max_pixels),
        device=device,
        loss_kind=settings.loss,
    )
    yield Progress(
        0,
        settings.steps,
        metrics_text("On all the annotated pixels (one image: no training)", metrics),
        None,
        {"phase": "baseline", "metrics_before": dict(metrics), **prefixed(metrics)},
    )
    return Outcome(
        best_state=cpu_state(model.module),
        before=metrics,
        after=dict(metrics),
        steps=0,
        best_step=0,
        stopped="one image",
    )
