"""Model versions: a trained copy of a model, its lineage record, and saving it safely.

Training never touches the parent: the network is deep-copied before the
first step, and the result is saved under a new name in the user's model
folder, where the registry lists it at once. The card records the lineage:
the parent, a hash of the data the model saw, the settings, the validation
metrics before and after, and the time.

Saving is atomic (see :mod:`napari_microseg.core.io.atomic`): a full disk or a
read-only folder gives a :class:`SaveError` that says so, and leaves neither
a half-written file nor a changed parent behind.
"""

from __future__ import annotations

import copy
import datetime as _dt
import errno
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._version import __version__
from .base import ModelCard, ModelError, SegmentationModel

if TYPE_CHECKING:
    import torch


class SaveError(OSError):
    """A trained model could not be saved; the message says why and what to do."""


def now_iso() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def working_copy(model: SegmentationModel, device: torch.device) -> SegmentationModel:
    """A deep copy of ``model`` on ``device`` to train, leaving ``model`` itself untouched."""
    module = copy.deepcopy(model.module).to(device)
    card = replace(model.card, lineage=dict(model.card.lineage), metrics=dict(model.card.metrics))
    return type(model)(module, card, model.activation)


def check_new_name(name: str, folder: str | os.PathLike | None = None) -> str:
    """Raise :class:`ModelError` if a model called ``name`` exists; return the name.

    Checked before training starts, so a long run never ends in a name clash.
    """
    from .entries import scan_folder
    from .registry import list_models, unique_model_name

    name = str(name).strip()
    if not name:
        raise ModelError("The new model needs a name.")
    entries = list_models(include_unusable=False)
    if folder is not None:
        entries += scan_folder(folder, "user")
    taken = [entry for entry in entries if entry.name == name]
    if taken:
        raise ModelError(
            f"A model named {name!r} already exists ({taken[0].path}); the parent and every "
            f"saved version are kept, so choose a new name, e.g. {unique_model_name(name)!r}."
        )
    return name


def default_name(base: str) -> str:
    """``base``, or ``base-2``... whichever is free in the registry."""
    from .registry import unique_model_name

    return unique_model_name(base)


def trained_card(
    parent: ModelCard,
    *,
    name: str,
    lineage: dict[str, Any],
    metrics: dict[str, Any],
    trained_on: str,
    description: str,
    parent_name: str | None,
) -> ModelCard:
    """The card of a trained version of ``parent``."""
    return replace(
        parent,
        name=name,
        parent=parent_name,
        lineage=lineage,
        metrics=metrics,
        trained_on=trained_on,
        description=description,
        created=now_iso(),
        version=__version__,
    )


def parent_fingerprint(model: SegmentationModel) -> str | None:
    """SHA-256 of the parent's weights file, when it is a saved model the registry knows."""
    from .checkpoint import inspect_checkpoint
    from .registry import find_model

    try:
        entry = find_model(model.name)
        return inspect_checkpoint(entry.path).sha256
    # The parent may be an unsaved model or a custom module: lineage then has no hash.
    except (ModelError, OSError):
        return None


