"""The model registry: bundled models, the user's own models, and model files.

- **Bundled** models ship inside the package, in ``napari_microseg/models/``.
- **User** models live in a per-user data folder (``platformdirs``), or in the
  folder named by the environment variable ``NAPARI_MICROSEG_MODELS``;
  fine-tuning saves there with :func:`save_user_model`.
- **Files**: any saved model opened by path.

Listing reads only the JSON cards and the safetensors headers: it imports no
torch and loads no weights, so the model picker opens at once. A broken or
foreign file is listed as unusable with the reason; it never breaks the list.

Examples
--------
>>> for entry in list_models():  # doctest: +SKIP
...     print(entry.name, entry.family, entry.size_mb, entry.problem or "ok")
>>> model = load_model("mito-em", device="auto")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import ModelCard, ModelError, SegmentationModel
from .bioimageio_package import PACKAGE_SUFFIXES, is_package
from .checkpoint import (
    CARD_SUFFIX,
    PICKLE_SUFFIXES,
    WEIGHTS_SUFFIX,
    checkpoint_paths,
    inspect_checkpoint,
    load_checkpoint,
    serialize,
    write_checkpoint,
)
from .entries import ModelEntry, entry_for, foreign_entry, scan_folder

__all__ = [
    "ENV_VAR",
    "ModelEntry",
    "bundled_entries",
    "bundled_models_dir",
    "find_model",
    "list_models",
    "load_model",
    "model_choices",
    "save_user_model",
    "scan_folder",
    "unique_model_name",
    "user_models_dir",
]

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch

log = logging.getLogger(__name__)

#: Environment variable overriding the user's model folder.
ENV_VAR = "NAPARI_MICROSEG_MODELS"


def bundled_models_dir() -> Path:
    """The folder of the models shipped with the package (it may be empty or absent)."""
    return Path(__file__).resolve().parents[2] / "models"


def user_models_dir(*, create: bool = False) -> Path:
    """The user's model folder: ``$NAPARI_MICROSEG_MODELS``, else a per-user data folder.

    Parameters
    ----------
    create : bool
        Create the folder if it does not exist.
    """
    override = os.environ.get(ENV_VAR, "").strip()
    if override:
        folder = Path(override).expanduser()
    else:
        from platformdirs import user_data_path

        folder = user_data_path("napari-microseg", appauthor=False) / "models"
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def bundled_entries() -> list[ModelEntry]:
    """The bundled models, each checked against the folder's manifest.

    A bundled file that is missing, truncated or unreadable gives an unusable
    entry whose ``problem`` names the file and says to reinstall the package;
    the other bundled models are listed as usual.
    """
    from .bundled import REINSTALL_HINT, manifest_problem, read_manifest

    folder = bundled_models_dir()
    manifest = read_manifest(folder)
    by_stem = {Path(item["weights"]).stem: (name, item) for name, item in manifest.items()}
    entries = []
    for entry in scan_folder(folder, "bundled"):
        stem = checkpoint_paths(entry.path)[0].stem
        name, item = by_stem.pop(stem, (None, None))
        # The manifest's check (missing file, wrong size) gives the plainest message.
        problem = manifest_problem(folder, name, item) if item is not None else ""
        if not problem and not entry.usable:
            problem = (
                f"the bundled file {entry.path} is damaged: {entry.problem.rstrip()} "
                f"{REINSTALL_HINT[0].upper()}{REINSTALL_HINT[1:]}."
            )
        if problem:
            entry = replace(entry, problem=problem)
        entries.append(entry)
    for name, item in by_stem.values():
        # Listed in the manifest, but neither file is there.
        problem = manifest_problem(folder, name, item) or (
            f"the bundled model's files are missing from this installation; {REINSTALL_HINT}."
        )
        entries.append(
            ModelEntry(name=name, source="bundled", path=folder / item["weights"], problem=problem)
        )
    return entries


def _with_lineage_and_duplicates(entries: list[ModelEntry]) -> list[ModelEntry]:
    by_name: dict[str, ModelEntry] = {}
    result = []
    for entry in entries:
        first = by_name.get(entry.name)
        if entry.usable and first is not None:
            entry = replace(
                entry,
                problem=f"the name {entry.name!r} is already used by the {first.source} model "
                f"at {first.path}; rename this model (its .json card) to use it.",
            )
        elif entry.usable:
            by_name[entry.name] = entry
        result.append(entry)
    for index, entry in enumerate(result):
        chain: list[str] = []
        parent = entry.card.parent if entry.card else None
        while parent and parent not in chain and parent != entry.name:
            chain.append(parent)
            ancestor = by_name.get(parent)
            parent = ancestor.card.parent if ancestor and ancestor.card else None
        if chain:
            result[index] = replace(entry, lineage=tuple(chain))
    return result


def list_models(
    paths: Iterable[str | os.PathLike] = (), *, include_unusable: bool = True
) -> list[ModelEntry]:
    """Bundled models, then the user's, then ``paths``.

    Parameters
    ----------
    paths : iterable of path-like
        Extra model files (``.safetensors``/``.json``) to list, source ``"file"``.
    include_unusable : bool
        Also list broken and foreign files, with their ``problem``.

    Returns
    -------
    list of ModelEntry
        A model whose name is already taken by an earlier entry is marked unusable.
    """
    entries = bundled_entries()
    entries += scan_folder(user_models_dir(), "user")
    for path in paths:
        path = Path(path)
        if any(_same_file(path, entry.path) for entry in entries):
            continue  # already listed from a model folder
        if path.suffix.lower() in PICKLE_SUFFIXES:
            entries.append(foreign_entry(path, "file"))
        else:
            entries.append(entry_for(path, "file"))
    entries = _with_lineage_and_duplicates(entries)
    return entries if include_unusable else [e for e in entries if e.usable]


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same model (either file of a pair, or the stem)."""
    if a.suffix.lower() in PICKLE_SUFFIXES or b.suffix.lower() in PICKLE_SUFFIXES:
        return a.resolve() == b.resolve()
    return checkpoint_paths(a)[0].resolve() == checkpoint_paths(b)[0].resolve()


