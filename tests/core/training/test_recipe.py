"""Where a few-shot fine-tune starts: batch-norm statistics kept only when other pixels agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_microseg.core.models.base import ModelCard, SegmentationModel
from napari_microseg.core.progress import drain
from napari_microseg.core.training.adapt import input_batches, label_free_advice
from napari_microseg.core.training.data import Region, TrainingPair, prepare
from napari_microseg.core.training.recipe import adapted_start, statistics_batches
from napari_microseg.core.training.settings import TrainSettings
from napari_microseg.core.training.state import cpu_state


def threshold_model(mean: float) -> SegmentationModel:
    """Foreground where x > the batch norm's running mean: the statistics are the threshold."""
    norm = torch.nn.BatchNorm2d(1)
    norm.running_mean.fill_(mean)
    conv = torch.nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1))
        conv.bias.zero_()
    card = ModelCard(name="bn-threshold", architecture="custom", normalization={"kind": "none"})
    return SegmentationModel(torch.nn.Sequential(norm, conv).eval(), card)


def ramp(size: int, low: float, high: float, cut: float) -> TrainingPair:
    """A horizontal ramp from ``low`` to ``high``; the object is where it exceeds ``cut``."""
    image = np.tile(np.linspace(low, high, size, dtype=np.float32), (size, 1))
    return TrainingPair(image, (image > cut).astype(np.uint8), axes="YX")


def start_of(parent: SegmentationModel, pairs: list[TrainingPair]):
    working = SegmentationModel(
        threshold_model(float(parent.module[0].running_mean)).module, parent.card
    )
    data = prepare(pairs, parent, boundary_width=0)
    regions = [Region(plane, plane.annotated) for plane in data.planes]
    settings = TrainSettings.for_finetune()
    events = []
    start, _, _ = drain(
        adapted_start(working, parent, pairs, regions, settings, torch.device("cpu")),
        show=False,
        on_progress=events.append,
    )
    return start, working, events[-1]


def test_planes_know_their_pair_and_slice():
    stack = np.zeros((3, 16, 16), np.float32)
    labels = np.zeros((3, 16, 16), np.uint8)
    labels[1, 4:8, 4:8] = labels[2, 2:6, 2:6] = 1
    flat = ramp(16, 0, 1, 0.5)
    data = prepare([flat, TrainingPair(stack, labels, axes="ZYX")], threshold_model(0.5))
    assert [(p.source, p.z) for p in data.planes] == [(0, None), (1, 1), (1, 2)]


def test_statistics_leave_out_a_slice_or_a_whole_image():
    parent = threshold_model(0.0)
    stack = np.stack([np.full((8, 8), z, np.float32) for z in range(3)])
    pairs = [TrainingPair(stack, np.zeros((3, 8, 8), np.uint8), axes="ZYX")]
    values = sorted(float(b.mean()) for b in statistics_batches(parent, pairs, leave_out=(0, 1)))
    assert values == [0.0, 2.0]
    flat = ramp(8, 5, 5, 0)
    assert statistics_batches(parent, [flat], leave_out=(0, None)) == []
    others = statistics_batches(parent, [flat, *pairs], leave_out=(0, None))
    assert sorted(float(b.mean()) for b in others) == [0.0, 1.0, 2.0]
    assert input_batches(parent, stack, axes="ZYX", exclude=(0, 1, 2)) == []


def test_statistics_of_the_same_session_are_kept():
    # The new session is brighter: objects are above 6, the parent cuts at 3.
    parent = threshold_model(3.0)
    start, working, event = start_of(parent, [ramp(48, 2, 10, 6), ramp(48, 2, 10, 6)])
    assert start == "adapted"
    assert event.info["cross_fit"]["adapted"] > event.info["cross_fit"]["parent"]
    assert float(working.module[0].running_mean) == pytest.approx(6.0, abs=0.01)


def test_one_image_cannot_vouch_for_its_own_statistics():
    parent = threshold_model(3.0)
    original = cpu_state(parent.module)
    start, working, event = start_of(parent, [ramp(48, 2, 10, 6)])
    # Its own statistics fit its own held-out pixels better, but nothing else can confirm it.
    assert event.info["metrics_adapted"]["dice"] > event.info["metrics_parent"]["dice"]
    assert start == "parent" and "single image" in event.message
    assert float(working.module[0].running_mean) == pytest.approx(3.0)
    assert all(torch.equal(v, original[k]) for k, v in cpu_state(parent.module).items())


