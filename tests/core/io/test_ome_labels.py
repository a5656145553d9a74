"""OME-Zarr labels in NGFF's ``labels`` layout, checked with the tools others use to open them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from napari_microseg.core.evaluation.export import export_job
from napari_microseg.core.io import ome_labels
from napari_microseg.core.io.ome_labels import (
    downsample_nearest,
    label_colours,
    labels_target_in_image,
    level_shapes,
    write_ome_labels,
)
from napari_microseg.core.io.outputs import Output, check_outputs
from napari_microseg.core.io.zarr_arrays import read_zarr, write_ome_zarr
from napari_microseg.core.progress import drain

zarr = pytest.importorskip("zarr")
ome_io = pytest.importorskip("ome_zarr.io")
ome_reader = pytest.importorskip("ome_zarr.reader")


def _labels(shape: tuple[int, ...] = (6, 9)) -> np.ndarray:
    labels = np.zeros(shape, np.uint16)
    labels[..., 1:3, 1:4] = 3
    labels[..., 4:, 6:] = 70
    return labels


def _ome_label_nodes(path: Path) -> list:
    """The nodes ome-zarr-py's Reader sees as label images under ``path``."""
    nodes = list(ome_reader.Reader(ome_io.parse_url(str(path)))())
    return [n for n in nodes if any(isinstance(s, ome_reader.Label) for s in n.specs)]


