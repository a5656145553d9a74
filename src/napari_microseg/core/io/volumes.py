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

from .image_data import TIFF_SUFFIXES, ImageData, ImageReadError, canonical_axes
from .images import imread, tiff_voxel_size


def open_volume(path: str | os.PathLike) -> ImageData:
    """Open an image for block-by-block processing, reading no pixels yet.

    Parameters
    ----------
    path : path-like
        A zarr / OME-Zarr store, a TIFF (any size), or any format
        :func:`~.io.imread` reads (those are read into memory).

    Returns
    -------
    ImageData
        ``data`` is a dask array (zarr, compressed TIFF), a read-only
        ``numpy.memmap`` (uncompressed TIFF) or an in-memory array.

    Raises
    ------
    ImageReadError
        If the file is missing or cannot be opened.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p} does not exist. Check the path.")
    if p.is_file() and p.name.lower().endswith(TIFF_SUFFIXES):
        return _open_tiff(p)
    return imread(p)


def _open_tiff(path: Path) -> ImageData:
    import tifffile


    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            scale_by_axis = tiff_voxel_size(tif, tif.pages[0])
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as error:
        raise ImageReadError(f"{path.name} could not be read as TIFF ({error}).") from error
    data: object
    try:
        data = tifffile.memmap(path, mode="r")
    except ValueError:
        # Compressed or tiled: read through tifffile's zarr store, chunk by chunk.
        import dask.array as da
        import zarr

        store = tifffile.imread(path, aszarr=True)
        data = da.from_zarr(zarr.open(store, mode="r"))
    if isinstance(data, np.ndarray):
        data, letters = canonical_axes(data, axes)
    else:
        letters = axes.upper()
        data = data.reshape([s for s, a in zip(data.shape, letters) if s > 1 or a in "YX"])
        letters = "".join(a for a, s in zip(axes.upper(), series.shape) if s > 1 or a in "YX")
        letters = letters.replace("S", "C").replace("Q", "Z").replace("I", "Z")
    spatial = [a for a in letters if a != "C"]
    scale = None
    if any(a in scale_by_axis for a in spatial):
        scale = tuple(float(scale_by_axis.get(a, 1.0)) for a in spatial)
    return ImageData(data, letters, scale, "image", path.stem, {"path": str(path)})
