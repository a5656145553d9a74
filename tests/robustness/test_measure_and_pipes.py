"""``microseg measure`` bad input and outputs, and a closed pipe (``| head``) ends quietly."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_microseg.cli import main
from napari_microseg.core.io.writers import write_labels


@pytest.fixture
def labels_file(tmp_path):
    labels = np.zeros((8, 8), np.uint16)
    labels[1:4, 1:4] = 3
    labels[5:7, 5:8] = 9
    write_labels(tmp_path / "labels.tif", labels, scale=(0.2, 0.2))
    return tmp_path / "labels.tif"


@pytest.mark.parametrize("taken", ["objects.csv", "objects_summary.csv"])
def test_measure_never_replaces_a_file_it_did_not_write(tmp_path, labels_file, capsys, taken):
    mine = tmp_path / taken
    mine.write_bytes(b"id,notes\n1,keep me\n")
    out = tmp_path / "objects.csv"
    assert main(["measure", str(labels_file), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"{mine} already exists and was not written by napari-microseg" in err
    assert "Traceback" not in err
    assert mine.read_bytes() == b"id,notes\n1,keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif", taken]


def test_measure_replaces_its_own_table_only_with_overwrite(tmp_path, labels_file, capsys):
    out = tmp_path / "objects.csv"
    assert main(["measure", str(labels_file), "--out", str(out)]) == 0
    before = out.read_bytes()
    assert main(["measure", str(labels_file), "--out", str(out)]) == 2
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["measure", str(labels_file), "--out", str(out), "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--voxel-size", "0.1"], "--voxel-size '0.1' must be 2 positive numbers in µm (Y,X)"),
        (["--voxel-size", "0,0.1"], "must be 2 positive numbers"),
        (["--image", "small.tif"], "--image small.tif has shape (4, 4) (axes YX) but LABELS"),
    ],
    ids=["too-few-values", "zero", "image-shape"],
)
def test_measure_bad_options_give_one_line(tmp_path, labels_file, capsys, extra, message):
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((4, 4), np.uint8))
    extra = [str(tmp_path / e) if e.endswith(".tif") else e for e in extra]
    assert main(["measure", str(labels_file), "--out", str(tmp_path / "o.csv"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o_summary.csv").exists()


def test_measure_refuses_a_probability_map(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "prob.tif", np.full((4, 4), 0.5, np.float32))
    assert main(["measure", str(tmp_path / "prob.tif"), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "LABELS prob.tif holds float32 values, not object ids" in err
    assert "microseg postprocess" in err and not (tmp_path / "o.csv").exists()


def test_a_reader_that_stops_early_gets_no_traceback():
    """``microseg models info mito-em --json | head``: the reader closes the pipe at once."""
    code = "import sys; from napari_microseg.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "models", "info", "mito-em", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # like `head` after its lines
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 1
    assert err == ""
