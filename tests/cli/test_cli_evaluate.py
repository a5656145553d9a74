"""``microseg evaluate``: files and folders, the fixed CSV, masks, and clear errors."""

from __future__ import annotations

import csv

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_microseg.cli import main
from napari_microseg.core.evaluation.evaluate import COLUMNS
from napari_microseg.core.io.writers import write_labels


def truth_labels() -> np.ndarray:
    labels = np.zeros((20, 30), np.uint16)
    labels[2:8, 2:8] = 1
    labels[10:18, 10:20] = 2
    labels[2:5, 20:25] = 3
    return labels


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_single_pair_writes_the_fixed_columns_and_a_mean_row(tmp_path, capsys):
    truth = truth_labels()
    pred = truth.copy()
    pred[2:5, 20:25] = 0  # object 3 missed
    write_labels(tmp_path / "gt.tif", truth)
    write_labels(tmp_path / "pred.tif", pred)
    out = tmp_path / "scores.csv"
    assert (
        main(["evaluate", str(tmp_path / "pred.tif"), str(tmp_path / "gt.tif"), "--csv", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "Objects found: 2/3" in printed and "pixel_f1" in printed
    with open(out, encoding="utf-8") as stream:
        assert stream.readline().strip() == ",".join(COLUMNS)
    rows = read_csv(out)
    assert [r["image"] for r in rows] == ["pred", "mean"]
    assert rows[0]["n_true"] == "3" and rows[0]["n_matched"] == "2"
    assert float(rows[0]["precision"]) == 1.0
    assert float(rows[0]["object_f1"]) == pytest.approx(2 * 2 / (3 + 2))
    assert rows[1]["object_f1"] == rows[0]["object_f1"]
    assert not list(tmp_path.glob(".*partial*"))  # written atomically, nothing left behind


def test_folders_pair_by_name(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    truth = truth_labels()
    write_labels(tmp_path / "gt" / "img1.tif", truth)
    write_labels(tmp_path / "pred" / "img1_pred.tif", truth)
    write_labels(tmp_path / "gt" / "img2.tif", truth)
    write_labels(tmp_path / "pred" / "img2.tif", np.where(truth == 2, 0, truth))
    write_labels(tmp_path / "gt" / "img3.tif", truth)  # no prediction
    out = tmp_path / "scores.csv"
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--csv", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "no prediction for img3.tif" in captured.err
    rows = read_csv(out)
    assert [r["image"] for r in rows] == ["img1", "img2", "mean"]
    assert float(rows[0]["ap_50_95"]) == 1.0
    assert float(rows[2]["n_matched"]) == pytest.approx(2.5)
    # Two images are too few for an interval of the mean.
    assert "bootstrap interval" not in captured.out


def test_three_images_or_more_print_how_far_the_mean_can_move(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    truth = truth_labels()
    for number in range(4):
        write_labels(tmp_path / "gt" / f"img{number}.tif", truth)
        # Two images right, two with object 3 missed: object F1 1, 1, 0.8, 0.8.
        pred = truth if number < 2 else np.where(truth == 3, 0, truth)
        write_labels(tmp_path / "pred" / f"img{number}.tif", pred)
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt")]) == 0
    printed = capsys.readouterr().out
    assert "95% bootstrap interval over the 4 images" in printed
    assert "object_f1 0.900 [0.800, 1.000]" in printed
    assert "n_true" not in printed.split("bootstrap interval")[1]


def test_binary_png_truth_counts_connected_components(tmp_path):
    truth = truth_labels()
    iio.imwrite(tmp_path / "gt.png", ((truth > 0) * 255).astype(np.uint8))
    write_labels(tmp_path / "pred.tif", truth)
    out = tmp_path / "scores.csv"
    assert (
        main(["evaluate", str(tmp_path / "pred.tif"), str(tmp_path / "gt.png"), "--csv", str(out)])
        == 0
    )
    row = read_csv(out)[0]
    assert row["n_true"] == "3" and float(row["object_f1"]) == 1.0


def test_0_255_truth_mask_is_scored_by_its_cells_for_rand_and_vi(tmp_path):
    # ISBI 2012 style: 255 = cell interior, 0 = membrane; four 2x2 cells.
    mask = np.full((5, 5), 255, np.uint8)
    mask[2, :] = mask[:, 2] = 0
    iio.imwrite(tmp_path / "gt.png", mask)
    cells = np.zeros((5, 5), np.uint16)
    cells[:2, :2], cells[:2, 3:], cells[3:, :2], cells[3:, 3:] = 1, 2, 3, 4
    write_labels(tmp_path / "cells.tif", cells)
    write_labels(tmp_path / "merged.tif", np.ones((5, 5), np.uint16))
    out = tmp_path / "scores.csv"
    truth = str(tmp_path / "gt.png")
    assert main(["evaluate", str(tmp_path / "cells.tif"), truth, "--csv", str(out)]) == 0
    row = read_csv(out)[0]
    # Two classes (one segment of every cell) would give 2/3 and a VI split of 2 bits.
    assert (row["adapted_rand_error"], row["vi_split"], row["vi_merge"]) == ("0", "0", "0")
    assert row["n_true"] == "4" and row["n_matched"] == "4"
    args = ["evaluate", str(tmp_path / "merged.tif"), truth, "--csv", str(out), "--overwrite"]
    assert main(args) == 0
    row = read_csv(out)[0]
    assert (row["adapted_rand_error"], row["vi_split"], row["vi_merge"]) == ("0.666667", "0", "2")


def test_selected_metrics_leave_other_columns_empty(tmp_path):
    write_labels(tmp_path / "a.tif", truth_labels())
    out = tmp_path / "scores.csv"
    args = ["evaluate", str(tmp_path / "a.tif"), str(tmp_path / "a.tif"), "--metrics", "pixel"]
    assert main([*args, "--csv", str(out)]) == 0
    row = read_csv(out)[0]
    assert row["pixel_f1"] == "1" and row["object_hausdorff"] == "" and row["n_true"] == "3"


def test_ids_above_65535_are_scored_exactly(tmp_path):
    labels = np.zeros((4, 6), np.uint32)
    labels[:, :2] = 70000
    labels[:, 3:] = 100000
    write_labels(tmp_path / "a.tif", labels)
    out = tmp_path / "scores.csv"
    assert (
        main(["evaluate", str(tmp_path / "a.tif"), str(tmp_path / "a.tif"), "--csv", str(out)]) == 0
    )
    assert read_csv(out)[0]["n_matched"] == "2"


@pytest.mark.parametrize(
    ("pred", "truth", "message"),
    [
        (np.zeros((4, 4), np.uint16), np.zeros((4, 5), np.uint16), "(4, 4) but the ground truth"),
        (np.zeros((4, 4), np.uint16), np.full((4, 4), 0.5, np.float32), "float32 values"),
        (np.zeros((4, 4), np.uint16), np.full((4, 4), -1, np.int16), "negative ids"),
    ],
    ids=["shape-mismatch", "float-truth", "negative-labels"],
)
def test_bad_input_gives_a_clear_message(tmp_path, capsys, pred, truth, message):
    tifffile.imwrite(tmp_path / "pred.tif", pred)
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    assert main(["evaluate", str(tmp_path / "pred.tif"), str(tmp_path / "truth.tif")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_file_against_folder_is_refused(tmp_path, capsys):
    write_labels(tmp_path / "a.tif", truth_labels())
    assert main(["evaluate", str(tmp_path / "a.tif"), str(tmp_path)]) == 2
    assert "both be files or both be folders" in capsys.readouterr().err


def test_unknown_metric_is_refused(tmp_path, capsys):
    write_labels(tmp_path / "a.tif", truth_labels())
    path = str(tmp_path / "a.tif")
    assert main(["evaluate", path, path, "--metrics", "dice2"]) == 2
    assert "Unknown metric 'dice2'" in capsys.readouterr().err
