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

import errno
import math
import os
import re
import warnings
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
    stored_axes,
    valid_voxel_sizes,
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

# How the formats read by imageio begin, to tell a damaged image from a file that is no image.
_IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"GIF8", b"II*\x00", b"MM\x00*", b"RIFF")


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


def imread(path: str | os.PathLike, *, axes: str | None = None, series: int = 0) -> ImageData:
    """Read an image, a label image, a folder of slices or a zarr array.

    Parameters
    ----------
    path : path-like
        A TIFF, PNG, JPEG or BMP file, a folder of 2D slices, or a zarr store.
    axes : str, optional
        The file's axes as stored, one letter per axis from ``TZCYX`` (e.g.
        ``"TYX"`` for a time series tifffile would call ``"QYX"``). They name
        the axes of the array as read (for TIFF, tifffile's series shape, which
        leaves out axes of length 1) and replace the file's own axis names
        before anything is reordered or dropped.
    series : int
        Which image series of a multi-series TIFF to read (0, the first, by
        default; the others are named in a warning).

    Returns
    -------
    ImageData
        The array (a dask array for zarr), its axes, voxel size and kind.

    Raises
    ------
    ImageReadError
        If the file is missing, not an image, truncated or corrupt, or too
        large for memory.
    ImageValidationError
        If the pixels cannot be used (empty, complex, all NaN, too many axes),
        or ``axes`` does not fit the stored array.
    """
    p = existing_path(path)
    name = p.name.lower()
    if name.endswith(ZARR_SUFFIXES) or (p.is_dir() and looks_like_zarr(p)):
        from .zarr_arrays import read_zarr

        image = read_zarr(p, axes=axes)
    elif p.is_dir():
        image = _read_slice_folder(p, axes)
    elif name.endswith(TIFF_SUFFIXES):
        image = _read_tiff(p, axes, series)
    elif name.endswith(PLAIN_IMAGE_SUFFIXES):
        image = _read_plain(p, axes)
    else:
        raise ImageReadError(
            f"{p.name} is not an image format napari-microseg reads "
            f"(TIFF, PNG, JPEG, BMP, zarr or a folder of slices)."
        )
    validate_image(image.data, image.axes, name=p.name)
    return image


