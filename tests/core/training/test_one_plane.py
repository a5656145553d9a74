"""A one-image fine-tune of a card that advises against training on one image (#21).

nuclei-fluo trained on one DSB image scored worse on the session's other images
than not adapting, while that image's held-out pixels approved it; its card says
``train_on_one_image: false``. Such a fine-tune takes no gradient step: the
label-free levers alone, judged on all the annotated pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import label
from threshold_net import Threshold

from napari_microseg.core.inference.denoise import STRONG_SIGMA
from napari_microseg.core.models.base import ModelCard, SegmentationModel
from napari_microseg.core.progress import drain
from napari_microseg.core.training.jobs import ONE_PLANE_NOTE, finetune
from napari_microseg.core.training.one_plane import KEPT_PARENT_UNTRAINED, one_plane_levers_note
from napari_microseg.core.training.settings import (
    TrainingWarning,
    TrainSettings,
    finetune_trains_one_plane,
)

pytestmark = pytest.mark.usefixtures("user_folder")

SIZE = 64


def model(*, one_image: bool | None) -> SegmentationModel:
    """A :class:`Threshold` trained on clean inputs; its card may advise on one image."""
    adaptation = {} if one_image is None else {"train_on_one_image": one_image}
    card = ModelCard(
        name="threshold",
        architecture="custom",
        normalization={"kind": "range", "min": 0, "max": 1, "noise": 0.01},
        recommended={"adaptation": adaptation},
    )
    return SegmentationModel(Threshold(), card)


def session(truth_noisy: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Two noisy planes of smooth blobs (ZYX), and their objects (the clean blobs, or the
    noisy pixels above 0.5)."""
    field = ndi.gaussian_filter(np.random.default_rng(0).random((2, SIZE, SIZE)), (0, 4, 4))
    clean = ((field - field.min()) / np.ptp(field)).astype(np.float32)
    noise = np.random.default_rng(1).normal(0.0, 0.2, clean.shape).astype(np.float32)
    image = clean + noise
    return image, label((image if truth_noisy else clean) > 0.5).astype(np.uint16)


def tune(parent, image, labels, name, **overrides):
    settings = TrainSettings.for_finetune(
        parent.card,
        **{"steps": 3, "minutes": None, "patch_size": 32, "batch_size": 2, "val_every": 1},
        **overrides,
    )
    events = []
    result = drain(
        finetune(parent, image, labels, axes="ZYX", name=name, settings=settings),
        show=False,
        on_progress=events.append,
    )
    return result, events


def test_the_card_decides_whether_one_image_trains():
    assert finetune_trains_one_plane(None)
    assert finetune_trains_one_plane(model(one_image=None).card)
    assert finetune_trains_one_plane(model(one_image=True).card)
    assert not finetune_trains_one_plane(model(one_image=False).card)
    assert not TrainSettings.for_finetune(model(one_image=False).card).train_one_plane
    assert TrainSettings.for_finetune(
        model(one_image=False).card, train_one_plane=True
    ).train_one_plane


def test_one_image_takes_no_step_and_keeps_the_smoothing_all_its_pixels_approve(user_folder):
    parent = model(one_image=False)
    image, labels = session()
    labels[1] = 0  # one annotated image of the two
    with pytest.warns(TrainingWarning, match="no gradient step is taken"):
        result, events = tune(parent, image, labels, "threshold-one")
    done = events[-1].info
    assert done["kept"] == "smoothed parent" and done["steps"] == 0
    # One image's pixels approved flat fields that cost the other images: not tried.
    assert not [e for e in events if e.info.get("phase") == "illumination"]
    assert done["stopped"] == "one image"
    # No step: the threshold is the parent's, exactly; the smoothing is what was learnt.
    assert result.module.threshold.item() == 0.5
    assert result.card.normalization["smooth"] == STRONG_SIGMA
    lineage = result.card.lineage
    assert lineage["recipe"]["gradient_steps"] is False
    assert one_plane_levers_note("threshold") in lineage["notes"]
    assert ONE_PLANE_NOTE not in lineage["notes"]
    assert any(
        n.startswith("One image, so no gradient steps: the parent with the smoothing")
        for n in lineage["notes"]
    )
    # Judged on every annotated pixel of the image, not a held-out strip of it.
    assert lineage["metrics_after"]["pixels"] == SIZE * SIZE
    assert lineage["validation"].startswith("all the annotated pixels")
    assert lineage["metrics_after"]["dice"] > lineage["metrics_before"]["dice"] + 0.05
    assert list(Path(user_folder).glob("threshold-one*"))


def test_one_image_whose_corrections_lose_keeps_the_parent_and_says_why(user_folder):
    parent = model(one_image=False)
    image, labels = session(truth_noisy=True)  # the noisy pixels are the truth: smoothing loses
    with pytest.warns(TrainingWarning, match="no gradient step is taken"):
        result, events = tune(parent, image[:1], labels[:1], "threshold-lose")
    done = events[-1]
    assert done.info["kept"] == "parent" and result.name == "threshold"
    assert "no label-free correction beat it" in done.message
    assert KEPT_PARENT_UNTRAINED in result.card.lineage["notes"]
    assert result.card.lineage["recipe"] == {
        "start": "parent",
        "kept": "parent",
        "gradient_steps": False,
    }
    assert not list(Path(user_folder).glob("threshold-lose*"))
    # Without a step there is nothing to keep but the start, whatever keep_better_start says.
    with pytest.warns(TrainingWarning, match="no gradient step is taken"):
        result, events = tune(
            parent, image[:1], labels[:1], "threshold-lose2", keep_better_start=False
        )
    assert events[-1].info["kept"] == "parent" and result.name == "threshold"
    assert not list(Path(user_folder).glob("threshold-lose*"))


def test_two_images_or_a_card_without_the_advice_still_train():
    image, labels = session()
    result, events = tune(model(one_image=False), image, labels, "threshold-two")
    assert events[-1].info["steps"] == 3
    assert [e for e in events if e.info.get("phase") == "illumination"]
    assert "gradient_steps" not in result.card.lineage["recipe"]
    with pytest.warns(TrainingWarning, match="cannot tell whether the result holds"):
        result, events = tune(model(one_image=None), image[:1], labels[:1], "threshold-default")
    assert events[-1].info["steps"] == 3
    assert ONE_PLANE_NOTE in result.card.lineage["notes"]
