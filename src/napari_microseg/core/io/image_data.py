"""The image record every stage passes around, file suffixes, and axis/name helpers.

:class:`ImageData` is an array with its axis letters and voxel size; the readers in
:mod:`.images`, :mod:`.zarr_arrays` and :mod:`.volumes` all return one.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .checks import KNOWN_AXES, ImageValidationError

TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_SUFFIXES = TIFF_SUFFIXES + PLAIN_IMAGE_SUFFIXES
ZARR_SUFFIXES = (".zarr", ".ome.zarr")

#: Marker stored in the TIFF description of label images we write.
LABELS_MARKER = "napari-microseg-labels"


class ImageReadError(ValueError):
    """A file that looks like an image could not be read; the message says why."""


@dataclass
class ImageData:
    """An image or label array with its axes and voxel size.

    Parameters
    ----------
    data : ndarray or dask array
        The pixels, with axes in the order given by ``axes``.
    axes : str
        One letter per axis of ``data``, from ``"TZCYX"``; for example ``"YX"``,
        ``"YXC"`` (RGB), ``"ZYX"``.
    scale : tuple of float or None
        Voxel size in micrometres for every non-channel axis, in ``axes`` order
        (channels excluded); None when the file does not say.
    kind : {"image", "labels"}
        Whether the array holds intensities or object ids.
    name : str
        A display name, usually the file stem.
    metadata : dict
        Anything else worth keeping (source path, original axes...).
    """

    data: Any
    axes: str
    scale: tuple[float, ...] | None = None
    kind: Literal["image", "labels"] = "image"
    name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_axes(self) -> str:
        """The axes without the channel axis, matching ``scale``."""
        return self.axes.replace("C", "")

    @property
    def is_rgb(self) -> bool:
        """True for a colour image with 3 or 4 channels as the last axis."""
        return self.axes.endswith("C") and self.data.shape[-1] in (3, 4)

    def layer_scale(self) -> tuple[float, ...]:
        """The napari layer ``scale``: one value per displayed (non-RGB) axis."""
        n_axes = self.data.ndim - (1 if self.is_rgb else 0)
        if self.scale is None or len(self.scale) != n_axes:
            return (1.0,) * n_axes
        return tuple(self.scale)


def stored_axes(axes: str, shape: tuple[int, ...], name: str) -> str:
    """Check axis letters given by a user for an array as stored in a file.

    Parameters
    ----------
    axes : str
        One letter per stored axis, from ``TZCYX`` (any case), e.g. ``"TYX"``.
    shape : tuple of int
        The shape of the array as read from the file, before any reordering.
    name : str
        The file name, for messages.

    Returns
    -------
    str
        The letters in upper case.

    Raises
    ------
    ImageValidationError
        If the number of letters differs from the number of stored axes, a
        letter is unknown or repeated, or Y or X is missing.
    """
    letters = axes.strip().upper()
    if len(letters) != len(shape):
        raise ImageValidationError(
            f"axes {axes!r} (--axes) names {len(letters)} axes but {name} stores "
            f"{len(shape)} (shape {shape}); give one letter per stored axis, in the stored "
            f"order, from {KNOWN_AXES}."
        )
    if set(letters) - set(KNOWN_AXES) or len(set(letters)) != len(letters):
        raise ImageValidationError(
            f"axes {axes!r} (--axes) for {name}: use each of the letters {KNOWN_AXES} at most "
            "once (T time, Z depth, C channel, Y rows, X columns)."
        )
    if not {"Y", "X"} <= set(letters):
        raise ImageValidationError(
            f"axes {axes!r} (--axes) for {name} must include Y and X (the image plane)."
        )
    return letters


def valid_voxel_sizes(sizes: dict[str, float], source: str, name: str) -> dict[str, float]:
    """The voxel sizes that are sizes: 0, negative, infinite and NaN ones are left out.

    Each one left out is reported in a warning naming the file, the axis and
    the value, so a broken header never reaches inference unnoticed.

    Parameters
    ----------
    sizes : dict of str to float
        Voxel size in µm per axis letter, as the file states it.
    source : str
        Where the sizes come from (``"OME"``, ``"ImageJ/TIFF"``), for the message.
    name : str
        The file name, for the message.
    """
    valid = {a: v for a, v in sizes.items() if math.isfinite(v) and v > 0}
    for letter in sorted(set(sizes) - set(valid)):
        warnings.warn(
            f"{name}: the {source} voxel size along {letter} is {sizes[letter]}, which is not a "
            "size; it is ignored (treated as unknown). Set the right value in the acquisition "
            "software or Fiji (Image > Properties) if physical sizes matter.",
            stacklevel=5,
        )
    return valid


def canonical_axes(data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """Map tifffile's axis letters onto ``TZCYX`` and drop singleton extras."""
    mapping = {"S": "C", "I": "Z", "Q": "Z", "P": "Z", "R": "Z", "E": "C", "H": "C", "L": "Z"}
    letters = [mapping.get(a, a) for a in axes.upper()]
    # Drop length-1 axes other than Y/X so a 1-slice stack reads as 2D.
    keep = [i for i, a in enumerate(letters) if data.shape[i] > 1 or a in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    letters = [letters[i] for i in keep]
    # Resolve duplicates (e.g. two unknown axes mapped to Z) by renaming the outer one to T.
    if letters.count("Z") > 1:
        letters[letters.index("Z")] = "T"
    if "C" in letters and letters[-1] != "C" and data.shape[letters.index("C")] in (3, 4):
        # Interleaved RGB planes (CYX) go last, as napari's rgb layers want.
        c = letters.index("C")
        if c == len(letters) - 3:
            data = np.moveaxis(data, c, -1)
            letters.append(letters.pop(c))
    return data, "".join(letters)


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``slice2`` before ``slice10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def looks_like_zarr(folder: Path) -> bool:
    """True for a folder that is a zarr store (v2 or v3), whatever its name."""
    return any((folder / marker).exists() for marker in (".zarray", ".zgroup", "zarr.json"))


#: Root attribute of a standalone OME-Zarr labels store of ours (see :mod:`.ome_labels`):
#: the path of its label group, which our reader opens instead of the empty image at the root.
LABELS_POINTER_KEY = "microseg_labels"


def zarr_group_attrs(folder: Path) -> tuple[dict[str, Any], int] | None:
    """The attributes of the zarr group ``folder`` and its zarr format, read from its metadata.

    Parameters
    ----------
    folder : Path
        Any path.

    Returns
    -------
    (dict, int) or None
        The group's attributes as stored (NGFF 0.5 keeps its keys under ``"ome"``) and
        2 or 3; None for anything but a readable zarr group.
    """
    try:
        if (folder / "zarr.json").is_file():
            meta = json.loads((folder / "zarr.json").read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("node_type") != "group":
                return None
            attrs = meta.get("attributes", {})
            return (attrs, 3) if isinstance(attrs, dict) else None
        if (folder / ".zgroup").is_file():
            zattrs = folder / ".zattrs"
            attrs = json.loads(zattrs.read_text(encoding="utf-8")) if zattrs.is_file() else {}
            return (attrs, 2) if isinstance(attrs, dict) else None
    except (OSError, ValueError):
        return None
    return None


def is_ome_image(path: str | os.PathLike) -> bool:
    """True for an OME-Zarr image: a group with ``multiscales`` that is not a label image.

    A standalone labels store of ours (an empty image holding the labels) is not an image.

    Parameters
    ----------
    path : path-like
        Any path; files and missing paths give False.
    """
    found = zarr_group_attrs(Path(path))
    if found is None:
        return False
    attrs, _ = found
    ngff = attrs.get("ome", attrs)
    return (
        isinstance(ngff, dict)
        and "multiscales" in ngff
        and "image-label" not in ngff
        and LABELS_POINTER_KEY not in attrs
    )
