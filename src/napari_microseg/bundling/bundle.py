"""Evaluate a trained model on the validation split its training used, and bundle it.

Used by ``scripts/bundle_model.py`` (which adds the speed benchmark, runs
``microseg evaluate`` and writes the documentation) and by the tests.

The validation split comes from :mod:`.split`, which rebuilds it with
the training code itself.

The shipped weights are float16: the model is rounded to float16 before it
is evaluated, so the metrics are those of the file users get.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.inference.options import DEFAULTS, PredictOptions
from ..core.io.atomic import atomic_path
from ..core.models.base import ModelCard, ModelError, SegmentationModel
from ..core.models.bundled import (
    MANIFEST_NAME,
    MAX_MODEL_MB,
    MAX_TOTAL_MB,
    TARGETS,
    Target,
    manifest_text,
    read_manifest,
)
from .split import BundleError, ValidationSplit

# ----------------------------------------------------------------------------- predictions


def predict_split(
    model: SegmentationModel,
    split: ValidationSplit,
    pred_dir: str | os.PathLike,
    truth_dir: str | os.PathLike,
    *,
    device: str = "auto",
    show: bool = False,
) -> list[Path]:
    """Segment every validation item with the card's settings; write predictions and truths.

    The prediction is what the Segment widget gives with its defaults:
    :func:`~.segment.segment_job` with the recommended tile size, overlap and
    post-processing. Files are ``<item>.tif`` in both folders, so
    ``microseg evaluate PRED_DIR TRUTH_DIR`` pairs them.

    Returns
    -------
    list of Path
        The prediction files.
    """
    from ..core.inference.segment import segment_job
    from ..core.io.writers import write_labels
    from ..core.progress import drain

    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    pred_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    options = PredictOptions.for_card(model.card, device=device)
    written = []
    for item in split.items:
        spatial = item.axes.replace("C", "")
        spacing = None if split.pixel_size_um is None else (split.pixel_size_um,) * len(spatial)
        job = segment_job(model, item.image, axes=item.axes, options=options, spacing=spacing)
        result = drain(job, show=show)
        written.append(write_labels(pred_dir / f"{item.name}.tif", result.labels, axes=spatial))
        truth = item.truth.astype(np.uint16 if item.truth.max(initial=0) < 2**16 else np.uint32)
        write_labels(truth_dir / f"{item.name}.tif", truth, axes=spatial)
    return written


# ----------------------------------------------------------------------------- float16


def float16_copy(model: SegmentationModel) -> SegmentationModel:
    """The model with its weights rounded to float16 (computed in float32), as shipped."""
    from safetensors.torch import load

    from ..core.models.build import build_model
    from ..core.models.checkpoint import load_state_into, serialize

    payload, _ = serialize(model, dtype="float16")
    copy = build_model(replace(model.card))
    load_state_into(copy.module, load(payload), model=model.name)
    return copy.eval()


# ----------------------------------------------------------------------------- the card


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description() -> str:
    """This machine in one line: CPU, cores, OS."""
    return f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def postprocess_recommendation(model: SegmentationModel) -> dict[str, Any]:
    """The post-processing the card recommends, written out in full."""
    if model.task == "instance":
        from ..core.models import maskrcnn

        settings = {
            "score_threshold": maskrcnn.SCORE_THRESHOLD,
            "pixel_threshold": maskrcnn.PIXEL_THRESHOLD,
            "summed_threshold": maskrcnn.SUMMED_THRESHOLD,
            "nms_iou": maskrcnn.NMS_IOU,
        }
        stored = model.card.recommended.get("postprocess")
        if isinstance(stored, dict):
            settings.update({k: v for k, v in stored.items() if k in settings})
        return settings
    from ..core.inference.segment import recommended_pipeline

    return recommended_pipeline(model.card, model.n_classes).to_dict()


def headline_metrics(row: dict[str, Any], target: Target) -> dict[str, float]:
    """The target's metric first, then the usual scores, from a ``microseg evaluate`` mean row."""
    keys = [target.metric] + [
        k for k in ("pixel_f1", "accuracy", "iou", "object_f1", "ap_50_95") if k != target.metric
    ]
    return {k: float(row[k]) for k in keys if k in row}


