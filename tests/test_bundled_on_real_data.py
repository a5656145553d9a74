"""Bundled models on the real data sets (../shared/data, or the folder in $MICROSEG_DATA).

Skipped only when that folder is absent. For every shipped model the
validation split its training used is rebuilt from the card alone (data hash
and split checked against the lineage), a small part of it is segmented as the
Segment widget does with its defaults, and the score must beat the best
trivial answer (everything background or everything foreground) and agree
with the card's score on the whole split. Independently of shipped models, the
split reconstruction is checked on the real Lucchi and ISBI files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from napari_microseg.core.models import registry
from napari_microseg.core.models.bundled import TARGETS
from napari_microseg.core.models.entries import scan_folder

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MICROSEG_DATA") or ROOT.parent / "shared" / "data")
SHIPPED = [e for e in scan_folder(registry.bundled_models_dir(), "bundled") if e.usable]

pytestmark = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"no data folder at {DATA} (set MICROSEG_DATA)"
)


def _small_part(items, size=384):
    """The first two items (or the first two slices of a stack), centre-cropped."""
    from dataclasses import replace

    parts = []
    for item in items[:2]:
        image, truth, axes = item.image, item.truth, item.axes
        if "Z" in axes:
            image, truth = image[:2], truth[:2]
        y, x = axes.index("Y"), axes.index("X")
        height, width = image.shape[y], image.shape[x]
        top, left = max((height - size) // 2, 0), max((width - size) // 2, 0)
        index = [slice(None)] * image.ndim
        index[y], index[x] = slice(top, top + size), slice(left, left + size)
        parts.append(
            replace(
                item,
                image=image[tuple(index)],
                truth=truth[..., top : top + size, left : left + size],
            )
        )
    return parts


def _trivial_best(metric, truths):
    from napari_microseg.core.evaluation.evaluate import evaluate_images

    scores = []
    for fill in (0, 1):
        rows = [
            evaluate_images(t, np.full(t.shape, fill, np.uint8), metrics=[metric]) for t in truths
        ]
        scores.append(float(np.mean([row[metric] for row in rows])))
    return max(scores)


@pytest.mark.slow
@pytest.mark.parametrize("entry", SHIPPED, ids=[e.name for e in SHIPPED])
def test_bundled_model_segments_part_of_its_validation_split_sensibly(entry):
    from napari_microseg.bundling.split import validation_split
    from napari_microseg.core.evaluation.evaluate import evaluate_images
    from napari_microseg.core.inference.options import PredictOptions
    from napari_microseg.core.inference.segment import segment_job
    from napari_microseg.core.models.checkpoint import load_checkpoint
    from napari_microseg.core.progress import drain

    model = load_checkpoint(entry.path, device="cpu")
    dataset = model.card.lineage["dataset"]
    folder = DATA / dataset["folder"]
    if not folder.is_dir():
        pytest.skip(f"no {folder}: this test needs the real data (set MICROSEG_DATA)")
    split = validation_split(model, folder, config={"data": dataset["read_as"]})
    target = TARGETS[split.kind]
    options = PredictOptions.for_card(model.card, device="cpu")
    scores, truths = [], []
    for item in _small_part(split.items):
        spacing = None if split.pixel_size_um is None else (split.pixel_size_um,) * item.truth.ndim
        job = segment_job(model, item.image, axes=item.axes, options=options, spacing=spacing)
        labels = drain(job, show=False).labels
        scores.append(evaluate_images(item.truth, labels, metrics=[target.metric])[target.metric])
        truths.append(item.truth)
    value = float(np.mean(scores))
    trivial = _trivial_best(target.metric, truths)
    assert value > trivial + 0.05, f"{target.label} {value:.3f} vs trivial {trivial:.3f}"
    recorded = model.card.metrics["target"]["value"]
    assert abs(value - recorded) < 0.2, f"{value:.3f} on a part vs {recorded:.3f} on the split"


def _recorded_lineage(model, pairs, **settings):
    """What `microseg train` records about the data, computed with the training code."""
    from napari_microseg.core.training.data import prepare
    from napari_microseg.core.training.settings import TrainSettings
    from napari_microseg.core.training.split import split_validation

    settings = TrainSettings(steps=1, **settings)
    data = prepare(pairs, model, boundary_width=settings.boundary_width)
    _, _, split = split_validation(data.planes, fraction=settings.val_fraction)
    model.card.lineage = {
        "settings": settings.to_dict(),
        "data_sha256": data.data_hash,
        "validation": split,
    }


def test_isbi_validation_planes_are_the_five_training_holds_out():
    import tifffile

    from napari_microseg.bundling.split import validation_split
    from napari_microseg.core.models.build import create_model
    from napari_microseg.core.training.datasets import load_dataset

    folder = DATA / "isbi2012"
    if not folder.is_dir():
        pytest.skip(f"no {folder}: this test needs the real data (set MICROSEG_DATA)")
    model = create_model("unet", name="m", classes=["membrane", "cell"], depth=2, base_width=4)
    _recorded_lineage(model, load_dataset(folder, target="cells").pairs, val_fraction=0.2)
    split = validation_split(
        model, folder, config={"data": {"kind": "isbi2012", "target": "cells"}}
    )
    assert "5 of 24 annotated planes held out" in split.description
    raw = tifffile.imread(folder / "train_images.tif")
    for item in split.items:
        z = int(item.name.rsplit("_", 1)[1])
        np.testing.assert_array_equal(item.image, raw[z])
        assert item.truth.shape == (512, 512)


def test_lucchi_validation_is_its_own_validation_stack():
    import tifffile

    from napari_microseg.bundling.split import validation_split
    from napari_microseg.core.models.build import create_model
    from napari_microseg.core.training.datasets import load_dataset

    folder = DATA / "lucchi"
    if not folder.is_dir():
        pytest.skip(f"no {folder}: this test needs the real data (set MICROSEG_DATA)")
    model = create_model("unet", name="m", depth=2, base_width=4)
    _recorded_lineage(model, load_dataset(folder, limit=3).pairs)
    model.card.lineage["validation"] = "1 validation plane(s) given separately"
    split = validation_split(model, folder, config={"data": {"kind": "lucchi"}}, limit=3)
    (item,) = split.items
    assert item.axes == "ZYX" and item.image.shape == (1, 768, 1024)
    np.testing.assert_array_equal(item.image[0], tifffile.imread(folder / "val_images.tif")[0])
