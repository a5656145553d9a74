"""Correct widget: each operation end to end on a real viewer, with undo and autosave."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg._widgets.correct import SHORTCUTS, CorrectWidget
from napari_microseg.core.io.autosave import autosave_path
from napari_microseg.core.io.images import imread


@pytest.fixture(autouse=True)
def autosave_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_MICROSEG_AUTOSAVE", str(tmp_path / "autosave"))


@pytest.fixture
def setup(make_napari_viewer):
    viewer = make_napari_viewer()
    labels = np.zeros((20, 30), np.uint16)
    labels[2:8, 2:8] = 1
    labels[2:8, 10:16] = 2
    labels[12:18, 2:12] = 3
    labels[12:18, 12:22] = 3  # one object to split at x≈6 and x≈17
    labels[0, 29] = 4  # a speck
    layer = viewer.add_labels(labels, name="corrected")
    widget = CorrectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, layer, widget


def test_count_and_shortcuts_listed(setup):
    _, _, widget = setup
    assert widget.count_label.value == "objects: 4"
    for key, _, method in SHORTCUTS:
        assert key.replace("-", "+") in widget.buttons[method].text


def test_merge_then_undo(setup):
    _, layer, widget = setup
    widget.select(1)
    widget.select(2)
    widget.merge()
    assert set(np.unique(layer.data)) == {0, 1, 3, 4}
    assert widget.count_label.value == "objects: 3"
    layer.undo()
    assert set(np.unique(layer.data)) == {0, 1, 2, 3, 4}


def test_split_at_two_seeds(setup):
    _, layer, widget = setup
    widget.select(3, (15.0, 5.0))
    widget.select(3, (15.0, 18.0))
    widget.split()
    assert (layer.data[12:18, 2:6] == 3).all()
    assert (layer.data[12:18, 18:22] == 5).all()


def test_delete_small_fill_relabel(setup):
    _, layer, widget = setup
    widget.min_size.value = 5
    widget.remove_small()
    assert 4 not in layer.data
    widget.select(2)
    widget.delete()
    assert 2 not in layer.data
    widget.relabel()
    assert set(np.unique(layer.data)) == {0, 1, 2}
    layer.data[4, 4] = 0
    layer.refresh()
    widget.fill_holes()
    assert layer.data[4, 4] == 1


def test_shortcut_runs_the_operation(setup):
    from app_model.types import KeyBinding

    _, layer, widget = setup
    widget.select(1)
    widget.select(2)
    layer.keymap[KeyBinding.from_str("Shift+M")](layer)
    assert 2 not in layer.data


def test_next_object_moves_the_camera(setup):
    viewer, layer, widget = setup
    widget.next_object()
    assert layer.selected_label == 1
    np.testing.assert_allclose(viewer.camera.center[-2:], (4.5, 4.5))
    widget.previous_object()
    assert layer.selected_label == 4


def test_every_operation_autosaves_and_restores(setup, qtbot, tmp_path):
    viewer, layer, widget = setup
    widget.select(1)
    widget.delete()
    path = autosave_path("corrected")
    assert path.parent == tmp_path / "autosave"
    qtbot.waitUntil(path.exists, timeout=5000)
    np.testing.assert_array_equal(imread(path).data, layer.data)
    widget.restore_autosave()
    restored = viewer.layers["corrected (restored)"]
    np.testing.assert_array_equal(restored.data, layer.data)


def test_layers_named_alike_keep_separate_autosaves(setup, qtbot):
    viewer, layer, widget = setup
    other = viewer.add_labels(np.flipud(layer.data), name="cells_nuclei")
    layer.name = "cells/nuclei"  # cleans up to the same file name as the other layer
    for target in (layer, other):
        widget.labels_combo.value = target
        widget.autosave()
    paths = [autosave_path("cells/nuclei"), autosave_path("cells_nuclei")]
    assert paths[0] != paths[1]
    qtbot.waitUntil(lambda: all(p.exists() for p in paths), timeout=5000)
    np.testing.assert_array_equal(imread(paths[0]).data, layer.data)
    np.testing.assert_array_equal(imread(paths[1]).data, other.data)


def test_survives_layer_removal(setup):
    viewer, layer, widget = setup
    viewer.layers.remove(layer)
    widget.merge()
    widget.delete()
    widget.next_object()
    assert widget.layer is None
