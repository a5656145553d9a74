"""Rows of the model list: what a model file is, read without torch or weights.

:func:`scan_folder` describes every file of a model folder. Whatever a user
drops there (a damaged download, a Keras file, a pickle) becomes an entry
whose ``problem`` says why it cannot be used; nothing raises.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import ModelCard
from .bioimageio_package import describe_package, is_package
from .build import get_architecture
from .checkpoint import (
    CARD_SUFFIX,
    PICKLE_SUFFIXES,
    WEIGHTS_SUFFIX,
    checkpoint_paths,
    inspect_checkpoint,
)

#: Files in model folders that are not models and are not listed.
_IGNORED_SUFFIXES = {".md", ".txt", ".rst", ".py", ".pyc", ".lock"}
_CHANNEL_MODALITY = {1: "greyscale (EM, fluorescence)", 3: "RGB (H&E, brightfield)"}


@dataclass(frozen=True)
class ModelEntry:
    """One row of the model list.

    Attributes
    ----------
    name : str
        Registry name (the card's name; the file stem for unusable files).
    source : {"bundled", "user", "file"}
        Where it was found.
    path : Path
        Its weights file (or the offending file).
    family : str
        Architecture key (``"unet"`` ...).
    modality : str
        Imaging modality, or a description of the input channels.
    in_channels : int or None
        Input channels C.
    task : str
        ``"semantic"`` or ``"instance"``.
    classes : tuple of str
        Output classes.
    size_mb : float
        Size on disk in MB (10**6 bytes).
    dtype : str
        Storage type of the weights.
    lineage : tuple of str
        Parent, grandparent, ... names (empty for a model trained from scratch).
    metrics : dict
        The card's metrics, with the data they were measured on.
    description : str
        The card's free text.
    problem : str
        Why the model cannot be used; empty when it can.
    card : ModelCard or None
        The full card, when readable.
    """

    name: str
    source: str
    path: Path
    family: str = ""
    modality: str = ""
    in_channels: int | None = None
    task: str = ""
    classes: tuple[str, ...] = ()
    size_mb: float = 0.0
    dtype: str = ""
    lineage: tuple[str, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict, compare=False)
    description: str = ""
    problem: str = ""
    card: ModelCard | None = field(default=None, compare=False, repr=False)

    @property
    def usable(self) -> bool:
        """True when the model can be loaded."""
        return not self.problem

    @property
    def size_text(self) -> str:
        """The size in MB, with two significant digits below 1 MB."""
        return f"{self.size_mb:.1f}" if self.size_mb >= 0.95 else f"{self.size_mb:.2g}"

    @property
    def label(self) -> str:
        """One line for a model picker."""
        if not self.usable:
            return f"{self.name} (unusable: {self.problem})"
        return f"{self.name} — {self.family}, {self.modality}, {self.size_text} MB"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (for ``microseg models --json``)."""
        return {
            "name": self.name,
            "source": self.source,
            "path": str(self.path),
            "family": self.family,
            "modality": self.modality,
            "in_channels": self.in_channels,
            "task": self.task,
            "classes": list(self.classes),
            "size_mb": round(self.size_mb, 3),
            "dtype": self.dtype,
            "lineage": list(self.lineage),
            "metrics": self.metrics,
            "description": self.description,
            "usable": self.usable,
            "problem": self.problem,
        }


def entry_for(path: Path, source: str) -> ModelEntry:
    """Describe one model file; any failure becomes the entry's ``problem``."""
    if is_package(path):
        return package_entry(path, source)
    try:
        info = inspect_checkpoint(path)
        card = info.card
        get_architecture(card.architecture, model_name=card.name)
    # A listing must survive any file a user drops in the folder; the reason is shown.
    except Exception as error:
        weights, _ = checkpoint_paths(path)
        return ModelEntry(name=weights.stem, source=source, path=path, problem=str(error))
    return ModelEntry(
        name=card.name,
        source=source,
        path=info.weights,
        family=card.architecture,
        modality=card.modality or _CHANNEL_MODALITY.get(card.in_channels, f"{card.in_channels} ch"),
        in_channels=card.in_channels,
        task=card.task,
        classes=tuple(card.classes),
        size_mb=info.size_bytes / 1e6,
        dtype=info.dtype,
        metrics=dict(card.metrics),
        description=card.description,
        card=card,
    )


def package_entry(path: Path, source: str) -> ModelEntry:
    """Describe a bioimage.io package (``.zip``/``rdf.yaml``); a broken one gets its reason."""
    name, plan, problem, size = describe_package(path)
    if plan is None:
        return ModelEntry(name=name, source=source, path=path, family="bioimageio", problem=problem)
    card = plan.card
    return ModelEntry(
        name=card.name,
        source=source,
        path=path,
        family=card.architecture,
        modality=card.modality or _CHANNEL_MODALITY.get(card.in_channels, f"{card.in_channels} ch"),
        in_channels=card.in_channels,
        task=card.task,
        classes=tuple(card.classes),
        size_mb=size / 1e6,
        dtype="float32",
        metrics=dict(card.metrics),
        description=card.description,
        card=card,
    )


def foreign_entry(path: Path, source: str) -> ModelEntry:
    """An unusable entry for a file that is not in our format."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        problem = (
            f"{path.name} is a PyTorch pickle checkpoint; these are never loaded automatically "
            "because they can run code. Convert it with `microseg models import`."
        )
    else:
        problem = (
            f"{path.name} is not a napari-microseg model (expected a .safetensors file with "
            "its .json card)."
        )
    return ModelEntry(name=path.stem, source=source, path=path, problem=problem)


def scan_folder(folder: str | os.PathLike, source: str) -> list[ModelEntry]:
    """List every model file in ``folder`` (not recursive); a missing folder gives ``[]``."""
    folder = Path(folder)
    try:
        files = sorted(
            p
            for p in folder.iterdir()
            if p.is_file()
            and not p.name.startswith((".", "_"))
            and p.suffix.lower() not in _IGNORED_SUFFIXES
        )
    except OSError:  # absent, not a folder, or unreadable
        return []
    entries, claimed = [], set()
    # Cards first; their weights files are then not listed again.
    for path in (p for p in files if p.suffix.lower() == CARD_SUFFIX):
        entries.append(entry_for(path, source))
        claimed.update({path, checkpoint_paths(path)[0]})
    for path in files:
        if path in claimed:
            continue
        if path.suffix.lower() == WEIGHTS_SUFFIX or is_package(path):
            entries.append(entry_for(path, source))
        else:
            entries.append(foreign_entry(path, source))
    return entries
