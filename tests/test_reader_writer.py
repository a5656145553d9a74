"""The npe2 reader and writer, called as napari calls them (no viewer needed)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_microseg._reader import napari_get_reader
from napari_microseg._writer import write_labels
from napari_microseg.core.io.image_data import ImageReadError


def test_reader_returns_none_for_foreign_files(tmp_path):
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    assert napari_get_reader(str(tmp_path / "table.csv")) is None
    assert napari_get_reader([str(tmp_path / "table.csv")]) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert napari_get_reader(str(empty)) is None


def test_reader_gives_image_layer_with_scale(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    tifffile.imwrite(
        tmp_path / "s.tif",
        data,
        imagej=True,
        resolution=(100.0, 100.0),
        metadata={"spacing": 0.03, "unit": "um", "axes": "ZYX"},
    )
    reader = napari_get_reader(str(tmp_path / "s.tif"))
    [(layer_data, kwargs, layer_type)] = reader(str(tmp_path / "s.tif"))
    assert layer_type == "image"
    np.testing.assert_allclose(kwargs["scale"], (0.03, 0.01, 0.01))
    assert kwargs["units"] == ("µm", "µm", "µm")  # the scale bar shows physical lengths
    np.testing.assert_array_equal(layer_data, data)


def test_reader_gives_no_units_without_a_voxel_size(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", np.ones((5, 6), np.uint8))
    [(_, kwargs, _)] = napari_get_reader(str(tmp_path / "plain.tif"))(str(tmp_path / "plain.tif"))
    assert kwargs["scale"] == (1.0, 1.0) and "units" not in kwargs  # napari's pixels


def test_writer_then_reader_gives_labels_back(tmp_path):
    labels = np.zeros((3, 8, 8), np.uint32)
    labels[1, 2:5, 2:5] = 70000
    [path] = write_labels(str(tmp_path / "lab.tif"), labels, {"scale": (0.05, 0.01, 0.01)})
    [(layer_data, kwargs, layer_type)] = napari_get_reader(path)(path)
    assert layer_type == "labels"
    np.testing.assert_array_equal(layer_data, labels)
    np.testing.assert_allclose(kwargs["scale"], (0.05, 0.01, 0.01))


def test_reader_raises_a_clear_error_for_a_truncated_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.ones((4, 100, 100), np.uint8))
    payload = (tmp_path / "a.tif").read_bytes()
    (tmp_path / "a.tif").write_bytes(payload[:500])
    reader = napari_get_reader(str(tmp_path / "a.tif"))
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        reader(str(tmp_path / "a.tif"))
