"""The models shipped with napari-microseg: their names, targets, cards and install checks.

Bundled models live in ``napari_microseg/models/`` (see
:func:`~.registry.bundled_models_dir`) as float16 safetensors plus JSON card,
written by ``scripts/bundle_model.py``. Besides the model files the folder
holds ``_manifest.json``: the file names, sizes and SHA-256 of every bundled
model, so that an installation with a missing or damaged file says which file
and how to repair it, while the other models stay usable.

This module imports neither torch nor napari: the registry and the widgets
read it when listing models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import ModelCard

#: What to tell a user whose installation lacks a bundled file or has a damaged one.
REINSTALL_HINT = (
    "reinstall napari-microseg (pip install --force-reinstall napari-microseg) to repair it"
)
#: Name of the manifest in the bundled folder (a leading "_" keeps it out of model listings).
MANIFEST_NAME = "_manifest.json"
#: Largest bundled model (weights plus card), and all of them together, in MB (10**6 bytes).
MAX_MODEL_MB = 30.0
MAX_TOTAL_MB = 100.0


@dataclass(frozen=True)
class Target:
    """The validation target of issue #8 for one data set.

    Attributes
    ----------
    metric : str
        Column of ``microseg evaluate`` (:data:`~napari_microseg.core.evaluation.evaluate.COLUMNS`).
    label : str
        The metric in words.
    minimum : float
        The model meets the target when the mean over the validation images is at least this.
    """

    metric: str
    label: str
    minimum: float

    def met(self, value: float) -> bool:
        """Whether ``value`` reaches the target (NaN never does)."""
        return bool(not math.isnan(value) and value >= self.minimum)

    def as_dict(self, value: float) -> dict[str, Any]:
        """The card's ``metrics["target"]`` block for a measured ``value``."""
        return {
            "metric": self.metric,
            "label": self.label,
            "minimum": self.minimum,
            "value": float(value),
            "met": self.met(value),
            "source": "issue #8",
        }


#: Targets per data set kind (the layouts of :mod:`napari_microseg.core.training.datasets`).
TARGETS: dict[str, Target] = {
    "lucchi": Target("pixel_f1", "foreground Dice", 0.90),
    "isbi2012": Target("accuracy", "pixel accuracy", 0.967),
    "dsb2018": Target("ap_50_95", "mean AP over IoU 0.5-0.95", 0.40),
    "glas": Target("object_f1", "object F1", 0.88),
}


@dataclass(frozen=True)
class BundledSpec:
    """One model that napari-microseg means to ship.

    Attributes
    ----------
    name : str
        Registry name.
    kind : str
        Data set layout it is trained and evaluated on.
    architecture : str
        Family key of its card.
    summary : str
        One line for the documentation.
    """

    name: str
    kind: str
    architecture: str
    summary: str

    @property
    def target(self) -> Target:
        """The issue's target for this model's data set."""
        return TARGETS[self.kind]


#: The bundled models issue #8 asks for, in the order the documentation lists them.
BUNDLED: dict[str, BundledSpec] = {
    spec.name: spec
    for spec in (
        BundledSpec("mito-em", "lucchi", "unet", "U-Net, mitochondria in FIB-SEM (Lucchi++)"),
        BundledSpec("membrane-em", "isbi2012", "unet", "U-Net, cells / membranes, ssTEM (ISBI)"),
        BundledSpec("membrane-em-segnet", "isbi2012", "segnet", "SegNet, ssTEM membranes (ISBI)"),
        BundledSpec("nuclei-fluo", "dsb2018", "unet", "U-Net 3-class, nuclei (DSB 2018)"),
        BundledSpec("nuclei-maskrcnn", "dsb2018", "maskrcnn", "Mask R-CNN, nuclei (DSB 2018)"),
        BundledSpec("gland-he", "glas", "unet", "U-Net 3-class, glands in H&E (GlaS)"),
        BundledSpec("gland-he-micronet", "glas", "micronet", "Micro-Net, glands in H&E (GlaS)"),
    )
}

#: The bundled model that suits each sample of the plugin (``napari.yaml`` sample keys).
SAMPLE_MODELS: dict[str, str] = {
    "fibsem_mitochondria": "mito-em",
    "fluorescence_nuclei": "nuclei-fluo",
    "he_glands": "gland-he",
}

