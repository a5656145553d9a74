"""The model file format: safetensors weights plus a JSON model card.

A model ``mito-em`` is two files side by side::

    mito-em.safetensors   the weights (float32, or float16 for bundled models)
    mito-em.json          the ModelCard, plus a "format" block: format version,
                          weights file name, dtype and SHA-256 of the weights

The card is also embedded in the safetensors header, so a lone
``.safetensors`` file still opens; the ``.json`` file wins when both exist,
so a card can be edited by hand. Loading never unpickles: safetensors holds
only tensors and JSON. Plain PyTorch ``.pt``/``.pth`` state dicts are
imported by :mod:`.state_dict_import`, which refuses any file that would
construct other objects or call functions.

Reading cards and checking files (:func:`read_card`, :func:`inspect_checkpoint`)
does not import torch, so listing models stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._version import __version__
from ..io.atomic import atomic_path
from .base import ModelCard, ModelError, SegmentationModel

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT_NAME = "napari-microseg-model"
FORMAT_VERSION = 1
WEIGHTS_SUFFIX = ".safetensors"
CARD_SUFFIX = ".json"
#: safetensors metadata key holding the embedded card.
CARD_KEY = "napari_microseg.card"
#: Suffixes of pickle-based PyTorch checkpoints, imported only on request.
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")
DTYPES = ("float32", "float16")

# A safetensors header is JSON; anything claiming more than this is not one.
_MAX_HEADER_BYTES = 100 * 2**20
# Second byte of a pickle (after the PROTO opcode 0x80): protocols 2 to 5.
_PICKLE = (b"\x02", b"\x03", b"\x04", b"\x05")


@dataclass(frozen=True)
class CheckpointInfo:
    """What can be learnt about a model file without loading its weights.

    Attributes
    ----------
    weights : Path
        The ``.safetensors`` file.
    card : ModelCard
        The model card (from the ``.json`` file, else from the weights header).
    card_file : Path or None
        The ``.json`` file, when there is one.
    size_bytes : int
        Weights plus card on disk.
    dtype : str
        ``"float32"`` or ``"float16"``.
    sha256 : str or None
        Expected hash of the weights file, from the card.
    """

    weights: Path
    card: ModelCard
    card_file: Path | None
    size_bytes: int
    dtype: str
    sha256: str | None


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, card)`` paths for a model given by either file or by its stem."""
    path = Path(path)
    if path.suffix.lower() in (WEIGHTS_SUFFIX, CARD_SUFFIX):
        path = path.with_suffix("")
    return path.with_name(path.name + WEIGHTS_SUFFIX), path.with_name(path.name + CARD_SUFFIX)


def read_safetensors_header(path: str | os.PathLike, *, model: str | None = None) -> dict:
    """Read and check a safetensors header without torch.

    Parameters
    ----------
    path : path-like
        The ``.safetensors`` file.
    model : str, optional
        Model name for messages.

    Returns
    -------
    dict
        Tensor name -> ``{"dtype", "shape", "data_offsets"}``, plus ``"__metadata__"``.

    Raises
    ------
    ModelError
        If the file is missing, is a pickle, or is truncated or damaged; the
        message says what to do.
    """
    path = Path(path)
    who = f"Model {model!r}: " if model else ""
    if not path.is_file():
        raise ModelError(f"{who}the weights file {path} does not exist.")
    size = path.stat().st_size
    with open(path, "rb") as stream:
        start = stream.read(8)
        length = int.from_bytes(start, "little") if len(start) == 8 else -1
        if length < 2 or length > min(size - 8, _MAX_HEADER_BYTES):
            # Only now look for another format: a valid header length may begin with any byte.
            if start[:4] == b"PK\x03\x04" or (start[:1] == b"\x80" and start[1:2] in _PICKLE):
                raise ModelError(
                    f"{who}{path.name} is a PyTorch pickle checkpoint, not safetensors. Import "
                    "it with `microseg models import` (or import_state_dict) to convert it safely."
                )
            raise ModelError(
                f"{who}{path.name} is not a valid safetensors file (damaged or truncated header, "
                f"{size} bytes). Copy or download it again, or re-save the model."
            )
        try:
            header = json.loads(stream.read(length))
            ends = [
                int(entry["data_offsets"][1])
                for key, entry in header.items()
                if key != "__metadata__"
            ]
        except (ValueError, TypeError, KeyError, IndexError) as error:
            raise ModelError(
                f"{who}{path.name} has a damaged safetensors header ({error}). Copy or download "
                "it again, or re-save the model."
            ) from error
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        raise ModelError(
            f"{who}{path.name} is truncated: {size} of {expected} bytes. The copy or download "
            "was interrupted; copy or download it again."
        )
    return header


