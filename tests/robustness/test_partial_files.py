"""A killed run leaves no hidden partial files behind after the next run, and an unfinished
zarr result says so when opened (issue #22, item 2)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from napari_microseg._reader import read_layers
from napari_microseg.core.io.atomic import atomic_path, atomic_write_text, partial_prefix
from napari_microseg.core.io.images import imread
from napari_microseg.core.io.zarr_arrays import write_ome_zarr

# Runs a write and dies in the middle of it, as SIGKILL or a power cut would.
_KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
from napari_microseg.core.io.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    Path(tmp).write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)
"""

_KILLED_ZARR = """
import os, signal, sys
import numpy as np
import zarr
from napari_microseg.core.io import zarr_arrays

def die(tmp, dest):
    os.kill(os.getpid(), signal.SIGKILL)

zarr_arrays.replace_dir = die
zarr_arrays.write_ome_zarr(sys.argv[1], np.ones((4, 4), np.uint8), axes="YX")
"""


def _run_killed(script, target):
    done = subprocess.run([sys.executable, "-c", script, str(target)], check=False)
    assert done.returncode != 0  # it really died


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_next_write_removes_what_a_killed_writer_left(tmp_path):
    target = tmp_path / "labels.tif"
    target.write_bytes(b"previous")
    _run_killed(_KILLED_WRITE, target)
    left = [p.name for p in tmp_path.iterdir() if p.name != "labels.tif"]
    assert len(left) == 1 and left[0].startswith(".labels.tif.") and ".partial" in left[0]
    assert target.read_bytes() == b"previous"  # the kill lost nothing
    atomic_write_text(target, "new")
    assert [p.name for p in tmp_path.iterdir()] == ["labels.tif"]
    assert target.read_text() == "new"


def test_cleanup_touches_only_our_dead_temporaries_for_that_target(tmp_path):
    target = tmp_path / "a.tif"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = partial_prefix(target)  # ".a.tif.<host>-<this pid>."
    host = ours.rstrip(".").rsplit(".", 1)[1].split("-")[0]
    stale = tmp_path / f".a.tif.{host}-{dead}.zz9_abcd.partial.tif"
    keep = [
        tmp_path / f"{ours}abc12345.partial.tif",  # being written by a live process (this one)
        tmp_path / f".b.tif.{host}-{dead}.abc12345.partial.tif",  # dead, but another target
        tmp_path / f".a.tif.{host}-{dead}.abc12345.partial.png",  # dead, another suffix
        tmp_path / f".a.tif.00000000-{dead}.abc12345.partial.tif",  # another machine
        tmp_path / ".a.tif.notours.partial.tif",  # not our naming
        tmp_path / "a.tif.backup",
    ]
    for path in [stale, *keep]:
        path.write_bytes(b"x")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert not stale.exists()
    assert all(path.exists() for path in keep)
    assert target.read_bytes() == b"new"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_next_ome_zarr_write_removes_a_killed_writers_folder(tmp_path):
    target = tmp_path / "labels.ome.zarr"
    _run_killed(_KILLED_ZARR, target)
    assert any(".partial" in p.name for p in tmp_path.iterdir())
    write_ome_zarr(target, np.ones((4, 4), np.uint8), axes="YX")
    assert [p.name for p in tmp_path.iterdir()] == ["labels.ome.zarr"]


def test_ome_zarr_write_removes_a_stale_old_copy(tmp_path):
    # A kill between the two renames of a replacement leaves `.NAME.old`; the next write ends it.
    target = tmp_path / "v.ome.zarr"
    (tmp_path / ".v.ome.zarr.old").mkdir()
    write_ome_zarr(target, np.ones((4, 4), np.uint8), axes="YX")
    assert [p.name for p in tmp_path.iterdir()] == ["v.ome.zarr"]


# ----------------------------------------------------------------------------- incomplete zarr


def _chunked_output(path, done_blocks):
    from napari_microseg.core.blocks.store import DoneLog, open_output

    array = open_output(str(path), (4, 8, 8), (1, 8, 8), "float32", axes="zyx", key="job1")
    log = DoneLog(array, "job1", n_blocks=4)
    for index in range(done_blocks):
        log.mark(index)
    log.flush()
    return array


def test_incomplete_chunked_zarr_warns_how_to_resume(tmp_path):
    _chunked_output(tmp_path / "prob.zarr", done_blocks=1)
    with pytest.warns(UserWarning) as caught:
        image = imread(tmp_path / "prob.zarr")
    [message] = [str(w.message) for w in caught if "incomplete" in str(w.message)]
    assert message.startswith("prob.zarr is incomplete (1 of 4 blocks written)")
    assert "Resume it by running the same `microseg predict ... --chunked` command again" in message
    assert "Segment widget" in message
    assert image.metadata["complete"] is False


def test_incomplete_zarr_warns_in_napari_too(tmp_path):
    _chunked_output(tmp_path / "prob.zarr", done_blocks=0)
    with pytest.warns(UserWarning, match="prob.zarr is incomplete"):
        [(_, kwargs, _)] = read_layers(str(tmp_path / "prob.zarr"))
    assert kwargs["metadata"]["complete"] is False


def test_unfinished_in_memory_prediction_zarr_says_to_run_again(tmp_path):
    import zarr

    array = zarr.create_array(store=str(tmp_path / "p.zarr"), shape=(8, 8), dtype="float32")
    array.attrs["complete"] = False
    with pytest.warns(UserWarning, match="incomplete.*Run the prediction again"):
        imread(tmp_path / "p.zarr")


def test_complete_zarr_opens_without_a_warning(tmp_path):
    _chunked_output(tmp_path / "prob.zarr", done_blocks=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        image = imread(tmp_path / "prob.zarr")
    assert "complete" not in image.metadata
