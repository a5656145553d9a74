"""No edit is ever lost in the GUI: every action that replaces labels asks first or is undoable.

Post-process writes a new labels layer unless asked to write into the existing
one; then a hand-edited layer is replaced only after a confirmation, as one
undo step. The live preview rewrites only its own, unedited layer. A Segment
re-run keeps an edited result. Correct's operations are each one undo step,
and the count and autosave follow an undo.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_microseg._widgets import _layer_edits as layer_edits
from napari_microseg._widgets import postprocess as postprocess_module
from napari_microseg._widgets.correct import CorrectWidget
from napari_microseg._widgets.postprocess import PostprocessWidget
from napari_microseg.core.postprocess import PostprocessPipeline
from napari_microseg.core.progress import Progress


def blobs_probability(shape=(3, 48, 48)) -> np.ndarray:
    prob = np.zeros(shape, np.float32)
    prob[:, 5:15, 5:15] = 0.9
    prob[:, 25:40, 25:35] = 0.8
    return prob


@pytest.fixture
def setup(make_napari_viewer, monkeypatch):
    """A viewer, a Post-process widget on a probability layer, and the notifications shown."""
    viewer = make_napari_viewer()
    widget = PostprocessWidget(viewer)
    viewer.window.add_dock_widget(widget)
    prob = viewer.add_image(blobs_probability(), name="cells probabilities")
    widget.prob_combo.value = prob
    shown: list[str] = []
    monkeypatch.setattr(postprocess_module, "show_info", shown.append)
    return viewer, widget, prob, shown


def hand_edited_labels(viewer, name="cells labels"):
    """A labels layer with a stroke painted by hand (through napari's undo history)."""
    layer = viewer.add_labels(np.zeros((3, 48, 48), np.int32), name=name)
    layer.data_setitem((np.array([1, 1]), np.array([44, 45]), np.array([44, 45])), 7)
    return layer, layer.data.copy()


def apply_and_wait(widget, qtbot):
    widget.apply_to_all()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=10000)


def test_apply_writes_a_new_layer_by_default(setup, qtbot):
    viewer, widget, _, _ = setup
    edited, before = hand_edited_labels(viewer)
    apply_and_wait(widget, qtbot)
    np.testing.assert_array_equal(edited.data, before)
    new = viewer.layers[-1]
    assert new is not edited and new.data.max() == 2
    assert new.name in widget.status.value


def test_replacing_an_edited_layer_asks_and_no_keeps_it(setup, qtbot, monkeypatch):
    viewer, widget, _, _ = setup
    edited, before = hand_edited_labels(viewer)
    asked = []
    monkeypatch.setattr(widget, "confirm_replace", lambda layer: asked.append(layer) or False)
    widget.replace.value = True
    apply_and_wait(widget, qtbot)
    assert asked == [edited]
    np.testing.assert_array_equal(edited.data, before)
    assert viewer.layers[-1] is not edited and viewer.layers[-1].data.max() == 2


def test_confirmed_replacement_is_one_undo_step(setup, qtbot, monkeypatch):
    viewer, widget, _, shown = setup
    edited, before = hand_edited_labels(viewer)
    monkeypatch.setattr(widget, "confirm_replace", lambda layer: True)
    widget.replace.value = True
    n_layers = len(viewer.layers)
    apply_and_wait(widget, qtbot)
    assert len(viewer.layers) == n_layers and edited.data.max() == 2
    assert shown == ["Replaced 'cells labels' (Ctrl+Z undoes)."]
    edited.undo()
    np.testing.assert_array_equal(edited.data, before)  # the hand edit is back


def test_an_unedited_result_is_replaced_without_asking(setup, qtbot, monkeypatch):
    viewer, widget, _, _ = setup
    apply_and_wait(widget, qtbot)
    made = viewer.layers["cells labels"]
    first = made.data.copy()
    monkeypatch.setattr(widget, "confirm_replace", pytest.fail)
    widget.replace.value = True
    widget.auto_threshold.value = False
    widget.method.value = "threshold"
    widget.threshold.value = 0.85  # only the 0.9 blob is left
    apply_and_wait(widget, qtbot)
    assert viewer.layers["cells labels"] is made and made.data.max() == 1
    made.undo()
    np.testing.assert_array_equal(made.data, first)


@pytest.fixture
def held_job(monkeypatch):
    """Post-processing that waits for the test to release it (to change layers meanwhile)."""
    release = threading.Event()

    def job(self, prob, **kwargs):
        yield Progress(0, 1, "waiting")
        release.wait(10)
        labels = np.zeros(prob.shape, np.int32)
        labels[:, 5:15, 5:15] = 1
        return labels

    monkeypatch.setattr(PostprocessPipeline, "run_job", job)
    return release


def test_labels_layer_deleted_during_the_run(setup, qtbot, monkeypatch, held_job):
    viewer, widget, _, shown = setup
    edited, before = hand_edited_labels(viewer)
    monkeypatch.setattr(widget, "confirm_replace", lambda layer: True)
    widget.replace.value = True
    widget.apply_to_all()
    viewer.layers.remove(edited)
    held_job.set()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=10000)
    assert shown == [
        "The labels layer 'cells labels' was removed during the run; "
        "the result is in the new layer 'cells labels'."
    ]
    assert viewer.layers["cells labels"].data.max() == 1
    np.testing.assert_array_equal(edited.data, before)  # the removed layer was not written


