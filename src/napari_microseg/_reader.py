"""npe2 reader: microscopy images, our label images, slice folders and zarr.

``napari_get_reader`` decides from the path alone and returns None for files
it cannot read, so other readers get their turn. A file that looks right but
is broken raises :class:`~napari_microseg.core.io.images.ImageReadError` with a
clear sentence, which napari shows as a notification; no open layer is lost.
Warnings while reading (an unfinished zarr result and how to resume it, a
voxel size that is not a size, the other series of a multi-series TIFF) show
as notifications too, and the layer still opens.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .core.io.checks import finite_range
from .core.io.image_data import ImageData
from .core.io.images import imread, is_readable_path

LayerData = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return :func:`read_layers` if napari-microseg can read ``path``, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(is_readable_path(p) for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Read one or several paths into napari layer data tuples."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return [image_to_layer(imread(p)) for p in paths]


def image_to_layer(image: ImageData) -> LayerData:
    """Turn an :class:`ImageData` into a napari ``(data, kwargs, layer_type)`` tuple."""
    meta = {"axes": image.axes, "voxel_size_um": image.scale, **image.metadata}
    kwargs: dict[str, Any] = {"name": image.name, "metadata": meta}
    if image.kind == "labels":
        kwargs["scale"] = image.layer_scale()
        return image.data, kwargs, "labels"
    kwargs["scale"] = image.layer_scale()
    if image.is_rgb:
        kwargs["rgb"] = True
    elif "C" in image.axes:
        kwargs["channel_axis"] = image.axes.index("C")
        kwargs["scale"] = image.layer_scale()
    elif hasattr(image.data, "dtype") and not hasattr(image.data, "dask"):
        # Contrast from finite values only, so a few NaNs do not blank the display.
        kwargs["contrast_limits"] = finite_range(image.data)
    return image.data, kwargs, "image"