def bundled_card(
    model: SegmentationModel,
    *,
    name: str,
    split: ValidationSplit,
    row: dict[str, Any],
    speed: dict[str, Any],
    hardware: str,
    retrain_command: str,
    evaluate_command: str,
    source: str = "",
    data_config: dict[str, Any] | None = None,
) -> ModelCard:
    """The complete card of a bundled model (see :func:`~.models.bundled.card_problems`).

    Parameters
    ----------
    model : SegmentationModel
        The trained model (its card has the training lineage).
    name : str
        Bundled name.
    split : ValidationSplit
        Where ``row`` was measured.
    row : dict
        The mean row of ``microseg evaluate`` on the validation split.
    speed : dict
        From ``benchmarks/bench_models.py``'s ``measure_speed``.
    hardware : str
        What the model was trained on.
    retrain_command, evaluate_command : str
        The documented commands.
    source : str
        Where the trained model was taken from.
    data_config : dict, optional
        How training read the data set (the config's ``data`` section: kind,
        split, limit, target, grey), so the split can be rebuilt from the card alone.
    """
    target = TARGETS[split.kind]
    value = float(row.get(target.metric, float("nan")))
    validation = {
        k: float(v) for k, v in row.items() if k not in ("image", "n_images") and _is_number(v)
    }
    metrics: dict[str, Any] = {
        **headline_metrics(row, target),
        "data": f"validation split: {split.description}",
        "target": target.as_dict(value),
        "validation": validation,
        "evaluation": {
            "command": evaluate_command,
            "images": len(split.items),
            "pixels": split.pixels,
            "weights": "float16 (as shipped)",
            "date": _today(),
        },
    }
    card = model.card
    lineage = {
        **card.lineage,
        "dataset": {
            "kind": split.kind,
            "description": split.dataset.description,
            "folder": split.dataset.path.name,
            "read_as": {
                k: v
                for k, v in {**(data_config or {}), "kind": split.kind}.items()
                if k in ("kind", "split", "limit", "target", "grey") and v is not None
            },
            "training_items": [p.name for p in split.dataset.pairs][:50],
        },
        "hardware": hardware,
        "retrain_command": retrain_command,
        "bundled": {"from": source, "date": _today()},
    }
    recommended = {
        **card.recommended,
        "tile_size": int(card.recommended.get("tile_size", speed.get("tile_size", 256))),
        "overlap": float(card.recommended.get("overlap", speed.get("overlap", DEFAULTS.overlap))),
        "postprocess": postprocess_recommendation(model),
        "mpx_per_s_cpu": float(speed["mpx_per_s_cpu"]),
        "speed": dict(speed),
    }
    trained_on = card.trained_on
    if split.dataset.description not in trained_on:
        trained_on = f"{split.dataset.description}; {trained_on}".strip("; ")
    return replace(
        card,
        name=name,
        metrics=metrics,
        lineage=lineage,
        recommended=recommended,
        trained_on=trained_on,
        modality=card.modality or split.dataset.modality,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def _today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- saving


def save_bundled(
    model: SegmentationModel,
    card: ModelCard,
    folder: str | os.PathLike,
    *,
    overwrite: bool = False,
    max_mb: float = MAX_MODEL_MB,
    max_total_mb: float = MAX_TOTAL_MB,
) -> Path:
    """Write float16 weights and card into the bundled folder, atomically, and update its manifest.

    Parameters
    ----------
    model : SegmentationModel
        Its weights are stored as float16.
    card : ModelCard
        The complete card; its name is the file stem.
    folder : path-like
        The bundled models folder (``napari_microseg/models``).
    overwrite : bool
        Replace a bundled model of the same name.
    max_mb, max_total_mb : float
        Refuse a model larger than ``max_mb`` MB, or a folder whose models together
        would exceed ``max_total_mb`` MB.

    Returns
    -------
    Path
        The weights file.

    Raises
    ------
    BundleError
        Too large, or the name is taken and ``overwrite`` is False.
    """
    import json

    from ..core.models.bundled import card_problems
    from ..core.models.checkpoint import (
        CARD_SUFFIX,
        WEIGHTS_SUFFIX,
        checkpoint_paths,
        format_block,
        serialize,
        write_checkpoint,
    )

    problems = card_problems(card)
    if problems:
        raise BundleError(f"The card of {card.name!r} is incomplete: {'; '.join(problems)}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights, card_file = checkpoint_paths(folder / card.name)
    if (weights.exists() or card_file.exists()) and not overwrite:
        raise BundleError(
            f"A bundled model {card.name!r} exists already ({weights}); pass --overwrite to "
            "replace it."
        )
    payload, card = serialize(model, dtype="float16", card=card)
    digest = hashlib.sha256(payload).hexdigest()
    card_text = json.dumps(
        {**card.to_dict(), "format": format_block(weights.name, "float16", digest)}, indent=2
    )
    size_mb = (len(payload) + len(card_text.encode()) + 1) / 1e6
    if size_mb > max_mb:
        raise BundleError(
            f"{card.name!r} would take {size_mb:.1f} MB as float16; bundled models may take at "
            f"most {max_mb:g} MB. Train a smaller network (base_width, depth)."
        )
    manifest = read_manifest(folder)
    manifest.pop(card.name, None)
    others = 0.0
    for path in folder.iterdir():
        if path.suffix in (WEIGHTS_SUFFIX, CARD_SUFFIX) and path.stem != card.name:
            if not path.name.startswith(("_", ".")):
                others += path.stat().st_size / 1e6
    if others + size_mb > max_total_mb:
        raise BundleError(
            f"With {card.name!r} ({size_mb:.1f} MB) the bundled models would take "
            f"{others + size_mb:.1f} MB; together they may take at most {max_total_mb:g} MB."
        )
    write_checkpoint(payload, card, weights, "float16")
    manifest[card.name] = {
        "weights": weights.name,
        "card": card_file.name,
        "sha256": digest,
        "weights_bytes": len(payload),
    }
    with atomic_path(folder / MANIFEST_NAME) as tmp:
        tmp.write_text(manifest_text(manifest), encoding="utf-8")
    return weights


def check_bundled_name(name: str) -> None:
    """Refuse names that cannot be a file stem."""
    if not name or any(c in name for c in "/\\") or name.startswith((".", "_")):
        raise ModelError(f"{name!r} cannot name a bundled model; use letters, digits and '-'.")
