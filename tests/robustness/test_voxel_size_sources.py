"""Physical units never silently wrong: where a layer's voxel size comes from, or why it is unknown.

A layer opened by napari's own reader has scale 1; the widgets read the voxel
size from its file (never writing to it). A layer with no scale and no file,
a file that says no voxel size, a file that does not match the layer, or a
file gone since it was opened each give one clear sentence, and sizes stay in
pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_microseg._reader import layer_voxel_size
from napari_microseg._widgets import export as export_widget
from napari_microseg._widgets.export import ExportWidget


def _tif(path, data, um_per_pixel=None):
    """An ImageJ TIFF with that pixel size in µm, or a plain TIFF that says none."""
    if um_per_pixel is None:
        tifffile.imwrite(path, data)
    else:
        tifffile.imwrite(
            path,
            data,
            imagej=True,
            resolution=(1 / um_per_pixel,) * 2,
            metadata={"unit": "um", "axes": "YX"},
        )
    return path


def test_voxel_size_is_read_from_the_source_file_without_changing_it(make_napari_viewer, tmp_path):
    path = _tif(tmp_path / "em.tif", np.arange(48, dtype=np.uint8).reshape(6, 8), 0.25)
    before = path.read_bytes()
    viewer = make_napari_viewer(show=False)
    [layer] = viewer.open(str(path))  # napari's own reader: scale 1
    voxel = layer_voxel_size(layer, 2)
    assert voxel.size_um == (0.25, 0.25)
    assert voxel.note == (
        "voxel size 0.25 × 0.25 µm, read from em.tif (the layer has scale 1: another reader "
        "opened it)"
    )
    assert path.read_bytes() == before
    np.testing.assert_allclose(layer.scale, (1, 1))  # the layer itself is left as it was


def test_no_scale_and_no_source_file_says_physical_units_are_unknown(
    make_napari_viewer, tmp_path, qtbot, monkeypatch
):
    viewer = make_napari_viewer(show=False)
    labels = np.zeros((6, 8), np.uint16)
    labels[1:3, 1:4] = 1
    layer = viewer.add_labels(labels.copy(), name="drawn")
    voxel = layer_voxel_size(layer, 2)
    assert voxel.size_um is None
    assert voxel.note == (
        "Physical units unknown: the layer 'drawn' has scale 1 and no source file, so sizes are "
        "in pixels. Set its scale in µm, or open the file with File > Open with Plugin > "
        "napari-microseg."
    )
    warnings = []
    monkeypatch.setattr(export_widget, "show_warning", warnings.append)
    widget = ExportWidget(viewer)
    widget.folder.value = tmp_path
    widget.labels_combo.value = layer
    assert widget.voxel_label.value == voxel.note  # said in the widget before exporting
    widget.write_labels.value = False
    widget.export()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=10000)
    assert warnings == [voxel.note]
    assert "total_area_px2" in widget.last_result.summary  # pixels, and named so
    np.testing.assert_array_equal(layer.data, labels)  # nothing lost


@pytest.mark.parametrize(
    ("case", "phrase"),
    [
        ("no size", "em.tif does not say its voxel size, so sizes are in pixels"),
        ("other shape", "em.tif has the shape (6, 8), not the layer's, so sizes are in pixels"),
        ("gone", "em.tif could not be read for its voxel size"),
    ],
)
def test_a_source_file_that_cannot_give_the_size_is_named(
    make_napari_viewer, tmp_path, case, phrase
):
    path = _tif(tmp_path / "em.tif", np.ones((6, 8), np.uint8), None if case == "no size" else 0.5)
    viewer = make_napari_viewer(show=False)
    [layer] = viewer.open(str(path))
    if case == "other shape":
        layer.data = np.ones((4, 4), np.uint8)
    elif case == "gone":
        path.unlink()
    voxel = layer_voxel_size(layer, 2)
    assert voxel.size_um is None
    assert voxel.note.startswith("Physical units unknown: ") and phrase in voxel.note
