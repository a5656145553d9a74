"""Train a model from scratch (:func:`train`) or fine-tune one on a few slices (:func:`finetune`).

Both are generators in the project's progress convention: they yield a
:class:`~.progress.Progress` after every training step and every
validation, and return the new :class:`~.models.base.SegmentationModel`,
already saved in the user's model folder (so every model picker lists it)
with its lineage. Closing the generator (Cancel) stops within one step,
saves the best weights so far as a draft model ``<name>-draft``, and never
touches the parent.

``Progress.info`` for live displays (keys present per ``phase``):

=============  ================================================================
phase          keys
=============  ================================================================
``prepare``    ``draft_name`` (where Cancel would keep the draft)
``baseline``   ``metrics_before``, ``val_loss``, ``val_dice``, ``val_iou``,
               ``val_object_f1``: the parent, before any training step
``train``      ``loss`` (this step's training loss), ``lr``, ``epoch``, ``elapsed_s``
``validate``   ``val_loss``, ``val_dice``, ``val_iou``, ``val_object_f1``,
               ``improved``, ``best_step``, ``best_val_dice``, ``elapsed_s``
``save``       ``name``
``done``       ``name``, ``path``, ``metrics_before``, ``metrics_after``, ``steps``,
               ``stopped`` (``"steps"``, ``"time"`` or ``"early stop"``)
=============  ================================================================

Examples
--------
Fine-tune a registry model on two corrected slices of a stack, headless::

    from napari_microseg.core.progress import drain
    from napari_microseg.core.training import TrainSettings, finetune

    job = finetune("mito-em", image, labels, name="mito-em-mydata",
                   settings=TrainSettings.for_finetune(minutes=2))
    model = drain(job)            # saved; load_model("mito-em-mydata") works at once
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from .models.base import ModelError, SegmentationModel
from .progress import Job, Progress
from .trainingdata import (
    TrainingDataError,
    TrainingPair,
    annotated_slices,
    parse_slices,
    prepare,
    split_validation,
)
from .trainloop import Outcome, Trainer, TrainingError, TrainingWarning
from .versions import SaveError

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

_SCHEDULES = ("cosine", "step", "constant")
_MONITORS = ("dice", "iou", "object_f1", "val_loss")


@dataclass
class TrainSettings:
    """Hyper-parameters of a training or fine-tuning run.

    The defaults suit training from scratch; :meth:`for_finetune` gives the
    few-shot defaults (a two-slice fine-tune within 3 minutes on a 2-core CPU).

    Parameters
    ----------
    steps : int or None
        Most optimizer steps; None for no step limit (then ``minutes`` is needed).
    minutes : float or None
        Time budget for the whole job (preparation, validation and saving
        included); None for none. Training stops at whichever comes first. Only
        runs limited by ``steps`` alone are reproducible bit for bit.
    batch_size, patch_size : int
        Patches per step and their side in pixels.
    learning_rate, weight_decay : float
        Adam's settings.
    schedule : {"cosine", "step", "constant"}
        Learning-rate schedule after a linear warm-up of ``warmup_steps``;
        cosine decays to ``lr_min_factor`` times the rate.
    loss : str
        ``"ce+dice"`` (default), ``"ce"``/``"bce"``, ``"dice"``, ``"log_dice"``,
        ``"ce+log_dice"``; Mask R-CNN always uses its own multi-task loss.
    edge_weights : bool or None
        Weight the cross-entropy with the U-Net weight map (touching borders
        count more); None: on for U-Net and Micro-Net, as in their papers.
    w0, sigma, class_balance : float
        Weight-map settings (``w0 = 10``, ``sigma = 5`` px; class balancing
        exponent, 1 = inverse frequency).
    deep_supervision : bool
        Micro-Net: add its auxiliary losses divided by the epoch.
    augment : str or dict
        ``"default"``, ``"light"``, ``"none"`` or a dict of
        :class:`~.augment.AugmentConfig` fields.
    object_bias : float
        Probability that a patch is centred on an object.
    val_fraction : float
        Share of the annotation held out for validation (when no validation
        data are given).
    val_every : int or None
        Steps between validations; None: about 8 per run.
    patience : int
        Validations without improvement before stopping early.
    min_delta : float
        Smallest change of the monitored metric that counts as improvement.
    monitor : {"dice", "iou", "object_f1", "val_loss"}
        The validation metric that picks the best weights.
    freeze_encoder : bool
        Train only the decoder (fine-tuning with very few labels).
    seed : int
        Seeds weights' dropout, patch sampling and augmentation.
    amp : bool or None
        Mixed precision; None (or True) uses it on CUDA, never on the CPU.
    checkpoint_every_s : float
        Seconds between resumable checkpoints (when a checkpoint file is given).
    val_max_pixels : int
        Validate on at most this many held-out pixels (spread over the planes).
    boundary_width : int
        Width of the boundary class of 3-class models.
    """

    steps: int | None = 2000
    minutes: float | None = None
    batch_size: int = 4
    patch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 20
    lr_min_factor: float = 0.05
    loss: str = "ce+dice"
    edge_weights: bool | None = None
    w0: float = 10.0
    sigma: float = 5.0
    class_balance: float = 1.0
    deep_supervision: bool = True
    augment: str | dict[str, Any] = "default"
    object_bias: float = 0.7
    val_fraction: float = 0.2
    val_every: int | None = None
    patience: int = 6
    min_delta: float = 1e-3
    monitor: str = "dice"
    freeze_encoder: bool = False
    seed: int = 0
    amp: bool | None = None
    checkpoint_every_s: float = 300.0
    val_max_pixels: int = 4_000_000
    boundary_width: int = 1
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def for_finetune(cls, **overrides: Any) -> TrainSettings:
        """Few-shot defaults: 400 steps or 2.5 minutes, small patches, gentle learning rate.

        Measured on a 2-core CPU with the default U-Net (1.9 M parameters), two
        768 x 1024 slices fine-tune in about 2.5 minutes; a GPU does the 400
        steps in well under a minute.
        """
        base = cls(
            steps=400,
            minutes=2.5,
            batch_size=4,
            patch_size=128,
            learning_rate=5e-4,
            warmup_steps=10,
            patience=4,
            val_max_pixels=1_000_000,
        )
        return replace(base, **overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        """Settings from a mapping (a YAML config section); unknown keys are an error."""
        known = {f.name for f in fields(cls)} - {"extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainingError(
                f"Unknown training setting(s) {', '.join(unknown)}; known settings are "
                f"{', '.join(sorted(known))}."
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable settings, for the lineage record."""
        data = asdict(self)
        data.pop("extra", None)
        return data

    def validate(self) -> TrainSettings:
        """Raise :class:`TrainingError` with a clear message for unusable values."""
        if self.steps is None and self.minutes is None:
            raise TrainingError("Give a step budget, a time budget (minutes), or both.")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise TrainingError(
                f"The time budget must be a positive number of minutes, got {self.minutes!r}; "
                "use for example 2 for a quick fine-tune."
            )
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise TrainingError(f"The step budget must be at least 1, got {self.steps!r}.")
        positive = {
            "batch_size": self.batch_size,
            "patch_size": self.patch_size,
            "learning_rate": self.learning_rate,
            "patience": self.patience,
        }
        for key, value in positive.items():
            if not value > 0:
                raise TrainingError(f"{key} must be positive, got {value!r}.")
        if self.patch_size < 16:
            raise TrainingError(f"patch_size must be at least 16 pixels, got {self.patch_size}.")
        if self.schedule not in _SCHEDULES:
            raise TrainingError(f"schedule must be one of {', '.join(_SCHEDULES)}.")
        if self.monitor not in _MONITORS:
            raise TrainingError(f"monitor must be one of {', '.join(_MONITORS)}.")
        if not 0 < self.val_fraction <= 0.5:
            raise TrainingError(f"val_fraction must be in (0, 0.5], got {self.val_fraction!r}.")
        if not 0 <= self.object_bias <= 1:
            raise TrainingError(f"object_bias must be in [0, 1], got {self.object_bias!r}.")
        from .augment import AugmentConfig
        from .losses import LOSSES

        if self.loss.lower().replace("-", "_").replace("logdice", "log_dice") not in LOSSES:
            raise TrainingError(f"Unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}.")
        try:
            AugmentConfig.from_value(self.augment)
        except (TypeError, ValueError) as error:
            raise TrainingError(f"augment: {error}") from error
        return self

    def use_edge_weights(self, model: SegmentationModel) -> bool:
        """Whether the U-Net weight map weighs the loss of ``model``."""
        if "ce" not in self.loss.replace("bce", "ce").split("+"):
            return False
        if self.edge_weights is not None:
            return bool(self.edge_weights)
        return model.card.architecture in ("unet", "micronet")


