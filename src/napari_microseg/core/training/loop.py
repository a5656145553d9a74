"""The training loop behind :func:`~.training.train` and :func:`~.training.finetune`.

One :class:`Trainer` runs Adam with a warm-up and a cosine (or step)
schedule on object-biased, augmented patches made ahead of time by the data
pipeline (:mod:`.loader`; worker processes on a GPU machine), in mixed
precision, channels-last and with a larger batch on CUDA (:mod:`.accelerate`),
and validates on the held-out regions at intervals. It keeps the weights
with the best validation score, stops early when the score stops improving,
and stops in time for a time budget. Long runs write a resumable checkpoint
atomically every few minutes. It yields a :class:`~.progress.Progress` after
every step and every validation; closing it (Cancel) or a ``KeyboardInterrupt``
(Ctrl-C) hands the best weights so far to ``on_cancel`` before it stops.

A run limited by steps alone is reproducible: its random streams (torch's,
and batch ``i``'s patches and augmentation, seeded with ``(seed, i)``) start
from ``settings.seed`` and its validations fall on fixed steps, so the same
data, settings and device give the same weights bit for bit on the CPU,
whatever the number of data workers, a run resumed from its checkpoint
included (the checkpoint holds torch's stream and the next batch's index). A time budget makes the
run depend on the machine's speed: how many steps fit, the learning-rate
schedule that spreads over them and, without ``val_every``, when validation
happens.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..progress import Job, Progress
from .budget import Budget, lr_factor
from .scoring import capped_regions, metrics_text, prefixed
from .settings import TrainingError, TrainingWarning
from .state import cpu_state, load_run_state, restore_trainer, save_run_state, trainer_state

if TYPE_CHECKING:
    from ..models.base import SegmentationModel
    from ..models.device import DeviceChoice
    from .data import Region
    from .settings import TrainSettings

#: Consecutive non-finite losses after which training gives up.
MAX_BAD_STEPS = 10


@dataclass
class Outcome:
    """What a finished run hands back to :mod:`.training`.

    Attributes
    ----------
    best_state : dict or None
        CPU copy of the best weights (None when no step was taken).
    before, after : dict
        Validation metrics of the starting and of the best weights.
    steps : int
        Optimizer steps taken.
    best_step : int
        The step of the best weights.
    stopped : str
        Why training stopped: ``"steps"``, ``"time"`` or ``"early stop"``.
    history : list of dict
        Every validation: step, training seconds so far and metrics.
    notes : list of str
        Warnings raised during the run.
    validation_s : float
        Seconds spent validating (this run, the baseline included).
    """

    best_state: dict[str, Any] | None
    before: dict[str, float]
    after: dict[str, float]
    steps: int
    best_step: int
    stopped: str
    history: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    validation_s: float = 0.0


def encoder_modules(module: Any) -> list[Any]:
    """The encoder of a network, for freezing: U-Net/SegNet ``encoders``, Micro-Net ``down``,
    Mask R-CNN ``backbone.body``; an empty list when the network has no known encoder."""
    backbone = getattr(module, "backbone", None)
    if backbone is not None and hasattr(backbone, "body"):
        return [backbone.body]
    for attribute in ("encoders", "encoder", "down"):
        part = getattr(module, attribute, None)
        if part is not None:
            return [part]
    return []


class Trainer:
    """One training run of ``model`` (a working copy; it is trained in place).

    Parameters
    ----------
    model : SegmentationModel
        The copy to train, on ``device``.
    settings : TrainSettings
    device : DeviceChoice
    train_regions, val_regions : sequence of Region
    deadline : float or None
        ``time.monotonic()`` by which everything, saving included, must be done.
    data_hash : str
        Fingerprint of the data, stored in checkpoints so a resume checks it.
    checkpoint : Path, optional
        Resumable checkpoint file; written every ``settings.checkpoint_every_s``.
    resume : bool
        Continue from ``checkpoint`` when it exists.
    on_cancel : callable, optional
        ``on_cancel(state, metrics, step)`` runs when the job is closed, or
        interrupted by ``KeyboardInterrupt``, after at least one step; ``state``
        is the best weights so far.
    started : float, optional
        ``time.monotonic()`` when the job started (preparation counts against the
        time budget); now by default.
    """

    def __init__(
        self,
        model: SegmentationModel,
        settings: TrainSettings,
        *,
        device: DeviceChoice,
        train_regions: Sequence[Region],
        val_regions: Sequence[Region],
        deadline: float | None = None,
        data_hash: str = "",
        checkpoint: Path | None = None,
        resume: bool = False,
        on_cancel: Callable[[dict[str, Any], dict[str, float], int], None] | None = None,
        started: float | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.device = device
        self.train_regions = list(train_regions)
        held_out = list(val_regions)
        self.val_regions = capped_regions(held_out, settings.val_max_pixels)
        self.data_hash = data_hash
        self.checkpoint = checkpoint
        self.resume = resume
        self.on_cancel = on_cancel
        self.amp = device.kind == "cuda" and settings.amp is not False
        self.notes: list[str] = []
        if len(self.val_regions) < len(held_out):
            self._note(
                f"Validation scores {len(self.val_regions)} of the {len(held_out)} held-out "
                f"regions ({sum(r.pixels for r in self.val_regions):,} of "
                f"{sum(r.pixels for r in held_out):,} pixels): val_max_pixels is "
                f"{settings.val_max_pixels:,}; a higher val_max_pixels (training config or "
                "TrainSettings) scores them all."
            )
        self.step = 0
        self.best_state: dict[str, Any] | None = None
        self.best_score = -math.inf
        self.best_metrics: dict[str, float] = {}
        self.best_step = 0
        self.bad_validations = 0
        self.history: list[dict[str, Any]] = []
        self.before: dict[str, float] = {}
        self.budget = Budget(
            steps=settings.steps,
            deadline=deadline,
            started=time.monotonic() if started is None else started,
        )
        self.val_seconds = 1.0
        self.validation_s = 0.0
        # A resumed run's card and curves count the interrupted runs' time too.
        self.earlier_s = 0.0
        self.batches = 0  # index of the next batch of patches
        self.loader: Any = None
        self.workers = 0
        self.batch_size = settings.batch_size
        self.batch_choice = "config"
        self.channels_last = False

    def trained_s(self) -> float:
        """Seconds of training so far, the runs this one resumed included."""
        return self.earlier_s + self.budget.elapsed()

    # ------------------------------------------------------------------ set-up

    def _setup(self) -> None:
        import torch

        from .accelerate import gpu_batch_size, use_channels_last
        from .sampling import training_sampler

        s = self.settings
        torch.manual_seed(s.seed)
        module = self.model.module
        self.instance = self.model.task == "instance"
        self.deep = bool(s.deep_supervision) and hasattr(module, "forward_with_aux")
        self.frozen: list[Any] = []
        if s.freeze_encoder:
            self.frozen = encoder_modules(module)
            if not self.frozen:
                self._note(
                    f"{type(module).__name__} has no encoder napari-microseg knows; "
                    "all layers are trained."
                )
            for part in self.frozen:
                part.requires_grad_(False)
        self.optimizer = self.make_optimizer()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.sampler = training_sampler(self.model, s, self.train_regions, instance=self.instance)
        # Once per plane, before any worker starts: workers share them, never recompute them.
        self.sampler.prepare()
        device = self.device.device
        self.channels_last = use_channels_last(s, device.type, self.instance)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        self.batch_size, self.batch_choice = gpu_batch_size(
            module,
            s,
            device,
            in_channels=int(self.train_regions[0].plane.image.shape[0]),
            amp=self.amp,
            channels_last=self.channels_last,
            instance=self.instance,
        )
        annotated = sum(r.pixels for r in self.train_regions)
        self.steps_per_epoch = max(1, math.ceil(annotated / (s.batch_size * s.patch_size**2)))

    def make_optimizer(self) -> Any:
        """The optimizer of the trainable parameters (a subclass may group them).

        Called once while setting up, after frozen parts are frozen.
        """
        import torch

        s = self.settings
        params = [p for p in self.model.module.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=s.learning_rate, weight_decay=s.weight_decay)

    def _start_loader(self) -> None:
        from .loader import BatchLoader, auto_workers

        s = self.settings
        kind = self.device.kind
        requested = auto_workers(kind) if s.data_workers == "auto" else int(s.data_workers)
        self.loader = BatchLoader(
            self.sampler,
            batch_size=self.batch_size,
            workers=requested,
            start=self.batches,
            pin_memory=kind == "cuda",
        )
        self.workers = self.loader.workers
        for notice in self.loader.notices:
            self._note(notice)

    def _stop_loader(self) -> None:
        if self.loader is not None:
            self.workers = self.loader.workers
            for notice in self.loader.notices:
                if notice not in self.notices:
                    self._note(notice)
            self.loader.close()
            self.loader = None

    def card_facts(self) -> dict[str, Any]:
        """How the run used the machine, for the model card (see :mod:`.accelerate`)."""
        from .accelerate import pipeline_facts

        return pipeline_facts(
            device=self.device,
            workers=self.workers,
            batch_size=self.batch_size,
            batch_choice=self.batch_choice,
            amp=self.amp,
            channels_last=self.channels_last,
            validation_s=self.validation_s,
            run_s=self.budget.elapsed(),
        )

    def _note(self, text: str) -> None:
        self.notes.append(text)
        warnings.warn(text, TrainingWarning, stacklevel=3)

    # ------------------------------------------------------------------ the job

    def run(self) -> Job[Outcome]:
        """Train; yields Progress, returns an :class:`Outcome`."""
        try:
            return (yield from self._run())
        # Cancel closes the job at a yield (GeneratorExit); Ctrl-C usually lands inside a step,
        # where it ends the generator at once: both keep the best weights so far.
        except (GeneratorExit, KeyboardInterrupt):
            # Workers first: they must not outlive a cancelled job by more than a moment.
            self._stop_loader()
            if self.on_cancel is not None and self.step > 0:
                state = self.best_state or cpu_state(self.model.module)
                metrics = self.best_metrics if self.best_state is not None else {}
                self.on_cancel(state, metrics, self.step)
            raise
        except RuntimeError as error:
            from .loader import worker_failure

            failure = worker_failure(error)
            if failure is None:
                raise
            raise failure from error
        finally:
            self._stop_loader()

    def _run(self) -> Job[Outcome]:
        s = self.settings
        self._setup()
        if self.resume and self.checkpoint is not None and self.checkpoint.exists():
            self._load_checkpoint()
            yield Progress(
                self.step,
                s.steps,
                f"Resumed at step {self.step}",
                None,
                {"phase": "resume", "step": self.step},
            )
        else:
            yield Progress(0, s.steps, "Validating the starting model", None, {"phase": "baseline"})
            start = time.monotonic()
            self.before = self._validate()
            self._timed_validation(time.monotonic() - start)
            yield Progress(
                0,
                s.steps,
                metrics_text("Before training", self.before),
                None,
                {
                    "phase": "baseline",
                    "metrics_before": dict(self.before),
                    **prefixed(self.before),
                },
            )
        self._start_loader()
        budget = self.budget
        last_val = self.step
        last_val_end = last_checkpoint = time.monotonic()
        bad_steps = 0
        while (stopped := budget.exhausted(self.step)) is None:
            t0 = time.monotonic()
            for group in self.optimizer.param_groups:
                group["lr"] = s.learning_rate * lr_factor(
                    self.step,
                    budget.planned(self.step),
                    warmup=s.warmup_steps,
                    schedule=s.schedule,
                    min_factor=s.lr_min_factor,
                )
            loss = self._train_step()
            if not math.isfinite(loss):
                bad_steps += 1
                if bad_steps >= MAX_BAD_STEPS:
                    raise TrainingError(
                        f"The loss is not finite ({loss}) for {bad_steps} steps in a row: "
                        "training diverged. Lower the learning rate (now "
                        f"{s.learning_rate:g}) and train again."
                    )
                continue
            bad_steps = 0
            self.step += 1
            budget.record(time.monotonic() - t0)
            planned = budget.planned(self.step)
            yield Progress(
                self.step,
                planned,
                f"Training: loss {loss:.4f}",
                budget.eta(self.step),
                {
                    "phase": "train",
                    "loss": loss,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "epoch": self._epoch(),
                    "elapsed_s": self.trained_s(),
                },
            )
            interval = s.val_every or max(5, planned // 8 if planned else 25)
            if s.val_every is not None or budget.deadline is None:
                # A fixed interval validates on its multiples, so the best weights picked (and
                # early stopping) depend neither on the machine's speed nor on a resume.
                due = self.step % interval == 0
            else:
                # Under a time budget, validation may take at most a tenth of the time.
                due = (
                    self.step - last_val >= interval
                    and time.monotonic() - last_val_end >= 9 * self.val_seconds
                )
            if due:
                last_val = self.step
                event = self._validation_event(planned)
                last_val_end = time.monotonic()
                yield event
                if self.bad_validations >= s.patience:
                    stopped = "early stop"
                    break
            if self.checkpoint is not None and (
                time.monotonic() - last_checkpoint >= s.checkpoint_every_s
            ):
                self._save_checkpoint()
                last_checkpoint = time.monotonic()
        self._stop_loader()
        if self.step > last_val or (self.best_state is None and self.step > 0):
            yield self._validation_event(self.step)
        if self.checkpoint is not None and self.step > 0:
            self._save_checkpoint()
        if self.best_state is not None:
            self.model.module.load_state_dict(self.best_state)
        return Outcome(
            best_state=self.best_state,
            before=self.before,
            after=self.best_metrics,
            steps=self.step,
            best_step=self.best_step,
            stopped=stopped,
            history=self.history,
            notes=self.notes,
            validation_s=self.validation_s,
        )

    # ------------------------------------------------------------------ steps

    def _epoch(self) -> int:
        return 1 + self.step // self.steps_per_epoch

    def _train_step(self) -> float:
        import torch

        from .losses import deep_supervision_loss, maskrcnn_loss, segmentation_loss
        from .targets import maskrcnn_targets

        s = self.settings
        module = self.model.module
        module.train()
        for part in self.frozen:
            part.eval()  # frozen batch-norm statistics stay those of the parent
        batch = self.loader.next() if self.loader is not None else self._batch_in_process()
        self.batches += 1
        device = self.device.device
        x = batch["image"].to(device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        target = batch["target"].to(device, non_blocking=True)
        annotated = batch["annotated"].to(device, non_blocking=True)
        weight = batch["weight"].to(device, non_blocking=True) if "weight" in batch else None
        with torch.autocast(device.type, dtype=torch.float16, enabled=self.amp):
            if self.instance:
                targets = [
                    {
                        k: v.to(device)
                        for k, v in maskrcnn_targets(ids.numpy(), annotated=mask.numpy()).items()
                    }
                    for ids, mask in zip(batch["instances"], batch["annotated"])
                ]
                loss = maskrcnn_loss(module(list(x), targets))
            elif self.deep:
                main, aux = module.forward_with_aux(x)
                loss = deep_supervision_loss(
                    main.float(),
                    [a.float() for a in aux],
                    target,
                    annotated,
                    weight,
                    epoch=self._epoch(),
                    kind=s.loss,
                )
            else:
                loss = segmentation_loss(module(x).float(), target, annotated, weight, kind=s.loss)
        value = float(loss.detach())
        self.optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(value):
            return value
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return value

    def _batch_in_process(self) -> dict[str, Any]:
        """The next batch without a loader (a step called outside :meth:`run`)."""
        return self.sampler.batch(self.batches, self.batch_size)

    # ------------------------------------------------------------------ validation

    def _validate(self) -> dict[str, float]:
        from .scoring import evaluate_regions

        metrics = evaluate_regions(
            self.model,
            self.val_regions,
            device=self.device.device,
            loss_kind=self.settings.loss,
            amp=self.amp,
        )
        self.model.module.train()
        return metrics

    def _score(self, metrics: dict[str, float]) -> float:
        key = self.settings.monitor
        value = metrics.get(key, metrics["dice"])
        return -value if key == "val_loss" else value

    def _validation_event(self, planned: int | None) -> Progress:
        start = time.monotonic()
        metrics = self._validate()
        self._timed_validation(time.monotonic() - start)
        score = self._score(metrics)
        improved = score > self.best_score + self.settings.min_delta or self.best_state is None
        if improved:
            self.best_score = score
            self.best_state = cpu_state(self.model.module)
            self.best_metrics = dict(metrics)
            self.best_step = self.step
            self.bad_validations = 0
        else:
            self.bad_validations += 1
        self.history.append({"step": self.step, "elapsed_s": round(self.trained_s(), 2), **metrics})
        info = {
            "phase": "validate",
            **prefixed(metrics),
            "improved": improved,
            "best_step": self.best_step,
            "best_val_dice": self.best_metrics.get("dice"),
            "elapsed_s": self.trained_s(),
        }
        text = metrics_text(f"Validation at step {self.step}", metrics)
        return Progress(self.step, planned, text, self.budget.eta(self.step), info)

    def _timed_validation(self, seconds: float) -> None:
        # The last validation and saving must still fit into a time budget.
        self.val_seconds = seconds
        self.validation_s += seconds
        self.budget.reserve_s = seconds + 2.0

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self) -> None:
        assert self.checkpoint is not None
        try:
            save_run_state(trainer_state(self), self.checkpoint)
        except OSError as error:
            # A missed checkpoint costs only the ability to resume; training goes on.
            self._note(f"Could not write the training checkpoint {self.checkpoint}: {error}.")

    def _load_checkpoint(self) -> None:
        assert self.checkpoint is not None
        restore_trainer(self, load_run_state(self.checkpoint, self.data_hash))
