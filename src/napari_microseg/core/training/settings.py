"""Hyper-parameters of a training or fine-tuning run, and the errors training raises.

:class:`TrainSettings` holds every choice of a run (budget, patches, optimizer,
loss, augmentation, validation, early stopping, seed). Its defaults suit
training from scratch; :meth:`TrainSettings.for_finetune` gives the few-shot
defaults. :meth:`TrainSettings.validate` turns unusable values, such as a
time budget of zero, into a :class:`TrainingError` that says what to do.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..models.base import ModelCard, SegmentationModel


class TrainingWarning(UserWarning):
    """Training goes on, but something about it deserves the user's attention."""


class TrainingError(ValueError):
    """Training cannot go on as asked; the message says why and what to do."""


#: The few-shot decoder learning rate of a model whose card recommends none.
FINETUNE_LEARNING_RATE = 1e-3
#: The few-shot step limit of a model whose card recommends none (the time budget may end it first).
FINETUNE_STEPS = 400
#: Validations without improvement before a few-shot fine-tune stops early: about the
#: eight a fine-tune's budget holds, so it trains to its budget (issue #21).
FINETUNE_PATIENCE = 8

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
        runs limited by ``steps`` alone are reproducible bit for bit, and only on
        the CPU (see :meth:`reproducibility`).
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
    tune_fraction : float
        Share of the training planes (after validation) held out from training
        as well, for choosing post-processing on images the network has not
        seen (``scripts/tune_postprocess.py`` uses them); 0 (default): none.
        ``microseg train`` only (fine-tunes ignore it); weights started from a
        model that learnt those images have seen them all the same.
    val_every : int or None
        Steps between validations; None: about 8 per run.
    patience : int
        Validations without improvement before stopping early.
    min_delta : float
        Smallest change of the monitored metric that counts as improvement.
    monitor : {"dice", "iou", "object_f1", "val_loss"}
        The validation metric that picks the best weights. Object F1 is that of
        the card's watershed when it recommends one along a boundary class
        (:func:`~.scoring.object_pipeline`), else of connected components.
    freeze_encoder : bool
        Train only the decoder (fine-tuning with very few labels).
    seed : int
        Seeds weights' dropout, patch sampling and augmentation.
    amp : bool or None
        Mixed precision; None (or True) uses it on CUDA, never on the CPU.
    channels_last : bool or None
        Channels-last memory layout of the network and its batches; None (or
        True) uses it on CUDA, where convolutions with tensor cores run faster
        so; never on the CPU.
    batch_size_gpu : int or None
        Patches per step on a GPU; None picks the largest of 4, 2 or 1 times
        ``batch_size`` whose step fits in half of the GPU's free memory (a
        probe step, before training). The CPU always uses ``batch_size``. The
        batch used is recorded in the model card.
    data_workers : int or "auto"
        Processes that make the augmented patches while the network trains
        (0: in the training process). ``"auto"``: the cores the training
        process leaves free on a GPU, one core in four (at least one) on a CPU
        (see :func:`~.loader.auto_workers`). The batches are the same for any
        number of workers.
    checkpoint_every_s : float
        Seconds between resumable checkpoints (when a checkpoint file is given).
    val_max_pixels : int
        Validate on at most this many held-out pixels (spread over the planes).
    boundary_width : int
        Width of the boundary class of 3-class models.
    adapt_batchnorm : bool
        Fine-tuning: first re-estimate the batch-norm statistics on the image
        (no labels, see :func:`~.adapt.adapt`) and start from that copy when the
        held-out annotated pixels say it is better than the parent.
    freeze_batchnorm : bool
        Keep the batch-norm statistics fixed while training (their weights still
        learn): a few object-centred patches estimate a session's statistics badly.
    encoder_lr_factor : float
        The encoder learns at this times the learning rate (1: one rate for all;
        0: the encoder does not learn).
    keep_better_start : bool
        Fine-tuning: when the trained weights score worse on the held-out
        annotated pixels than the starting model, keep the starting model (the
        parent, or its batch-norm-adapted copy) and say so.
    anchor_decay : float
        Fine-tuning: each step takes back this share of every weight's distance
        to the starting model, at the full learning rate (less as the schedule
        lowers it): L2-SP, decoupled (:func:`~.fewshot.scaled_adam`). In [0, 1];
        0: no pull.
    try_flat_field : bool
        Fine-tuning: learn from flat-field corrected images (uneven illumination
        removed, :mod:`~..inference.illumination`) when the parent scores the
        held-out annotated pixels better on them (:func:`~.recipe.illumination_start`);
        the new model then corrects every image it segments.
    try_smoothing : bool
        Fine-tuning: learn from smoothed images when the annotated images are
        noisier than the parent's training data (its card's ``noise`` level; no
        labels needed, :mod:`~.smoothing`); the new model then smooths every image
        it segments, and is kept only if it beats the parent on the held-out
        pixels of the images as they are.
    choose_threshold : bool
        Fine-tuning: a model whose card recommends a fixed threshold gets the
        one that segments all the annotated pixels best (:mod:`~.threshold`),
        written into the new model's card.
    train_one_plane : bool
        Fine-tuning: take gradient steps when every annotated pixel lies in one
        slice or image. False: only the corrections that need no training
        (smoothing a noisy session, a fixed threshold) are tried, each judged on
        all the annotated pixels, which no step then learns from; not the flat
        field, which one image's pixels approved where it cost the session's
        other images (bench_adapt). The model's card says when its fine-tunes
        from one image were worse on the session's other images
        (:func:`finetune_trains_one_plane`).
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
    tune_fraction: float = 0.0
    val_every: int | None = None
    patience: int = 6
    min_delta: float = 1e-3
    monitor: str = "dice"
    freeze_encoder: bool = False
    seed: int = 0
    amp: bool | None = None
    channels_last: bool | None = None
    batch_size_gpu: int | None = None
    data_workers: int | str = "auto"
    checkpoint_every_s: float = 300.0
    val_max_pixels: int = 4_000_000
    boundary_width: int = 1
    adapt_batchnorm: bool = False
    freeze_batchnorm: bool = False
    encoder_lr_factor: float = 1.0
    keep_better_start: bool = False
    try_flat_field: bool = False
    try_smoothing: bool = False
    choose_threshold: bool = False
    train_one_plane: bool = True
    anchor_decay: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def for_finetune(cls, card: ModelCard | None = None, **overrides: Any) -> TrainSettings:
        """Few-shot defaults (issue #21): 400 steps (or as many as the card recommends,
        :func:`finetune_steps`) or 2.5 minutes, whichever comes first.

        The recipe: correct uneven illumination when the held-out pixels say it
        helps, smooth a session noisier than the training data, re-estimate the
        batch-norm statistics on the new image first
        (kept only if the held-out annotated pixels agree), then train with those
        statistics frozen, the decoder at the learning rate the base model's card
        recommends (:func:`finetune_learning_rate`; 1e-3 if none) and the encoder
        at a quarter of it, stop early on the held-out pixels, and keep the
        starting model when training made it worse (see :mod:`.adapt` and
        benchmarks/bench_adapt.py). Where the card says so
        (:func:`finetune_anchor_decay`), every step also pulls the weights back
        towards the start. Last, a model segmented with a fixed threshold gets the
        threshold its annotated pixels prefer (:mod:`.threshold`).

        Early stopping waits for :data:`FINETUNE_PATIENCE` validations without
        improvement, about as many as the budget holds, so a fine-tune uses its
        budget and keeps its best held-out weights: the held-out pixels of two
        images move in small steps, and the nuclei-fluo blur + noise session of
        bench_adapt stopped after 92 s at patience 4 with Dice 0.794 on unseen
        images, 0.816 when it trained on to 148 s (every other cell where a shift
        costs 0.10 ended on its 400 steps first and was unchanged).

        The time budget counts everything (preparation, validations, saving), so
        a two-slice 768 x 1024 fine-tune of the default U-Net ends within about
        2.5 minutes on a 2-core CPU; how many steps fit depends on the machine's
        load (290-390 steps on a lightly loaded 2-core CPU in
        benchmarks/bench_finetune.py, 36 on a heavily shared one). On a GPU the
        400 steps come first.
        """
        base = cls(
            steps=finetune_steps(card),
            minutes=2.5,
            batch_size=4,
            patch_size=128,
            learning_rate=finetune_learning_rate(card),
            warmup_steps=10,
            patience=FINETUNE_PATIENCE,
            val_max_pixels=1_000_000,
            adapt_batchnorm=True,
            freeze_batchnorm=True,
            encoder_lr_factor=0.25,
            keep_better_start=True,
            try_flat_field=True,
            try_smoothing=True,
            choose_threshold=True,
            anchor_decay=finetune_anchor_decay(card),
            train_one_plane=finetune_trains_one_plane(card),
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
        if self.batch_size_gpu is not None and (
            not isinstance(self.batch_size_gpu, int) or self.batch_size_gpu < 1
        ):
            raise TrainingError(
                f"batch_size_gpu must be a positive number or empty, got {self.batch_size_gpu!r}."
            )
        workers = self.data_workers
        if workers != "auto" and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers < 0
        ):
            raise TrainingError(
                f"data_workers must be 'auto' or a number of processes (0 or more), got "
                f"{workers!r}."
            )
        if not 0 < self.val_fraction <= 0.5:
            raise TrainingError(f"val_fraction must be in (0, 0.5], got {self.val_fraction!r}.")
        if not 0 <= self.tune_fraction <= 0.5:
            raise TrainingError(
                f"tune_fraction must be in [0, 0.5] (0: no tuning images), got "
                f"{self.tune_fraction!r}."
            )
        if not 0 <= self.anchor_decay <= 1:
            raise TrainingError(
                f"anchor_decay must be in [0, 1] (the share of the way back to the starting "
                f"weights taken per step; 0: none), got {self.anchor_decay!r}."
            )
        if not 0 <= self.encoder_lr_factor <= 1 or not math.isfinite(self.encoder_lr_factor):
            raise TrainingError(
                f"encoder_lr_factor must be in [0, 1], got {self.encoder_lr_factor!r}."
            )
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

    def reproducibility(self, device_kind: str) -> str:
        """Whether a rerun gives the same weights, and if not why; recorded in the card.

        Parameters
        ----------
        device_kind : str
            ``"cpu"``, ``"cuda"`` or ``"mps"``: where the run trains.

        Returns
        -------
        str
            One sentence, starting with ``"yes"`` or ``"no"``.
        """
        if self.minutes is not None:
            return (
                f"no: the time budget ({self.minutes:g} min) makes the number of steps, the "
                "learning-rate schedule and (without val_every) the validation steps depend on "
                "the machine's speed; train with a step budget alone to reproduce a run"
            )
        if device_kind != "cpu":
            return (
                f"no: on {device_kind} some GPU kernels (cuDNN's convolution algorithms, the "
                "atomic additions in the backward passes of pooling, upsampling and Mask "
                "R-CNN's RoI align) add in varying order, so reruns differ in the last bits and "
                "drift apart; train on the CPU with a step budget alone to reproduce a run"
            )
        return (
            f"yes: the same data, settings (seed {self.seed}, {self.steps} steps) and number "
            "of CPU threads on this machine give the same weights bit for bit"
        )

    def use_edge_weights(self, model: SegmentationModel) -> bool:
        """Whether the U-Net weight map weighs the loss of ``model``."""
        if "ce" not in self.loss.replace("bce", "ce").split("+"):
            return False
        if self.edge_weights is not None:
            return bool(self.edge_weights)
        return model.card.architecture in ("unet", "micronet")


