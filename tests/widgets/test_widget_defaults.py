"""Widget defaults follow the image: the Export folder and the Post-process probabilities."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from napari_microseg._widgets import _memory
from napari_microseg._widgets.export import FOLDER_KEY, ExportWidget
from napari_microseg._widgets.postprocess import PostprocessWidget


@pytest.fixture
def em_file(tmp_path):
    folder = tmp_path / "session-3"
    folder.mkdir()
    path = folder / "em.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8))
    return path


def export_and_wait(widget, qtbot):
    widget.export()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=10000)


def test_export_folder_is_the_images_folder_for_its_segmentation(
    make_napari_viewer, em_file, tmp_path
):
    viewer = make_napari_viewer()
    viewer.open(str(em_file), plugin="napari-microseg")
    labels = viewer.add_labels(np.zeros((16, 16), np.uint8), name="em mito-em labels")
    widget = ExportWidget(viewer)
    widget.labels_combo.value = labels
    assert widget.folder.value == em_file.parent
    (tmp_path / "elsewhere").mkdir()
    segmented = viewer.add_labels(  # what the Segment widget records
        np.zeros((16, 16), np.uint8),
        name="other labels",
        metadata={"image_path": str(tmp_path / "elsewhere" / "x.tif")},
    )
    widget.reset_choices()
    widget.labels_combo.value = segmented
    assert widget.folder.value == tmp_path / "elsewhere"


def test_export_folder_without_a_file_is_the_last_one_used_else_the_current_one(
    make_napari_viewer, tmp_path, qtbot, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    viewer = make_napari_viewer()
    labels = viewer.add_labels(np.ones((8, 8), np.uint8), name="pasted")
    widget = ExportWidget(viewer)
    widget.labels_combo.value = labels
    assert widget.folder.value == tmp_path  # no file, nothing remembered: here
    chosen = tmp_path / "results"
    chosen.mkdir()
    widget.folder.value = chosen  # picked by hand: the folder now stays
    widget.write_labels.value = False
    export_and_wait(widget, qtbot)
    assert (chosen / "pasted_measurements.csv").exists()
    assert _memory.recall(FOLDER_KEY) == str(chosen.resolve())

    later = ExportWidget(viewer)  # a new session's widget remembers the folder
    later.labels_combo.value = labels
    assert later.folder.value == chosen


def test_a_picked_folder_stays_when_the_layer_changes(make_napari_viewer, em_file, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(em_file), plugin="napari-microseg")
    first = viewer.add_labels(np.zeros((16, 16), np.uint8), name="em a labels")
    second = viewer.add_labels(np.zeros((16, 16), np.uint8), name="em b labels")
    widget = ExportWidget(viewer)
    widget.labels_combo.value = first
    widget.folder.value = tmp_path
    widget.labels_combo.value = second
    assert widget.folder.value == tmp_path


def test_memory_survives_a_broken_file(tmp_path, monkeypatch):
    monkeypatch.setenv(_memory.ENV_FOLDER, str(tmp_path))
    (tmp_path / "widgets.json").write_text("{not json")
    assert _memory.recall("export_folder") is None
    _memory.remember("export_folder", "/data")
    assert _memory.recall("export_folder") == "/data"
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def offered(widget):
    return [layer.name for layer in widget.prob_combo.choices if layer is not None]


def test_postprocess_offers_probabilities_only_and_picks_the_newest(make_napari_viewer):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.integers(0, 255, (32, 32), dtype=np.uint8), name="raw em")
    viewer.add_image(rng.normal(size=(32, 32)).astype(np.float32) * 100, name="filtered")
    older = viewer.add_image(rng.random((32, 32), dtype=np.float32), name="a [0, 1] map")
    widget = PostprocessWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert offered(widget) == ["a [0, 1] map"]
    assert widget.prob_combo.value is older

    newest = viewer.add_image(  # what the Segment widget adds
        rng.random((32, 32), dtype=np.float32),
        name="em mito-em probabilities",
        metadata={"foreground_class": 1, "postprocess": {"method": "otsu"}},
    )
    assert widget.prob_combo.value is newest
    assert sorted(offered(widget)) == ["a [0, 1] map", "em mito-em probabilities"]
    viewer.add_image(rng.integers(0, 9, (32, 32), dtype=np.uint16), name="another raw")
    assert widget.prob_combo.value is newest  # a raw image never takes over


def test_postprocess_with_no_probabilities_waits_quietly(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.uint8), name="raw")
    widget = PostprocessWidget(viewer)
    assert widget.prob_combo.value is None and offered(widget) == []
