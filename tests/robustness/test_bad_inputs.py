"""Bad inputs get one clear sentence that says what to do, and nothing is lost (issue #22).

Every case is generated on the fly from small arrays in ``tmp_path``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import struct

import numpy as np
import pytest
import tifffile

from napari_microseg.core.io.atomic import DiskFullError
from napari_microseg.core.io.checks import ImageValidationError
from napari_microseg.core.io.image_data import ImageReadError
from napari_microseg.core.io.images import imread
from napari_microseg.core.io.volumes import open_volume
from napari_microseg.core.io.writers import write_image, write_labels
from napari_microseg.core.io.zarr_arrays import write_ome_zarr
from napari_microseg.core.models.base import ModelError
from napari_microseg.core.postprocess.pipeline import PostprocessPipeline

# ----------------------------------------------------------------------------- complex


def test_complex_tiff_is_refused_with_what_to_do(tmp_path):
    tifffile.imwrite(tmp_path / "c.tif", np.full((8, 8), 1 + 2j, np.complex64))
    expected = r"complex images are not supported; take abs\(\)"
    with pytest.raises(ImageValidationError, match=expected):
        imread(tmp_path / "c.tif")


# ----------------------------------------------------------------------------- huge header


def _declare_size(path, rows, cols):
    """Patch a one-strip TIFF so its header declares ``rows x cols`` pixels."""
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        offsets = tags["ImageLength"].valueoffset, tags["ImageWidth"].valueoffset
        fmt = "<I" if tags["ImageWidth"].dtype == 4 else "<H"
    payload = bytearray(path.read_bytes())
    struct.pack_into(fmt, payload, offsets[0], rows)
    struct.pack_into(fmt, payload, offsets[1], cols)
    path.write_bytes(bytes(payload))


def test_tiff_declaring_more_pixels_than_memory_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint16), photometric="minisblack")
    _declare_size(path, 3_000_000, 3_000_000)  # 18 TB of uint16
    with pytest.raises(ImageReadError, match=r"more than the .* GB of memory available"):
        imread(path)


# ----------------------------------------------------------------------------- disk full


def _fill_disk_after(monkeypatch, n_bytes):
    """Make tifffile write ``n_bytes`` and then fail as a full disk does."""

    def full(path, *args, **kwargs):
        with open(path, "wb") as stream:
            stream.write(b"\0" * n_bytes)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", full)


def test_disk_full_names_the_file_and_keeps_the_old_output(tmp_path, monkeypatch):
    target = tmp_path / "labels.tif"
    target.write_bytes(b"previous result")
    _fill_disk_after(monkeypatch, 10)
    labels = np.ones((500, 500), np.uint16)
    with pytest.raises(DiskFullError) as info:
        write_labels(target, labels)
    message = str(info.value)
    assert f"The disk is full: writing {target} needed about 0.5 MB" in message
    assert "the previous labels.tif is kept unchanged" in message
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]


def test_disk_full_while_writing_an_image(tmp_path, monkeypatch):
    _fill_disk_after(monkeypatch, 10)
    with pytest.raises(DiskFullError, match=r"out\.tif needed about .*; nothing was kept"):
        write_image(tmp_path / "out.tif", np.ones((8, 8), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing_ome_zarr_keeps_the_old_store(tmp_path, monkeypatch):
    import zarr

    target = tmp_path / "old.ome.zarr"
    write_ome_zarr(target, np.ones((4, 4), np.uint8), axes="YX")
    before = sorted(p.relative_to(target) for p in target.rglob("*"))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zarr.Group, "create_array", full)
    with pytest.raises(DiskFullError, match=r"old\.ome\.zarr needed about .*kept unchanged"):
        write_ome_zarr(target, np.ones((4, 4), np.uint8), axes="YX")
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["old.ome.zarr"]


# ----------------------------------------------------------------------------- voxel sizes


@pytest.mark.parametrize("spacing", [0.0, -2.0, math.nan])
def test_imagej_bad_z_spacing_is_ignored_with_a_warning(tmp_path, spacing):
    path = tmp_path / "stack.tif"
    metadata = {"spacing": spacing, "unit": "um", "axes": "ZYX"}
    data = np.zeros((4, 8, 8), np.uint16)
    tifffile.imwrite(path, data, imagej=True, resolution=(2.0, 2.0), metadata=metadata)
    expected = r"voxel size along Z is .*, which is not a size; it is ignored"
    with pytest.warns(UserWarning, match=expected):
        image = imread(path)
    assert image.axes == "ZYX"
    assert all(math.isfinite(s) and s > 0 for s in image.scale)
    assert image.scale[1:] == (0.5, 0.5)


def test_ome_zero_negative_and_nan_sizes_are_ignored_with_a_warning(tmp_path):
    path = tmp_path / "stack.ome.tif"
    metadata = {
        "axes": "ZYX",
        "PhysicalSizeX": -1.0,
        "PhysicalSizeY": 0.0,
        "PhysicalSizeZ": float("nan"),
    }
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint16), ome=True, metadata=metadata)
    with pytest.warns(UserWarning) as caught:
        image = imread(path)
    texts = " ".join(str(w.message) for w in caught)
    for letter in "XYZ":
        assert f"OME voxel size along {letter}" in texts
    assert image.scale is None or all(math.isfinite(s) and s > 0 for s in image.scale)


def test_ome_zarr_zero_voxel_size_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "v.ome.zarr"
    write_ome_zarr(path, np.zeros((2, 6, 7), np.uint8), axes="ZYX", scale=(0.0, 0.5, 0.5))
    with pytest.warns(UserWarning, match="OME-Zarr voxel size along Z is 0.0, which is not a size"):
        image = imread(path)
    assert image.scale == (1.0, 0.5, 0.5)


def test_open_volume_ignores_bad_voxel_sizes_too(tmp_path):
    path = tmp_path / "stack.tif"
    metadata = {"spacing": 0.0, "unit": "um", "axes": "ZYX"}
    tifffile.imwrite(path, np.zeros((4, 8, 8), np.uint16), imagej=True, metadata=metadata)
    with pytest.warns(UserWarning, match="not a size"):
        volume = open_volume(path)
    assert volume.scale is None or all(s > 0 for s in volume.scale)


# ----------------------------------------------------------------------------- output is a folder


@pytest.mark.parametrize("write", ["labels", "image"])
def test_output_named_like_a_file_but_a_folder_is_refused(tmp_path, write):
    folder = tmp_path / "out.tif"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    writer = write_labels if write == "labels" else write_image
    with pytest.raises(FileExistsError, match=r"out\.tif is an existing folder, not a file"):
        writer(folder, np.ones((4, 4), np.uint8))
    assert (folder / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


# ----------------------------------------------------------------------------- pipeline JSON


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"threshold": "0.5"}, "'threshold' must be a number or null; got '0.5' (str)"),
        ({"min_size": [3]}, "'min_size' must be a number; got [3] (list)"),
        ({"fill_holes": "yes"}, "'fill_holes' must be true or false"),
        ({"connectivity": 1.5}, "'connectivity' must be a whole number"),
        ({"method": 2}, "'method' must be one of 'otsu', 'threshold'"),
    ],
)
def test_pipeline_json_with_a_wrong_type_names_the_field(settings, expected):
    with pytest.raises(ValueError) as info:
        PostprocessPipeline.from_dict(json.loads(json.dumps(settings)))
    assert expected in str(info.value)


def test_pipeline_json_that_is_not_an_object():
    with pytest.raises(ValueError, match="must be a JSON object of settings"):
        PostprocessPipeline.from_dict([1, 2])


def test_pipeline_json_still_takes_ints_for_floats():
    pipeline = PostprocessPipeline.from_dict({"method": "threshold", "threshold": 1, "min_size": 3})
    assert pipeline.threshold == 1 and pipeline.min_size == 3


# ----------------------------------------------------------------------------- symlinks


def test_symlink_loop_is_named(tmp_path):
    os.symlink(tmp_path / "b.tif", tmp_path / "a.tif")
    os.symlink(tmp_path / "a.tif", tmp_path / "b.tif")
    for read in (imread, open_volume):
        with pytest.raises(ImageReadError, match="symbolic link that leads back to itself"):
            read(tmp_path / "a.tif")


def test_dangling_symlink_names_its_target(tmp_path):
    os.symlink(tmp_path / "gone.tif", tmp_path / "a.tif")
    with pytest.raises(ImageReadError, match=r"symbolic link to .*gone\.tif, which does not exist"):
        imread(tmp_path / "a.tif")


# ----------------------------------------------------------------------------- not an image


def test_empty_png_says_it_is_empty(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"e\.png is empty \(0 bytes\), not an image"):
        imread(tmp_path / "e.png")


def test_text_png_says_it_is_not_an_image(tmp_path):
    (tmp_path / "t.png").write_text("cell counts: 12\n")
    with pytest.raises(ImageReadError) as info:
        imread(tmp_path / "t.png")
    assert "t.png is not an image" in str(info.value)
    assert "pip install" not in str(info.value)


def test_truncated_png_says_truncated_without_plugin_advice(tmp_path):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "a.png", np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))
    payload = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ImageReadError, match="truncated or damaged") as info:
        imread(tmp_path / "a.png")
    assert "pip install" not in str(info.value)


# ----------------------------------------------------------------------------- NaN weights


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_model_with_nan_or_inf_weights_is_refused_at_load(tmp_path, bad):
    import torch

    from napari_microseg.core.models.build import create_model
    from napari_microseg.core.models.checkpoint import load_checkpoint, save_checkpoint

    model = create_model("unet", name="broken", depth=2, base_width=4)
    with torch.no_grad():
        next(iter(model.module.parameters()))[0].fill_(bad)
    path = save_checkpoint(model, tmp_path / "broken")
    with pytest.raises(ModelError, match=r"'broken' has NaN or infinite weights .*; retrain it"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- axes


def test_axes_describe_the_file_as_stored(tmp_path):
    data = np.arange(3 * 8 * 9, dtype=np.uint8).reshape(3, 8, 9)
    tifffile.imwrite(tmp_path / "t.tif", data, photometric="minisblack")
    image = imread(tmp_path / "t.tif", axes="tyx")
    assert image.axes == "TYX"
    np.testing.assert_array_equal(image.data, data)
    volume = open_volume(tmp_path / "t.tif", axes="TYX")
    assert volume.axes == "TYX"


def test_axes_are_applied_before_reordering(tmp_path):
    # Stored as (3, 8, 8); naming the first axis C makes it the last, RGB-like axis.
    data = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8)
    tifffile.imwrite(tmp_path / "c.tif", data, imagej=True, metadata={"axes": "ZYX"})
    image = imread(tmp_path / "c.tif", axes="CYX")
    assert image.axes == "YXC"
    np.testing.assert_array_equal(image.data, np.moveaxis(data, 0, -1))


@pytest.mark.parametrize(
    ("axes", "expected"),
    [
        ("YX", r"names 2 axes but t\.tif stores 3 \(shape \(3, 8, 9\)\)"),
        ("ZZX", "use each of the letters TZCYX at most once"),
        ("QYX", "use each of the letters TZCYX at most once"),
        ("ZCT", "must include Y and X"),
    ],
)
def test_wrong_axes_are_refused_with_the_stored_shape(tmp_path, axes, expected):
    tifffile.imwrite(tmp_path / "t.tif", np.zeros((3, 8, 9), np.uint8), photometric="minisblack")
    for read in (imread, open_volume):
        with pytest.raises(ImageValidationError, match=expected):
            read(tmp_path / "t.tif", axes=axes)


def test_axes_for_png_zarr_and_slice_folder(tmp_path):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "g.png", np.zeros((6, 7), np.uint8))
    assert imread(tmp_path / "g.png", axes="YX").axes == "YX"
    with pytest.raises(ImageValidationError, match="names 3 axes"):
        imread(tmp_path / "g.png", axes="ZYX")
    write_ome_zarr(tmp_path / "v.ome.zarr", np.zeros((2, 6, 7), np.uint8), axes="ZYX")
    assert imread(tmp_path / "v.ome.zarr", axes="TYX").axes == "TYX"
    folder = tmp_path / "slices"
    folder.mkdir()
    for i in range(3):
        iio.imwrite(folder / f"s{i}.png", np.full((6, 7), i, np.uint8))
    assert imread(folder, axes="TYX").axes == "TYX"


def test_multi_series_tiff_says_which_series_and_how_to_pick_another(tmp_path):
    path = tmp_path / "multi.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.zeros((8, 8), np.uint8), photometric="minisblack")
        tif.write(np.ones((2, 16, 16), np.uint16), photometric="minisblack")
    with pytest.warns(UserWarning, match=r"holds 2 image series; read series 0 .*pass series=N"):
        first = imread(path)
    assert first.data.shape == (8, 8)
    with pytest.warns(UserWarning, match="read series 1"):
        second = imread(path, series=1)
    assert second.data.shape == (2, 16, 16)
    with pytest.warns(UserWarning, match="read series 1"):
        assert open_volume(path, series=1).data.shape == (2, 16, 16)
    with pytest.raises(ImageReadError, match="series 5 does not exist"):
        imread(path, series=5)


def test_cli_reports_a_full_disk_in_one_line(tmp_path, monkeypatch, capsys):
    from napari_microseg.cli import main

    prob = np.zeros((20, 30), np.float32)
    prob[2:8, 2:8] = 0.9
    write_image(tmp_path / "prob.tif", prob)
    out = write_labels(tmp_path / "labels.tif", np.ones((20, 30), np.uint8))  # ours: replaceable
    before = out.read_bytes()
    _fill_disk_after(monkeypatch, 10)
    code = main(["postprocess", str(tmp_path / "prob.tif"), "--out", str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2
    assert "The disk is full: writing" in err and "Traceback" not in err
    assert "the previous labels.tif is kept unchanged" in err
    assert out.read_bytes() == before