def recommended_for_finetune(card: ModelCard | None, key: str) -> Any:
    """``card.recommended["adaptation"][key]`` as written, or None (no card, no entry, or a
    malformed one); each caller checks the value it needs."""
    adaptation = (card.recommended.get("adaptation") if card is not None else None) or {}
    return adaptation.get(key) if isinstance(adaptation, dict) else None


def finetune_anchor_decay(card: ModelCard | None) -> float:
    """The pull towards the start a model's card recommends for fine-tuning, else 0 (none).

    ``recommended["adaptation"]["anchor_decay"]``, written from
    ``benchmarks/bench_adapt.py --anchor-decay`` runs: it helped gland-he under
    every shift it was tried on and cost mito-em and nuclei-fluo their blur +
    noise gains (docs/benchmarks.md), so it is per model, like the learning rate.

    Parameters
    ----------
    card : ModelCard, optional
        The base model's card; None gives 0.

    Returns
    -------
    float
        :attr:`TrainSettings.anchor_decay`, in [0, 1].
    """
    value = recommended_for_finetune(card, "anchor_decay")
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    return 0.0


def finetune_trains_one_plane(card: ModelCard | None) -> bool:
    """Whether a fine-tune of this model takes gradient steps on one annotated image.

    ``recommended["adaptation"]["train_on_one_image"]``, written by
    ``scripts/record_adaptation.py`` from ``benchmarks/bench_adapt.py --shots 1``
    runs: nuclei-fluo trained on one DSB image (256 x 256, 12-36 nuclei), given
    alone as a user opens it, scored below not adapting on the session's other
    images in 8 of 12 cells (three images, four shifts; mean AP 0.06-0.46
    against 0.23-0.53), level in 3 and better in one, while the held-out pixels
    of that image approved every trained result kept (session 22). mito-em,
    membrane-em and gland-he gained
    from one slice or image, so it is per model.

    Parameters
    ----------
    card : ModelCard, optional
        The base model's card; None gives True.

    Returns
    -------
    bool
        :attr:`TrainSettings.train_one_plane`.
    """
    return recommended_for_finetune(card, "train_on_one_image") is not False


