"""``microseg predict`` block by block: zarr in, zarr out, resumable, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_microseg.cli import main
from napari_microseg.core.blocks import cluster as distributed


@pytest.fixture
def volume_zarr(tmp_path):
    """A (6, 40, 50) stack with a cube on the corner of 8 blocks and a bar through 3."""
    volume = np.full((6, 40, 50), 20, np.uint8)
    volume[1:5, 12:20, 12:20] = 200
    volume[3, 30:34, 2:48] = 200
    store = zarr.create_array(
        store=str(tmp_path / "em.zarr"), shape=volume.shape, chunks=(3, 16, 16), dtype="u1"
    )
    store[:] = volume
    return tmp_path / "em.zarr"


def run(tmp_path, source, *extra):
    out = tmp_path / "labels.zarr"
    args = ["predict", str(source), "--model", "m", "--out", str(out), "--tile", "32"]
    return main([*args, "--chunks", "3", "16", "16", "--block", "3", "16", "16", *extra]), out


def test_a_zarr_volume_goes_block_by_block_to_zarr_labels_and_resumes(
    tmp_path, volume_zarr, loads, capsys
):
    code, out = run(tmp_path, volume_zarr)
    assert code == 0
    labels = zarr.open_array(str(out), mode="r")
    assert labels.attrs["complete"] is True and labels.attrs["microseg_kind"] == "labels"
    assert labels.shape == (6, 40, 50) and int(labels[:].max()) == 2  # cube and bar: 2 objects
    prob = zarr.open_array(str(tmp_path / "labels.probabilities.zarr"), mode="r")
    assert prob.shape == (2, 6, 40, 50) and prob.attrs["complete"] is True
    first = labels[:]
    code, _ = run(tmp_path, volume_zarr)
    assert code == 0 and "found done" in capsys.readouterr().out
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[:], first)


def test_bad_outputs_and_blocks_are_one_line_errors(tmp_path, volume_zarr, loads, capsys):
    other = zarr.create_array(store=str(tmp_path / "p.zarr"), shape=(3,), chunks=(3,), dtype="u1")
    other[:] = 1
    code, _ = run(tmp_path, volume_zarr, "--probabilities", str(tmp_path / "p.zarr"))
    # A store napari-microseg did not write is refused before the model loads, and kept.
    assert code == 2 and "was not written by napari-microseg" in capsys.readouterr().err
    assert zarr.open_array(str(tmp_path / "p.zarr"), mode="r")[:].tolist() == [1, 1, 1]
    args = ["predict", str(volume_zarr), "--model", "m", "--out", str(tmp_path / "l.zarr")]
    assert main([*args, "--chunks", "3", "16", "16", "--block", "3", "24", "16"]) == 2
    assert "whole output chunks" in capsys.readouterr().err
    assert main([*args, "--chunked", "--ortho"]) == 2


def test_an_unreachable_scheduler_is_a_one_line_error(
    tmp_path, volume_zarr, loads, capsys, monkeypatch
):
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT_S", 0.5)
    code, _ = run(tmp_path, volume_zarr, "--scheduler", "tcp://127.0.0.1:9")
    err = capsys.readouterr().err
    assert code == 2 and "Could not reach the Dask scheduler at tcp://127.0.0.1:9" in err


def test_uint8_probabilities_give_the_same_labels_a_quarter_of_the_size(
    tmp_path, volume_zarr, loads, capsys
):
    code, out = run(tmp_path, volume_zarr, "--probability-dtype", "uint8", "--threads", "1")
    assert code == 0 and "uint8 probabilities" in capsys.readouterr().out
    prob = zarr.open_array(str(tmp_path / "labels.probabilities.zarr"), mode="r")
    assert prob.dtype == np.uint8 and prob.shape == (2, 6, 40, 50)
    labels = zarr.open_array(str(out), mode="r")[:]
    exact = tmp_path / "exact"
    exact.mkdir()
    code, exact_out = run(exact, volume_zarr)
    assert code == 0 and int(labels.max()) == 2
    np.testing.assert_array_equal(labels, zarr.open_array(str(exact_out), mode="r")[:])
    assert main(["predict", str(volume_zarr), "--model", "m", "--out", "x.zarr", "--threads", "0"])
    assert "--threads must be at least 1" in capsys.readouterr().err


def test_predict_writes_labels_into_an_ome_zarr_images_labels_group(tmp_path):
    from napari_microseg.core.io.synthetic import fibsem_mitochondria
    from napari_microseg.core.io.zarr_arrays import read_zarr, write_ome_zarr

    sample = fibsem_mitochondria((3, 64, 64), n_objects=4, seed=1)
    image = tmp_path / "img.ome.zarr"
    write_ome_zarr(image, sample.image, axes="ZYX", scale=(0.01, 0.005, 0.005), kind="image")
    before = np.asarray(zarr.open_group(str(image), mode="r")["0"][:])
    target = image / "labels" / "mito"
    assert main(["predict", str(image), "--model", "mito-em", "--out", str(target)]) == 0
    group = zarr.open_group(str(image), mode="r")
    assert list(group["labels"].attrs["labels"]) == ["mito"]
    assert "image-label" in dict(group["labels/mito"].attrs)
    np.testing.assert_array_equal(np.asarray(group["0"][:]), before)  # the image untouched
    assert np.asarray(read_zarr(target).data).shape == sample.image.shape
