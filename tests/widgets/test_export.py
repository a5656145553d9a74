"""Export widget: labels + measurements written off the GUI thread, never overwriting silently."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_microseg._widgets import export as export_widget
from napari_microseg._widgets.export import ExportWidget
from napari_microseg.core.io.images import imread


@pytest.fixture
def setup(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = np.zeros((3, 20, 20), np.uint32)
    labels[1, 2:6, 2:6] = 70000
    labels[:, 10:15, 10:15] = 2
    image = viewer.add_image(np.full(labels.shape, 5.0), name="em", scale=(0.1, 0.02, 0.02))
    layer = viewer.add_labels(labels, name="mito", scale=(0.1, 0.02, 0.02))
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.folder.value = tmp_path
    widget.image_combo.value = image
    widget.labels_combo.value = layer
    return viewer, layer, widget


def run_export(widget, qtbot):
    widget.export()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=10000)


@pytest.mark.parametrize("fmt", ["TIFF", "OME-Zarr"])
def test_export_labels_and_measurements_then_reread(setup, qtbot, tmp_path, fmt):
    _, layer, widget = setup
    widget.format.value = fmt
    run_export(widget, qtbot)
    labels_path, csv_path = widget.targets()
    back = imread(labels_path)
    np.testing.assert_array_equal(np.asarray(back.data), layer.data)
    np.testing.assert_allclose(back.scale, (0.1, 0.02, 0.02))
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["label"] for r in rows] == ["2", "70000"]
    assert float(rows[1]["volume_um3"]) == pytest.approx(16 * 0.1 * 0.02 * 0.02)
    assert float(rows[0]["mean_intensity"]) == 5.0
    assert "objects: 2" in widget.summary.value
    summary = list(csv.DictReader(csv_path.with_name(f"{csv_path.stem}_summary.csv").open()))
    total = sum(float(r["volume_um3"]) for r in rows)
    assert len(summary) == 1 and summary[0]["objects"] == "2"
    assert float(summary[0]["total_volume_um3"]) == pytest.approx(total, rel=1e-5)


def test_replaces_an_earlier_export_only_when_confirmed(setup, qtbot):
    _, layer, widget = setup
    labels_path, _ = widget.targets()
    run_export(widget, qtbot)
    first = labels_path.read_bytes()
    layer.data[0, 0, 0] = 9
    widget.confirm_overwrite = lambda existing: False
    run_export(widget, qtbot)
    assert labels_path.read_bytes() == first
    widget.confirm_overwrite = lambda existing: True
    run_export(widget, qtbot)
    assert int(np.asarray(imread(labels_path).data)[0, 0, 0]) == 9


def test_never_replaces_a_file_it_did_not_write(setup, qtbot, monkeypatch):
    _, _, widget = setup
    labels_path, _ = widget.targets()
    labels_path.write_text("precious")
    warnings = []
    monkeypatch.setattr(export_widget, "show_warning", warnings.append)
    widget.confirm_overwrite = lambda existing: True
    widget.export()
    assert widget.runner.worker is None and labels_path.read_text() == "precious"
    assert "was not written by napari-microseg" in warnings[0]
    assert "not even with your confirmation" in warnings[0]


def test_png_refuses_a_stack_and_no_layer_is_a_message(setup, qtbot, tmp_path):
    viewer, layer, widget = setup
    widget.format.value = "PNG"
    widget.export()
    assert widget.runner.worker is None and not list(tmp_path.glob("*.png"))
    viewer.layers.remove(layer)
    widget.export()  # no labels layer: a warning, no crash
    assert widget.runner.worker is None


def test_unwritable_folder_mid_export_keeps_layers(setup, qtbot, monkeypatch):
    import napari_microseg.core.evaluation.export as export_module

    viewer, _, widget = setup

    def refuse(*args, **kwargs):
        raise PermissionError("Cannot write to the folder: permission denied.")

    monkeypatch.setattr(export_module, "write_measurements", refuse)
    errors = []
    monkeypatch.setattr(
        "napari_microseg._widgets._runner.show_error", lambda message: errors.append(message)
    )
    run_export(widget, qtbot)
    assert errors and "permission denied" in errors[0]
    assert [lay.name for lay in viewer.layers] == ["em", "mito"]
    assert not list(widget.targets()[1].parent.glob("*.csv"))