def test_labels_layer_edited_during_the_run_is_kept(setup, qtbot, monkeypatch, held_job):
    viewer, widget, _, shown = setup
    edited, _ = hand_edited_labels(viewer)
    monkeypatch.setattr(widget, "confirm_replace", lambda layer: True)
    widget.replace.value = True
    widget.apply_to_all()
    edited.data_setitem((np.array([0]), np.array([0]), np.array([0])), 9)
    during = edited.data.copy()
    held_job.set()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=10000)
    np.testing.assert_array_equal(edited.data, during)
    assert shown == [
        "'cells labels' was edited during the run, so it is kept; "
        "the result is in the new layer 'cells labels [1]'."
    ]


def test_probability_layer_deleted_during_the_run_keeps_the_result(setup, qtbot, held_job):
    viewer, widget, prob, shown = setup
    prob.scale = (1.0, 0.5, 0.5)
    widget.apply_to_all()
    viewer.layers.remove(prob)
    held_job.set()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=10000)
    result = viewer.layers["cells labels"]
    np.testing.assert_allclose(result.scale, (1.0, 0.5, 0.5))
    assert shown == [
        "'cells probabilities' was removed; the result is in the new layer 'cells labels'."
    ]


def test_preview_never_rewrites_a_users_layer(setup):
    viewer, widget, _, _ = setup
    users = viewer.add_labels(np.full((48, 48), 5, np.int32), name="cells probabilities preview")
    widget.threshold.value = 0.4  # re-runs the preview
    np.testing.assert_array_equal(users.data, 5)
    preview = widget._preview[0]
    assert preview is not users and preview.data.max() == 2


def test_an_edited_preview_is_kept(setup):
    viewer, widget, _, shown = setup
    widget.update_preview()
    preview = viewer.layers["cells probabilities preview"]
    preview.data_setitem((np.array([47]), np.array([47])), 4)
    edited = preview.data.copy()
    widget.min_size.value = 5.0  # re-runs the preview
    np.testing.assert_array_equal(preview.data, edited)
    assert shown == [
        "'cells probabilities preview' was edited, so it is kept; "
        "the preview goes on in a new layer."
    ]
    assert viewer.layers[-1] is not preview and viewer.layers[-1].data.max() == 2


def test_segment_rerun_keeps_an_edited_result(make_napari_viewer, monkeypatch):
    """What a Segment re-run does with its labels layer (``show_results`` uses put_result)."""
    viewer = make_napari_viewer()
    shown: list[str] = []
    monkeypatch.setattr(layer_edits, "show_info", shown.append)
    first = np.zeros((32, 32), np.int32)
    first[2:8, 2:8] = 1
    layer_edits.put_result(viewer, "img m labels", first, "labels", scale=(1.0, 1.0), opacity=0.5)
    layer = viewer.layers["img m labels"]
    second = np.zeros((32, 32), np.int32)
    second[10:20, 10:20] = 1
    viewer.add_image(np.zeros((32, 32)), name="on top")

    # Unedited: overwritten in place as one undo step, and brought back on top.
    layer_edits.put_result(viewer, "img m labels", second, "labels", scale=(1.0, 1.0), opacity=0.5)
    assert viewer.layers[-1] is layer
    np.testing.assert_array_equal(layer.data, second)
    layer.undo()
    np.testing.assert_array_equal(layer.data, first)

    # Edited by hand (the undo above counts too): kept, the new result goes beside it.
    edited = layer.data.copy()
    layer_edits.put_result(viewer, "img m labels", second, "labels", scale=(1.0, 1.0), opacity=0.5)
    np.testing.assert_array_equal(layer.data, edited)
    np.testing.assert_array_equal(viewer.layers["img m labels [1]"].data, second)
    assert shown == [
        "'img m labels' has edits, so it is kept; the new result is 'img m labels [1]'."
    ]


def correct_setup(viewer):
    labels = np.zeros((40, 40), np.int32)
    labels[2:10, 2:10] = 1
    labels[2:10, 12:20] = 2
    labels[20:24, 20:24] = 3  # small
    labels[25:35, 2:30] = 4  # long: split at both ends
    labels[28, 5] = 0  # a hole
    layer = viewer.add_labels(labels, name="corrected")
    widget = CorrectWidget(viewer)
    widget.labels_combo.value = layer
    return layer, widget


@pytest.mark.parametrize(
    "operation",
    ["merge", "split", "delete", "fill_holes", "relabel", "remove_small"],
)
def test_every_correction_is_one_undo_step(make_napari_viewer, tmp_path, monkeypatch, operation):
    monkeypatch.setenv("NAPARI_MICROSEG_AUTOSAVE", str(tmp_path))
    viewer = make_napari_viewer()
    layer, widget = correct_setup(viewer)
    before = layer.data.copy()
    if operation == "merge":
        widget.select(1)
        widget.select(2)
    elif operation == "split":
        widget.select(4, (30.0, 3.0))
        widget.select(4, (30.0, 28.0))
    elif operation == "delete":
        widget.select(3)
    elif operation == "relabel":
        layer.data_setitem(np.nonzero(layer.data == 4), 9)  # a gap at 4
        before = layer.data.copy()
    elif operation == "remove_small":
        widget.min_size.value = 20
    getattr(widget, operation)()
    assert not np.array_equal(layer.data, before)
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_count_and_autosave_follow_an_undo(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_MICROSEG_AUTOSAVE", str(tmp_path))
    viewer = make_napari_viewer()
    layer, widget = correct_setup(viewer)
    widget.select(1)
    widget.select(2)
    widget.merge()
    assert widget.count_label.value == "objects: 3" and not widget._dirty
    layer.undo()
    assert widget.count_label.value == "objects: 4"
    assert widget._dirty  # the next autosave writes the labels as they are after the undo
