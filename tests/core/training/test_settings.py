"""TrainSettings: few-shot defaults that follow the base model's card."""

from __future__ import annotations

import math

import pytest

from napari_microseg.core.models.base import ModelCard
from napari_microseg.core.training.settings import (
    FINETUNE_LEARNING_RATE,
    FINETUNE_PATIENCE,
    FINETUNE_STEPS,
    TrainingError,
    TrainSettings,
    finetune_anchor_decay,
    finetune_learning_rate,
    finetune_steps,
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


def test_the_pull_towards_the_start_comes_from_the_card():
    assert finetune_anchor_decay(None) == 0.0 and finetune_anchor_decay(card()) == 0.0
    assert finetune_anchor_decay(card({"anchor_decay": 0.1})) == 0.1
    assert TrainSettings.for_finetune(card({"anchor_decay": 0.1})).anchor_decay == 0.1
    overridden = TrainSettings.for_finetune(card({"anchor_decay": 0.1}), anchor_decay=0.0)
    assert overridden.anchor_decay == 0.0
    for bad in (-1, 2, True, "x"):
        assert finetune_anchor_decay(card({"anchor_decay": bad})) == 0.0
    with pytest.raises(TrainingError, match="anchor_decay must be in"):
        TrainSettings.for_finetune(anchor_decay=1.5).validate()


def test_a_finetune_waits_about_a_budget_of_validations_before_stopping_early():
    settings = TrainSettings.for_finetune()
    assert settings.patience == FINETUNE_PATIENCE == 8
    # About eight validations fit a fine-tune's budget (every planned // 8 steps).
    assert settings.patience >= 8
    assert TrainSettings.for_finetune(patience=2).patience == 2


def test_the_step_limit_comes_from_the_card():
    assert finetune_steps(None) == finetune_steps(card()) == FINETUNE_STEPS == 400
    assert TrainSettings.for_finetune(card({"steps": 1000})).steps == 1000
    assert TrainSettings.for_finetune(card({"steps": 1000}), steps=50).steps == 50
    for bad in (0, -5, 2.5, True, "many", None):
        assert finetune_steps(card({"steps": bad})) == FINETUNE_STEPS


def test_the_tuning_share_is_none_by_default_and_at_most_half():
    assert TrainSettings().tune_fraction == 0.0
    TrainSettings(tune_fraction=0.2).validate()
    for bad in (-0.1, 0.6):
        with pytest.raises(TrainingError, match="tune_fraction must be in"):
            TrainSettings(tune_fraction=bad).validate()
