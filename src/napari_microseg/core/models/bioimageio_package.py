"""Read a bioimage.io model package and decide how (and whether) we can run it.

A package is a ``.zip`` with an ``rdf.yaml`` (or ``bioimageio.yaml``) at its top, or
that YAML file in a folder next to the files it names. Reading one needs only
PyYAML: no torch, no ``bioimageio`` library, and no weights are loaded, so the
model list stays fast and a broken package only becomes an entry with a reason.

:func:`plan_package` turns a spec 0.5 description (0.4 ones are converted with
``bioimageio.spec`` when it is installed) into an :class:`ImportPlan`: the
:class:`ModelCard` (preprocessing as our normalization, postprocessing as the
activation or recommended post-processing, tile size and overlap from the axes'
sizes and halo) and the network to run: a PyTorch state dict for one of our
architectures, or TorchScript. Anything we cannot honour raises
:class:`ModelError` naming it.
"""

from __future__ import annotations

import hashlib
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .base import ModelCard, ModelError

__all__ = [
    "CONFIG_KEY",
    "FAMILY_CALLABLES",
    "MISSING_EXTRA",
    "PACKAGE_SUFFIXES",
    "ImportPlan",
    "Package",
    "check_weights",
    "describe_package",
    "is_package",
    "open_package",
    "plan_package",
]

#: Key of our block in a package's ``config``: the full card, and the registry name.
CONFIG_KEY = "napari_microseg"
#: The end of a message about a missing optional dependency.
MISSING_EXTRA = (
    "needs the optional bioimage.io packages: pip install 'napari-microseg[bioimageio]'."
)
#: File names of a package's description.
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: Endings of files that may be packages: a zip, or a description next to its files.
PACKAGE_SUFFIXES = (".zip", ".yaml", ".yml")
#: Our families as an architecture's ``callable``: module and class.
FAMILY_CALLABLES = {
    "unet": ("unet", "UNet"),
    "segnet": ("segnet", "SegNet"),
    "micronet": ("micronet", "MicroNet"),
}
#: Tile side we aim at when a package allows many (our default tile).
PREFERRED_TILE = 256
_NORMALIZERS = {
    "scale_range",
    "zero_mean_unit_variance",
    "fixed_zero_mean_unit_variance",
    "scale_linear",
}
#: Postprocessing applied pixel by pixel, so it may run tile by tile inside the network.
ELEMENTWISE_POST = {"sigmoid", "softmax", "clip", "scale_linear", "ensure_dtype"}


@dataclass
class Package:
    """An opened package: its description and a way to read the files it names."""

    path: Path
    rdf: dict[str, Any]
    members: dict[str, Path | str] = field(default_factory=dict, repr=False)
    size_bytes: int = 0

    def has(self, name: str) -> bool:
        """Whether the package holds the file ``name`` (a relative source)."""
        return _clean(name) in self.members

    def read(self, name: str) -> bytes:
        """The bytes of the file ``name``; :class:`ModelError` if it is missing."""
        key = _clean(name)
        where = self.members.get(key)
        if where is None:
            raise ModelError(
                f"The package {self.path.name} names the file {name!r}, but that file is "
                "missing from it. Download the package again."
            )
        if isinstance(where, Path):
            return where.read_bytes()
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(where)


def _clean(name: str) -> str:
    return str(name).replace("\\", "/").lstrip("./")


def is_package(path: str | Path) -> bool:
    """Whether ``path`` may be a bioimage.io package (by its name: a zip or a YAML file)."""
    return Path(path).suffix.lower() in PACKAGE_SUFFIXES


