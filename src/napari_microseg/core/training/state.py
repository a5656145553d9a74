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
from typing import Any

from .settings import TrainingError

#: Format tag of the checkpoint files.
CHECKPOINT_FORMAT = "napari-microseg-training-checkpoint-1"


def cpu_state(module: Any) -> dict[str, Any]:
    """A CPU copy of a module's state dict (safe to keep while training goes on)."""
    return {key: value.detach().to("cpu", copy=True) for key, value in module.state_dict().items()}


def save_run_state(state: dict[str, Any], path: Path) -> None:
    """Write a run's ``state`` to ``path`` atomically, tagged with the checkpoint format.

    Parameters
    ----------
    state : dict
        Tensors and plain containers only (what ``torch.load(weights_only=True)``
        reads back); must hold ``data_hash``.
    path : Path

    Raises
    ------
    OSError
        When the file cannot be written (full disk...); the old file is kept.
    """
    import torch

    from ..io.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_run_state(path: Path, data_hash: str) -> dict[str, Any]:
    """The state saved at ``path`` by a run on the data whose fingerprint is ``data_hash``.

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
        or state.get("data_hash") != data_hash
    ):
        raise TrainingError(
            f"The checkpoint {path} belongs to another run (other data or format); delete it, "
            "or train without resuming."
        )
    return state


def trainer_state(trainer: Any) -> dict[str, Any]:
    """What a resumed run of ``trainer`` needs: weights, optimizer, scaler, best so far, RNGs.

    Parameters
    ----------
    trainer : Trainer
        A set-up :class:`~.loop.Trainer` (typed loosely: the loop imports this module).
    """
    import torch

    return {
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
        "batch_index": trainer.batches,
    }


def restore_trainer(trainer: Any, state: dict[str, Any]) -> None:
    """Continue ``trainer`` from a :func:`trainer_state` (the trainer is already set up).

    Parameters
    ----------
    trainer : Trainer
    state : dict
        As :func:`trainer_state` made it, read back by :func:`load_run_state`.
    """
    import torch

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
    # Checkpoints of versions before the data pipeline drew patches from one stream; their
    # run continues with fresh batches (the weights and schedule are restored all the same).
    trainer.batches = int(state.get("batch_index", trainer.step))
