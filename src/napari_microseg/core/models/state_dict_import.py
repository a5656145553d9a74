"""Import a plain PyTorch state dict (``.pt``/``.pth``) for one of our architectures.

Pickle files can run code when they are loaded, so they are never opened by
the registry. Importing reads one through ``torch.load(weights_only=True)``,
which accepts only tensors and plain containers and refuses anything that
would construct other objects or call functions; the result is then saved in
the safe format of :mod:`.checkpoint`.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import ModelError, SegmentationModel
from .checkpoint import load_state_into

if TYPE_CHECKING:
    import os

    import torch


def import_state_dict(
    path: str | os.PathLike,
    architecture: str,
    *,
    name: str | None = None,
    in_channels: int = 1,
    classes: list[str] | tuple[str, ...] = ("background", "foreground"),
    **card_fields: Any,
) -> SegmentationModel:
    """Import a plain PyTorch state dict (``.pt``/``.pth``) for one of our architectures.

    The file is read with ``torch.load(weights_only=True)``: only tensors and
    plain containers are accepted, and a file that would construct other
    objects or call functions (which is how a pickle runs code) is refused.

    Parameters
    ----------
    path : path-like
        The ``.pt``/``.pth`` file holding a state dict (or ``{"state_dict": ...}``).
    architecture : str
        ``"unet"``, ``"segnet"``, ``"micronet"`` or ``"maskrcnn"``.
    name : str, optional
        Name of the imported model; the file stem by default.
    in_channels : int
        Channels the network was trained with.
    classes : sequence of str
        Its output classes.
    **card_fields
        Further card fields: ``hyperparameters``, ``normalization``,
        ``pixel_size_um``, ``trained_on``, ``modality``, ``description``...

    Returns
    -------
    SegmentationModel
        Save it with :func:`save_checkpoint` or ``registry.save_user_model``.

    Raises
    ------
    ModelError
        If the file holds anything but tensors, is damaged, or does not fit
        the architecture.
    """
    import torch

    from .build import create_model

    path = Path(path)
    name = name or path.stem
    try:
        with warnings.catch_warnings():
            # Plain pickle files trigger a protocol notice that says nothing to our users.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = next(
            (line.strip() for line in str(error).splitlines() if "GLOBAL" in line),
            "it holds Python objects other than tensors",
        )
        raise ModelError(
            f"Refused to import {path.name}: loading it would run code or build arbitrary "
            f"Python objects ({reason}). Only plain state dicts of tensors can be imported. "
            "If you trust the file, load it in your own Python session and save "
            "model.state_dict() with torch.save, then import that file."
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ModelError(
            f"Cannot import {path.name}: it is not a readable PyTorch file ({error})."
        ) from error
    state = _find_state_dict(loaded, path.name)
    hyperparameters = card_fields.pop("hyperparameters", None) or {}
    model = create_model(
        architecture, name=name, in_channels=in_channels, classes=classes, **hyperparameters
    )
    card_fields.setdefault("trained_on", f"imported from {path.name}")
    model.card = replace(model.card, **card_fields)
    model.card.validate()
    load_state_into(model.module, state, model=name)
    return model.eval()


def _find_state_dict(loaded: Any, filename: str) -> dict[str, torch.Tensor]:
    import torch

    def is_state(obj: Any) -> bool:
        return (
            isinstance(obj, dict)
            and bool(obj)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
        )

    candidates = [loaded]
    if isinstance(loaded, dict):
        candidates += [loaded.get(k) for k in ("state_dict", "model_state_dict", "model", "net")]
    for candidate in candidates:
        if is_state(candidate):
            # DataParallel and Lightning prefix every key; our modules do not.
            for prefix in ("module.", "model."):
                if all(key.startswith(prefix) for key in candidate):
                    candidate = {key[len(prefix) :]: v for key, v in candidate.items()}
            return candidate
    raise ModelError(
        f"{filename} holds no state dict (a mapping of parameter names to tensors). Save "
        "model.state_dict() with torch.save and import that file."
    )
