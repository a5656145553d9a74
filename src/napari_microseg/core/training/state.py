"""Resumable training checkpoints: everything a run needs to continue where it stopped.

A checkpoint holds the weights, the optimizer and mixed-precision scaler
state, the step, the best weights and score so far, the validation history
and the three random streams (torch, patch sampling, augmentation), so a
resumed run continues as if it had not stopped. It is written atomically (a
crash while writing leaves the previous checkpoint) and read with
``torch.load(weights_only=True)``, which accepts tensors and plain
containers only and never runs code from the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .settings import TrainingError

if TYPE_CHECKING:
    from .loop import Trainer

#: Format tag of the checkpoint files.
CHECKPOINT_FORMAT = "napari-microseg-training-checkpoint-1"


def cpu_state(module: Any) -> dict[str, Any]:
    """A CPU copy of a module's state dict (safe to keep while training goes on)."""
    return {key: value.detach().to("cpu", copy=True) for key, value in module.state_dict().items()}


def save_checkpoint(trainer: Trainer, path: Path) -> None:
    """Write ``trainer``'s state to ``path`` atomically.

    Raises
    ------
    OSError
        When the file cannot be written (full disk...); the old file is kept.
    """
    import torch

    from ..io.atomic import atomic_path

    state = {
        "format": CHECKPOINT_FORMAT,
        "data_hash": trainer.data_hash,
        "settings": trainer.settings.to_dict(),
        "step": trainer.step,
        "trained_s": trainer.trained_s(),
        "model": cpu_state(trainer.model.module),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "best_state": trainer.best_state,
        "best_score": trainer.best_score,
        "best_metrics": trainer.best_metrics,
        "best_step": trainer.best_step,
        "bad_validations": trainer.bad_validations,
        "history": trainer.history,
        "before": trainer.before,
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": trainer.rng.bit_generator.state,
        "augment_rng": trainer.augmenter.get_state(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(trainer: Trainer, path: Path) -> None:
    """Restore ``trainer`` (already set up) from the checkpoint at ``path``.

    Raises
    ------
    TrainingError
        For an unreadable file, or one written for other data.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # torch raises several types for damaged or foreign files; all mean "cannot resume".
    except Exception as error:
        raise TrainingError(
            f"Cannot resume from {path}: it is not a readable training checkpoint ({error}). "
            "Delete it to start afresh."
        ) from error
    if (
        not isinstance(state, dict)
        or state.get("format") != CHECKPOINT_FORMAT
        or state.get("data_hash") != trainer.data_hash
    ):
        raise TrainingError(
            f"The checkpoint {path} belongs to another run (other data or format); delete it, "
            "or train without resuming."
        )
    trainer.model.module.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.step = int(state["step"])
    # Checkpoints written before the time was kept resume as if none had passed.
    trainer.earlier_s = float(state.get("trained_s", 0.0))
    trainer.best_state = state["best_state"]
    trainer.best_score = float(state["best_score"])
    trainer.best_metrics = dict(state["best_metrics"])
    trainer.best_step = int(state["best_step"])
    trainer.bad_validations = int(state["bad_validations"])
    trainer.history = list(state["history"])
    trainer.before = dict(state["before"])
    torch.set_rng_state(state["torch_rng"])
    trainer.rng.bit_generator.state = state["numpy_rng"]
    trainer.augmenter.set_state(state["augment_rng"])
