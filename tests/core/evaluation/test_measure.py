"""Per-object measurements in physical units on shapes with exact answers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.core.evaluation.measure import (
    is_measurements_header,
    measure_objects,
    measurements_csv,
    summarize,
    write_measurements,
    write_summary,
)
from napari_microseg.core.io.outputs import is_ours


def test_2d_square_in_micrometres():
    labels = np.zeros((10, 10), np.uint16)
    labels[2:6, 3:7] = 4  # 4 x 4 pixels
    intensity = np.where(labels > 0, 10.0, 1.0)
    intensity[2, 3] = 2.0
    table = measure_objects(labels, intensity=intensity, scale=(0.5, 0.5))
    assert table["label"].tolist() == [4]
    assert table["area_um2"][0] == pytest.approx(4.0)  # 16 px * 0.25 µm²
    assert table["centroid_y_um"][0] == pytest.approx(3.5 * 0.5)
    assert (table["bbox_min_y_px"][0], table["bbox_max_x_px"][0]) == (2, 7)
    assert table["min_intensity"][0] == 2.0 and table["max_intensity"][0] == 10.0
    assert table["equivalent_diameter_um"][0] == pytest.approx(2 * np.sqrt(4.0 / np.pi))
    assert table["perimeter_um"][0] > 0 and "eccentricity" in table


def test_every_column_but_intensity_and_eccentricity_names_its_unit():
    labels = np.zeros((6, 6), np.uint8)
    labels[1:4, 1:3] = 1
    for scale, unit in (((0.5, 0.5), "um"), (None, "px")):
        names = set(measure_objects(labels, intensity=labels, scale=scale)) - {"label"}
        unitless = {"eccentricity", "mean_intensity", "min_intensity", "max_intensity"}
        assert all(n.endswith((f"_{unit}", f"_{unit}2", "_px")) for n in names - unitless)


def test_perimeter_stays_in_pixels_on_pixels_that_are_not_square():
    labels = np.zeros((6, 6), np.uint8)
    labels[1:4, 1:4] = 1
    square = measure_objects(labels, scale=(0.5, 0.5))
    oblong = measure_objects(labels, scale=(1.0, 0.5))
    assert "perimeter_um" not in oblong
    assert oblong["perimeter_px"][0] == pytest.approx(square["perimeter_um"][0] / 0.5)
    assert oblong["area_um2"][0] == pytest.approx(4.5)


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


def test_colour_intensity_is_measured_per_channel():
    labels = np.ones((3, 3), np.uint8)
    rgb = np.zeros((3, 3, 3))
    rgb[..., 0] = 30
    rgb[0, 0, 2] = 9
    table = measure_objects(labels, intensity=rgb)
    assert "mean_intensity" not in table
    assert table["mean_intensity_r"][0] == 30 and table["mean_intensity_g"][0] == 0
    assert table["mean_intensity_b"][0] == 1 and table["max_intensity_b"][0] == 9
    two = measure_objects(labels, intensity=rgb[..., :2])
    assert two["min_intensity_c0"][0] == 30 and "min_intensity_c1" in two


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


def test_summary_csv_is_recognised_as_ours(tmp_path):
    labels = np.zeros((4, 5, 5), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    summary = summarize(measure_objects(labels, scale=(0.1, 0.2, 0.2)))
    path = write_summary(tmp_path / "s.csv", summary)
    assert path.read_text() == "objects,total_volume_um3,mean_volume_um3\n1,0.032,0.032\n"
    assert is_ours(path, csv_header=is_measurements_header)
    assert not is_ours(path)  # a CSV is ours only to a writer that knows its header
