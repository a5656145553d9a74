"""A fine-tune re-chooses a fixed threshold on its held-out pixels (core.training.threshold)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_microseg.core.models.base import ModelCard, SegmentationModel
from napari_microseg.core.progress import drain
from napari_microseg.core.training.data import Plane, Region
from napari_microseg.core.training.jobs import finetune
from napari_microseg.core.training.settings import TrainSettings
from napari_microseg.core.training.threshold import (
    THRESHOLD_MIN_GAIN,
    choose_threshold,
    chooses_threshold,
)

CPU = torch.device("cpu")


class AsProbability(torch.nn.Module):
    """Logits whose softmax is (1 - x, x): the input is the foreground probability."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))  # something for the optimiser

    def forward(self, x):
        x = x.clamp(1e-4, 1 - 1e-4)
        return torch.cat([torch.log1p(-x), torch.log(x)], dim=1) * self.scale


def probability_model(postprocess: dict) -> SegmentationModel:
    card = ModelCard(
        name="as-probability",
        architecture="custom",
        classes=["background", "foreground"],
        normalization={"kind": "range", "min": 0, "max": 1},
        recommended={"postprocess": postprocess},
    )
    return SegmentationModel(AsProbability(), card)


THRESHOLD_05 = {"method": "threshold", "threshold": 0.5, "fill_holes": False, "min_size": 0}


