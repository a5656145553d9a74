"""A first napari session: File > Open as napari does it, a visible result, µm everywhere.

``viewer.open(path)`` with no plugin named uses napari's built-in reader (napari
has no manifest field that makes a plugin's reader the default; *File > Open*
asks once and keeps the answer as a user setting), so the layer has scale 1.
The Segment and Export widgets then read the voxel size from the layer's file.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_microseg._widgets.export import ExportWidget
from napari_microseg._widgets.segment import SegmentWidget
from napari_microseg.core.io.synthetic import fluorescence_nuclei

PLUGIN = "napari-microseg"


@pytest.fixture
def nuclei_tif(tmp_path):
    """A 2D fluorescence image whose TIFF says 0.2 µm per pixel."""
    path = tmp_path / "nuclei.tif"
    tifffile.imwrite(
        path,
        fluorescence_nuclei().image,
        imagej=True,
        resolution=(5.0, 5.0),
        metadata={"unit": "um", "axes": "YX"},
    )
    return path


def run_and_wait(widget, qtbot):
    widget.run()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=60000)


def test_plain_open_uses_napari_reader_and_the_widgets_read_the_voxel_size(
    make_napari_viewer, model_registry, nuclei_tif, tmp_path, qtbot
):
    viewer = make_napari_viewer()
    [image] = viewer.open(str(nuclei_tif))  # no plugin named, as a new user's script does
    assert image.source.reader_plugin == "napari"
    np.testing.assert_allclose(image.scale, (1, 1))
    segment = SegmentWidget(viewer)
    viewer.window.add_dock_widget(segment)
    segment.image_combo.value = image
    segment.model_combo.value = "tiny-grey"
    assert segment.voxel_label.value.startswith("voxel size 0.2 × 0.2 µm, read from nuclei.tif")
    run_and_wait(segment, qtbot)
    labels = viewer.layers["nuclei tiny-grey labels"]
    np.testing.assert_allclose(labels.scale, (1, 1))  # still on top of the image
    assert labels.metadata["voxel_size_um"] == (0.2, 0.2)
    export = ExportWidget(viewer)
    viewer.window.add_dock_widget(export)
    export.folder.value = tmp_path
    export.labels_combo.value = labels
    assert export.voxel_label.value == "voxel size 0.2 × 0.2 µm (from nuclei.tif)"
    export.write_labels.value = False
    export.export()
    qtbot.waitUntil(lambda: export.runner.worker is None, timeout=10000)
    summary = export.last_result.summary
    pixels = int(np.count_nonzero(labels.data))
    assert summary["total_area_um2"] == pytest.approx(pixels * 0.04)


def test_our_reader_gives_micrometre_units_for_the_scale_bar(make_napari_viewer, nuclei_tif):
    viewer = make_napari_viewer()
    [image] = viewer.open(str(nuclei_tif), plugin=PLUGIN)
    np.testing.assert_allclose(image.scale, (0.2, 0.2))
    assert [str(u) for u in image.units] == ["micrometer", "micrometer"]
    assert [str(u) for u in viewer.layers.units] == ["micrometer", "micrometer"]


@pytest.fixture
def segmented(make_napari_viewer, model_registry, qtbot):
    viewer = make_napari_viewer()
    image = viewer.add_image(fluorescence_nuclei().image, name="nuclei", scale=(0.2, 0.2))
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.value = image
    widget.model_combo.value = "tiny-grey"
    return viewer, image, widget


def test_result_is_on_top_selected_and_the_image_stays_readable(segmented, qtbot):
    viewer, image, widget = segmented
    run_and_wait(widget, qtbot)
    prob = viewer.layers["nuclei tiny-grey probabilities"]
    labels = viewer.layers["nuclei tiny-grey labels"]
    assert viewer.layers[-1] is labels and labels.visible
    assert viewer.layers.selection.active is labels
    assert viewer.dims.ndim == 2  # no class slider
    assert prob.data.ndim == 2 and prob.colormap.name == "magenta"
    assert prob.blending == "additive" and prob.opacity <= 0.5
    # Background pixels stay as they were: the overlay adds little where p(foreground) is low.
    background = labels.data == 0
    assert float(np.median(prob.data[background])) < 0.2
    for layer in (image, prob, labels):  # the scale bar has one unit to show
        assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]


def test_all_classes_adds_the_class_slider_on_the_foreground(segmented, qtbot):
    viewer, _, widget = segmented
    widget.all_classes.value = True
    run_and_wait(widget, qtbot)
    prob = viewer.layers["nuclei tiny-grey probabilities"]
    assert prob.data.shape[0] == 2 and prob.metadata["class_axis"] == 0
    assert viewer.dims.ndim == 3 and viewer.dims.current_step[0] == 1
    assert viewer.layers[-1].name == "nuclei tiny-grey labels"


def test_a_layer_without_scale_or_file_says_sizes_are_in_pixels(
    make_napari_viewer, model_registry, tmp_path, qtbot
):
    viewer = make_napari_viewer()
    image = viewer.add_image(fluorescence_nuclei().image, name="pasted")
    segment = SegmentWidget(viewer)
    viewer.window.add_dock_widget(segment)
    segment.image_combo.value = image
    segment.model_combo.value = "tiny-grey"
    assert "Physical units unknown" in segment.voxel_label.value
    assert "scale 1 and no source file" in segment.voxel_label.value
    run_and_wait(segment, qtbot)
    labels = viewer.layers["pasted tiny-grey labels"]
    export = ExportWidget(viewer)
    viewer.window.add_dock_widget(export)
    export.folder.value = tmp_path
    export.labels_combo.value = labels
    assert "Physical units unknown" in export.voxel_label.value
    export.write_labels.value = False
    export.export()
    qtbot.waitUntil(lambda: export.runner.worker is None, timeout=10000)
    summary = export.last_result.summary
    assert summary["total_area_px2"] == int(np.count_nonzero(labels.data))
    assert not any(key.endswith("um2") for key in summary)
