"""Open a volume without reading it: zarr and OME-Zarr lazily, a large TIFF as a memmap.

:func:`~.io.imread` reads a TIFF into memory, which a volume larger than
memory does not allow. :func:`open_volume` maps an uncompressed TIFF into
memory instead (``tifffile.memmap``: pages are read when touched) and reads a
compressed or tiled one through tifffile's zarr view, chunk by chunk; zarr
stores open as dask arrays (:func:`~.zarr_arrays.read_zarr`). Other formats fall
back to :func:`~.io.imread`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .image_data import TIFF_SUFFIXES, ImageData, ImageReadError, canonical_axes, stored_axes
from .images import existing_path, imread, select_series, tiff_voxel_size


def open_volume(path: str | os.PathLike, *, axes: str | None = None, series: int = 0) -> ImageData:
    """Open an image for block-by-block processing, reading no pixels yet.

    Parameters
    ----------
    path : path-like
        A zarr / OME-Zarr store, a TIFF (any size), or any format
        :func:`~.io.imread` reads (those are read into memory).
    axes : str, optional
        The file's axes as stored, one letter per axis from ``TZCYX``, applied
        before anything is reordered (see :func:`~.io.imread`).
    series : int
        Which image series of a multi-series TIFF to open.

    Returns
    -------
    ImageData
        ``data`` is a dask array (zarr, compressed TIFF), a read-only
        ``numpy.memmap`` (uncompressed TIFF) or an in-memory array.

    Raises
    ------
    ImageReadError
        If the file is missing or cannot be opened.
    ImageValidationError
        If ``axes`` does not fit the stored array.
    """
    p = existing_path(path)
    if p.is_file() and p.name.lower().endswith(TIFF_SUFFIXES):
        return _open_tiff(p, axes, series)
    return imread(p, axes=axes, series=series)


def _open_tiff(path: Path, axes: str | None, series_index: int) -> ImageData:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = select_series(tif, series_index, path.name)
            stored = series.axes
            scale_by_axis = tiff_voxel_size(tif, series.keyframe)
    except ImageReadError:  # already says what is wrong (no such series)
        raise
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as error:
        raise ImageReadError(f"{path.name} could not be read as TIFF ({error}).") from error
    data: object
    try:
        data = tifffile.memmap(path, series=series_index, mode="r")
    except ValueError:
        # Compressed or tiled: read through tifffile's zarr store, chunk by chunk.
        import dask.array as da
        import zarr

        store = tifffile.imread(path, aszarr=True, series=series_index)
        data = da.from_zarr(zarr.open(store, mode="r"))
    if axes:
        stored = stored_axes(axes, tuple(data.shape), path.name)
    if isinstance(data, np.ndarray):
        data, letters = canonical_axes(data, stored)
    else:
        keep = [(s, a) for s, a in zip(data.shape, stored.upper()) if s > 1 or a in "YX"]
        data = data.reshape([s for s, _ in keep])
        letters = "".join(a for _, a in keep)
        letters = letters.replace("S", "C").replace("Q", "Z").replace("I", "Z")
    spatial = [a for a in letters if a != "C"]
    scale = None
    if any(a in scale_by_axis for a in spatial):
        scale = tuple(float(scale_by_axis.get(a, 1.0)) for a in spatial)
    return ImageData(data, letters, scale, "image", path.stem, {"path": str(path)})
