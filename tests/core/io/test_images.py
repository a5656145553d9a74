"""Reading and writing images and labels: round trips, voxel sizes, broken files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_microseg.core.io.checks import ImageValidationError, label_dtype, validate_image
from napari_microseg.core.io.image_data import ImageReadError
from napari_microseg.core.io.images import imread, is_readable_path
from napari_microseg.core.io.writers import write_image, write_labels
from napari_microseg.core.io.zarr_arrays import write_ome_zarr

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.int32, np.uint32, np.float32, np.float64]
)
def test_tiff_2d_grey_roundtrip_every_dtype(tmp_path, dtype):
    data = (RNG.random((17, 23)) * 200).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tif", data)
    image = imread(tmp_path / "a.tif")
    assert image.axes == "YX"
    assert image.data.dtype == dtype
    np.testing.assert_array_equal(image.data, data)
    assert image.kind == "image"


def test_tiff_rgb_reads_as_yxc(tmp_path):
    data = RNG.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb")
    image = imread(tmp_path / "rgb.tif")
    assert image.axes == "YXC" and image.is_rgb
    np.testing.assert_array_equal(image.data, data)


def test_multipage_stack_reads_as_zyx_with_imagej_voxel_size(tmp_path):
    data = RNG.integers(0, 255, (12, 16, 18), dtype=np.uint8)
    # ImageJ convention: resolution in pixels per unit, spacing = Z step, unit string.
    tifffile.imwrite(
        tmp_path / "stack.tif",
        data,
        imagej=True,
        resolution=(200.0, 200.0),
        metadata={"spacing": 0.005, "unit": "micron", "axes": "ZYX"},
    )
    image = imread(tmp_path / "stack.tif")
    assert image.axes == "ZYX"
    assert image.data.shape == (12, 16, 18)
    np.testing.assert_allclose(image.scale, (0.005, 0.005, 0.005))


def test_many_page_plain_tiff_is_a_stack(tmp_path):
    data = RNG.integers(0, 255, (300, 8, 9), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "fib.tif", data)
    image = imread(tmp_path / "fib.tif")
    assert image.axes == "ZYX" and image.data.shape == (300, 8, 9)


def test_imagej_hyperstack_keeps_named_axes(tmp_path):
    data = RNG.integers(0, 4000, (3, 5, 2, 10, 11), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "hyper.tif", data, imagej=True, metadata={"axes": "TZCYX"})
    image = imread(tmp_path / "hyper.tif")
    assert image.axes == "TZCYX"
    assert image.data.shape == (3, 5, 2, 10, 11)


def test_ome_tiff_physical_size(tmp_path):
    data = RNG.integers(0, 255, (4, 10, 12), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "a.ome.tif",
        data,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 0.25,
            "PhysicalSizeY": 0.25,
            "PhysicalSizeZ": 1.5,
            "PhysicalSizeXUnit": "µm",
        },
    )
    image = imread(tmp_path / "a.ome.tif")
    np.testing.assert_allclose(image.scale, (1.5, 0.25, 0.25))


def test_resolution_tags_in_centimetres(tmp_path):
    data = np.zeros((5, 6), np.uint8)
    tifffile.imwrite(
        tmp_path / "res.tif", data, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER"
    )
    np.testing.assert_allclose(imread(tmp_path / "res.tif").scale, (0.5, 0.5))


def test_screen_dpi_is_not_a_voxel_size(tmp_path):
    tifffile.imwrite(
        tmp_path / "dpi.tif", np.zeros((5, 6), np.uint8), resolution=(72, 72), resolutionunit="INCH"
    )
    assert imread(tmp_path / "dpi.tif").scale is None


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int64])
@pytest.mark.parametrize("ndim", [2, 3])
def test_labels_tiff_roundtrip_keeps_ids_and_voxel_size(tmp_path, dtype, ndim):
    shape = (4, 9, 10)[-ndim:]
    top = {np.uint8: 200, np.uint16: 60000, np.uint32: 70000, np.int64: 5_000_000}[dtype]
    labels = RNG.integers(0, top, shape).astype(dtype)
    labels.flat[0] = top
    scale = (0.03, 0.005, 0.005)[-ndim:]
    path = write_labels(tmp_path / "lab.tif", labels, scale=scale)
    back = imread(path)
    assert back.kind == "labels"
    np.testing.assert_array_equal(back.data, labels)
    assert back.data.dtype == label_dtype(labels)
    np.testing.assert_allclose(back.scale, scale)


def test_labels_above_65535_become_uint32():
    assert label_dtype(np.array([0, 65536])) == np.uint32
    assert label_dtype(np.array([0, 65535])) == np.uint16


def test_labels_png_roundtrip(tmp_path):
    labels = RNG.integers(0, 1000, (13, 14)).astype(np.uint16)
    back = imread(write_labels(tmp_path / "lab.png", labels))
    np.testing.assert_array_equal(back.data, labels)


def test_png_refuses_3d_and_big_ids(tmp_path):
    with pytest.raises(ImageValidationError, match="TIFF"):
        write_labels(tmp_path / "x.png", np.zeros((2, 3, 4), np.uint16))
    with pytest.raises(ImageValidationError, match="65535"):
        write_labels(tmp_path / "x.png", np.full((3, 4), 70000, np.uint32))
    assert not list(tmp_path.iterdir())


def test_labels_refuse_floats_and_negative_ids(tmp_path):
    with pytest.raises(ImageValidationError, match="integer"):
        write_labels(tmp_path / "x.tif", np.zeros((3, 4), np.float32))
    with pytest.raises(ImageValidationError, match="negative"):
        write_labels(tmp_path / "x.tif", -np.ones((3, 4), np.int32))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
def test_plain_formats_grey_and_rgb(tmp_path, suffix):
    grey = RNG.integers(0, 255, (16, 20), dtype=np.uint8)
    rgb = RNG.integers(0, 255, (16, 20, 3), dtype=np.uint8)
    for name, data in (("grey", grey), ("rgb", rgb)):
        write_image(tmp_path / f"{name}{suffix}", data)
        image = imread(tmp_path / f"{name}{suffix}")
        assert image.axes == ("YX" if data.ndim == 2 else "YXC")
        if suffix != ".jpg":  # JPEG is lossy
            np.testing.assert_array_equal(image.data, data)


def test_rgba_with_constant_alpha_drops_alpha(tmp_path):
    import imageio.v3 as iio

    rgba = RNG.integers(0, 255, (8, 9, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    iio.imwrite(tmp_path / "a.png", rgba)
    assert imread(tmp_path / "a.png").data.shape == (8, 9, 3)


def test_folder_of_slices_is_one_stack_in_natural_order(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for index in (10, 2, 1):  # natural order: 1, 2, 10
        write_image(folder / f"slice_{index}.png", np.full((6, 7), index, np.uint8))
    image = imread(folder)
    assert image.axes == "ZYX"
    assert [int(s[0, 0]) for s in image.data] == [1, 2, 10]
    assert is_readable_path(folder)


def test_folder_with_mismatched_slices_says_which(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((6, 7), np.uint8))
    write_image(tmp_path / "b.png", np.zeros((6, 8), np.uint8))
    with pytest.raises(ImageReadError, match=r"b\.png"):
        imread(tmp_path)


def test_write_image_keeps_voxel_size(tmp_path):
    data = RNG.integers(0, 255, (3, 8, 9), dtype=np.uint8)
    back = imread(write_image(tmp_path / "i.tif", data, scale=(0.1, 0.02, 0.02)))
    np.testing.assert_allclose(back.scale, (0.1, 0.02, 0.02))
    np.testing.assert_array_equal(back.data, data)


def test_ome_zarr_opens_lazily_with_scale_and_kind(tmp_path):
    data = RNG.integers(0, 255, (6, 40, 50), dtype=np.uint8)
    path = write_ome_zarr(tmp_path / "vol.ome.zarr", data, axes="ZYX", scale=(0.05, 0.01, 0.01))
    image = imread(path)
    assert hasattr(image.data, "dask")  # lazy: nothing loaded yet
    assert image.axes == "ZYX"
    np.testing.assert_allclose(image.scale, (0.05, 0.01, 0.01))
    np.testing.assert_array_equal(np.asarray(image.data), data)
    labels = write_ome_zarr(
        tmp_path / "lab.ome.zarr", data.astype(np.uint32), axes="ZYX", kind="labels"
    )
    assert imread(labels).kind == "labels"


def test_plain_zarr_array(tmp_path):
    import zarr

    array = zarr.create_array(
        str(tmp_path / "raw.zarr"), shape=(4, 30, 30), chunks=(1, 30, 30), dtype="uint16"
    )
    array[:] = 7
    image = imread(tmp_path / "raw.zarr")
    assert image.axes == "ZYX" and int(image.data[0, 0, 0].compute()) == 7


def test_ome_zarr_write_replaces_atomically(tmp_path):
    path = tmp_path / "x.ome.zarr"
    write_ome_zarr(path, np.zeros((4, 4), np.uint8), axes="YX")
    write_ome_zarr(path, np.ones((4, 4), np.uint8), axes="YX")
    assert int(np.asarray(imread(path).data).max()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["x.ome.zarr"]
    with pytest.raises(FileExistsError):
        write_ome_zarr(path, np.ones((4, 4), np.uint8), axes="YX", overwrite=False)


# ------------------------------------------------------------------------- bad input


def test_foreign_file_is_not_ours(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert not is_readable_path(tmp_path / "notes.txt")
    with pytest.raises(ImageReadError, match="not an image format"):
        imread(tmp_path / "notes.txt")


def test_truncated_tiff_gives_a_clear_message(tmp_path):
    tifffile.imwrite(tmp_path / "ok.tif", RNG.integers(0, 255, (5, 64, 64), dtype=np.uint8))
    payload = (tmp_path / "ok.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(payload[: len(payload) // 3])
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        imread(tmp_path / "cut.tif")


def test_text_renamed_to_tiff_gives_a_clear_message(tmp_path):
    (tmp_path / "fake.tif").write_text("this is not a tiff")
    with pytest.raises(ImageReadError, match=r"fake\.tif"):
        imread(tmp_path / "fake.tif")


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        imread(tmp_path / "nope.tif")


def test_validate_image_messages():
    with pytest.raises(ImageValidationError, match="empty"):
        validate_image(np.zeros((0, 5)))
    with pytest.raises(ImageValidationError, match="no axis names"):
        validate_image(np.zeros((2, 2, 2, 3, 3)))
    validate_image(np.zeros((2, 2, 2, 3, 3)), "TZCYX")
    with pytest.raises(ImageValidationError, match="only NaN"):
        validate_image(np.full((4, 4), np.nan, np.float32))
    validate_image(np.where(np.eye(4) > 0, np.nan, 1.0))  # some NaNs are fine
    with pytest.raises(ImageValidationError, match="at least 2"):
        validate_image(np.zeros(5))


def test_nan_filled_tiff_is_refused_with_a_message(tmp_path):
    tifffile.imwrite(tmp_path / "nan.tif", np.full((8, 8), np.nan, np.float32))
    with pytest.raises(ImageValidationError, match="only NaN"):
        imread(tmp_path / "nan.tif")