def model_choices() -> list[tuple[str, str]]:
    """``(label, name)`` of every usable model, for a model picker."""
    return [(entry.label, entry.name) for entry in list_models(include_unusable=False)]


def _is_path(name_or_path: str | os.PathLike) -> bool:
    if not isinstance(name_or_path, str):
        return True
    known = (WEIGHTS_SUFFIX, CARD_SUFFIX, *PICKLE_SUFFIXES, *PACKAGE_SUFFIXES)
    return "/" in name_or_path or os.sep in name_or_path or name_or_path.lower().endswith(known)


def find_model(name_or_path: str | os.PathLike) -> ModelEntry:
    """The entry for a registry name or a model file; :class:`ModelError` if there is none."""
    if _is_path(name_or_path):
        path = Path(name_or_path).expanduser()
        weights, card_file = checkpoint_paths(path)
        if not (path.exists() or weights.exists() or card_file.exists()):
            raise ModelError(f"No model file at {path}.")
        return next(entry for entry in list_models([path]) if _same_file(path, entry.path))
    entries = list_models()
    for entry in entries:
        if entry.name == name_or_path and entry.usable:
            return entry
    for entry in entries:
        if entry.name == name_or_path:
            return entry
    available = ", ".join(e.name for e in entries if e.usable) or "none yet"
    raise ModelError(
        f"No model named {name_or_path!r}. Available models: {available}. Run "
        "`microseg models` to list them, or give the path of a .safetensors file."
    )


