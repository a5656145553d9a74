"""``microseg measure``: the per-object table and its summary, in physical units."""

from __future__ import annotations

import csv

import imageio.v3 as iio
import numpy as np
import pytest

from napari_microseg.cli import main
from napari_microseg.core.io.writers import write_labels


def labels_2d() -> np.ndarray:
    labels = np.zeros((10, 12), np.uint16)
    labels[1:3, 1:4] = 1  # 6 px
    labels[5:9, 6:10] = 2  # 16 px
    return labels


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_table_and_summary_in_micrometres_with_rgb_per_channel(tmp_path, capsys):
    write_labels(tmp_path / "labels.tif", labels_2d(), scale=(0.5, 0.5))
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 200
    iio.imwrite(tmp_path / "image.png", rgb)
    out = tmp_path / "objects.csv"
    args = ["measure", str(tmp_path / "labels.tif"), "--image", str(tmp_path / "image.png")]
    assert main([*args, "--out", str(out)]) == 0
    rows = read_csv(out)
    assert [r["label"] for r in rows] == ["1", "2"]
    assert float(rows[1]["area_um2"]) == 4.0 and rows[1]["bbox_min_y_px"] == "5"
    assert rows[0]["mean_intensity_g"] == "200" and rows[0]["mean_intensity_r"] == "0"
    summary = read_csv(tmp_path / "objects_summary.csv")
    assert summary == [{"objects": "2", "total_area_um2": "5.5", "mean_area_um2": "2.75"}]
    assert "total_area_um2: 5.5" in capsys.readouterr().out


def test_3d_labels_in_pixels_or_with_a_given_voxel_size(tmp_path, capsys):
    labels = np.zeros((3, 4, 4), np.uint32)
    labels[1:3, :2, :2] = 70000  # 8 voxels
    write_labels(tmp_path / "stack.tif", labels)
    out, summary = tmp_path / "t.csv", tmp_path / "sum.csv"
    base = ["measure", str(tmp_path / "stack.tif"), "--out", str(out), "--summary", str(summary)]
    assert main(base) == 0
    assert "Sizes are in pixels" in capsys.readouterr().out
    assert read_csv(summary)[0]["total_volume_px3"] == "8"
    assert main([*base, "--voxel-size", "0.05,0.01,0.01", "--overwrite"]) == 0
    row = read_csv(out)[0]
    assert row["label"] == "70000" and float(row["volume_um3"]) == pytest.approx(8 * 5e-6)
    assert row["bbox_max_z_px"] == "3"


def test_a_0_255_mask_is_measured_by_its_components(tmp_path):
    iio.imwrite(tmp_path / "mask.png", ((labels_2d() > 0) * 255).astype(np.uint8))
    assert main(["measure", str(tmp_path / "mask.png"), "--out", str(tmp_path / "m.csv")]) == 0
    assert [r["area_px2"] for r in read_csv(tmp_path / "m.csv")] == ["6", "16"]
