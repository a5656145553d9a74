"""Batches go on: one unreadable file in a folder is reported and skipped, the others segmented."""

from __future__ import annotations

import numpy as np

from napari_microseg.cli import main
from napari_microseg.core.io.images import imread
from napari_microseg.core.io.writers import write_image


def folder_with_a_broken_file(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in (1, 3):
        image = np.full((32, 48), 20, np.uint8)
        image[4:12, 4 : 4 + 8 * i] = 200
        write_image(folder / f"img{i}.tif", image)
    (folder / "img2.tif").write_text("not a TIFF at all", encoding="utf-8")
    return folder


def test_a_folder_keeps_going_past_a_broken_file(tmp_path, loads, capsys):
    folder = folder_with_a_broken_file(tmp_path)
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--model", "m", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"skipped {folder / 'img2.tif'}:" in err
    assert "2 of 3 images segmented; 1 skipped (img2.tif)" in err
    assert sorted(p.name for p in out.iterdir()) == ["img1.tif", "img3.tif"]
    assert imread(out / "img3.tif").data.max() == 1


def test_fail_fast_stops_at_the_broken_file(tmp_path, loads, capsys):
    folder = folder_with_a_broken_file(tmp_path)
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--model", "m", "--out", str(out), "--fail-fast"]) == 2
    assert "img2.tif" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["img1.tif"]


def test_files_stop_at_the_first_failure_unless_told_to_keep_going(tmp_path, loads, capsys):
    folder = folder_with_a_broken_file(tmp_path)
    files = [str(folder / f"img{i}.tif") for i in (1, 2, 3)]
    out = tmp_path / "out"
    assert main(["predict", *files, "--model", "m", "--out", str(out)]) == 2
    assert not (out / "img3.tif").exists()
    args = ["predict", *files, "--model", "m", "--out", str(out / "again"), "--keep-going"]
    assert main(args) == 1 and (out / "again" / "img3.tif").exists()
    assert "1 skipped (img2.tif)" in capsys.readouterr().err
