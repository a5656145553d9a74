"""Labels of an OME-Zarr image export into its labels/ group, where napari-ome-zarr finds them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg._widgets.export import ExportWidget
from napari_microseg.core.io.zarr_arrays import write_ome_zarr


def test_export_puts_labels_into_the_ome_zarr_image_they_belong_to(
    make_napari_viewer, qtbot, tmp_path
):
    path = write_ome_zarr(
        tmp_path / "em.ome.zarr", np.ones((2, 8, 10), np.uint8), axes="ZYX", scale=(0.5, 0.1, 0.1)
    )
    viewer = make_napari_viewer()
    [image] = viewer.open(str(path), plugin="napari-microseg")
    labels = np.zeros((2, 8, 10), np.uint16)
    labels[:, 2:5, 3:7] = 4
    layer = viewer.add_labels(labels, name="em mito", scale=image.scale)
    layer.metadata["image_path"] = str(path)
    widget = ExportWidget(viewer)
    widget.labels_combo.value = layer
    widget.format.value = "OME-Zarr"
    widget.write_csv.value = False
    labels_path, _ = widget.targets()
    assert labels_path == path / "labels" / "em_mito"
    widget.export()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=10000)
    assert widget.last_result is not None and widget.last_result.files == [labels_path]

    pytest.importorskip("napari_ome_zarr")
    other = make_napari_viewer()
    layers = other.open(str(path), plugin="napari-ome-zarr")
    [opened] = [lay for lay in layers if lay._type_string == "labels"]
    level0 = opened.data[0] if opened.multiscale else opened.data
    np.testing.assert_array_equal(np.asarray(level0), labels)
    np.testing.assert_allclose(opened.scale, (0.5, 0.1, 0.1))