def finetune_steps(card: ModelCard | None) -> int:
    """The few-shot step limit a model's card recommends, else :data:`FINETUNE_STEPS`.

    ``recommended["adaptation"]["steps"]``, written by ``scripts/record_adaptation.py``
    from ``benchmarks/bench_adapt.py --steps`` runs compared on the same annotated
    images: mito-em's 2-slice fine-tunes end their 400 steps in about 60 s of the 2.5
    minutes, and with 1,000 (the budget then ends them at 730-980) their mean Dice on
    unseen slices rose from 0.883 to 0.898 over six of them; nuclei-fluo's end their
    400 in about 80 s, and with 800 (the budget ends them at 680-770) their mean Dice
    over six rose from 0.823 to 0.831 (session 21); gland-he's two images were not
    helped by more (docs/benchmarks.md), so it is per model, like the learning rate.

    Parameters
    ----------
    card : ModelCard, optional
        The base model's card; None gives the default.

    Returns
    -------
    int
        :attr:`TrainSettings.steps` of a fine-tune.
    """
    value = recommended_for_finetune(card, "steps")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return FINETUNE_STEPS


def finetune_learning_rate(card: ModelCard | None) -> float:
    """The few-shot learning rate a model's card recommends, else :data:`FINETUNE_LEARNING_RATE`.

    ``benchmarks/bench_adapt.py`` measures fine-tuning on a model's own simulated new
    sessions (``--lr`` to try a rate); given its results at several rates,
    ``scripts/record_adaptation.py`` writes the one with the best mean Dice on the
    images the annotations never touched into the card as
    ``recommended["adaptation"]["learning_rate"]``.

    Parameters
    ----------
    card : ModelCard, optional
        The base model's card; None gives the default.

    Returns
    -------
    float
        The decoder's learning rate (the encoder runs at ``encoder_lr_factor`` of it).
    """
    value = recommended_for_finetune(card, "learning_rate")
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return float(value)
    return FINETUNE_LEARNING_RATE
