"""Segment widget: pick, run in the background, replace results, cancel, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg._widgets.segment import SegmentWidget
from napari_microseg.core.io.synthetic import fluorescence_nuclei


@pytest.fixture
def setup(make_napari_viewer, model_registry):
    viewer = make_napari_viewer()
    sample = fluorescence_nuclei()
    layer = viewer.add_image(sample.image, name="nuclei", scale=(0.2, 0.2), translate=(5, 7))
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.value = layer
    widget.model_combo.value = "tiny-grey"
    return viewer, layer, widget, sample


def run_and_wait(widget, qtbot, timeout=60000):
    widget.run()
    # Wait on the runner's state, not a signal: a fast job may finish before we could connect.
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=timeout)


def test_picker_shows_models_card_and_device(setup):
    _, _, widget, _ = setup
    values = [value for value in widget.model_combo.choices]
    assert {"tiny-grey", "tiny-rgb"} <= set(values)
    assert "unet" in widget.card_label.value
    assert widget.tile.value == 128  # from the card
    assert widget.device_label.value.startswith("runs on: ")
    assert widget.card_label.native.wordWrap()  # a long card does not widen the dock


def test_test_time_augmentation_follows_the_card_of_the_picked_model(setup, model_registry):
    import json

    _, _, widget, _ = setup
    assert widget.tta.value is False and "default" not in widget.tta.text
    card_file = model_registry / "tiny-rgb.json"
    card = json.loads(card_file.read_text())
    card["recommended"]["tta"] = True
    card_file.write_text(json.dumps(card))
    widget.refresh_models()
    widget.model_combo.value = "tiny-rgb"
    assert widget.tta.value is True
    assert widget.tta.text.endswith("this model's default")
    widget.model_combo.value = "tiny-grey"
    assert widget.tta.value is False and "default" not in widget.tta.text
    widget.tta.value = True  # the user's choice stays while the same model is kept
    widget.refresh_models()
    assert widget.tta.value is True


def test_run_adds_probabilities_and_labels_with_scale_then_replaces(setup, qtbot):
    viewer, _, widget, sample = setup
    run_and_wait(widget, qtbot)
    prob = viewer.layers["nuclei tiny-grey probabilities"]
    labels = viewer.layers["nuclei tiny-grey labels"]
    assert prob.data.shape == sample.image.shape  # the foreground class only: no class slider
    assert "class_axis" not in prob.metadata and prob.metadata["foreground_class"] == 1
    assert prob.metadata["postprocess"]["method"] == "otsu"
    assert prob.metadata["postprocess"]["foreground_class"] == 0  # of the one map it holds
    np.testing.assert_allclose(labels.scale, (0.2, 0.2))
    np.testing.assert_allclose(labels.translate, (5, 7))
    truth, found = sample.labels > 0, labels.data > 0
    dice = 2 * (truth & found).sum() / (truth.sum() + found.sum())
    assert dice > 0.6, dice
    n_layers = len(viewer.layers)
    assert widget.model_combo.value == "tiny-grey"  # adding layers keeps the chosen model
    run_and_wait(widget, qtbot)
    assert len(viewer.layers) == n_layers


def test_field_of_view_and_current_slice(setup, qtbot, make_napari_viewer):
    viewer, layer, widget, _ = setup
    viewer.camera.center = (5 + 0.2 * 100, 7 + 0.2 * 100)
    viewer.camera.zoom = viewer.camera.zoom * 4
    widget.region.value = "field of view"
    run_and_wait(widget, qtbot)
    labels = viewer.layers["nuclei tiny-grey labels"]
    assert labels.data.shape[0] < layer.data.shape[0]
    stack = viewer.add_image(np.stack([layer.data] * 3), name="stack")
    widget.image_combo.value = stack
    widget.region.value = "current slice"
    run_and_wait(widget, qtbot)
    assert viewer.layers["stack tiny-grey labels"].data.shape == (1, *layer.data.shape)


def test_cancel_leaves_no_layer(setup, qtbot):
    viewer, _, widget, _ = setup
    widget.tile.value = 64
    widget.tta.value = True
    widget.run()
    widget.runner.cancel()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=60000)
    assert not [layer for layer in viewer.layers if "tiny-grey" in layer.name]


def test_colour_is_fitted_to_the_model_with_a_notice(setup, qtbot, monkeypatch):
    viewer, layer, widget, _ = setup
    infos, errors = [], []
    monkeypatch.setattr("napari_microseg._widgets.segment.show_info", infos.append)
    monkeypatch.setattr("napari_microseg._widgets._runner.show_error", errors.append)
    grey = np.asarray(layer.data, np.float32)[:64, :64]
    rgb = viewer.add_image(np.stack([grey - 1, grey, grey + 1], axis=-1), name="rgb", rgb=True)
    widget.image_combo.value = rgb
    run_and_wait(widget, qtbot)
    assert infos[-1] == (
        "Model 'tiny-grey' takes greyscale (1 channel) input; the RGB image was made grey by "
        "the mean of R, G and B, as the model's training data were."
    )
    assert viewer.layers["rgb tiny-grey labels"].data.shape == (64, 64)
    widget.image_combo.value = layer
    widget.model_combo.value = "tiny-rgb"
    run_and_wait(widget, qtbot)
    assert "the greyscale image was repeated over R, G and B" in infos[-1]
    assert viewer.layers["nuclei tiny-rgb labels"].data.shape == layer.data.shape
    assert not errors


def test_no_image_and_broken_model_file(setup, qtbot, tmp_path, monkeypatch):
    viewer, layer, widget, _ = setup
    warnings = []
    monkeypatch.setattr("napari_microseg._widgets.segment.show_warning", warnings.append)
    viewer.layers.remove(layer)
    widget.run()
    assert warnings and "image" in warnings[-1]
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a model")
    widget.add_model_path(str(broken))
    assert "Unusable" in widget.card_label.value


@pytest.mark.slow
def test_gui_stays_responsive_while_predicting_2048(setup, qtbot, monkeypatch):
    """The Qt event loop never stalls for 100 ms while a 2048x2048 image is predicted."""
    import time

    from qtpy.QtCore import QTimer

    viewer, _, widget, _ = setup
    rng = np.random.default_rng(0)
    big = viewer.add_image(rng.integers(0, 4000, (2048, 2048), dtype=np.uint16), name="big")
    widget.image_combo.value = big
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    prediction_done: list[float] = []
    from napari_microseg._widgets import segment as segment_module

    show_results = segment_module.show_results

    def record_then_show(*args, **kwargs):
        prediction_done.append(time.perf_counter())
        return show_results(*args, **kwargs)

    monkeypatch.setattr(segment_module, "show_results", record_then_show)
    timer.start(10)
    widget.run()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=300000)
    timer.stop()
    assert "big tiny-grey labels" in viewer.layers
    # Adding the result layers is GUI work by design; the prediction itself must not stall Qt.
    during = np.array([t for t in ticks if t <= prediction_done[0]])
    gaps = np.diff(during)
    assert len(during) > 20
    assert gaps.max() < 0.1, f"the event loop stalled for {gaps.max():.3f} s"


@pytest.mark.parametrize("resample", [True, False])
def test_image_far_from_the_model_pixel_size_is_resampled_unless_unchecked(
    setup, qtbot, monkeypatch, resample
):
    """The layer is 0.2 µm per pixel; the model says it was trained at 0.1 µm (2x)."""
    from napari_microseg._widgets import segment as widget_module
    from napari_microseg.core.inference import segment as core_segment
    from napari_microseg.core.models.registry import load_model

    viewer, _, widget, sample = setup
    model = load_model(str(widget._entries["tiny-grey"].path), device="cpu")
    model.card.pixel_size_um = 0.1
    widget.device_combo.value = "cpu"
    widget.warm_models = {("tiny-grey", "cpu"): model}  # warm, with that card
    monkeypatch.setattr(widget_module, "_card", lambda path: model.card)
    infos, warnings, results = [], [], []
    monkeypatch.setattr(widget_module, "show_info", infos.append)
    monkeypatch.setattr(widget_module, "show_warning", warnings.append)
    real = core_segment.segment_job

    def spy(*args, **kwargs):
        result = yield from real(*args, **kwargs)
        results.append(result)
        return result

    monkeypatch.setattr(core_segment, "segment_job", spy)
    assert widget.match_scale.value is True  # on by default
    widget.match_scale.value = resample
    run_and_wait(widget, qtbot)
    assert len(results) == 1
    labels = viewer.layers["nuclei tiny-grey labels"]
    assert labels.data.shape == sample.image.shape  # back on the image's grid
    np.testing.assert_allclose(labels.scale, (0.2, 0.2))
    if resample:
        assert results[0].resampled == (2.0, 2.0)
        assert not warnings and len(infos) == 1 and "resampled 2x" in infos[0]
    else:
        assert results[0].resampled is None
        assert len(warnings) == 1 and "Rescale the image by 2" in warnings[0]