#: Bundled models to try first, by the kind of image (see :func:`guess_modality`).
PREFERENCES: dict[str, tuple[str, ...]] = {
    "EM": ("mito-em", "membrane-em", "membrane-em-segnet"),
    "fluorescence": ("nuclei-fluo", "nuclei-maskrcnn"),
    "brightfield": ("nuclei-fluo", "nuclei-maskrcnn"),
    "H&E": ("gland-he", "gland-he-micronet"),
}


# ----------------------------------------------------------------------------- card checks


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def card_problems(card: ModelCard) -> list[str]:
    """What a bundled model's card lacks; empty when it is complete.

    A complete card records the training data, settings, time, steps and
    hardware, the recommended tile size, overlap and post-processing, the CPU
    speed, the metrics on the validation split and the target of issue #8
    with whether it was met.

    Parameters
    ----------
    card : ModelCard

    Returns
    -------
    list of str
        One phrase per missing or malformed item.
    """
    problems = []
    lineage, recommended, metrics = card.lineage, card.recommended, card.metrics
    if not card.trained_on:
        problems.append("trained_on (the training data) is empty")
    if not card.description:
        problems.append("description is empty")
    if not card.modality:
        problems.append("modality is empty")
    dataset = lineage.get("dataset")
    if not (isinstance(dataset, dict) and dataset.get("kind") and dataset.get("description")):
        problems.append("lineage.dataset (kind and description of the training data) is missing")
    if not (isinstance(lineage.get("settings"), dict) and lineage["settings"]):
        problems.append("lineage.settings (the training settings) are missing")
    for key, what in (("duration_s", "training time"), ("steps", "training steps")):
        if not (_number(lineage.get(key)) and lineage[key] > 0):
            problems.append(f"lineage.{key} ({what}) is missing")
    if not lineage.get("hardware"):
        problems.append("lineage.hardware (what it was trained on) is missing")
    if not lineage.get("retrain_command"):
        problems.append("lineage.retrain_command is missing")
    tile = recommended.get("tile_size")
    if not (isinstance(tile, int) and not isinstance(tile, bool) and tile > 0):
        problems.append("recommended.tile_size is missing")
    if not _number(recommended.get("overlap")):
        problems.append("recommended.overlap is missing")
    post = recommended.get("postprocess")
    if not (isinstance(post, dict) and (card.task == "instance" or "method" in post)):
        problems.append("recommended.postprocess (the post-processing pipeline) is missing")
    if "tta" in recommended and not isinstance(recommended["tta"], bool):
        problems.append("recommended.tta (test-time augmentation by default) is not true or false")
    elif recommended.get("tta") and card.task == "instance":
        problems.append("recommended.tta is on, but an instance model cannot use it")
    if not (_number(recommended.get("mpx_per_s_cpu")) and recommended["mpx_per_s_cpu"] > 0):
        problems.append("recommended.mpx_per_s_cpu (CPU speed) is missing")
    speed = recommended.get("speed")
    if not (isinstance(speed, dict) and _number(speed.get("threads"))):
        problems.append("recommended.speed (how the speed was measured) is missing")
    if not (isinstance(metrics.get("data"), str) and metrics["data"]):
        problems.append("metrics.data (where the metrics were measured) is missing")
    validation = metrics.get("validation")
    if not (isinstance(validation, dict) and any(_number(v) for v in validation.values())):
        problems.append("metrics.validation (the evaluation on the validation split) is missing")
    target = metrics.get("target")
    if not (
        isinstance(target, dict)
        and target.get("metric")
        and _number(target.get("minimum"))
        and isinstance(target.get("met"), bool)
        and "value" in target
    ):
        problems.append("metrics.target (the issue's target and whether it was met) is missing")
    elif not _number(metrics.get(target["metric"])):
        problems.append(f"metrics.{target['metric']} (the target's metric) is missing")
    return problems


# ----------------------------------------------------------------------------- manifest


def read_manifest(folder: str | Path) -> dict[str, dict[str, Any]]:
    """The bundled folder's manifest: name -> ``{"weights", "card", "sha256", "weights_bytes"}``.

    A missing or unreadable manifest gives ``{}`` (a development checkout, or a
    damage that the per-file checks report).
    """
    path = Path(folder) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        return {}
    return {
        str(name): item
        for name, item in models.items()
        if isinstance(item, dict) and isinstance(item.get("weights"), str)
    }


