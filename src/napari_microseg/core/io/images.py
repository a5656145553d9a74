"""Read and write microscopy images and label images, keeping axes and voxel size.

Supported inputs
----------------
* TIFF: 2D grey (YX), 2D RGB (YXC), multi-page stacks (ZYX), ImageJ hyperstacks
  (up to TZCYX), OME-TIFF; 8/16/32-bit integers and 32/64-bit floats. The voxel
  size comes from ImageJ or OME metadata, or from the TIFF resolution tags.
* PNG, JPEG, BMP: 2D grey or RGB.
* A folder of 2D slices: opened as one ZYX stack in natural file-name order.
* zarr and OME-Zarr: opened lazily as a dask array (see :mod:`.zarr_arrays`).

Label images written by :func:`write_labels` carry a marker in their metadata
and come back with ``kind == "labels"``.

All sizes are in micrometres.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .checks import validate_image
from .image_data import (
    IMAGE_SUFFIXES,
    LABELS_MARKER,
    PLAIN_IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    ZARR_SUFFIXES,
    ImageData,
    ImageReadError,
    canonical_axes,
    looks_like_zarr,
    natural_key,
)

_MICRONS_PER_UNIT = {
    "nm": 1e-3,
    "nanometer": 1e-3,
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "micrometer": 1.0,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "inch": 25400.0,
}

# Resolutions that default writers put in TIFF tags without meaning anything physical.
_SCREEN_DPI = {1.0, 72.0, 96.0, 150.0, 300.0, 600.0}


# ----------------------------------------------------------------------------- reading


def is_readable_path(path: str | os.PathLike) -> bool:
    """Tell cheaply whether :func:`imread` would try this path (by name, not content)."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(ZARR_SUFFIXES) or (p.is_dir() and looks_like_zarr(p)):
        return True
    if p.is_dir():
        return bool(_slice_files(p))
    return name.endswith(IMAGE_SUFFIXES)