def existing_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or a clear :class:`ImageReadError` if nothing can be read there.

    Tells a missing file from a symbolic link that points nowhere or to itself.
    """
    p = Path(path)
    if p.exists():
        return p
    if p.is_symlink():
        try:
            target = p.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 reports a symlink loop this way
            target = None
        except OSError as error:
            target = None if error.errno == errno.ELOOP else Path(os.readlink(p))
        if target is None:
            raise ImageReadError(
                f"{p} is a symbolic link that leads back to itself (a symlink loop); "
                "point it at the real file or give the real file's path."
            )
        raise ImageReadError(
            f"{p} is a symbolic link to {target}, which does not exist; "
            "point it at the real file or give the real file's path."
        )
    raise ImageReadError(f"{p} does not exist. Check the path.")


def select_series(tif: Any, index: int, name: str) -> Any:
    """The ``index``-th image series of an open TIFF, warning when there are others.

    Raises
    ------
    ImageReadError
        If the file has no such series.
    """
    count = len(tif.series)
    if not 0 <= index < count:
        raise ImageReadError(
            f"{name} holds {count} image series (0 to {count - 1}); series {index} does not "
            "exist. Pick one of those."
        )
    chosen = tif.series[index]
    if count > 1:
        others = "; ".join(
            f"{i}: {s.axes} {tuple(s.shape)}" for i, s in enumerate(tif.series) if i != index
        )
        warnings.warn(
            f"{name} holds {count} image series; read series {index} ({chosen.axes} "
            f"{tuple(chosen.shape)}). The others are {others}; to read one, pass "
            "series=N to imread, or save it on its own from Fiji.",
            stacklevel=4,
        )
    return chosen


def _check_fits_in_memory(series: Any, name: str) -> None:
    import psutil

    needed = math.prod(series.shape) * np.dtype(series.dtype).itemsize
    available = psutil.virtual_memory().available
    if needed > available:
        raise ImageReadError(
            f"{name} declares {tuple(series.shape)} {np.dtype(series.dtype)} pixels "
            f"({needed / 1e9:.1f} GB), more than the {available / 1e9:.1f} GB of memory "
            "available; process it block by block (open_volume, `microseg predict --chunked`) "
            "or, if it should be small, re-export it: its header may be damaged."
        )


def _read_tiff(path: Path, axes: str | None = None, series_index: int = 0) -> ImageData:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = select_series(tif, series_index, path.name)
            _check_fits_in_memory(series, path.name)
            data = series.asarray()
            stored = series.axes
            page = series.keyframe
            description = _shaped_description(tif)
            scale_by_axis = tiff_voxel_size(tif, page)
    except ImageReadError:  # already says what is wrong (no such series, too large)
        raise
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as error:
        raise ImageReadError(
            f"{path.name} could not be read as TIFF ({error}). The file may be truncated "
            "or corrupt; re-export it from the acquisition software."
        ) from error
    except MemoryError as error:
        raise ImageReadError(
            f"{path.name} is too large to read into memory; process it block by block "
            "(open_volume, `microseg predict --chunked`)."
        ) from error
    if axes:
        stored = stored_axes(axes, tuple(data.shape), path.name)
    data, axes = canonical_axes(np.asarray(data), stored)
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
    """Voxel size in µm per axis letter from OME, ImageJ or resolution tags.

    A size that is 0, negative, infinite or NaN is left out, with a warning.
    """
    name = Path(str(tif.filename)).name
    if tif.is_ome and tif.ome_metadata:
        sizes = valid_voxel_sizes(_ome_voxel_size(tif.ome_metadata), "OME", name)
        if sizes:
            return sizes
    return valid_voxel_sizes(_tag_voxel_size(tif, page), "ImageJ/TIFF", name)


def _tag_voxel_size(tif: Any, page: Any) -> dict[str, float]:
    sizes: dict[str, float] = {}
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
        try:
            sizes["Z"] = float(imagej["spacing"]) * unit_um
        except (TypeError, ValueError):
            sizes["Z"] = math.nan  # not a number: reported and ignored like NaN
    return sizes


def _ome_voxel_size(xml: str) -> dict[str, float]:
    sizes: dict[str, float] = {}
    for letter in "XYZ":
        match = re.search(rf'PhysicalSize{letter}="([^"]*)"', xml)
        if not match:
            continue
        unit_match = re.search(rf'PhysicalSize{letter}Unit="([^"]+)"', xml)
        factor = _microns_per(unit_match.group(1)) if unit_match else 1.0
        try:
            value = float(match.group(1))
        except ValueError:
            value = math.nan  # not a number: reported and ignored like NaN
        if factor is not None:
            sizes[letter] = value * factor
    return sizes


def _microns_per(unit: str) -> float | None:
    cleaned = unit.strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ").lower()
    return _MICRONS_PER_UNIT.get(cleaned)


def _scale_tuple(axes: str, sizes: dict[str, float]) -> tuple[float, ...] | None:
    spatial = [a for a in axes if a != "C"]
    if not any(a in sizes for a in spatial):
        return None
    return tuple(float(sizes.get(a, 1.0)) for a in spatial)


def _read_plain(path: Path, axes: str | None = None) -> ImageData:
    import imageio.v3 as iio

    with open(path, "rb") as stream:
        head = stream.read(8)
    if not head:
        raise ImageReadError(
            f"{path.name} is empty (0 bytes), not an image; export or copy it again."
        )
    try:
        data = np.asarray(iio.imread(path))
    except Exception as error:  # imageio/Pillow raise many types for broken files
        if not head.startswith(_IMAGE_SIGNATURES):
            raise ImageReadError(
                f"{path.name} is not an image (its content is not PNG, JPEG or BMP data; it may "
                "be a text file or misnamed); check that you picked the right file."
            ) from error
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageReadError(
            f"{path.name} could not be read ({reason}); the file may be truncated or damaged, "
            "export or copy it again."
        ) from error
    if axes:
        data, letters = canonical_axes(data, stored_axes(axes, data.shape, path.name))
        return ImageData(data, letters, None, "image", path.stem, {"path": str(path)})
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


def _read_slice_folder(folder: Path, axes: str | None = None) -> ImageData:
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
    letters = "Z" + first.axes
    if axes:
        # The slices were read with their own axes; the given letters name the stack's axes.
        data, letters = canonical_axes(data, stored_axes(axes, data.shape, folder.name))
        scale = scale if scale is not None and len(scale) == len(letters.replace("C", "")) else None
    return ImageData(data, letters, scale, first.kind, folder.name, meta)


def describe(image: ImageData) -> str:
    """One line describing an image for logs and the CLI."""
    if image.scale is None:
        scale = "unknown voxel size"
    else:
        scale = "voxel " + " x ".join(f"{s:.4g}" for s in image.scale) + " µm"
    return f"{image.name}: {image.axes} {tuple(image.data.shape)} {image.data.dtype}, {scale}"