def _card_from_json(path: Path) -> tuple[ModelCard, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelError(
            f"The model card {path.name} cannot be read ({error}). Fix the JSON or re-save "
            "the model with napari-microseg."
        ) from error
    if not isinstance(data, dict):
        raise ModelError(f"The model card {path.name} must hold a JSON object, not {type(data)}.")
    fmt = data.get("format") if isinstance(data.get("format"), dict) else {}
    return ModelCard.from_dict(data, source=f"The model card {path.name}"), fmt


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Check a model's files and read its card, without torch and without loading weights.

    Parameters
    ----------
    path : path-like
        The ``.safetensors`` or ``.json`` file, or their common stem.

    Returns
    -------
    CheckpointInfo

    Raises
    ------
    ModelError
        For a missing, truncated or foreign weights file, or an unreadable or
        incomplete card; the message names the model and what to do.
    """
    weights, card_file = checkpoint_paths(path)
    fmt: dict[str, Any] = {}
    if card_file.is_file():
        # The weights are always the card's sibling: "format.weights" is informative only,
        # so a card can never point at a file elsewhere.
        card, fmt = _card_from_json(card_file)
        header = read_safetensors_header(weights, model=card.name)
    else:
        header = read_safetensors_header(weights)
        embedded = (header.get("__metadata__") or {}).get(CARD_KEY)
        if not embedded:
            raise ModelError(
                f"{weights.name} has no model card: napari-microseg needs its .json card "
                f"({card_file.name}) to know the architecture. Put the card next to it, or "
                "import the weights with `microseg models import`."
            )
        try:
            data = json.loads(embedded)
        except ValueError as error:
            raise ModelError(
                f"The card embedded in {weights.name} is damaged ({error}); re-save the model."
            ) from error
        fmt = data.get("format") if isinstance(data.get("format"), dict) else {}
        card = ModelCard.from_dict(data, source=f"The card embedded in {weights.name}")
    dtypes = {entry.get("dtype") for key, entry in header.items() if key != "__metadata__"}
    size = weights.stat().st_size + (card_file.stat().st_size if card_file.is_file() else 0)
    return CheckpointInfo(
        weights=weights,
        card=card,
        card_file=card_file if card_file.is_file() else None,
        size_bytes=size,
        dtype="float16" if "F16" in dtypes else "float32",
        sha256=fmt.get("sha256"),
    )


def read_card(path: str | os.PathLike) -> ModelCard:
    """The :class:`ModelCard` of a saved model (see :func:`inspect_checkpoint`)."""
    return inspect_checkpoint(path).card


def serialize(
    model: SegmentationModel, *, dtype: str = "float32", card: ModelCard | None = None
) -> tuple[bytes, ModelCard]:
    """The safetensors bytes of ``model`` (card embedded) and the card written with them.

    Floating-point tensors are cast to ``dtype``; integer buffers (batch-norm
    counters) are kept as they are. ``card`` replaces the model's own card
    (to save under another name, say).
    """
    import torch
    from safetensors.torch import save

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    target = getattr(torch, dtype)
    # Cloning breaks any storage sharing between entries, which safetensors refuses.
    tensors = {
        key: (value.detach().to("cpu", target) if value.is_floating_point() else value.detach())
        .contiguous()
        .clone()
        for key, value in model.module.state_dict().items()
    }
    card = replace(card or model.card, version=__version__)
    card.validate()
    embedded = {**card.to_dict(), "format": format_block(None, dtype, None)}
    # A single metadata key: safetensors writes its metadata map in an unstable order,
    # and identical models must give identical bytes (save_user_model compares hashes).
    metadata = {CARD_KEY: json.dumps(embedded)}
    return save(tensors, metadata=metadata), card


def format_block(weights: str | None, dtype: str, sha256: str | None) -> dict[str, Any]:
    """The card's ``format`` entry: file format, version, dtype, weights file and its SHA-256."""
    block: dict[str, Any] = {"name": FORMAT_NAME, "version": FORMAT_VERSION, "dtype": dtype}
    if weights:
        block["weights"] = weights
    if sha256:
        block["sha256"] = sha256
    return block


def write_checkpoint(payload: bytes, card: ModelCard, path: str | os.PathLike, dtype: str) -> Path:
    """Write serialized weights and their card atomically; return the weights path.

    The weights replace the old file first and the card last, so a card never
    points at weights it does not describe (the hash would show it anyway).
    """
    weights, card_file = checkpoint_paths(path)
    digest = hashlib.sha256(payload).hexdigest()
    data = {**card.to_dict(), "format": format_block(weights.name, dtype, digest)}
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    with atomic_path(card_file) as tmp_card:
        with atomic_path(weights) as tmp_weights:
            tmp_weights.write_bytes(payload)
            tmp_card.write_text(text, encoding="utf-8")
    return weights


def save_checkpoint(
    model: SegmentationModel,
    path: str | os.PathLike,
    *,
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Save a model as ``<stem>.safetensors`` + ``<stem>.json``, atomically.

    Parameters
    ----------
    model : SegmentationModel
        Network and card.
    path : path-like
        Either file of the pair, or their stem.
    dtype : {"float32", "float16"}
        Storage type of the floating-point weights; float16 halves the size of
        shipped models and is cast back to float32 on loading.
    overwrite : bool
        Replace an existing model at ``path``.

    Returns
    -------
    Path
        The weights file.

    Raises
    ------
    FileExistsError
        If a model exists at ``path`` and ``overwrite`` is False.
    """
    weights, card_file = checkpoint_paths(path)
    if not overwrite and (weights.exists() or card_file.exists()):
        raise FileExistsError(
            f"A model already exists at {weights}; choose another name or allow overwriting."
        )
    payload, card = serialize(model, dtype=dtype)
    return write_checkpoint(payload, card, weights, dtype)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_into(module: nn.Module, state: dict[str, torch.Tensor], *, model: str) -> None:
    """``module.load_state_dict(state)`` with float32 weights and a clear mismatch message."""
    current = module.state_dict()
    state = {
        key: value.float() if value.is_floating_point() and key in current else value
        for key, value in state.items()
    }
    missing = sorted(set(current) - set(state))
    unexpected = sorted(set(state) - set(current))
    wrong = [
        f"{key} {tuple(state[key].shape)} vs {tuple(current[key].shape)}"
        for key in sorted(set(state) & set(current))
        if state[key].shape != current[key].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        groups = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        for label, keys in groups:
            if keys:
                more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
                parts.append(f"{label}: {', '.join(keys[:3])}{more}")
        raise ModelError(
            f"Model {model!r}: the weights do not fit the network described by its card "
            f"({'; '.join(parts)}). Check the card's architecture, in_channels, classes and "
            "hyperparameters against the ones the weights were trained with."
        )
    module.load_state_dict(state, strict=True)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    device: str | torch.device | None = "cpu",
    module: nn.Module | None = None,
    verify: bool = True,
) -> SegmentationModel:
    """Load a saved model, never unpickling anything.

    Parameters
    ----------
    path : path-like
        The ``.safetensors`` or ``.json`` file, or their stem.
    device : str or torch.device, optional
        Where to put the model: ``"cpu"``, ``"cuda"``, ``"auto"``... (see
        :func:`.device.select_device`).
    module : torch.nn.Module, optional
        The network to load the weights into, for ``"custom"`` models that
        napari-microseg cannot build itself.
    verify : bool
        Check the weights against the SHA-256 recorded in the card.

    Returns
    -------
    SegmentationModel
        In eval mode, float32, on the chosen device.

    Raises
    ------
    ModelError
        For damaged, truncated or mismatched files, NaN or infinite weights,
        invalid cards and unknown architectures; the message names the model
        and what to do.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .build import build_model
    from .device import select_device

    info = inspect_checkpoint(path)
    card = info.card
    if verify and info.sha256 and _file_sha256(info.weights) != info.sha256:
        raise ModelError(
            f"Model {card.name!r}: {info.weights.name} does not match its card (SHA-256 "
            "differs): it was damaged or replaced. Copy the model's files again together."
        )
    model = SegmentationModel(module, card) if module is not None else build_model(card)
    try:
        state = load_file(str(info.weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(
            f"Model {card.name!r}: cannot read {info.weights.name} ({error}). Copy or download "
            "it again, or re-save the model."
        ) from error
    _check_finite(state, card.name, info.weights.name)
    load_state_into(model.module, state, model=card.name)
    model.to(select_device(device).device)
    return model.eval()


def _check_finite(state: dict[str, torch.Tensor], model: str, filename: str) -> None:
    """Refuse weights holding NaN or infinity: such a model predicts nothing but NaN."""
    import torch

    bad = [
        key
        for key, value in state.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ModelError(
            f"Model {model!r} has NaN or infinite weights in {filename} ({', '.join(bad[:3])}"
            f"{more}); retrain it (a lower learning rate often helps) or use an earlier version."
        )