def open_package(path: str | Path) -> Package:
    """Read a package's description; :class:`ModelError` naming the problem otherwise."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"No bioimage.io package at {path}.")
    members: dict[str, Path | str] = {}
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if not n.endswith("/")]
                rdf_name = next((n for n in RDF_NAMES if n in names), None)
                if rdf_name is None:
                    raise ModelError(
                        f"{path.name} is a zip file but not a bioimage.io package: it has no "
                        "rdf.yaml (or bioimageio.yaml) at its top."
                    )
                text = archive.read(rdf_name)
                members = {n: n for n in names}
        except (zipfile.BadZipFile, OSError) as error:
            raise ModelError(f"{path.name} is not a readable zip file ({error}).") from error
        size = path.stat().st_size
    else:
        text = path.read_bytes()
        folder = path.parent
        members = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
        size = sum(p.stat().st_size for p in members.values() if isinstance(p, Path))
    try:
        rdf = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ModelError(f"The description of {path.name} is not valid YAML ({error}).") from error
    if not isinstance(rdf, dict):
        raise ModelError(f"The description of {path.name} is not a YAML mapping.")
    return Package(path, rdf, members, size)


def registry_name(package: Package) -> str:
    """The name the model is listed under: ours when we imported it, else the package's."""
    ours = (package.rdf.get("config") or {}).get(CONFIG_KEY) or {}
    name = ours.get("registry_name") or (ours.get("card") or {}).get("name")
    if not name:
        name = str(package.rdf.get("id") or package.rdf.get("name") or package.path.stem)
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._").lower()
    return str(name or package.path.stem)


def spec_05(package: Package) -> dict[str, Any]:
    """The description in spec 0.5 form; 0.4 is converted, anything else refused."""
    rdf = package.rdf
    kind = rdf.get("type")
    version = str(rdf.get("format_version", ""))
    if kind != "model":
        raise ModelError(
            f"{package.path.name} describes a bioimage.io {kind or 'resource'!s}, not a model."
        )
    if re.fullmatch(r"0\.5(\.\d+)?", version):
        return rdf
    if not re.fullmatch(r"0\.4(\.\d+)?", version):
        raise ModelError(
            f"{package.path.name} uses bioimage.io spec version {version or '(none)'!r}, which "
            "napari-microseg does not know; it reads model specs 0.4 and 0.5."
        )
    try:
        from bioimageio.spec import dump_description, update_format
    except ImportError as error:
        raise ModelError(f"Reading the spec 0.4 package {package.path.name} {MISSING_EXTRA}") from (
            error
        )
    updated = update_format(dict(rdf), perform_io_checks=False)
    if getattr(updated, "type", None) != "model" or type(updated).__name__ == "InvalidDescr":
        raise ModelError(
            f"{package.path.name} (spec {version}) could not be converted to spec 0.5; it "
            "may be invalid."
        )
    return dump_description(updated)


@dataclass
class ImportPlan:
    """How to run a package with our tiler.

    Attributes
    ----------
    card : ModelCard
        What the rest of napari-microseg needs to know.
    weights_format : {"pytorch_state_dict", "torchscript"}
        The weights we load.
    weights_file : str
        Their file in the package.
    sha256 : str or None
        Their expected hash.
    family : str or None
        Our architecture, for state dicts we can build.
    native : bool
        The model can be stored as one of our own (safetensors + card) unchanged.
    input_axes, output_axes : str
        Axis letters of the network's tensors (``b``, ``c``, ``z``, ``y``, ``x``).
    sizes : dict
        Axis letter -> (min, step) of sizes the network accepts (step 0: fixed).
    z_slices : int
        Slices given to a 3D network per predicted plane (0 for 2D).
    post : list of (str, dict)
        Elementwise postprocessing run after the network, in order.
    """

    card: ModelCard
    weights_format: str
    weights_file: str
    sha256: str | None
    family: str | None = None
    native: bool = False
    input_axes: str = "bcyx"
    output_axes: str = "bcyx"
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    z_slices: int = 0
    post: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def check_weights(package: Package, plan: ImportPlan) -> bytes:
    """The weights' bytes, after checking they are there and match their SHA-256."""
    if not package.has(plan.weights_file):
        raise ModelError(
            f"The weights file {plan.weights_file!r} named in the description of "
            f"{package.path.name} is missing from the package. Download it again."
        )
    data = package.read(plan.weights_file)
    if plan.sha256 and hashlib.sha256(data).hexdigest() != str(plan.sha256).lower():
        raise ModelError(
            f"Checksum mismatch in {package.path.name}: {plan.weights_file} has SHA-256 "
            f"{hashlib.sha256(data).hexdigest()[:16]}…, its description says "
            f"{str(plan.sha256)[:16]}…. The file was damaged or replaced; download it again."
        )
    return data


