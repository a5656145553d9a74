from __future__ import annotations

import pytest
import torch

from napari_microseg.core.models.base import ModelCard, ModelError, wrap_module
from napari_microseg.core.models.build import (
    ARCHITECTURES,
    build_module,
    create_model,
    default_hyperparameters,
)


def test_every_family_builds_from_its_name():
    assert set(ARCHITECTURES) == {"unet", "segnet", "micronet", "maskrcnn"}
    for key in ("unet", "segnet", "micronet"):
        net = build_module(key, in_channels=1, n_classes=2, hyperparameters={"base_width": 4})
        assert net(torch.rand(1, 1, 37, 53)).shape == (1, 2, 37, 53)


def test_unknown_architecture_names_the_model_and_the_choices():
    card = ModelCard(name="mystery", architecture="transunet")
    with pytest.raises(
        ModelError, match=r"'mystery' uses the unknown architecture 'transunet'.*unet"
    ):
        from napari_microseg.core.models.build import build_model

        build_model(card)


def test_unknown_and_invalid_hyperparameters():
    with pytest.raises(ModelError, match=r"no hyper-parameter.*widht"):
        build_module("unet", in_channels=1, n_classes=2, hyperparameters={"widht": 3})
    with pytest.raises(ModelError, match=r"'m'.*depth must be a positive integer"):
        build_module(
            "unet", in_channels=1, n_classes=2, hyperparameters={"depth": 0}, model_name="m"
        )


def test_create_model_writes_every_hyperparameter_into_the_card():
    model = create_model("unet", name="fresh", in_channels=3, depth=3, base_width=4)
    assert model.card.hyperparameters == {
        "depth": 3,
        "base_width": 4,
        "batch_norm": False,
        "downsample": 1,
    }
    assert model.in_channels == 3 and model.task == "semantic"
    assert default_hyperparameters("maskrcnn")["anchor_sizes"] == [8, 16, 32, 64, 128]


def test_semantic_model_predicts_probabilities_and_checks_channels():
    model = create_model("unet", name="grey", in_channels=1, depth=2, base_width=4)
    probs = model.predict(torch.rand(2, 1, 9, 11))
    assert probs.shape == (2, 2, 9, 11)
    assert torch.allclose(probs.sum(1), torch.ones(2, 9, 11))
    with pytest.raises(ModelError, match=r"'grey' takes greyscale.*has RGB.*Pick a model"):
        model.predict(torch.rand(1, 3, 9, 11))
    with pytest.raises(ModelError, match=r"\(N, C, H, W\)"):
        model.predict(torch.rand(9, 11))
    with pytest.raises(ModelError, match="not instances"):
        model.predict_instances(torch.rand(1, 1, 9, 11))


def test_wrap_module_in_one_call():
    net = torch.nn.Conv2d(2, 3, 1)
    model = wrap_module(net, in_channels=2, classes=3, name="mine")
    assert model.module is net and model.classes == ["class_0", "class_1", "class_2"]
    assert model.predict(torch.rand(1, 2, 5, 5)).shape == (1, 3, 5, 5)
    assert model.device.type == "cpu"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("in_channels", 0, "in_channels must be a positive integer"),
        ("classes", [], "classes must be a non-empty list"),
        ("task", "panoptic", "task must be"),
        ("normalization", {}, "normalization"),
    ],
)
def test_invalid_card_fields(field, value, message):
    data = {**ModelCard(name="m", architecture="unet").to_dict(), field: value}
    with pytest.raises(ModelError, match=message):
        ModelCard.from_dict(data, source="m.json")


def test_card_with_missing_fields_names_them():
    with pytest.raises(ModelError, match=r"m.json lacks the field\(s\) architecture, in_channels"):
        ModelCard.from_dict({"name": "m", "classes": ["a"], "task": "semantic"}, source="m.json")
