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
