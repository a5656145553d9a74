"""Lazy reading and atomic writing of zarr and OME-Zarr (NGFF 0.4 and 0.5) arrays.

A zarr store opens as a dask array, so a volume larger than memory can be
viewed and processed chunk by chunk.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .atomic import (
    PARTIAL_MARK,
    partial_prefix,
    raise_if_disk_full,
    remove_stale_partials,
    replace_dir,
)
from .checks import KNOWN_AXES
from .image_data import (
    LABELS_POINTER_KEY,
    ImageData,
    ImageReadError,
    stored_axes,
    valid_voxel_sizes,
)
from .ome_labels import default_chunks, write_ome_labels

#: Attributes a block-by-block job of ours leaves on its output (see ``core.blocks.store``).
_RESUMABLE_KEYS = ("microseg_job", "microseg_chunked")

_UNIT_TO_UM = {"nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3, "meter": 1e6}


def read_zarr(path: str | os.PathLike, *, axes: str | None = None) -> ImageData:
    """Open a zarr array or OME-Zarr image lazily.

    An array that one of our jobs left unfinished (``attrs["complete"]`` False)
    opens with a warning saying how to resume it, and ``metadata["complete"]``
    False.

    Parameters
    ----------
    path : path-like
        A zarr array, a zarr group holding arrays, or an OME-Zarr image
        (multiscale level 0 is used).
    axes : str, optional
        One letter per axis of the stored array, replacing the stored axis names.

    Returns
    -------
    ImageData
        ``data`` is a dask array; axes and voxel size come from the OME
        metadata when present.
    """
    import dask.array as da
    import zarr

    p = Path(path)
    try:
        node = zarr.open(str(p), mode="r")
    except Exception as error:  # zarr raises many types for broken stores
        raise ImageReadError(f"{p.name} could not be opened as zarr ({error}).") from error
    attrs = dict(node.attrs)
    pointer = attrs.get(LABELS_POINTER_KEY)
    if isinstance(pointer, str) and not hasattr(node, "shape"):
        # Our standalone labels store: the root is an empty image, the labels are below it.
        try:
            node = zarr.open(str(p / pointer), mode="r")
        except Exception as error:
            raise ImageReadError(
                f"{p.name}: its labels {pointer} are missing ({error})."
            ) from error
        attrs = dict(node.attrs)
    ome = attrs.get("ome", attrs)
    kind: Literal["image", "labels"] = "labels" if "image-label" in ome else "image"
    axes_names: list[str] | None = None
    scale: tuple[float, ...] | None = None
    if hasattr(node, "shape"):
        array = node
        axes_names = attrs.get("axes") if isinstance(attrs.get("axes"), list) else None
        if "microseg_kind" in attrs:
            kind = attrs["microseg_kind"]
    elif "multiscales" in ome:
        multiscale = ome["multiscales"][0]
        dataset = multiscale["datasets"][0]
        array = node[dataset["path"]]
        axes_names, scale = _ngff_axes_and_scale(multiscale, dataset)
        if scale is not None:
            scale = _checked_scale(scale, axes_names, p.name)
    else:
        arrays = [v for _, v in node.arrays()] if hasattr(node, "arrays") else []
        if not arrays:
            raise ImageReadError(f"{p.name} is a zarr group without arrays; nothing to open.")
        array = max(arrays, key=lambda a: int(np.prod(a.shape)))
    data = da.from_zarr(array)
    metadata: dict[str, Any] = {"path": str(p)}
    if dict(array.attrs).get("complete") is False:
        metadata["complete"] = False
        warnings.warn(_incomplete_message(p, dict(array.attrs)), stacklevel=3)
    if axes:
        letters = stored_axes(axes, tuple(data.shape), p.name)
        if scale is not None and len(scale) != len(letters.replace("C", "")):
            scale = None  # the stored voxel size was for other axes
    else:
        letters = _axes_letters(axes_names, data.ndim)
    return ImageData(data, letters, scale, kind, p.name.split(".")[0], metadata)


def _incomplete_message(path: Path, attrs: dict[str, Any]) -> str:
    """What to tell a user opening a zarr result that a stopped job left unfinished."""
    if not any(key in attrs for key in _RESUMABLE_KEYS):
        return (
            f"{path.name} is incomplete: the prediction writing it was stopped before the end, "
            "so parts of it are empty. Run the prediction again to complete it."
        )
    record = attrs.get("microseg_chunked") or {}
    done = sum(b - a for a, b in record.get("done", [])) if record.get("n_blocks") else None
    progress = f" ({done} of {record['n_blocks']} blocks written)" if done is not None else ""
    return (
        f"{path.name} is incomplete{progress}: the job writing it was stopped before the end, "
        "so parts of it are empty. Resume it by running the same `microseg predict ... "
        "--chunked` command again, or the Segment widget's block-by-block run with this output; "
        "finished blocks are kept."
    )


def _checked_scale(
    scale: tuple[float, ...], names: list[str] | None, name: str
) -> tuple[float, ...] | None:
    """``scale`` with sizes that are not sizes (0, < 0, NaN, inf) made unknown, i.e. 1."""
    spatial = [n.upper() for n in names if n.upper() != "C"] if names else []
    labels = spatial if len(spatial) == len(scale) else [str(i) for i in range(len(scale))]
    valid = valid_voxel_sizes(dict(zip(labels, scale)), "OME-Zarr", name)
    if not valid:
        return None
    return tuple(valid.get(label, 1.0) for label in labels)


def _ngff_axes_and_scale(
    multiscale: dict[str, Any], dataset: dict[str, Any]
) -> tuple[list[str] | None, tuple[float, ...] | None]:
    axes = multiscale.get("axes")
    names = None
    units: list[float] = []
    if axes:
        names = [a["name"] if isinstance(a, dict) else str(a) for a in axes]
        units = [
            _UNIT_TO_UM.get(a.get("unit", ""), 1.0) if isinstance(a, dict) else 1.0 for a in axes
        ]
    scale = None
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            values = [float(v) for v in transform["scale"]]
            if units:
                values = [v * u for v, u in zip(values, units)]
            if names:
                values = [v for v, n in zip(values, names) if n.upper() != "C"]
            scale = tuple(values)
    return names, scale


def _axes_letters(names: list[str] | None, ndim: int) -> str:
    if names and len(names) == ndim:
        letters = "".join(n[0].upper() for n in names)
        if set(letters) <= set(KNOWN_AXES) and len(set(letters)) == ndim:
            return letters
    return {2: "YX", 3: "ZYX", 4: "CZYX", 5: "TCZYX"}.get(ndim, "")


def write_ome_zarr(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    axes: str,
    scale: tuple[float, ...] | None = None,
    kind: Literal["image", "labels"] = "image",
    chunks: tuple[int, ...] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write an array as a single-scale OME-Zarr (NGFF 0.4) image, atomically.

    Labels go to :func:`.ome_labels.write_ome_labels`: NGFF's ``labels`` layout, with
    colours and scale levels, inside an OME-Zarr image when ``path`` is
    ``<image>/labels/<name>``.

    Parameters
    ----------
    path : path-like
        Destination folder, usually ending in ``.ome.zarr``.
    data : ndarray
        Pixels or label ids.
    axes : str
        Axis letters of ``data`` (for example ``"ZYX"``).
    scale : tuple of float, optional
        Voxel size in µm for the non-channel axes.
    kind : {"image", "labels"}
        Labels are marked with NGFF's ``image-label`` so readers show them as labels.
    chunks : tuple of int, optional
        Chunk shape; 256 along Y/X and 16 along other axes by default.
    overwrite : bool
        Refuse to replace an existing store when False.

    Returns
    -------
    Path
        The written store.
    """
    import zarr

    if kind == "labels":
        return write_ome_labels(
            path, data, axes=axes, scale=scale, chunks=chunks, overwrite=overwrite
        )
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} already exists; choose another name or allow overwriting.")
    if chunks is None:
        chunks = default_chunks(tuple(data.shape), axes)
    full_scale = _full_scale(axes, scale)
    ngff_axes = [
        {"name": a.lower(), "type": {"C": "channel", "T": "time"}.get(a, "space")}
        | ({"unit": "micrometer"} if a in "ZYX" else {})
        for a in axes
    ]
    remove_stale_partials(dest)
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(dest), suffix=PARTIAL_MARK, dir=dest.parent))
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        root.create_array("0", data=np.asarray(data), chunks=chunks)
        root.attrs["multiscales"] = [
            {
                "version": "0.4",
                "name": dest.name.split(".")[0],
                "axes": ngff_axes,
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [{"type": "scale", "scale": full_scale}],
                    }
                ],
            }
        ]
        root.attrs["microseg_kind"] = kind  # our tag: see core.io.outputs
        replace_dir(tmp, dest)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise_if_disk_full(error, dest, np.asarray(data).nbytes)
        raise
    return dest


def _full_scale(axes: str, scale: tuple[float, ...] | None) -> list[float]:
    spatial = [a for a in axes if a != "C"]
    sizes = dict(zip(spatial, scale)) if scale is not None else {}
    return [float(sizes.get(a, 1.0)) for a in axes]