def manifest_text(models: dict[str, dict[str, Any]]) -> str:
    """The JSON text of a manifest listing ``models`` (sorted, so diffs stay small)."""
    body = {
        "about": "Files of the models bundled with napari-microseg; written by "
        "scripts/bundle_model.py. Do not edit by hand.",
        "models": {name: models[name] for name in sorted(models)},
    }
    return json.dumps(body, indent=2) + "\n"


def manifest_problem(folder: Path, name: str, item: dict[str, Any]) -> str:
    """Why a bundled model listed in the manifest is not installed intact; empty when it is.

    Only presence and the size of the weights are checked (no hashing: listing
    stays fast); the SHA-256 of the weights is checked when the model is loaded.
    A card may be edited by hand, so only its presence counts.
    """
    for key in ("weights", "card"):
        file_name = item.get(key)
        if not isinstance(file_name, str):
            continue
        path = folder / file_name
        if not path.is_file():
            return f"the bundled file {path} is missing from this installation; {REINSTALL_HINT}."
        expected = item.get("weights_bytes") if key == "weights" else None
        if isinstance(expected, int) and path.stat().st_size != expected:
            return (
                f"the bundled file {path} is damaged ({path.stat().st_size} bytes instead of "
                f"{expected}); {REINSTALL_HINT}."
            )
    return ""


# ----------------------------------------------------------------------------- suggestions


def guess_modality(
    channels: int,
    *,
    spatial_ndim: int = 2,
    pixel_size_um: float | None = None,
    sample: Any = None,
) -> str:
    """The kind of image, for choosing a default model.

    ``"EM"``, ``"fluorescence"``, ``"brightfield"`` (grey, bright background) or ``"H&E"``.

    Parameters
    ----------
    channels : int
        3 (RGB) means a stained brightfield image (H&E).
    spatial_ndim : int
        3 for a stack: greyscale stacks are taken for volume EM unless their
        intensities say otherwise.
    pixel_size_um : float, optional
        Pixel size in µm when known: below 0.05 µm only EM resolves anything,
        above 0.1 µm it is light microscopy.
    sample : array-like, optional
        Some of the image's pixels (a slice), scaled to its 1st-99.8th
        percentiles: a median below 0.25 (dark background, bright objects) is
        fluorescence, above 0.8 grey brightfield; EM is mid-grey throughout.

    Returns
    -------
    str
    """
    if channels == 3:
        return "H&E"
    if pixel_size_um is not None and pixel_size_um > 0:
        if pixel_size_um < 0.05:
            return "EM"
        if pixel_size_um > 0.1:
            return "fluorescence"
    if sample is not None:
        import numpy as np

        from ..inference.illumination import DARK_BACKGROUND_MEDIAN, scaled_median

        values = np.asarray(sample, dtype=np.float32).ravel()
        values = values[np.isfinite(values)]
        if values.size:
            step = max(1, values.size // 65536)
            median = scaled_median(values[::step])
            if median is not None:
                if median < DARK_BACKGROUND_MEDIAN:
                    return "fluorescence"
                return "brightfield" if median > 0.8 else "EM"
    return "EM" if spatial_ndim == 3 else "fluorescence"


def suggest_model(
    entries: Iterable[Any],
    *,
    channels: int,
    spatial_ndim: int = 2,
    pixel_size_um: float | None = None,
    sample: Any = None,
) -> str | None:
    """The name of the usable bundled model best suited to an image, or None.

    Parameters
    ----------
    entries : iterable of ModelEntry
        The registry's list (only usable bundled models are considered).
    channels, spatial_ndim, pixel_size_um, sample
        Describe the image; see :func:`guess_modality`.

    Returns
    -------
    str or None
        None when no usable bundled model takes ``channels`` input channels and
        suits the kind of image.
    """
    usable = [
        e for e in entries if e.source == "bundled" and e.usable and e.in_channels == channels
    ]
    if not usable:
        return None
    by_name = {e.name: e for e in usable}
    modality = guess_modality(
        channels, spatial_ndim=spatial_ndim, pixel_size_um=pixel_size_um, sample=sample
    )
    for name in PREFERENCES.get(modality, ()):
        if name in by_name:
            return name
    for entry in usable:
        if modality.lower() in (entry.modality or "").lower():
            return entry.name
    return None


def missing_bundled(names: Sequence[str]) -> list[str]:
    """The names of :data:`BUNDLED` that ``names`` lacks."""
    return [name for name in BUNDLED if name not in set(names)]