def _tree_digest(folder: Path, skip: str = "labels") -> dict[str, str]:
    """Content hash of every file under ``folder`` except the ``skip`` subfolder."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).parts[0] != skip
    }


def _ome_image(path: Path, zarr_format: int) -> Path:
    """A 2-channel, 2-level OME-Zarr image written by ome-zarr-py (NGFF 0.4 or 0.5)."""
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_multiscale

    image = np.arange(2 * 6 * 9, dtype=np.uint16).reshape(2, 6, 9)
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    write_multiscale(
        [image, image[:, ::2, ::2]],
        group,
        fmt=FormatV04() if zarr_format == 2 else FormatV05(),
        axes=[
            {"name": "c", "type": "channel"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"},
        ],
        coordinate_transformations=[
            [{"type": "scale", "scale": [1.0, 0.5, 0.25]}],
            [{"type": "scale", "scale": [1.0, 1.0, 0.5]}],
        ],
    )
    return path


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_standalone_labels_open_as_labels_in_ome_zarr_py(tmp_path, zarr_format):
    labels = _labels()
    path = write_ome_labels(
        tmp_path / "cells.ome.zarr", labels, scale=(0.5, 0.25), zarr_format=zarr_format
    )
    [node] = _ome_label_nodes(path)
    np.testing.assert_array_equal(np.asarray(node.data[0]), labels)
    colours = node.metadata["color"]
    assert set(colours) == {0, 3, 70} and colours[0] == [0, 0, 0, 0]
    assert len({tuple(c) for c in colours.values()}) == 3  # distinct colours
    assert node.metadata["coordinateTransformations"] == [[{"type": "scale", "scale": [0.5, 0.25]}]]
    assert [a.get("unit") for a in node.metadata["axes"]] == ["micrometer", "micrometer"]
    # Our reader opens the labels, not the empty image at the root.
    back = read_zarr(path)
    assert back.kind == "labels" and back.axes == "YX" and back.scale == (0.5, 0.25)
    np.testing.assert_array_equal(np.asarray(back.data), labels)


def test_standalone_root_image_holds_no_chunks(tmp_path):
    path = write_ome_labels(tmp_path / "c.ome.zarr", _labels(), zarr_format=2)
    root_chunks = [p for p in (path / "0").iterdir() if not p.name.startswith(".")]
    assert root_chunks == []  # the placeholder image costs only its metadata
    attrs = json.loads((path / ".zattrs").read_text())
    assert attrs["microseg_labels"] == "labels/c"
    assert json.loads((path / "labels" / ".zattrs").read_text())["labels"] == ["c"]


def test_large_labels_get_nearest_neighbour_levels(tmp_path, monkeypatch):
    monkeypatch.setattr(ome_labels, "MAX_PLANE", 16)
    assert level_shapes((3, 40, 9), "ZYX", 16) == [(3, 40, 9), (3, 20, 5), (3, 10, 3)]
    labels = np.zeros((3, 40, 9), np.uint32)
    labels[:, ::3, ::2] = 70000  # ids above uint16 stay exact at every level
    labels[1, 10:30, 2:7] = 5
    path = write_ome_labels(
        tmp_path / "v.ome.zarr", labels, scale=(2.0, 0.5, 0.5), chunks=(1, 16, 16)
    )
    [node] = _ome_label_nodes(path)
    assert [tuple(d.shape) for d in node.data] == [(3, 40, 9), (3, 20, 5), (3, 10, 3)]
    for level in node.data[1:]:
        assert set(np.unique(np.asarray(level))) <= {0, 5, 70000}  # no interpolated id
    np.testing.assert_array_equal(np.asarray(node.data[1]), labels[:, ::2, ::2])
    np.testing.assert_array_equal(np.asarray(node.data[2]), labels[:, ::4, ::4])
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales == [[2.0, 0.5, 0.5], [2.0, 1.0, 1.0], [2.0, 2.0, 2.0]]


def test_downsample_nearest_picks_ids_onto_any_shape():
    labels = np.arange(30).reshape(5, 6)
    np.testing.assert_array_equal(downsample_nearest(labels, (3, 3)), labels[::2, ::2])
    odd = downsample_nearest(labels, (2, 4))
    assert odd.shape == (2, 4) and set(odd.ravel()) <= set(labels.ravel())


def test_colours_are_left_out_above_the_limit(tmp_path, monkeypatch):
    assert label_colours(np.arange(ome_labels.MAX_COLOURED_IDS + 2)) is None
    monkeypatch.setattr(ome_labels, "MAX_COLOURED_IDS", 1)
    path = write_ome_labels(tmp_path / "many.ome.zarr", _labels())
    [node] = _ome_label_nodes(path)
    assert node.metadata["color"] == {}
    np.testing.assert_array_equal(np.asarray(node.data[0]), _labels())


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_labels_go_into_an_ome_zarr_image_without_touching_it(tmp_path, zarr_format):
    image = _ome_image(tmp_path / "img.ome.zarr", zarr_format)
    before = _tree_digest(image)
    labels = _labels()
    target = labels_target_in_image(image, "img unet labels", labels.shape)
    assert target == image / "labels" / "img_unet_labels"
    write_ome_labels(target, labels)
    assert _tree_digest(image) == before
    [node] = _ome_label_nodes(image)
    # Same levels as the image (as NGFF requires), on the image's grid, without its channels.
    assert [tuple(d.shape) for d in node.data] == [(6, 9), (3, 5)]
    np.testing.assert_array_equal(np.asarray(node.data[0]), labels)
    np.testing.assert_array_equal(np.asarray(node.data[1]), labels[::2, ::2])
    assert [t[0]["scale"] for t in node.metadata["coordinateTransformations"]] == [
        [0.5, 0.25],
        [1.0, 0.5],
    ]
    assert set(node.metadata["color"]) == {0, 3, 70}
    back = read_zarr(target)
    assert back.kind == "labels" and back.scale == (0.5, 0.25)
    # A second label image is added to the list; the first stays.
    write_ome_labels(image / "labels" / "other", labels)
    assert len(_ome_label_nodes(image)) == 2


def test_labels_that_do_not_match_the_image_are_refused(tmp_path):
    image = _ome_image(tmp_path / "img.ome.zarr", 2)
    assert labels_target_in_image(image, "x", (5, 9)) is None
    with pytest.raises(ValueError, match="do not match the image"):
        write_ome_labels(image / "labels" / "x", np.zeros((5, 9), np.uint8))
    assert not (image / "labels").exists()


def test_a_label_group_we_did_not_write_is_never_replaced(tmp_path):
    from ome_zarr.writer import write_labels as ome_write_labels

    image = _ome_image(tmp_path / "img.ome.zarr", 2)
    theirs = np.ones((2, 6, 9), np.uint8)
    ome_write_labels(theirs, zarr.open_group(str(image), mode="r+"), name="theirs", axes="cyx")
    with pytest.raises(FileExistsError, match="not written by napari-microseg"):
        write_ome_labels(image / "labels" / "theirs", _labels())
    ours = image / "labels" / "ours"
    write_ome_labels(ours, _labels())
    with pytest.raises(FileExistsError, match="already exists"):
        write_ome_labels(ours, _labels(), overwrite=False)
    write_ome_labels(ours, _labels() * 2)  # ours, overwriting allowed
    np.testing.assert_array_equal(np.asarray(read_zarr(ours).data), _labels() * 2)
    assert json.loads((image / "labels" / ".zattrs").read_text())["labels"] == ["theirs", "ours"]


def test_a_failed_write_into_an_image_leaves_nothing(tmp_path, monkeypatch):
    image = _ome_image(tmp_path / "img.ome.zarr", 3)
    before = _tree_digest(image, skip="")

    def fail(*args, **kwargs):
        raise OSError("disk went away")

    monkeypatch.setattr(ome_labels, "_list_label", fail)
    with pytest.raises(OSError, match="disk went away"):
        write_ome_labels(image / "labels" / "cells", _labels())
    assert _tree_digest(image, skip="") == before
    assert not (image / "labels").exists()


def test_check_outputs_allows_labels_inside_an_input_image_only(tmp_path):
    image = _ome_image(tmp_path / "img.ome.zarr", 2)
    check_outputs([Output(image / "labels" / "cells", "--out")], [image], overwrite=False)
    for inside in (image / "0", image / "labels", image / "x" / "cells"):
        with pytest.raises(FileExistsError, match="inputs are never replaced"):
            check_outputs([Output(inside, "--out")], [image], overwrite=True)


def test_export_job_and_write_ome_zarr_write_the_ngff_layout(tmp_path):
    image = _ome_image(tmp_path / "img.ome.zarr", 2)
    labels = _labels()
    result = drain(export_job(labels, image / "labels" / "cells"))
    assert result.files == [image / "labels" / "cells"]
    old_api = write_ome_zarr(tmp_path / "l.ome.zarr", labels, axes="YX", kind="labels")
    for path in (image, old_api):
        [node] = _ome_label_nodes(path)
        np.testing.assert_array_equal(np.asarray(node.data[0]), labels)


def test_napari_ome_zarr_opens_our_labels_as_labels(tmp_path):
    reader = pytest.importorskip("napari_ome_zarr._reader")
    folder = tmp_path / "exports"
    folder.mkdir()
    labels = _labels()
    path = write_ome_labels(folder / "cells.ome.zarr", labels, scale=(0.5, 0.25))
    layers = reader.napari_get_reader(str(path))()
    [(data, meta, _)] = [layer for layer in layers if layer[2] == "labels"]
    np.testing.assert_array_equal(np.asarray(data[0]), labels)
    assert meta["scale"] == [0.5, 0.25]
    assert set(meta["colormap"]) == {0, 3, 70}
    # A root label image would make napari-ome-zarr create a zarr group two folders up.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports"]