def three_levels(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A plane of 0.2 background, 0.65 halos and 0.85 cores; the cores are the objects."""
    image = np.full((size, size), 0.2, np.float32)
    labels = np.zeros((size, size), np.uint16)
    for number, (r, c) in enumerate([(8, 8), (8, 40), (40, 8), (40, 40)], start=1):
        image[r - 3 : r + 15, c - 3 : c + 15] = 0.65
        image[r : r + 12, c : c + 12] = 0.85
        labels[r : r + 12, c : c + 12] = number
    return image, labels


def plane_of(image: np.ndarray, labels: np.ndarray) -> Plane:
    return Plane(
        image[None].copy(),
        labels.astype(np.uint16),
        (labels > 0).astype(np.uint8),
        np.ones(labels.shape, bool),
        name="plane",
    )


def test_the_threshold_that_segments_the_held_out_pixels_best_is_chosen():
    image, labels = three_levels()
    model = probability_model(THRESHOLD_05)
    found = choose_threshold(model, [Region(plane_of(image, labels), labels >= 0)], device=CPU)
    # At 0.5 the halos are foreground too; from 0.7 only the cores are: Dice 1.
    cores, halos = np.count_nonzero(labels), 4 * (18 * 18 - 12 * 12)
    assert found.dice[0.5] == pytest.approx(2 * cores / (2 * cores + halos))
    assert found.dice[0.7] == found.dice[0.8] == 1.0 and found.dice[0.9] == 0.0
    # Of the best, the closest to the card's.
    assert found.card == 0.5 and found.chosen == 0.7 and found.changed
    assert found.pixels == labels.size
    assert "0.5 -> 0.7" in found.describe()
    assert found.record()["dice"]["0.7"] == 1.0


def test_the_card_threshold_stays_unless_another_gains_the_margin():
    image, _ = three_levels()
    model = probability_model(THRESHOLD_05)
    # The halos belong to the objects: 0.5 (and 0.3-0.6) segment them exactly.
    objects = (image > 0.5).astype(np.uint16)
    found = choose_threshold(model, [Region(plane_of(image, objects), objects >= 0)], device=CPU)
    assert found.chosen == 0.5 and not found.changed
    assert "kept" in found.describe()
    # A gain below the margin does not move it: one misjudged pixel in 4,096 at 0.5.
    nearly = objects.copy()
    nearly[0, 0] = 1
    image[0, 0] = 0.2
    found = choose_threshold(model, [Region(plane_of(image, nearly), nearly >= 0)], device=CPU)
    assert max(found.dice.values()) - found.dice[0.5] < THRESHOLD_MIN_GAIN
    assert found.chosen == 0.5


def test_only_a_fixed_threshold_is_chosen_again():
    assert chooses_threshold(probability_model(THRESHOLD_05))
    for other in (
        {"method": "otsu"},
        {"method": "watershed", "threshold": 0.9, "h": 2.0},
        {**THRESHOLD_05, "physical_units": True},
    ):
        model = probability_model(other)
        assert not chooses_threshold(model)
        image, labels = three_levels()
        assert (
            choose_threshold(model, [Region(plane_of(image, labels), labels >= 0)], device=CPU)
            is None
        )
    assert choose_threshold(probability_model(THRESHOLD_05), [], device=CPU) is None
    three_classes = probability_model(THRESHOLD_05)
    three_classes.card.classes = ["background", "interior", "boundary"]
    assert not chooses_threshold(three_classes)


def test_a_fine_tune_writes_the_chosen_threshold_into_the_new_card(user_folder):
    image, labels = three_levels(96)
    stack, truth = np.stack([image, image.T]), np.stack([labels, labels.T])
    parent = probability_model(THRESHOLD_05)
    settings = TrainSettings.for_finetune(
        steps=2,
        minutes=None,
        patch_size=32,
        batch_size=2,
        val_every=1,
        learning_rate=1e-9,  # the weights cannot move: only the threshold changes the labels
        warmup_steps=0,
        keep_better_start=False,
    )
    events = []
    result = drain(
        finetune(parent, stack, truth, axes="ZYX", name="as-probability-2", settings=settings),
        show=False,
        on_progress=events.append,
    )
    (chosen,) = [e for e in events if e.info.get("phase") == "threshold"]
    assert chosen.info["card"] == 0.5 and chosen.info["chosen"] == 0.7
    assert result.card.recommended["postprocess"]["threshold"] == 0.7
    assert result.card.lineage["threshold"]["chosen"] == 0.7
    assert parent.card.recommended["postprocess"]["threshold"] == 0.5  # the parent is untouched
    # Off: the card's threshold is inherited as it was.
    off = drain(
        finetune(
            parent,
            stack,
            truth,
            axes="ZYX",
            name="as-probability-3",
            settings=replace(settings, choose_threshold=False),
        ),
        show=False,
    )
    assert off.card.recommended["postprocess"]["threshold"] == 0.5
    assert "threshold" not in off.card.lineage


def test_a_fine_tune_that_keeps_the_parent_saves_it_with_the_session_threshold(user_folder):
    image, labels = three_levels(96)
    stack, truth = np.stack([image, image.T]), np.stack([labels, labels.T])
    parent = probability_model(THRESHOLD_05)
    settings = TrainSettings.for_finetune(
        steps=2, minutes=None, patch_size=32, batch_size=2, val_every=1, learning_rate=1e-9
    )
    events = []
    result = drain(
        finetune(parent, stack, truth, axes="ZYX", name="with-threshold", settings=settings),
        show=False,
        on_progress=events.append,
    )
    done = events[-1].info
    # Training cannot beat the parent, but segmenting at 0.7 does: a new model, the parent's
    # weights, the session's threshold.
    assert done["kept"] == "threshold parent" and done["path"] is not None
    assert result.name == "with-threshold"
    assert result.card.recommended["postprocess"]["threshold"] == 0.7
    assert float(result.module.scale) == 1.0
    assert "threshold chosen on the annotated pixels" in " ".join(result.card.lineage["notes"])
    # Where the card's threshold is already the best, the parent is kept and nothing is saved.
    objects = (stack > 0.5).astype(np.uint16)
    kept = drain(
        finetune(parent, stack, objects, axes="ZYX", name="unchanged", settings=settings),
        show=False,
    )
    assert kept.name == "as-probability" and kept.card.lineage["recipe"]["kept"] == "parent"
