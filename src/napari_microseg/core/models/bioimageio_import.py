"""Import a bioimage.io model package into the user's model folder.

A package whose weights are a state dict of one of our architectures, with the
activation our models apply (softmax, or sigmoid for one class), becomes an
ordinary model of ours (safetensors + card): it can be fine-tuned like any
other. Any other package we can run (TorchScript, or processing our cards do
not express) is copied as ``<name>.bioimageio.zip``, its description naming it,
and runs through :mod:`.bioimageio_runtime`. Either way its weights are loaded
once first, safely, so a package that cannot run is refused with the reason
instead of being listed.

The card records where the model came from (``lineage["bioimageio"]``); a
package we exported carries our full card, so parent, lineage and metrics of a
fine-tuned model survive the round trip.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from .base import ModelError
from .bioimageio_package import CONFIG_KEY, RDF_NAMES, open_package, plan_package
from .bioimageio_runtime import load_plan
from .registry import list_models, save_user_model, unique_model_name, user_models_dir
from .versions import now_iso

__all__ = ["PACKAGE_SUFFIX", "import_bioimageio"]

#: How a copied package is named in the user's model folder.
PACKAGE_SUFFIX = ".bioimageio.zip"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_bioimageio(
    source: str | os.PathLike,
    name: str | None = None,
    *,
    folder: str | os.PathLike | None = None,
) -> Path:
    """Import a locally downloaded bioimage.io package; return the file the registry lists.

    Parameters
    ----------
    source : path-like
        The package ``.zip``, or its ``rdf.yaml``/``bioimageio.yaml`` next to its files.
    name : str, optional
        Registry name; the package's own (ours, for a package we exported) by default.
    folder : path-like, optional
        Where to put it; the user's model folder by default.

    Returns
    -------
    Path
        The ``.safetensors`` file of a converted model, or the copied ``.zip``.

    Raises
    ------
    ModelError
        If the package cannot be run (the message names why: spec version, weights
        format, missing file, checksum, unsafe content, axes or processing), or the
        name is taken (a free one is suggested).
    """
    package = open_package(source)
    plan = plan_package(package)
    name = (name or plan.card.name).strip()
    taken = [entry for entry in list_models(include_unusable=False) if entry.name == name]
    if taken:
        raise ModelError(
            f"A model named {name!r} already exists ({taken[0].path}); import under another "
            f"name, e.g. {unique_model_name(name)!r}."
        )
    model = load_plan(package, plan)  # loads and checks the weights before anything is kept
    package_hash = _sha256(package.path) if package.path.suffix.lower() == ".zip" else None
    provenance: dict[str, Any] = {
        "package": package.path.name,
        "package_sha256": package_hash,
        "id": package.rdf.get("id"),
        "name": package.rdf.get("name"),
        "format_version": package.rdf.get("format_version"),
        "weights_format": plan.weights_format,
        "imported": now_iso(),
    }
    target = Path(folder) if folder is not None else user_models_dir(create=True)
    target.mkdir(parents=True, exist_ok=True)
    if plan.native:
        lineage = {**model.card.lineage, "bioimageio": provenance}
        model.card = replace(model.card, name=name, lineage=lineage)
        return save_user_model(model, name, folder=target)
    return _copy_package(package.path, package.rdf, name, provenance, target)


def _copy_package(
    source: Path, rdf: dict[str, Any], name: str, provenance: dict[str, Any], folder: Path
) -> Path:
    """Copy the package as ``<name>.bioimageio.zip``, its description naming the model."""
    from ..io.atomic import atomic_path
    from .entries import scan_folder

    stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).strip("._") or "model"
    dest = folder / f"{stem}{PACKAGE_SUFFIX}"
    if dest.exists() or any(e.name == name for e in scan_folder(folder, "user")):
        raise ModelError(f"{dest} already exists; import under another name.")
    config = dict(rdf.get("config") or {})
    config[CONFIG_KEY] = {
        **(config.get(CONFIG_KEY) or {}),
        "registry_name": name,
        "imported": provenance,
    }
    text = yaml.safe_dump({**rdf, "config": config}, sort_keys=False, allow_unicode=True)
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("rdf.yaml", text)
        if source.suffix.lower() == ".zip":
            with zipfile.ZipFile(source) as archive:
                for member in archive.infolist():
                    if member.filename not in RDF_NAMES and not member.is_dir():
                        out.writestr(member, archive.read(member))
        else:
            # Only the files the description names: the YAML may sit in a big folder.
            for relative in sorted(_named_files(rdf)):
                path = source.parent / relative
                if path.is_file() and relative not in RDF_NAMES:
                    out.write(path, relative)
    return dest


def _named_files(node: Any) -> set[str]:
    """Every relative file name in a description (sources, documentation, covers...)."""
    if isinstance(node, dict):
        return set().union(*(_named_files(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_named_files(v) for v in node)) if node else set()
    if isinstance(node, str) and "://" not in node and "\n" not in node and len(node) < 256:
        cleaned = node.replace("\\", "/").lstrip("./")
        if cleaned and not cleaned.startswith("/") and "." in cleaned.rsplit("/", 1)[-1]:
            return {cleaned}
    return set()
