"""TrainSettings: few-shot defaults that follow the base model's card."""

from __future__ import annotations

import math

import pytest

from napari_microseg.core.models.base import ModelCard
from napari_microseg.core.training.settings import (
    FINETUNE_LEARNING_RATE,
    TrainSettings,
    finetune_learning_rate,
)


def card(adaptation: object = None) -> ModelCard:
    recommended = {} if adaptation is None else {"adaptation": adaptation}
    return ModelCard(name="m", architecture="unet", recommended=recommended)


def test_the_cards_learning_rate_is_the_fine_tune_default():
    gentle = card({"label_free": True, "learning_rate": 1e-4})
    assert TrainSettings.for_finetune(gentle).learning_rate == 1e-4
    # What the user asks for wins over the card.
    assert TrainSettings.for_finetune(gentle, learning_rate=5e-3).learning_rate == 5e-3
    assert TrainSettings.for_finetune().learning_rate == FINETUNE_LEARNING_RATE


@pytest.mark.parametrize(
    "adaptation",
    [
        None,
        {"label_free": False},
        {"learning_rate": 0},
        {"learning_rate": -1e-3},
        {"learning_rate": math.nan},
        {"learning_rate": "fast"},
        ["not", "a", "mapping"],
    ],
)
def test_no_usable_recommendation_gives_the_default(adaptation):
    assert finetune_learning_rate(card(adaptation)) == FINETUNE_LEARNING_RATE
    assert finetune_learning_rate(None) == FINETUNE_LEARNING_RATE
