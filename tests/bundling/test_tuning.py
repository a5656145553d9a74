"""Post-processing chosen on training images: the grid, the scores, the card left as it was."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.bundling.split import ValidationItem
from napari_microseg.bundling.tuning import grid_points, tune_postprocess
from napari_microseg.core.models.build import create_model
from napari_microseg.core.progress import drain


def test_grid_points_are_every_combination_in_order():
    assert grid_points({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    assert grid_points({}) == [{}]
    with pytest.raises(ValueError, match="no value to try for 'a'"):
        grid_points({"a": []})


def _model():
    model = create_model("unet", name="tiny", classes=["background", "cell"], depth=2, base_width=4)
    model.card.recommended["postprocess"] = {"method": "threshold", "threshold": 0.5}
    return model


def _item(seed):
    rng = np.random.default_rng(seed)
    image = rng.random((48, 48), dtype=np.float32)
    # Every pixel is foreground: threshold 0 (all pixels in) scores 1, threshold 1.0 scores 0.
    return ValidationItem(name=f"i{seed}", image=image, axes="YX", truth=np.ones((48, 48), int))


def test_the_best_point_comes_first_and_the_card_is_restored():
    model = _model()
    before = dict(model.card.recommended["postprocess"])
    rows = drain(
        tune_postprocess(model, [_item(0), _item(1)], {"threshold": [1.0, 0.0]}, metric="accuracy"),
        show=False,
    )
    assert [row["threshold"] for row in rows] == [0.0, 1.0]
    assert rows[0]["accuracy"] == pytest.approx(1.0) and rows[1]["accuracy"] == pytest.approx(0.0)
    assert rows[0]["postprocess"]["method"] == "threshold"
    assert rows[0]["postprocess"]["threshold"] == 0.0
    assert model.card.recommended["postprocess"] == before


def test_an_unknown_option_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"no post-processing option .treshold.*threshold"):
        drain(tune_postprocess(_model(), [_item(0)], {"treshold": [0.5]}, metric="accuracy"))


def test_tta_is_tried_as_a_prediction_option_and_timed():
    model = _model()
    rows = drain(
        tune_postprocess(model, [_item(0)], {"tta": [False, True]}, metric="accuracy"),
        show=False,
    )
    assert sorted(row["tta"] for row in rows) == [False, True]
    for row in rows:
        assert "tta" not in row["postprocess"]  # not a post-processing option
        assert row["seconds"] >= 0.0
    assert "tta" not in model.card.recommended


def test_tta_is_refused_for_an_instance_model():
    from dataclasses import replace

    model = _model()
    model.card = replace(model.card, task="instance")
    with pytest.raises(ValueError, match="semantic models only"):
        drain(tune_postprocess(model, [_item(0)], {"tta": [True]}, metric="accuracy"))


def test_tta_is_worth_it_from_one_point_of_the_metric():
    from napari_microseg.bundling.tuning import TTA_MIN_GAIN, tta_worth_it

    assert TTA_MIN_GAIN == 0.01
    assert tta_worth_it(0.90, 0.91)
    assert not tta_worth_it(0.90, 0.905)
    assert not tta_worth_it(0.90, 0.85)


def test_tta_is_weighed_at_the_best_postprocessing_without_it():
    from napari_microseg.bundling.tuning import tta_verdict

    def row(tta, threshold, score, seconds):
        return {
            "tta": tta,
            "postprocess": {"threshold": threshold},
            "ap": score,
            "seconds": seconds,
        }

    rows = [
        row(True, 0.5, 0.60, 8.0),  # the best row overall, but at a worse threshold
        row(False, 0.5, 0.50, 1.0),
        row(False, 0.7, 0.55, 1.0),
        row(True, 0.7, 0.555, 8.0),
    ]
    verdict = tta_verdict(rows, "ap")
    assert verdict["gain"] == pytest.approx(0.005) and verdict["cost"] == 8.0
    assert not verdict["worth"]
    assert verdict["best"] is rows[2]  # the plain best, not the TTA row
    assert tta_verdict(rows[1:3], "ap") is None  # TTA not tried


def test_each_image_is_predicted_once_per_tta_setting(monkeypatch):
    import napari_microseg.core.inference.segment as segment

    real = segment.run_prediction
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs["options"].tta)
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(segment, "run_prediction", counting)
    grid = {"threshold": [1.0, 0.5, 0.0], "tta": [False, True]}
    rows = drain(tune_postprocess(_model(), [_item(0), _item(1)], grid, metric="accuracy"))
    assert len(rows) == 6
    assert sorted(calls) == [False, False, True, True]  # 2 images x 2 TTA settings, not 12


def test_each_point_scores_as_segmenting_with_it_would():
    from dataclasses import replace

    from napari_microseg.core.evaluation.evaluate import evaluate_images, mean_row
    from napari_microseg.core.inference.segment import segment_job

    model = _model()
    rng = np.random.default_rng(3)
    items = []
    for seed in (4, 5):
        item = _item(seed)
        truth = (rng.random((48, 48)) > 0.5).astype(int)
        items.append(ValidationItem(name=item.name, image=item.image, axes="YX", truth=truth))
    grid = {"threshold": [0.3, 0.5, 0.7], "min_size": [0, 20]}
    rows = drain(tune_postprocess(model, items, grid, metric="pixel_f1"), show=False)
    own = model.card
    for row in rows:
        model.card = replace(
            own, recommended={**own.recommended, "postprocess": row["postprocess"]}
        )
        alone = [
            evaluate_images(
                item.truth,
                drain(segment_job(model, item.image, axes="YX")).labels,
                metrics=["pixel_f1"],
            )
            for item in items
        ]
        model.card = own
        assert row["pixel_f1"] == pytest.approx(mean_row(alone)["pixel_f1"])
    assert len({round(row["pixel_f1"], 6) for row in rows}) > 1  # the points differ
