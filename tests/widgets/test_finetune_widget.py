"""Fine-tune widget: sparse slices detected, training in the background, new model listed."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg._widgets._more_images import statistics_pairs, training_pairs
from napari_microseg._widgets.finetune import FinetuneWidget
from napari_microseg.core.io.synthetic import fluorescence_nuclei


@pytest.fixture
def setup(make_napari_viewer, model_registry):
    viewer = make_napari_viewer()
    sample = fluorescence_nuclei()
    stack = np.stack([sample.image[:128, :128]] * 4)
    labels = np.zeros(stack.shape, np.uint16)
    labels[1] = sample.labels[:128, :128]  # only slices 1 and 3 are corrected
    labels[3] = sample.labels[:128, :128]
    image_layer = viewer.add_image(stack, name="stack")
    labels_layer = viewer.add_labels(labels, name="corrected")
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.value = image_layer
    widget.labels_combo.value = labels_layer
    widget.model_combo.value = "tiny-grey"
    return viewer, widget


def test_detects_annotated_slices_and_suggests_a_name(setup):
    _, widget = setup
    assert widget.slices.value == "1,3"
    assert widget.new_name.value.startswith("tiny-grey-ft")


def test_suggested_name_follows_the_model_but_a_typed_name_stays(setup):
    _, widget = setup
    widget.model_combo.value = "tiny-rgb"
    assert widget.new_name.value.startswith("tiny-rgb-ft")
    widget.new_name.value = "my-model"
    widget.model_combo.value = "tiny-grey"
    assert widget.new_name.value == "my-model"


def test_finetune_saves_a_listed_model_with_lineage(setup, qtbot, monkeypatch):
    from napari_microseg.core.training.settings import TrainSettings

    viewer, widget = setup
    # The tiny model is already good on this sample: six steps rarely beat it, and the recipe
    # would then keep the parent (tested in tests/core/training/test_adapt.py). Save anyway.
    recipe = TrainSettings.for_finetune.__func__
    monkeypatch.setattr(
        TrainSettings,
        "for_finetune",
        classmethod(
            lambda cls, card=None, **kw: recipe(cls, card, **{**kw, "keep_better_start": False})
        ),
    )
    widget.steps.value = 6
    widget.minutes.value = 2.0
    widget.new_name.value = "tiny-grey-mine"
    widget.start()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=180000)
    assert widget.new_model is not None and widget.new_model.name == "tiny-grey-mine"
    assert widget.new_model.card.parent == "tiny-grey"
    assert "→" in widget.result_label.value
    assert widget.curves.train  # live curve got points
    assert "tiny-grey-mine" in widget.model_combo.choices
    widget.segment_with_new_model()
    qtbot.waitUntil(lambda: "stack tiny-grey-mine labels" in viewer.layers, timeout=120000)


def test_bad_inputs_are_messages(setup, monkeypatch):
    viewer, widget = setup
    warnings = []
    monkeypatch.setattr("napari_microseg._widgets.finetune.show_warning", warnings.append)
    other = viewer.add_labels(np.zeros((2, 5, 5), np.uint8), name="other")
    widget.labels_combo.value = other
    widget.start()
    assert "differ in shape" in warnings[-1]
    assert widget.runner.worker is None


def test_empty_labels_error_is_a_message_before_training(setup, monkeypatch):
    viewer, widget = setup
    warnings = []
    monkeypatch.setattr("napari_microseg._widgets.finetune.show_warning", warnings.append)
    empty = viewer.add_labels(np.zeros((4, 128, 128), np.uint16), name="empty")
    widget.labels_combo.value = empty
    widget.start()
    assert widget.runner.worker is None  # nothing started
    assert warnings and "annotated" in warnings[-1].lower()


@pytest.mark.parametrize(
    ("start", "job"),
    [
        ("start", "napari_microseg.core.training.jobs.finetune"),
        ("adapt_to_image", "napari_microseg.core.training.adapt.adapt"),
    ],
)
def test_the_image_pixel_size_goes_to_the_job(setup, record_call, start, job):
    _, widget = setup
    widget.image_combo.value.scale = (1.0, 0.5, 0.5)
    seen = record_call(job)
    with pytest.raises(record_call.stop):
        getattr(widget, start)()
    # Fine-tuning and label-free adaptation resample to the model's pixel size, as Segment does.
    assert tuple(seen["spacing"]) == (1.0, 0.5, 0.5)


def test_other_corrected_images_join_the_fine_tune(setup, record_call):
    viewer, widget = setup
    # One image and its labels: nothing else to offer, so both lists stay out of the way.
    assert widget.more_labels.native.isHidden() and widget.more_images.native.isHidden()
    sample = fluorescence_nuclei((96, 80), n_objects=6, seed=4)
    cells = viewer.add_image(sample.image, name="cells", scale=(0.5, 0.5))
    made = viewer.add_labels(sample.labels, name="cells tiny-grey labels", scale=(0.5, 0.5))
    viewer.add_labels(np.zeros((96, 80), np.uint16), name="painted by hand")  # no image known
    viewer.add_labels(np.zeros((4, 128, 128), np.uint16), name="stack tiny-grey labels")
    widget.refresh_more()
    assert not widget.more_labels.native.isHidden()
    # Only labels made from another image are offered; those of the chosen image would repeat it.
    assert widget.more_labels.choices == (made,)
    widget.more_labels.value = [made]
    assert widget.pixels_label.value.endswith(", and 1 other image(s)")
    # Images nobody corrected: neither the chosen image nor those of ticked labels are offered.
    uncorrected = viewer.add_image(fluorescence_nuclei((64, 64), seed=5).image, name="more")
    viewer.add_image(np.zeros((96, 80), np.float32), name="cells tiny-grey probabilities",
                     metadata={"model": "tiny-grey"})  # fmt: skip
    widget.refresh_more()
    assert widget.more_images.choices == (uncorrected,)
    widget.more_images.value = [uncorrected]
    seen = record_call("napari_microseg.core.training.jobs.finetune")
    with pytest.raises(record_call.stop):
        widget.start()
    (pair,) = seen["more"]
    assert pair.name == "cells tiny-grey labels" and pair.axes == "YX"
    assert pair.image.shape == (96, 80) and tuple(pair.spacing) == (0.5, 0.5)
    assert pair.labels is not made.data  # a snapshot: painting on goes on while it trains
    (statistics_only,) = seen["unlabelled"]
    assert statistics_only.name == "more" and statistics_only.labels is None
    assert statistics_only.image.shape == (64, 64)
    # The image gone: its labels leave the choices; a tick kept anyway is one clear message.
    viewer.layers.remove(cells)
    assert widget.more_labels.choices == () and widget.more_labels.value == []
    with pytest.raises(ValueError, match="that 'cells tiny-grey labels' was made from is gone"):
        training_pairs(viewer, [made])
    viewer.layers.remove(made)
    with pytest.raises(ValueError, match="was removed; untick it"):
        training_pairs(viewer, [made])
    viewer.layers.remove(uncorrected)
    with pytest.raises(ValueError, match="untick it under 'uncorrected images'"):
        statistics_pairs(viewer, [uncorrected])


def test_the_lists_follow_the_layers_added(setup):
    viewer, widget = setup
    assert widget.more_labels.native.isHidden() and widget.more_images.native.isHidden()
    sample = fluorescence_nuclei((64, 64), n_objects=4, seed=1)
    other = viewer.add_image(sample.image, name="other")
    # napari resets a docked widget's choices when layers come and go.
    assert widget.more_images.choices == (other,) and not widget.more_images.native.isHidden()
    made = viewer.add_labels(sample.labels, name="other tiny-grey labels")
    assert widget.more_labels.choices == (made,) and not widget.more_labels.native.isHidden()
    viewer.layers.remove(made)
    assert widget.more_labels.native.isHidden()