def save_version(
    model: SegmentationModel,
    *,
    folder: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Save a trained model into the user's model folder (or ``folder``), atomically.

    Parameters
    ----------
    model : SegmentationModel
        Its card's name is the registry name.
    folder : path-like, optional
        Defaults to the user's model folder (``$NAPARI_MICROSEG_MODELS``...).
    overwrite : bool
        Replace a user model of the same name (used for drafts only).

    Returns
    -------
    Path
        The weights file.

    Raises
    ------
    SaveError
        Disk full, no permission, or another OS error, with what to do.
    ModelError
        When the name is taken (see :func:`check_new_name`).
    """
    from .registry import save_user_model, user_models_dir

    target = Path(folder) if folder is not None else user_models_dir(create=True)
    try:
        return save_user_model(model, model.name, folder=target, overwrite=overwrite)
    except OSError as error:
        raise SaveError(_save_message(model.name, target, error)) from error


def _save_message(name: str, folder: Path, error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk is full"
        hint = "free some space (or set NAPARI_MICROSEG_MODELS to another disk) and train again"
    elif isinstance(error, PermissionError) or error.errno in (errno.EACCES, errno.EROFS):
        why = "the folder is not writable"
        hint = "choose a folder you can write to (NAPARI_MICROSEG_MODELS)"
    else:
        why = str(error)
        hint = "check the folder and train again"
    return (
        f"Could not save the model {name!r} in {folder}: {why}. Nothing was written and the "
        f"parent model is unchanged; {hint}."
    )


@dataclass(frozen=True)
class TrainingRun:
    """What a training run started from, on which data, with which settings and where.

    Attributes
    ----------
    parent : SegmentationModel
        The model that was trained (the fine-tune parent, or the fresh network).
    kind : {"fine-tune", "training"}
    data : PreparedData
        Gives the data hash and summary.
    split : str
        How the validation part was chosen.
    settings : TrainSettings
    device : DeviceChoice
        The device trained on.
    started_iso : str
        Start time, ISO 8601.
    started : float
        Start time, ``time.monotonic()``.
    """

    parent: SegmentationModel
    kind: str
    data: Any
    split: str
    settings: Any
    device: Any
    started_iso: str
    started: float


def lineage_record(
    run: TrainingRun,
    *,
    before: dict[str, float],
    after: dict[str, float],
    steps: int,
    stopped: str,
    history: list[dict[str, Any]],
    best_step: int | None = None,
    notes: Sequence[str] = (),
    earlier_s: float = 0.0,
) -> dict[str, Any]:
    """The lineage record of a trained model, stored in its card.

    Parameters
    ----------
    run : TrainingRun
        What the run started from.
    before, after : dict
        Validation metrics of the parent and of the result.
    steps, stopped, history
        Steps taken, why training stopped, every validation.
    best_step : int, optional
        Step of the kept weights.
    notes : sequence of str
        Warnings of the run.
    earlier_s : float
        Seconds trained by the interrupted runs this one resumed; counted in
        ``duration_s`` and recorded as ``resumed_after_s``.

    Returns
    -------
    dict
        JSON-serialisable.
    """
    is_finetune = run.kind == "fine-tune"
    return {
        "kind": run.kind,
        "parent": run.parent.name if is_finetune else None,
        "parent_sha256": parent_fingerprint(run.parent) if is_finetune else None,
        "data_sha256": run.data.data_hash,
        "data": run.data.summary,
        "validation": run.split,
        "settings": run.settings.to_dict(),
        "metrics_before": dict(before),
        "metrics_after": dict(after),
        "steps": steps,
        "best_step": best_step,
        "stopped": stopped,
        "device": str(run.device),
        "started": run.started_iso,
        "finished": now_iso(),
        "duration_s": round(time.monotonic() - run.started + earlier_s, 1),
        **({"resumed_after_s": round(earlier_s, 1)} if earlier_s else {}),
        # A training run warm-started from another model's weights (``microseg train --init``).
        **(
            {"initial_weights": run.parent.card.lineage["initial_weights"]}
            if not is_finetune and "initial_weights" in run.parent.card.lineage
            else {}
        ),
        "napari_microseg": __version__,
        "history": history,
        "notes": list(notes),
    }


def trained_model(
    working: SegmentationModel,
    parent: SegmentationModel,
    name: str,
    lineage: dict[str, Any],
    metrics: dict[str, float],
    kind: str,
    data: Any,
) -> SegmentationModel:
    """The trained model under its new name, with card, lineage and metrics.

    ``working``'s module is used as is (not copied); the card is the parent's
    with the new name, parent, lineage, metrics (measured on the held-out
    part) and creation time.
    """
    summary = data.summary
    what = f"{summary['planes']} annotated plane(s), {summary['objects']} object(s)"
    if kind == "fine-tune":
        trained_on = f"fine-tuned from {parent.name} on {what}"
        description = f"{parent.name} fine-tuned on {what}. {parent.card.description}".strip()
    else:
        start = lineage.get("initial_weights")
        origin = f"from the weights of {start['model']}" if start else "from scratch"
        trained_on = f"trained {origin} on {what}"
        description = parent.card.description or f"Trained on {what}."
    # The model picker shows the first metrics: the segmentation scores, not the loss.
    card_metrics = {k: metrics[k] for k in ("dice", "iou", "object_f1") if k in metrics}
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
