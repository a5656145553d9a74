"""npe2 reader: microscopy images, our label images, slice folders and zarr.

``napari_get_reader`` decides from the path alone and returns None for files
it cannot read, so other readers get their turn. A file that looks right but
is broken raises :class:`~napari_microseg.core.io.images.ImageReadError` with a
clear sentence, which napari shows as a notification; no open layer is lost.
Warnings while reading (an unfinished zarr result and how to resume it, a
voxel size that is not a size, the other series of a multi-series TIFF) show
as notifications too, and the layer still opens. A layer with a voxel size gets
µm as its units, so napari's scale bar shows physical lengths.

napari has no manifest field that makes a plugin's reader the default: a plain
``viewer.open(path)`` uses napari's built-in reader, and *File > Open* asks
once and keeps the choice as a user setting. A layer read that way has scale 1;
:func:`layer_voxel_size` then reads the voxel size from the layer's source file
(without reading its pixels), so the widgets never lose it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core.io.checks import ImageValidationError, finite_range
from .core.io.image_data import ImageData, ImageReadError
from .core.io.images import imread, is_readable_path
from .core.io.volumes import open_volume

LayerData = tuple[Any, dict[str, Any], str]

#: napari (pint) unit of a spatial axis with a voxel size; the scale bar shows "µm".
MICROMETRE = "µm"


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
    kwargs: dict[str, Any] = {"name": image.name, "metadata": meta, "scale": image.layer_scale()}
    if image.scale is not None and tuple(image.scale) == kwargs["scale"]:
        kwargs["units"] = spatial_units(image.spatial_axes)
    if image.kind == "labels":
        return image.data, kwargs, "labels"
    if image.is_rgb:
        kwargs["rgb"] = True
    elif "C" in image.axes:
        kwargs["channel_axis"] = image.axes.index("C")
    elif hasattr(image.data, "dtype") and not hasattr(image.data, "dask"):
        # Contrast from finite values only, so a few NaNs do not blank the display.
        kwargs["contrast_limits"] = finite_range(image.data)
    return image.data, kwargs, "image"


def spatial_units(axes: str) -> tuple[str, ...]:
    """napari ``units`` for axes with a voxel size: µm in space, napari's ``pixel`` for time.

    Parameters
    ----------
    axes : str
        Axis letters without the channel axis, e.g. ``"ZYX"`` or ``"TYX"``.
    """
    return tuple("pixel" if axis == "T" else MICROMETRE for axis in axes)


@dataclass(frozen=True)
class VoxelSize:
    """A layer's physical voxel size and a sentence for the widget saying where it came from.

    Attributes
    ----------
    size_um : tuple of float or None
        µm per pixel along the last ``ndim`` axes asked for; None when unknown.
    note : str
        Where the size came from, or why it is unknown and what to do.
    """

    size_um: tuple[float, ...] | None
    note: str


def layer_voxel_size(layer: Any, ndim: int) -> VoxelSize:
    """The voxel size of a layer's last ``ndim`` axes, wherever napari left it.

    In order: the layer's scale (when not napari's default 1), the
    ``voxel_size_um`` in its metadata (our reader's layers and the Segment
    widget's results carry it), then the file the layer was opened from
    (another reader kept scale 1). The file's pixels are not read.

    Parameters
    ----------
    layer : napari.layers.Layer
        An Image or Labels layer; its data has ``ndim`` trailing spatial axes.
    ndim : int
        How many trailing spatial axes (2 for YX, 3 for ZYX).

    Returns
    -------
    VoxelSize
        The size in µm, or None with a sentence saying why physical units are unknown.
    """
    scale = tuple(float(s) for s in layer.scale)[-ndim:]
    if any(s != 1.0 for s in scale):
        return VoxelSize(scale, f"voxel size {_format(scale)} µm (the layer's scale)")
    stored = layer.metadata.get("voxel_size_um")
    if stored is not None and len(stored) >= ndim:
        size = tuple(float(s) for s in stored)[-ndim:]
        origin = layer.metadata.get("voxel_size_from", "the layer's metadata")
        return VoxelSize(size, f"voxel size {_format(size)} µm (from {origin})")
    path = getattr(layer.source, "path", None)
    if not path:
        return VoxelSize(
            None,
            f"Physical units unknown: the layer {layer.name!r} has scale 1 and no source file, "
            "so sizes are in pixels. Set its scale in µm, or open the file with "
            "File > Open with Plugin > napari-microseg.",
        )
    return _source_voxel_size(Path(path), _spatial_shape(layer)[-ndim:])


def _source_voxel_size(path: Path, shape: tuple[int, ...]) -> VoxelSize:
    """The voxel size napari-microseg reads from ``path``, for a layer of that spatial shape."""
    unknown = (
        f"Physical units unknown: {path.name} {{}}, so sizes are in pixels. Set the layer's "
        "scale in µm."
    )
    try:
        image = open_volume(path)
    except (ImageReadError, ImageValidationError, OSError) as error:
        return VoxelSize(None, unknown.format(f"could not be read for its voxel size ({error})"))
    if image.scale is None:
        return VoxelSize(None, unknown.format("does not say its voxel size"))
    file_shape = tuple(n for n, a in zip(image.data.shape, image.axes) if a != "C")
    if len(image.scale) < len(shape) or file_shape[-len(shape) :] != shape:
        return VoxelSize(None, unknown.format(f"has the shape {file_shape}, not the layer's"))
    size = tuple(float(s) for s in image.scale)[-len(shape) :]
    return VoxelSize(
        size,
        f"voxel size {_format(size)} µm, read from {path.name} (the layer has scale 1: "
        "another reader opened it)",
    )


def _spatial_shape(layer: Any) -> tuple[int, ...]:
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return tuple(data.shape[:-1] if getattr(layer, "rgb", False) else data.shape)


def _format(size: tuple[float, ...]) -> str:
    return " × ".join(f"{s:.4g}" for s in size)
