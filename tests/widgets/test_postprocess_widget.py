"""Post-process widget: live preview on the current slice, apply to all with Cancel."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg._widgets.postprocess import PostprocessWidget


def blobs_probability(shape=(4, 64, 64)) -> np.ndarray:
    prob = np.zeros(shape, np.float32)
    prob[:, 10:20, 10:20] = 0.9
    prob[:, 30:50, 30:40] = 0.7
    prob[2, 5:8, 50:60] = 0.95  # only on slice 2
    return prob


@pytest.fixture
def viewer_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = PostprocessWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def test_preview_follows_the_slice_and_sliders(viewer_widget):
    viewer, widget = viewer_widget
    viewer.add_image(blobs_probability(), name="mito probabilities", scale=(0.1, 0.02, 0.02))
    widget.prob_combo.value = viewer.layers["mito probabilities"]
    viewer.dims.set_point(0, 0.0)
    preview = viewer.layers["mito probabilities preview"]
    assert preview.data.ndim == 2 and preview.data.max() == 2
    np.testing.assert_allclose(preview.scale, (0.02, 0.02))
    viewer.dims.set_point(0, 0.2)  # slice 2 holds a third object
    assert viewer.layers["mito probabilities preview"].data.max() == 3
    widget.auto_threshold.value = False
    widget.method.value = "threshold"
    widget.threshold.value = 0.8  # the 0.7 blob disappears
    assert viewer.layers["mito probabilities preview"].data.max() == 2


def test_class_stack_from_segment_widget_uses_its_metadata(viewer_widget):
    viewer, widget = viewer_widget
    fg = np.zeros((32, 32), np.float32)
    fg[5:15, 5:15] = 0.9
    stack = np.stack([1 - fg, fg])
    layer = viewer.add_image(
        stack,
        name="x probabilities",
        metadata={"class_axis": 0, "postprocess": {"method": "hysteresis", "min_size": 4}},
    )
    widget.prob_combo.value = layer
    assert widget.method.value == "hysteresis"
    assert viewer.layers["x probabilities preview"].data.shape == (32, 32)


def test_apply_to_all_slices(viewer_widget, qtbot):
    viewer, widget = viewer_widget
    viewer.add_image(blobs_probability(), name="mito probabilities")
    widget.prob_combo.value = viewer.layers["mito probabilities"]
    widget.apply_to_all()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=10000)
    labels = viewer.layers["mito labels"].data
    assert labels.shape == (4, 64, 64) and labels.max() == 3
    assert widget.status.value == "3 objects in 'mito labels'"
    widget.apply_to_all()  # again: a new layer, the first result stays
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=10000)
    assert viewer.layers["mito labels [1]"].data.max() == 3
    assert viewer.layers["mito labels"].data is labels


def test_cancel_leaves_no_layer(viewer_widget, qtbot, monkeypatch):
    import time

    from napari_microseg.core.postprocess import PostprocessPipeline
    from napari_microseg.core.progress import Progress

    def slow_job(self, prob, **kwargs):
        for step in range(100):
            time.sleep(0.05)
            yield Progress(step, 100, "slow stage")
        return np.zeros(prob.shape, np.uint32)

    viewer, widget = viewer_widget
    viewer.add_image(blobs_probability(), name="p")
    widget.prob_combo.value = viewer.layers["p"]
    monkeypatch.setattr(PostprocessPipeline, "run_job", slow_job)
    widget.apply_to_all()
    qtbot.wait(150)
    widget.runner.cancel()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=10000)
    assert "p labels" not in viewer.layers


def test_removed_layer_does_not_break_it(viewer_widget):
    viewer, widget = viewer_widget
    layer = viewer.add_image(blobs_probability(), name="p")
    widget.prob_combo.value = layer
    viewer.layers.remove(layer)
    widget.update_preview()
    widget.apply_to_all()
    assert widget.runner.worker is None


def test_watershed_preview_reuses_the_objects_when_only_cleanup_moves(viewer_widget, monkeypatch):
    from scipy import ndimage as ndi

    from napari_microseg.core.postprocess import pipeline as postprocess_pipeline

    viewer, widget = viewer_widget
    rng = np.random.default_rng(0)
    prob = ndi.gaussian_filter(rng.random((2, 96, 96)), (0, 3, 3)).astype(np.float32)
    prob = (prob - prob.min()) / np.ptp(prob)
    viewer.add_image(prob, name="p")
    widget.prob_combo.value = viewer.layers["p"]
    widget.method.value = "watershed"
    calls = []
    split = postprocess_pipeline.watershed_split
    monkeypatch.setattr(
        postprocess_pipeline, "watershed_split", lambda *a, **k: calls.append(1) or split(*a, **k)
    )
    for min_size in (5.0, 15.0, 25.0):
        widget.min_size.value = min_size
        expected = widget._resolved_pipeline(viewer.layers["p"], widget.pipeline()).run(prob[0])
        np.testing.assert_array_equal(viewer.layers["p preview"].data, expected)
    assert len(calls) == 3  # one per expected result above; the preview split only once before
    widget.h.value = 3.0  # a watershed setting: the objects are found again
    assert len(calls) == 4