def test_statistics_that_differ_between_images_are_not_kept():
    # The pooled statistics fit the pooled pixels (mostly the large image), but each image's
    # statistics mislead on the other: the cross-fit sees it and the parent stays.
    parent = threshold_model(5.2)
    start, working, event = start_of(parent, [ramp(96, 0, 8, 4), ramp(32, 2, 10, 6)])
    assert event.info["metrics_adapted"]["dice"] > event.info["metrics_parent"]["dice"]
    crossed = event.info["cross_fit"]
    assert crossed["adapted"] < crossed["parent"]
    assert start == "parent" and "not kept" in event.message
    assert float(working.module[0].running_mean) == pytest.approx(5.2)


def harmful_card(model: SegmentationModel) -> SegmentationModel:
    """``model`` with the card scripts/record_adaptation.py writes for a model like nuclei-fluo."""
    model.card.recommended = {
        "adaptation": {
            "label_free": False,
            "dice_shifted_vs_adapted": {"blur_noise": {"shifted": 0.71, "adapted": 0.43}},
        }
    }
    return model


def test_label_free_advice_comes_from_the_card():
    assert label_free_advice(threshold_model(3.0).card) is None
    advice = label_free_advice(harmful_card(threshold_model(3.0)).card)
    assert "'bn-threshold'" in advice and "blur noise 0.71 -> 0.43" in advice
    assert "fine-tune" in advice


def test_a_model_whose_benchmark_found_the_statistics_harmful_starts_from_the_parent():
    # Two images of a session whose statistics would be kept (see above), but the card says no.
    parent = harmful_card(threshold_model(3.0))
    start, working, event = start_of(parent, [ramp(48, 2, 10, 6), ramp(48, 2, 10, 6)])
    assert start == "parent" and "Starting from the parent" in event.message
    assert float(working.module[0].running_mean) == pytest.approx(3.0)


def test_adapting_such_a_model_warns_and_says_why():
    from napari_microseg.core.training.adapt import adapt
    from napari_microseg.core.training.settings import TrainingWarning

    parent = harmful_card(threshold_model(3.0))
    with pytest.warns(TrainingWarning, match="lowered its Dice"):
        events = []
        drain(
            adapt(parent, ramp(32, 2, 10, 6).image, axes="YX", save=False),
            show=False,
            on_progress=events.append,
        )
    assert "lowered its Dice" in events[-1].info["advice"]


def test_annotations_in_one_image_are_said_to_check_only_that_image(user_folder):
    import warnings

    from napari_microseg.core.training.jobs import ONE_PLANE_NOTE, finetune
    from napari_microseg.core.training.settings import TrainingWarning

    stack = np.stack([ramp(32, 2, 10, 6).image] * 2)
    one = np.zeros(stack.shape, np.uint8)
    one[0] = stack[0] > 6
    settings = TrainSettings.for_finetune(steps=2, minutes=None, patch_size=16, batch_size=2)
    with pytest.warns(TrainingWarning, match="one slice or image"):
        result = drain(
            finetune(threshold_model(3.0), stack, one, axes="ZYX", settings=settings, save=False),
            show=False,
        )
    assert ONE_PLANE_NOTE in result.card.lineage["notes"]
    both = np.where(stack > 6, 1, 0).astype(np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drain(
            finetune(threshold_model(3.0), stack, both, axes="ZYX", settings=settings, save=False),
            show=False,
        )
    assert not [w for w in caught if ONE_PLANE_NOTE in str(w.message)]


def test_unevenness_reads_the_light_of_the_annotated_planes_once_each():
    from napari_microseg.core.inference.illumination import UNEVEN_LIGHT
    from napari_microseg.core.training.data import Plane, Region
    from napari_microseg.core.training.recipe import unevenness

    rows, cols = np.mgrid[0:128, 0:128]
    texture = (0.8 + 0.2 * ((rows // 8 + cols // 8) % 2)).astype(np.float32)

    def plane(image):
        shape = image.shape
        return Plane(
            image=image[None],
            instances=np.zeros(shape, np.int32),
            target=np.zeros(shape, np.uint8),
            annotated=np.ones(shape, bool),
        )

    even, lit = plane(texture), plane(texture * np.linspace(0.45, 1.35, 128, dtype=np.float32))
    dark = plane(np.where(rows % 16 == 0, 1.0, 0.01).astype(np.float32))
    top, bottom = np.zeros((128, 128), bool), np.ones((128, 128), bool)
    assert unevenness([Region(even, top), Region(even, bottom)]) == pytest.approx(1.0, abs=0.02)
    assert unevenness([Region(lit, top), Region(lit, bottom), Region(dark, top)]) > UNEVEN_LIGHT
    assert unevenness([Region(dark, top)]) is None  # fluorescence: the light cannot be read
