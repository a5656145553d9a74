"""Train a model from scratch (:func:`train`) or fine-tune one on a few slices (:func:`finetune`).

Both are generators in the project's progress convention: they yield a
:class:`~.progress.Progress` after every training step and every
validation, and return the new :class:`~.models.base.SegmentationModel`,
already saved in the user's model folder (so every model picker lists it)
with its lineage. Closing the generator (Cancel) or a ``KeyboardInterrupt``
(Ctrl-C while :func:`~.progress.drain` runs it) stops within one step, saves
the best weights so far as a draft model ``<name>-draft``, and never touches
the parent. The lineage's ``reproducible`` says whether a rerun with the same
data and settings gives the same weights (see
:meth:`TrainSettings.reproducibility`).

``Progress.info`` for live displays (keys present per ``phase``):

=============  ================================================================
phase          keys
=============  ================================================================
``prepare``    ``draft_name`` (where Cancel would keep the draft)
``adapt``      fine-tuning only: ``metrics_parent``, ``metrics_adapted`` (held-out
               pixels, without and with batch-norm statistics of the image),
               ``start`` (``"parent"`` or ``"adapted"``); ``annotated_pixels``
``baseline``   ``metrics_before``, ``val_loss``, ``val_dice``, ``val_iou``,
               ``val_object_f1``: the parent, before any training step
``resume``     ``step`` (a run continued from its checkpoint)
``train``      ``loss`` (this step's training loss), ``lr``, ``epoch``, ``elapsed_s``
``validate``   ``val_loss``, ``val_dice``, ``val_iou``, ``val_object_f1``,
               ``improved``, ``best_step``, ``best_val_dice``, ``elapsed_s``
``save``       ``name``
``done``       ``name``, ``path``, ``metrics_before``, ``metrics_after``, ``steps``,
               ``stopped`` (``"steps"``, ``"time"``, ``"early stop"``, or ``"one image"``:
               no gradient step, see :func:`~.one_plane.untrained_outcome`), ``kept``
               (``"trained"``, ``"adapted"``: batch-norm adaptation alone was best,
               or ``"parent"``: nothing beat the parent, which is returned unsaved)
=============  ================================================================

Examples
--------
Fine-tune a registry model on two corrected slices of a stack, headless
(``image`` and ``labels`` are the user's arrays):

>>> from napari_microseg.core.progress import drain  # doctest: +SKIP
>>> job = finetune("mito-em", image, labels, name="mito-em-mydata",
...                settings=TrainSettings.for_finetune(minutes=2))  # doctest: +SKIP
>>> model = drain(job)  # saved; load_model("mito-em-mydata") works at once  # doctest: +SKIP
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..inference.denoise import smooth_sigma
from ..models.base import ModelError, SegmentationModel
from ..models.versions import SaveError, TrainingRun, lineage_record, trained_model
from ..progress import Job, Progress
from .adapt import frozen_batchnorm, resolve_model
from .annotations import check_classes, check_modality
from .data import (
    TrainingDataError,
    TrainingPair,
    annotated_slices,
    parse_slices,
    prepare,
    with_input_reference,
)
from .fewshot import FewShotTrainer
from .loop import Outcome, Trainer
from .one_plane import KEPT_PARENT_UNTRAINED, one_plane_levers_note, untrained_outcome
from .recipe import (
    KEPT_PARENT,
    adapted_start,
    better_of,
    flat_field_start,
    kept_parent_event,
    tries_flat_field,
)
from .settings import TrainingError, TrainingWarning, TrainSettings
from .smoothing import smoothing_outcome, smoothing_start, tries_smoothing
from .split import annotated_regions, split_tuning, split_validation
from .state import cpu_state
from .threshold import choose_threshold, session_threshold

if TYPE_CHECKING:
    import os

__all__ = [
    "SaveError",
    "TrainSettings",
    "TrainingDataError",
    "TrainingError",
    "TrainingPair",
    "TrainingWarning",
    "annotated_slices",
    "finetune",
    "parse_slices",
    "train",
]

# ----------------------------------------------------------------------------- public jobs


#: Said when every annotated pixel lies in one slice or image (bench_adapt, nuclei-fluo: one
#: image's held-out pixels approved results that were worse on the session's other images).
ONE_PLANE_NOTE = (
    "All annotations are in one slice or image, so the held-out pixels that decide what is "
    "kept come from that image too: they cannot tell whether the result holds on your other "
    "images. Correct a second slice or image for a check that can."
)


def finetune(
    model: SegmentationModel | str | os.PathLike,
    image: Any,
    labels: Any,
    *,
    annotated: Any = None,
    slices: Sequence[int] | str | None = None,
    axes: str | None = None,
    name: str | None = None,
    settings: TrainSettings | None = None,
    device: str = "auto",
    folder: str | os.PathLike | None = None,
    save: bool = True,
    spacing: Sequence[float] | None = None,
    more: Sequence[TrainingPair | tuple[Any, ...]] = (),
    unlabelled: Sequence[Any] = (),
) -> Job[SegmentationModel]:
    """Fine-tune a model on corrected labels (a few slices suffice); a progress generator.

    Parameters
    ----------
    model : SegmentationModel, str or path-like
        The parent: a loaded model, a registry name or a model file. It is never
        modified: a copy is trained.
    image : array-like or ImageData
        ``YX``, ``YXC``, ``ZYX``... (see ``axes``).
    labels : array-like of int
        The corrected labels, shaped like the image without its channel axis.
    annotated : array-like of bool, optional
        True where labels are known; by default every pixel of the annotated
        slices (the non-empty ones, or ``slices``).
    slices : sequence of int or str, optional
        Annotated slices of a stack (``[3, 10]`` or ``"3,10-12"``).
    axes : str, optional
        Axes of ``image``, when the shapes leave them ambiguous.
    name : str, optional
        Registry name of the new model; ``<parent>-ft`` (made unique) by default.
        An existing name is refused before training starts.
    settings : TrainSettings, optional
        ``TrainSettings.for_finetune(card)`` with the base model's card by default.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``...; see :func:`~.device.select_device`.
    folder : path-like, optional
        Where to save; the user's model folder by default.
    save : bool
        Save the result (and a draft on Cancel).
    spacing : sequence of float, optional
        The image's voxel size in µm per spatial axis. When it and the model's
        pixel size are known and far apart, the annotated planes are resampled
        to the model's pixel size, as prediction resamples the image, so the new
        model keeps its parent's pixel size.
    more : sequence of TrainingPair or (image, labels[, annotated]) tuples
        Other corrected images of the same session, separate files of their own
        shapes: each is normalised on its own, as prediction normalises it, and
        their annotated planes join ``image``'s (held-out pixels are drawn from
        all of them). Give a :class:`~.data.TrainingPair` for an image's own
        ``axes``, ``slices`` or ``spacing``.
    unlabelled : sequence of array-like or TrainingPair
        Images of the same session nobody corrected: only the label-free start
        measures its batch-norm statistics on them too (and checks them on
        held-out annotated pixels they never saw); nothing is trained on them.
        Give a :class:`~.data.TrainingPair` (its labels are not read) for an
        image's own ``axes`` or ``spacing``.

    Yields
    ------
    Progress
        See the module docstring for ``info``.

    Returns
    -------
    SegmentationModel
        The fine-tuned model, in eval mode; ``card.parent`` and ``card.lineage``
        record where it came from.

    Raises
    ------
    TrainingDataError
        No annotated pixels, labels of another shape than the image, no object,
        annotated pixels all of one class, a colour image for a grey model of
        another modality (or the reverse); all before any training.
    TrainingError
        Unusable settings (a time budget of zero...) or a diverging run.
    SaveError
        The model could not be saved (disk full...); nothing was half-written.
    """
    started = time.monotonic()
    parent = resolve_model(model)
    settings = (settings or TrainSettings.for_finetune(parent.card)).validate()
    first = "image 1" if more else "image"
    pairs = [
        TrainingPair(
            image, labels, annotated, axes, parse_slices(slices), name=first, spacing=spacing
        ),
        *(_as_pair(item, index) for index, item in enumerate(more, start=1)),
    ]
    statistics_only = [
        item
        if isinstance(item, TrainingPair)
        else TrainingPair(item, None, name=f"unlabelled image {index}")
        for index, item in enumerate(unlabelled, start=1)
    ]
    for pair in [*pairs, *statistics_only]:
        try:
            check_modality(parent, pair.image, pair.axes)
        except TrainingDataError as error:
            if not more and not statistics_only:
                raise
            raise TrainingDataError(f"{pair.name}: {error}") from error
    return (
        yield from _run(
            parent,
            pairs,
            None,
            settings=settings,
            device=device,
            name=name,
            folder=folder,
            save=save,
            kind="fine-tune",
            started=started,
            unlabelled=statistics_only,
        )
    )


def train(
    model: SegmentationModel,
    data: Sequence[TrainingPair | tuple[Any, ...]],
    *,
    validation: Sequence[TrainingPair | tuple[Any, ...]] | None = None,
    name: str | None = None,
    settings: TrainSettings | None = None,
    device: str = "auto",
    folder: str | os.PathLike | None = None,
    save: bool = True,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
) -> Job[SegmentationModel]:
    """Train a model (a fresh one from :func:`~.models.build.create_model`); a progress generator.

    Parameters
    ----------
    model : SegmentationModel
        The network to train; it is copied, the object passed in is not changed.
    data : sequence of TrainingPair or (image, labels[, annotated]) tuples
        Training images and labels (sparse annotation works as in :func:`finetune`).
    validation : sequence, optional
        Validation pairs; without them part of ``data`` is held out.
    name : str, optional
        Registry name; the model card's name by default.
    settings : TrainSettings, optional
        The defaults of :class:`TrainSettings` if omitted.
    device, folder, save
        As in :func:`finetune`.
    checkpoint : path-like, optional
        Resumable checkpoint file, written every ``settings.checkpoint_every_s``
        and removed once the model is saved.
    resume : bool
        Continue from ``checkpoint`` if it exists (same data required).

    Returns
    -------
    SegmentationModel
        Trained and saved, with lineage (no parent).
    """
    settings = (settings or TrainSettings()).validate()
    started = time.monotonic()
    pairs = [_as_pair(item, i) for i, item in enumerate(data)]
    val_pairs = (
        None
        if validation is None
        else [_as_pair(item, i, prefix="validation image") for i, item in enumerate(validation)]
    )
    return (
        yield from _run(
            model,
            pairs,
            val_pairs,
            settings=settings,
            device=device,
            name=name or model.name,
            folder=folder,
            save=save,
            kind="training",
            started=started,
            checkpoint=Path(checkpoint) if checkpoint else None,
            resume=resume,
        )
    )


# ----------------------------------------------------------------------------- the shared run


def _as_pair(item: Any, index: int, prefix: str = "image") -> TrainingPair:
    if isinstance(item, TrainingPair):
        return item if item.name else replace(item, name=f"{prefix} {index + 1}")
    if isinstance(item, tuple | list) and len(item) in (2, 3):
        return TrainingPair(*item, name=f"{prefix} {index + 1}")
    raise TrainingDataError(
        f"Training item {index + 1} must be a TrainingPair or an (image, labels[, annotated]) "
        f"tuple, not {type(item).__name__}."
    )


def _run(
    parent: SegmentationModel,
    pairs: list[TrainingPair],
    val_pairs: list[TrainingPair] | None,
    *,
    settings: TrainSettings,
    device: str,
    name: str | None,
    folder: str | os.PathLike | None,
    save: bool,
    kind: str,
    started: float,
    checkpoint: Path | None = None,
    resume: bool = False,
    unlabelled: Sequence[TrainingPair] = (),
) -> Job[SegmentationModel]:
    from ..models.device import select_device
    from ..models.versions import check_new_name, default_name, now_iso, working_copy

    choice = select_device(device)
    if name is None:
        name = default_name(f"{parent.name}-ft")
    elif save:
        check_new_name(name, folder)
    draft_name = f"{name}-draft"
    yield Progress(
        0,
        settings.steps,
        "Preparing the annotated data",
        None,
        {"phase": "prepare", "draft_name": draft_name if save else None},
    )
    data = prepare(pairs, parent, boundary_width=settings.boundary_width)
    for note in data.notes:
        warnings.warn(note, TrainingWarning, stacklevel=3)
    if val_pairs:
        val_data = prepare(val_pairs, parent, boundary_width=settings.boundary_width)
        from .data import Region

        train_regions = [Region(p, p.annotated) for p in data.planes]
        val_regions = [Region(p, p.annotated) for p in val_data.planes]
        split = f"{len(val_regions)} validation plane(s) given separately"
    else:
        train_regions, val_regions, split = split_validation(
            data.planes, fraction=settings.val_fraction
        )
    few_shot = kind == "fine-tune"
    if settings.tune_fraction and not few_shot:
        train_regions, _, split = split_tuning(
            train_regions, fraction=settings.tune_fraction, validation=split
        )
    parts = {(r.plane.source, r.plane.z) for r in [*train_regions, *val_regions]}
    one_plane = few_shot and not val_pairs and len(parts) == 1
    learns = not one_plane or settings.train_one_plane
    # The run's own notes: a flat field or smoothing below prepares the data again.
    run_notes: list[str] = []
    if one_plane:
        note = ONE_PLANE_NOTE if learns else one_plane_levers_note(parent.name)
        run_notes.append(note)
        warnings.warn(note, TrainingWarning, stacklevel=3)
        yield Progress(0, settings.steps, note, None, {"phase": "prepare", "note": note})
    if not learns:
        # No step will learn from the annotated pixels: all of them judge the label-free levers.
        val_regions = annotated_regions(train_regions, val_regions)
        split = "all the annotated pixels (one image: no gradient steps, nothing held out)"
    plain_metrics = None
    # Fine-tunes split their held-out pixels from the annotated planes (no val_pairs).
    # Not without steps: one image's pixels approved a flat field that cost the session's
    # other images (bench_adapt, nuclei-fluo under another pixel size: +0.048 Dice on the
    # image, -0.029 mean AP on the others).
    if (
        few_shot
        and not val_pairs
        and learns
        and settings.try_flat_field
        and tries_flat_field(parent)
    ):
        check_classes(data.summary)
        chosen = yield from flat_field_start(
            parent, pairs, data, train_regions, val_regions, settings
        )
        if chosen is not None:
            parent, data, train_regions, val_regions, plain_metrics = chosen
    # A noisy session learns from smoothed images (decided without labels); not on top of a
    # flat field, whose own plain-versus-corrected choice the smoothing would confuse.
    as_it_was, unsmoothed_metrics = parent, None
    if (
        few_shot
        and not val_pairs
        and plain_metrics is None
        and settings.try_smoothing
        and tries_smoothing(parent)
    ):
        check_classes(data.summary)
        chosen = yield from smoothing_start(
            parent, pairs, data, train_regions, val_regions, settings
        )
        if chosen is not None:
            parent, data, train_regions, val_regions, unsmoothed_metrics = chosen
    deadline = started + settings.minutes * 60 if settings.minutes else None
    if deadline is not None and time.monotonic() >= deadline:
        raise TrainingError(
            f"The time budget of {settings.minutes:g} min was used up preparing the data; "
            "give more time."
        )
    working = working_copy(parent, choice.device)
    start, parent_metrics = "parent", None
    if few_shot:
        check_classes(data.summary)
        # Uncorrected images of the session count for the statistics only; after the
        # annotated ones, so the held-out regions' image indices stay theirs.
        start, parent_metrics, event = yield from adapted_start(
            working,
            parent,
            [*pairs, *unlabelled],
            val_regions,
            settings,
            choice.device,
            separate_validation=bool(val_pairs),
        )
    run = TrainingRun(parent, kind, data, split, settings, choice, now_iso(), started)

    def record(
        before: dict[str, float],
        after: dict[str, float],
        steps: int,
        stopped: str,
        history: Any,
        best_step: int | None,
        notes: list[str],
    ) -> dict[str, Any]:
        """The lineage of this run; only the outcome differs between a draft and the result."""
        lineage = lineage_record(
            run,
            before=before,
            after=after,
            steps=steps,
            stopped=stopped,
            history=history,
            best_step=best_step,
            notes=data.notes + run_notes + notes,
            earlier_s=0.0 if trainer is None else trainer.earlier_s,
        )
        lineage["reproducible"] = settings.reproducibility(choice.kind)
        if unlabelled:
            # Images the label-free start measured statistics on, with no label read.
            lineage["unlabelled_images"] = [pair.name for pair in unlabelled]
        if trainer is not None:
            lineage.update(trainer.card_facts())  # data workers, batch used, AMP... (#19)
        return lineage

    def keep_draft(state: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        if not save:
            return
        working.module.load_state_dict(state)
        lineage = record(
            trainer.before,
            metrics,
            step,
            "cancelled",
            trainer.history,
            trainer.best_step,
            trainer.notes,
        )
        lineage["draft"] = True
        draft = with_input_reference(
            data, trained_model(working, parent, draft_name, lineage, metrics, kind, data)
        )
        draft.card.description = f"Draft (cancelled at step {step}) of {name}. " + (
            draft.card.description
        )
        from ..models.versions import save_version

        try:
            save_version(draft, folder=folder, overwrite=True)
        # Cancel must always succeed; a draft that cannot be written is only reported.
        except (OSError, ModelError) as error:
            warnings.warn(
                f"The draft {draft_name!r} was not kept: {error}", TrainingWarning, stacklevel=2
            )

    trainer = (
        None
        if not learns
        else (FewShotTrainer if few_shot else Trainer)(
            working,
            settings,
            device=choice,
            train_regions=train_regions,
            val_regions=val_regions,
            deadline=deadline,
            data_hash=data.data_hash,
            checkpoint=checkpoint,
            resume=resume,
            on_cancel=keep_draft,
            started=started,
        )
    )
    if trainer is None:
        outcome: Outcome = yield from untrained_outcome(
            working, val_regions, settings, choice.device
        )
    else:
        with frozen_batchnorm(working.module, few_shot and settings.freeze_batchnorm):
            outcome = yield from trainer.run()
    if outcome.best_state is None:
        raise TrainingError(
            "Training ended before its first step: the time budget is too small for this "
            "model and data. Give more minutes or steps."
        )
    kept = "trained"
    # Recorded so that the CLI and the widget do not say "training did not help".
    no_steps = {} if learns else {"gradient_steps": False}
    parent_threshold = None  # the parent's session threshold, when only that could be saved

    def parent_weights_kept(note: str, correction: str) -> None:
        """No gradient step kept: the parent's weights, in a new model whose card differs."""
        working.module.load_state_dict(cpu_state(parent.module))
        outcome.after = dict(parent_metrics or outcome.before)
        if not learns:
            note = (
                f"One image, so no gradient steps: the parent with {correction}, which beat the "
                "parent as it was on all the annotated pixels, was saved."
            )
        outcome.notes.append(note)

    # Without a step the start is all there is: the parent unless a correction beat it.
    if few_shot and (settings.keep_better_start or not learns):
        kept = better_of(outcome, start, settings)
        if kept == "parent" and plain_metrics is not None:
            # The corrected parent beat the parent; training did not beat it: keep the
            # parent's weights with the correction in its card, a new model.
            kept = "flat-field parent"
            parent_weights_kept(
                "Fine-tuning did not beat the flat-field corrected parent on the held-out "
                "annotated pixels; the parent with the correction (no gradient steps kept) was "
                "saved.",
                "the flat-field correction",
            )
        if unsmoothed_metrics is not None:
            # The held-out metrics of what was kept, all on the smoothed images.
            kept_metrics = {"trained": outcome.after, "adapted": outcome.before}.get(
                kept, dict(parent_metrics or outcome.before)
            )
            kept = smoothing_outcome(kept, kept_metrics, unsmoothed_metrics, settings)
            if kept == "smoothed parent":
                parent_weights_kept(
                    "Fine-tuning did not beat the parent on the smoothed images; the parent "
                    "with the smoothing (no gradient steps kept) was saved.",
                    "the smoothing",
                )
            elif kept == "parent":
                # The parent on the images as they are beat everything smoothed: it stays as
                # it was, smoothing and all forgotten.
                parent, parent_metrics = as_it_was, unsmoothed_metrics
        # Not after smoothing was tried: the regions are then the smoothed images.
        if kept == "parent" and settings.choose_threshold and unsmoothed_metrics is None:
            parent_threshold = choose_threshold(
                parent, annotated_regions(train_regions, val_regions), device=choice.device
            )
        if parent_threshold is not None and parent_threshold.changed:
            # The weights stay the parent's; the session's threshold makes it a new model.
            kept = "threshold parent"
            parent_weights_kept(
                "Fine-tuning did not beat the parent on the held-out annotated pixels; the parent "
                "with the threshold chosen on the annotated pixels (no gradient steps kept) was "
                "saved.",
                "the threshold chosen on the annotated pixels",
            )
        if kept == "parent":
            # Nothing is saved; the result is the parent's weights under the parent's name, with
            # a card that records the run and why nothing was kept.
            metrics = dict(parent_metrics or outcome.before)
            working.module.load_state_dict(cpu_state(parent.module))
            lineage = record(
                metrics,
                metrics,
                outcome.steps,
                outcome.stopped,
                outcome.history,
                outcome.best_step,
                [*outcome.notes, KEPT_PARENT if learns else KEPT_PARENT_UNTRAINED],
            )
            lineage["recipe"] = {"start": start, "kept": "parent", **no_steps}
            kept_model = trained_model(working, parent, parent.name, lineage, metrics, kind, data)
            yield kept_parent_event(parent, metrics, outcome, trained=learns)
            return kept_model.eval()
        if kept == "adapted":
            working.module.load_state_dict(event["adapted_state"])
            outcome.after = dict(outcome.before)
            outcome.notes.append(
                "Fine-tuning did not beat the batch-norm adaptation on the held-out annotated "
                "pixels; the adapted model (no gradient steps kept) was saved."
            )
    if parent_metrics is not None or plain_metrics is not None or unsmoothed_metrics is not None:
        # Before = the parent as the user had it, not the adapted or corrected starting point.
        outcome.before = dict(plain_metrics or unsmoothed_metrics or parent_metrics)
    lineage = record(
        outcome.before,
        outcome.after,
        outcome.steps,
        outcome.stopped,
        outcome.history,
        outcome.best_step,
        outcome.notes,
    )
    lineage["recipe"] = {
        "start": start,
        "kept": kept,
        "flat_field": plain_metrics is not None,
        "smooth": smooth_sigma(parent.card.normalization),
        **no_steps,
    }
    result = with_input_reference(
        data, trained_model(working, parent, name, lineage, outcome.after, kind, data)
    )
    if few_shot and settings.choose_threshold:
        regions = annotated_regions(train_regions, val_regions)
        found = parent_threshold if kept == "threshold parent" else None
        yield from session_threshold(result, regions, choice.device, outcome.steps, found=found)
    path = None
    if save:
        from ..models.versions import save_version

        yield Progress(
            outcome.steps, outcome.steps, f"Saving {name}", None, {"phase": "save", "name": name}
        )
        path = save_version(result, folder=folder)
        if checkpoint is not None:
            # Saved for good: the checkpoint could only resume a run that has ended.
            checkpoint.unlink(missing_ok=True)
    before, after = outcome.before.get("dice"), outcome.after.get("dice")
    change = f"Dice {before:.3f} -> {after:.3f}" if before is not None else f"Dice {after:.3f}"
    yield Progress(
        outcome.steps,
        outcome.steps,
        f"{'Saved' if save else 'Trained'} {name}: {change}",
        0.0,
        {
            "phase": "done",
            "name": name,
            "path": str(path) if path else None,
            "metrics_before": outcome.before,
            "metrics_after": outcome.after,
            "steps": outcome.steps,
            "stopped": outcome.stopped,
            "kept": kept,
            "start": start,
        },
    )
    return result.eval()
