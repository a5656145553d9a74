"""Per-object measurements in physical units on shapes with exact answers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.core.evaluation.measure import (
    measure_objects,
    measurements_csv,
    summarize,
    write_measurements,
)


def test_2d_square_in_micrometres():
    labels = np.zeros((10, 10), np.uint16)
    labels[2:6, 3:7] = 4  # 4 x 4 pixels
    intensity = np.where(labels > 0, 10.0, 1.0)
    intensity[2, 3] = 2.0
    table = measure_objects(labels, intensity=intensity, scale=(0.5, 0.5))
    assert table["label"].tolist() == [4]
    assert table["area_um2"][0] == pytest.approx(4.0)  # 16 px * 0.25 µm²
    assert table["centroid_y_um"][0] == pytest.approx(3.5 * 0.5)
    assert (table["bbox_min_y"][0], table["bbox_max_x"][0]) == (2, 7)
    assert table["min_intensity"][0] == 2.0 and table["max_intensity"][0] == 10.0
    assert table["equivalent_diameter_um"][0] == pytest.approx(2 * np.sqrt(4.0 / np.pi))
    assert table["perimeter_um"][0] > 0 and "eccentricity" in table


def test_3d_anisotropic_volume():
    labels = np.zeros((4, 6, 6), np.uint32)
    labels[1:3, 1:4, 1:4] = 70000  # 2 x 3 x 3 voxels; id above 65535 kept
    table = measure_objects(labels, scale=(0.05, 0.01, 0.01))
    assert table["label"].tolist() == [70000]
    assert table["volume_um3"][0] == pytest.approx(18 * 0.05 * 0.01 * 0.01)
    assert "perimeter_um" not in table


def test_pixel_units_without_scale_and_summary():
    labels = np.zeros((6, 6), np.uint8)
    labels[0:2, 0:2] = 1
    labels[3:6, 3:6] = 2
    table = measure_objects(labels)
    assert "area_px2" in table
    assert summarize(table) == {"objects": 2, "total_area_px2": 13.0, "mean_area_px2": 6.5}


def test_rgb_intensity_is_averaged_over_channels():
    labels = np.ones((3, 3), np.uint8)
    rgb = np.zeros((3, 3, 3))
    rgb[..., 0] = 30
    assert measure_objects(labels, intensity=rgb)["mean_intensity"][0] == pytest.approx(10)


def test_mismatched_intensity_is_refused():
    with pytest.raises(ValueError, match="does not match"):
        measure_objects(np.ones((3, 3), np.uint8), intensity=np.ones((4, 4)))


def test_csv_round_trip(tmp_path):
    labels = np.zeros((5, 5), np.uint8)
    labels[1:3, 1:3] = 1
    table = measure_objects(labels, scale=(0.2, 0.2))
    path = write_measurements(tmp_path / "m.csv", table)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("label,area_um2,")
    assert lines[1].startswith("1,0.16,")
    assert measurements_csv(table) == path.read_text()