def imread(path: str | os.PathLike) -> ImageData:
    """Read an image, a label image, a folder of slices or a zarr array.

    Parameters
    ----------
    path : path-like
        A TIFF, PNG, JPEG or BMP file, a folder of 2D slices, or a zarr store.

    Returns
    -------
    ImageData
        The array (a dask array for zarr), its axes, voxel size and kind.

    Raises
    ------
    ImageReadError
        If the file is missing, not an image, truncated or corrupt.
    ImageValidationError
        If the pixels cannot be used (empty, all NaN, too many axes).
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p} does not exist. Check the path.")
    name = p.name.lower()
    if name.endswith(ZARR_SUFFIXES) or (p.is_dir() and looks_like_zarr(p)):
        from .zarr_arrays import read_zarr

        image = read_zarr(p)
    elif p.is_dir():
        image = _read_slice_folder(p)
    elif name.endswith(TIFF_SUFFIXES):
        image = _read_tiff(p)
    elif name.endswith(PLAIN_IMAGE_SUFFIXES):
        image = _read_plain(p)
    else:
        raise ImageReadError(
            f"{p.name} is not an image format napari-microseg reads "
            f"(TIFF, PNG, JPEG, BMP, zarr or a folder of slices)."
        )
    validate_image(image.data, image.axes, name=p.name)
    return image


def _read_tiff(path: Path) -> ImageData:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            axes = series.axes
            page = tif.pages[0]
            description = _shaped_description(tif)
            scale_by_axis = tiff_voxel_size(tif, page)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as error:
        raise ImageReadError(
            f"{path.name} could not be read as TIFF ({error}). The file may be truncated "
            "or corrupt; re-export it from the acquisition software."
        ) from error
    data, axes = canonical_axes(np.asarray(data), axes)
    kind: Literal["image", "labels"] = "image"
    if description.get("microseg") == LABELS_MARKER:
        kind = "labels"
        stored = description.get("spacing")
        if stored:
            scale_by_axis.update(zip(axes.replace("C", ""), map(float, stored)))
    scale = _scale_tuple(axes, scale_by_axis)
    return ImageData(data, axes, scale, kind, path.stem, {"path": str(path)})


def _shaped_description(tif: Any) -> dict[str, Any]:
    try:
        metadata = tif.shaped_metadata
    except Exception:  # tifffile raises several types for foreign descriptions
        return {}
    if metadata:
        return dict(metadata[0])
    return {}


def tiff_voxel_size(tif: Any, page: Any) -> dict[str, float]:
    """Voxel size in µm per axis letter from OME, ImageJ or resolution tags."""
    sizes: dict[str, float] = {}
    if tif.is_ome and tif.ome_metadata:
        sizes.update(_ome_voxel_size(tif.ome_metadata))
        if sizes:
            return sizes
    imagej = tif.imagej_metadata if tif.is_imagej else None
    unit_um = None
    if imagej is not None:
        unit_um = _microns_per(str(imagej.get("unit", "")))
    tags = page.tags
    res_unit = tags.get("ResolutionUnit")
    res_unit_value = int(res_unit.value) if res_unit is not None else 1
    if unit_um is None:
        unit_um = {2: 25400.0, 3: 1e4}.get(res_unit_value)
    for letter, tag_name in (("X", "XResolution"), ("Y", "YResolution")):
        tag = tags.get(tag_name)
        if tag is None or unit_um is None:
            continue
        numerator, denominator = tag.value
        if not numerator or not denominator:
            continue
        pixels_per_unit = numerator / denominator
        if imagej is None and res_unit_value == 2 and pixels_per_unit in _SCREEN_DPI:
            continue
        sizes[letter] = unit_um / pixels_per_unit
    if imagej is not None and "spacing" in imagej and unit_um is not None:
        sizes["Z"] = float(imagej["spacing"]) * unit_um
    return sizes


def _ome_voxel_size(xml: str) -> dict[str, float]:
    sizes: dict[str, float] = {}
    for letter in "XYZ":
        match = re.search(rf'PhysicalSize{letter}="([0-9.eE+-]+)"', xml)
        if not match:
            continue
        unit_match = re.search(rf'PhysicalSize{letter}Unit="([^"]+)"', xml)
        factor = _microns_per(unit_match.group(1)) if unit_match else 1.0
        if factor is not None:
            sizes[letter] = float(match.group(1)) * factor
    return sizes


def _microns_per(unit: str) -> float | None:
    cleaned = unit.strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ").lower()
    return _MICRONS_PER_UNIT.get(cleaned)


def _scale_tuple(axes: str, sizes: dict[str, float]) -> tuple[float, ...] | None:
    spatial = [a for a in axes if a != "C"]
    if not any(a in sizes for a in spatial):
        return None
    return tuple(float(sizes.get(a, 1.0)) for a in spatial)


def _read_plain(path: Path) -> ImageData:
    import imageio.v3 as iio

    try:
        data = np.asarray(iio.imread(path))
    except Exception as error:  # imageio/Pillow raise many types for broken files
        raise ImageReadError(
            f"{path.name} could not be read ({error}). The file may be truncated or not an image."
        ) from error
    if data.ndim == 3 and data.shape[-1] == 4 and np.all(data[..., 3] == data[..., 3].max()):
        data = data[..., :3]  # a constant alpha channel carries nothing
    if data.ndim == 3 and data.shape[-1] == 2:
        data = data[..., 0]  # grey + alpha
    axes = "YXC" if data.ndim == 3 else "YX"
    return ImageData(data, axes, None, "image", path.stem, {"path": str(path)})


def _slice_files(folder: Path) -> list[Path]:
    files = [
        f
        for f in folder.iterdir()
        if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES) and not f.name.startswith(".")
    ]
    return sorted(files, key=lambda f: natural_key(f.name))


def _read_slice_folder(folder: Path) -> ImageData:
    files = _slice_files(folder)
    if not files:
        raise ImageReadError(f"The folder {folder} holds no image slices (TIFF, PNG, JPEG).")
    slices = [imread(f) for f in files]
    first = slices[0]
    for f, s in zip(files, slices):
        if s.data.shape != first.data.shape or s.data.dtype != first.data.dtype:
            raise ImageReadError(
                f"The slices in {folder} differ: {files[0].name} is {first.data.shape} "
                f"{first.data.dtype} but {f.name} is {s.data.shape} {s.data.dtype}. "
                "A stack needs slices of one size and type."
            )
    data = np.stack([s.data for s in slices])
    scale = (1.0, *first.scale) if first.scale else None
    meta = {"path": str(folder), "files": [f.name for f in files]}
    return ImageData(data, "Z" + first.axes, scale, first.kind, folder.name, meta)


def describe(image: ImageData) -> str:
    """One line describing an image for logs and the CLI."""
    if image.scale is None:
        scale = "unknown voxel size"
    else:
        scale = "voxel " + " x ".join(f"{s:.4g}" for s in image.scale) + " µm"
    return f"{image.name}: {image.axes} {tuple(image.data.shape)} {image.data.dtype}, {scale}"