def _axes(tensor: dict[str, Any], where: str) -> list[dict[str, Any]]:
    axes = tensor.get("axes")
    if not isinstance(axes, list) or not all(isinstance(a, dict) for a in axes):
        raise ModelError(f"{where} has no readable axes.")
    return axes


def _letter(axis: dict[str, Any], where: str) -> str:
    kind = axis.get("type")
    if kind in ("batch", "channel"):
        return kind[0]
    if kind == "space" and str(axis.get("id", "x")) in ("x", "y", "z"):
        return str(axis.get("id", "x"))
    raise ModelError(
        f"{where} has a {kind} axis {axis.get('id', '')!r}; napari-microseg runs models on "
        "space (z, y, x), channel and batch axes only."
    )


def _size(axis: dict[str, Any]) -> tuple[int, int]:
    size = axis.get("size")
    if isinstance(size, int):
        return size, 0
    if isinstance(size, dict) and "min" in size:
        return int(size["min"]), int(size.get("step", 0))
    if axis.get("type") == "channel":
        return len(axis.get("channel_names") or []) or 1, 0
    return 1, 1  # any size


def _valid_at_least(size: tuple[int, int], wanted: int) -> int:
    low, step = size
    if step <= 0 or wanted <= low:
        return low
    return low + step * math.ceil((wanted - low) / step)


def _normalization(steps: list[dict[str, Any]], channels: int, where: str) -> dict[str, Any]:
    """Spec preprocessing as our normalization (see inference.normalize)."""
    steps = [s for s in steps if s.get("id") != "ensure_dtype"]
    spec: dict[str, Any] = {"kind": "none"}
    for index, step in enumerate(steps):
        op, kwargs = step.get("id"), step.get("kwargs") or {}
        per_channel = channels > 1 and "channel" not in (kwargs.get("axes") or ["channel"])
        if op in _NORMALIZERS and index == 0:
            if op == "scale_range":
                # A reference_tensor can only be the one input: our models have one.
                spec = {
                    "kind": "percentile",
                    "low": float(kwargs.get("min_percentile", 0.0)),
                    "high": float(kwargs.get("max_percentile", 100.0)),
                }
            elif op == "zero_mean_unit_variance":
                spec = {"kind": "zscore"}
            else:
                a, b = ("mean", "std") if op.startswith("fixed") else ("offset", "gain")
                first, second = kwargs.get(a, 0.0), kwargs.get(b, 1.0)
                if isinstance(first, list) or isinstance(second, list):
                    raise ModelError(f"{where}: per-channel {op} is not supported.")
                if op.startswith("fixed"):
                    low, high = float(first), float(first) + float(second)
                else:  # out = gain * x + offset: 0 at -offset/gain, 1 at (1 - offset)/gain
                    if float(second) <= 0:
                        raise ModelError(f"{where}: scale_linear with gain <= 0 is not supported.")
                    low, high = -float(first) / float(second), (1 - float(first)) / float(second)
                spec = {"kind": "range", "min": low, "max": high}
            if per_channel and spec["kind"] in ("percentile", "zscore"):
                spec["per_channel"] = True
        elif (
            op == "clip"
            and index == len(steps) - 1
            and (kwargs.get("min"), kwargs.get("max")) == (0.0, 1.0)
            and spec["kind"] != "none"
        ):
            spec["clip"] = True
        else:
            raise ModelError(f"{where}: preprocessing {op!r} is not supported here.")
    return spec