def load_model(
    name_or_path: str | os.PathLike, device: str | torch.device | None = "auto"
) -> SegmentationModel:
    """Load a model by registry name or path, ready for inference.

    Parameters
    ----------
    name_or_path : str or path-like
        A name from :func:`list_models`, or a ``.safetensors``/``.json`` file.
    device : str or torch.device, optional
        ``"auto"`` picks CUDA, then MPS, then CPU; an unavailable GPU falls back
        to the CPU with a warning (see :func:`.device.select_device`).

    Returns
    -------
    SegmentationModel
        In eval mode on the chosen device.

    Raises
    ------
    ModelError
        For an unknown name, a missing, broken or foreign file; the message
        names the model and what to do.
    """
    entry = find_model(name_or_path)
    if not entry.usable:
        raise ModelError(f"Model {entry.name!r} cannot be used: {entry.problem}")
    try:
        if is_package(entry.path):
            from .bioimageio_runtime import load_package

            model = load_package(entry.path, device=device)
        else:
            model = load_checkpoint(entry.path, device=device)
    except ModelError as error:
        if entry.source != "bundled":
            raise
        from .bundled import REINSTALL_HINT

        # A damaged bundled file is the installation's fault, not the user's: say how to fix it.
        raise ModelError(
            f"{error} The file {entry.path} ships with napari-microseg: {REINSTALL_HINT}."
        ) from error
    log.info("Loaded model %r (%s) on %s", model.name, entry.source, model.device)
    return model


def _file_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    if not stem:
        raise ModelError(f"{name!r} cannot be used as a model name; use letters and digits.")
    return stem


def unique_model_name(base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... whichever no listed model uses yet."""
    taken = {entry.name for entry in list_models()}
    taken |= {p.stem for p in user_models_dir().glob(f"*{CARD_SUFFIX}")}
    name, number = base, 1
    while name in taken or _file_stem(name) in taken:
        number += 1
        name = f"{base}-{number}"
    return name


def _same_card(a: ModelCard, b: ModelCard) -> bool:
    """Equal apart from when and by which version they were written."""

    def content(card: ModelCard) -> dict[str, Any]:
        return {k: v for k, v in card.to_dict().items() if k not in ("created", "version")}

    return content(a) == content(b)


def save_user_model(
    model: SegmentationModel,
    name: str | None = None,
    *,
    folder: str | os.PathLike | None = None,
    overwrite: bool = False,
    dtype: str = "float32",
) -> Path:
    """Save ``model`` into the user's model folder, atomically.

    Parameters
    ----------
    model : SegmentationModel
        Network and card (set ``card.parent``, ``lineage`` and ``metrics`` first).
    name : str, optional
        Registry name; the card's name by default.
    folder : path-like, optional
        Defaults to :func:`user_models_dir`.
    overwrite : bool
        Replace a *different* model of the same name. Saving the very same
        weights and card again is always allowed and changes nothing.
    dtype : {"float32", "float16"}
        Storage type of the weights.

    Returns
    -------
    Path
        The weights file.

    Raises
    ------
    ModelError
        If a bundled model has this name, or a different user model has it and
        ``overwrite`` is False; :func:`unique_model_name` suggests a free name.
    """
    name = name or model.name
    target = Path(folder) if folder is not None else user_models_dir(create=True)
    target.mkdir(parents=True, exist_ok=True)
    payload, card = serialize(model, dtype=dtype, card=replace(model.card, name=name))
    weights, card_file = checkpoint_paths(target / _file_stem(name))
    for entry in list_models(include_unusable=False):
        if entry.name != name or entry.path.resolve() == weights.resolve():
            continue
        # Even with overwrite: a second file under a taken name would shadow nothing
        # and only confuse the list, and a bundled model is never replaced.
        raise ModelError(
            f"A {entry.source} model named {name!r} already exists ({entry.path}). Save "
            f"under another name, e.g. {unique_model_name(name)!r}."
        )
    if weights.exists() or card_file.exists():
        try:
            existing = inspect_checkpoint(weights)
            identical = existing.sha256 == hashlib.sha256(payload).hexdigest() and _same_card(
                existing.card, card
            )
        except ModelError:
            identical = False
        if identical:
            return weights
        if not overwrite:
            raise ModelError(
                f"A different model is already saved as {weights}. Save under another name, "
                f"e.g. {unique_model_name(name)!r}, or pass overwrite=True to replace it."
            )
    return write_checkpoint(payload, card, weights, dtype)