# ----------------------------------------------------------------------------- public jobs


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
        :meth:`TrainSettings.for_finetune` by default.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``...; see :func:`~.device.select_device`.
    folder : path-like, optional
        Where to save; the user's model folder by default.
    save : bool
        Save the result (and a draft on Cancel).

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
        No annotated pixels, labels of another shape than the image, no object...
    TrainingError
        Unusable settings (a time budget of zero...) or a diverging run.
    SaveError
        The model could not be saved (disk full...); nothing was half-written.
    """
    settings = (settings or TrainSettings.for_finetune()).validate()
    started = time.monotonic()
    parent = _resolve_model(model, device)
    pair = TrainingPair(image, labels, annotated, axes, parse_slices(slices), name="image")
    return (
        yield from _run(
            parent,
            [pair],
            None,
            settings=settings,
            device=device,
            name=name,
            folder=folder,
            save=save,
            kind="fine-tune",
            started=started,
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
        Resumable checkpoint file, written every ``settings.checkpoint_every_s``.
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


def _resolve_model(model: Any, device: str) -> SegmentationModel:
    if isinstance(model, SegmentationModel):
        return model
    from .models.registry import load_model

    return load_model(model, device="cpu")


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
) -> Job[SegmentationModel]:
    from .device import select_device
    from .versions import check_new_name, default_name, now_iso, working_copy

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
        from .trainingdata import Region

        train_regions = [Region(p, p.annotated) for p in data.planes]
        val_regions = [Region(p, p.annotated) for p in val_data.planes]
        split = f"{len(val_regions)} validation planes given separately"
    else:
        train_regions, val_regions, split = split_validation(
            data.planes, fraction=settings.val_fraction
        )
    deadline = started + settings.minutes * 60 if settings.minutes else None
    if deadline is not None and time.monotonic() >= deadline:
        raise TrainingError(
            f"The time budget of {settings.minutes:g} min was used up preparing the data; "
            "give more time."
        )
    working = working_copy(parent, choice.device)
    started_iso = now_iso()

    def keep_draft(state: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        if not save:
            return
        working.module.load_state_dict(state)
        lineage = _lineage(
            parent,
            kind,
            data,
            split,
            settings,
            choice,
            started_iso,
            started,
            {},
            metrics,
            step,
            "cancelled",
            [],
        )
        lineage["draft"] = True
        draft = _finished_model(working, parent, draft_name, lineage, metrics, kind, data)
        draft.card.description = f"Draft (cancelled at step {step}) of {name}. " + (
            draft.card.description
        )
        from .versions import save_version

        try:
            save_version(draft, folder=folder, overwrite=True)
        # Cancel must always succeed; a draft that cannot be written is only reported.
        except (OSError, ModelError) as error:
            warnings.warn(
                f"The draft {draft_name!r} was not kept: {error}", TrainingWarning, stacklevel=2
            )

    trainer = Trainer(
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
    outcome: Outcome = yield from trainer.run()
    if outcome.best_state is None:
        raise TrainingError(
            "Training ended before its first step: the time budget is too small for this "
            "model and data. Give more minutes or steps."
        )
    lineage = _lineage(
        parent,
        kind,
        data,
        split,
        settings,
        choice,
        started_iso,
        started,
        outcome.before,
        outcome.after,
        outcome.steps,
        outcome.stopped,
        outcome.history,
        best_step=outcome.best_step,
        notes=data.notes + outcome.notes,
    )
    result = _finished_model(working, parent, name, lineage, outcome.after, kind, data)
    path = None
    if save:
        from .versions import save_version

        yield Progress(
            outcome.steps, outcome.steps, f"Saving {name}", None, {"phase": "save", "name": name}
        )
        path = save_version(result, folder=folder)
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
        },
    )
    return result.eval()


def _lineage(
    parent: SegmentationModel,
    kind: str,
    data: Any,
    split: str,
    settings: TrainSettings,
    choice: Any,
    started_iso: str,
    started: float,
    before: dict[str, float],
    after: dict[str, float],
    steps: int,
    stopped: str,
    history: list[dict[str, Any]],
    *,
    best_step: int | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    from .versions import now_iso, parent_fingerprint

    is_finetune = kind == "fine-tune"
    return {
        "kind": kind,
        "parent": parent.name if is_finetune else None,
        "parent_sha256": parent_fingerprint(parent) if is_finetune else None,
        "data_sha256": data.data_hash,
        "data": data.summary,
        "validation": split,
        "settings": settings.to_dict(),
        "metrics_before": dict(before),
        "metrics_after": dict(after),
        "steps": steps,
        "best_step": best_step,
        "stopped": stopped,
        "device": str(choice),
        "started": started_iso,
        "finished": now_iso(),
        "duration_s": round(time.monotonic() - started, 1),
        "napari_microseg": __version__,
        "history": history,
        "notes": list(notes),
    }


def _finished_model(
    working: SegmentationModel,
    parent: SegmentationModel,
    name: str,
    lineage: dict[str, Any],
    metrics: dict[str, float],
    kind: str,
    data: Any,
) -> SegmentationModel:
    from .versions import trained_card

    summary = data.summary
    what = f"{summary['planes']} annotated plane(s), {summary['objects']} object(s)"
    if kind == "fine-tune":
        trained_on = f"fine-tuned from {parent.name} on {what}"
        description = f"{parent.name} fine-tuned on {what}. {parent.card.description}".strip()
    else:
        trained_on = f"trained from scratch on {what}"
        description = parent.card.description or f"Trained on {what}."
    card_metrics = {k: v for k, v in metrics.items() if k != "pixels"}
    if card_metrics:
        card_metrics["data"] = (
            f"held-out validation part of the {kind} data ({lineage['validation']})"
        )
    card = trained_card(
        parent.card,
        name=name,
        lineage=lineage,
        metrics=card_metrics,
        trained_on=trained_on,
        description=description,
        parent_name=parent.name if kind == "fine-tune" else None,
    )
    return type(working)(working.module, card, working.activation)