def plan_package(package: Package) -> ImportPlan:
    """How we run ``package``; :class:`ModelError` saying why we cannot."""
    rdf = spec_05(package)
    name = registry_name(package)
    where = f"The bioimage.io model {package.path.name}"
    inputs = [t for t in rdf.get("inputs") or [] if not t.get("optional")]
    outputs = rdf.get("outputs") or []
    if len(inputs) != 1 or not outputs:
        raise ModelError(
            f"{where} has {len(inputs)} required inputs and {len(outputs)} outputs; "
            "napari-microseg runs models with one input image and a probability output."
        )
    in_axes, out_axes = _axes(inputs[0], where), _axes(outputs[0], where)
    input_letters = "".join(_letter(a, where) for a in in_axes)
    output_letters = "".join(_letter(a, where) for a in out_axes)
    if {"y", "x"} - set(input_letters) or set(output_letters) - {"b", "c"} != set(input_letters) - {
        "b",
        "c",
    }:
        raise ModelError(
            f"{where} maps axes {input_letters} to {output_letters}; napari-microseg needs "
            "y and x in, and the same space axes out (a semantic segmentation)."
        )
    for axis in out_axes:
        size = axis.get("size")
        if axis.get("type") == "space" and not (
            isinstance(size, dict)
            and size.get("axis_id") == axis.get("id")
            and not size.get("offset")
        ):
            raise ModelError(f"{where}: its output is not the size of its input.")
    sizes = {_letter(a, where): _size(a) for a in in_axes if a.get("type") != "batch"}
    channels = sizes.get("c", (1, 0))[0]
    out_channel = next((a for a in out_axes if a.get("type") == "channel"), None)
    classes = [str(c) for c in (out_channel or {}).get("channel_names") or []] or (
        [f"class_{k}" for k in range(_size(out_channel)[0])] if out_channel else ["foreground"]
    )
    normalization = _normalization(inputs[0].get("preprocessing") or [], channels, where)
    post = [(s.get("id"), s.get("kwargs") or {}) for s in outputs[0].get("postprocessing") or []]
    recommended: dict[str, Any] = {}
    if post and post[-1][0] == "binarize":
        threshold = post.pop()[1].get("threshold")
        if not isinstance(threshold, int | float):
            raise ModelError(f"{where}: per-channel binarize is not supported.")
        recommended["postprocess"] = {
            "method": "threshold",
            "threshold": float(threshold),
            "foreground_class": 1 if len(classes) > 1 else 0,
        }
    bad = [op for op, _ in post if op not in ELEMENTWISE_POST]
    if bad:
        raise ModelError(f"{where}: postprocessing {bad[0]!r} is not supported here.")
    post = [(op, kwargs) for op, kwargs in post if op != "ensure_dtype"]
    halos = {
        _letter(a, where): int(a.get("halo") or 0) for a in out_axes if a.get("type") == "space"
    }
    z_slices = 0
    if "z" in sizes:
        z_slices = _valid_at_least(sizes["z"], 2 * halos.get("z", 0) + 1)
    if sizes["y"][1] > 0 or sizes["y"][0] > 1:
        tile = _valid_at_least(sizes["y"], PREFERRED_TILE)
        recommended["tile_size"] = tile
        if halos.get("y"):
            recommended["overlap"] = round(min(0.5, 2 * halos["y"] / tile), 4)
    weights = rdf.get("weights") or {}
    plan_kwargs: dict[str, Any] = {}
    family = None
    hyper: dict[str, Any] = {}
    state = weights.get("pytorch_state_dict")
    if isinstance(state, dict):
        arch = state.get("architecture") or {}
        family = next(
            (k for k, (_, c) in FAMILY_CALLABLES.items() if c == arch.get("callable")), None
        )
        hyper = dict(arch.get("kwargs") or {})
        in_ch, n_cls = hyper.pop("in_channels", channels), hyper.pop("n_classes", len(classes))
        if family is None or in_ch != channels or n_cls != len(classes) or "z" in sizes:
            family = None
    if family is not None:
        plan_kwargs = {
            "weights_format": "pytorch_state_dict",
            "weights_file": state["source"],
            "sha256": state.get("sha256"),
        }
    elif isinstance(weights.get("torchscript"), dict):
        entry = weights["torchscript"]
        plan_kwargs = {
            "weights_format": "torchscript",
            "weights_file": entry.get("source", ""),
            "sha256": entry.get("sha256"),
        }
    else:
        formats = ", ".join(sorted(weights)) or "none"
        why = " (its architecture is not one napari-microseg can build)" if state else ""
        raise ModelError(
            f"{where} has weights in {formats}{why}; napari-microseg runs PyTorch state dicts "
            "of its own architectures and TorchScript, never TensorFlow, Keras or ONNX."
        )
    context = (z_slices // 2) if z_slices else 0
    ours = (rdf.get("config") or {}).get(CONFIG_KEY) or {}
    card_data = dict(ours.get("card") or {})
    # A package we exported carries our whole card: lineage, metrics and recommendations
    # survive; what the spec itself says (axes, processing, weights) comes from the spec.
    base = card_data if isinstance(card_data.get("recommended", {}), dict) else {}
    card = ModelCard.from_dict(
        {
            **base,
            "name": name,
            "architecture": family or plan_kwargs["weights_format"],
            "hyperparameters": hyper if family else {},
            "in_channels": channels * (2 * context + 1 if z_slices else 1),
            "classes": classes,
            "task": "semantic",
            "normalization": normalization,
            "context_slices": context,
            "pixel_size_um": base.get("pixel_size_um") or _pixel_size(in_axes),
            "recommended": {**recommended, **(base.get("recommended") or {})},
            "description": base.get("description") or str(rdf.get("description", "")),
            "trained_on": base.get("trained_on") or _training_data(rdf),
            "modality": base.get("modality")
            or str(((rdf.get("config") or {}).get("bioimageio") or {}).get("modality") or ""),
        },
        source=f"The description of {package.path.name}",
    )
    n_classes = len(classes)
    native = bool(family) and [op for op, _ in post] == (
        ["softmax"] if n_classes > 1 else ["sigmoid"]
    )
    return ImportPlan(
        card=card,
        family=family,
        native=native,
        input_axes=input_letters,
        output_axes=output_letters,
        sizes=sizes,
        z_slices=z_slices,
        post=post,
        **plan_kwargs,
    )


def _pixel_size(axes: list[dict[str, Any]]) -> float | None:
    units = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3}
    for axis in axes:
        if axis.get("id") == "x" and axis.get("unit") in units:
            return float(axis.get("scale", 1.0)) * units[axis["unit"]]
    return None


def _training_data(rdf: dict[str, Any]) -> str:
    data = rdf.get("training_data")
    if isinstance(data, dict):
        return str(data.get("name") or data.get("id") or "")
    return ""


def describe_package(path: str | Path) -> tuple[str, ImportPlan | None, str, int]:
    """``(name, plan, problem, size in bytes)`` of a package for the model list; never raises.

    Only names and sizes are checked here (hashing every package on every listing
    would make the list slow); the SHA-256 is checked when the model loads.
    """
    name = Path(path).stem
    try:
        package = open_package(path)
        name = registry_name(package)
        plan = plan_package(package)
        if not package.has(plan.weights_file):
            check_weights(package, plan)
    # Whatever a downloaded file holds, the list shows it with the reason.
    except Exception as error:
        return name, None, str(error), 0
    return plan.card.name, plan, "", package.size_bytes
