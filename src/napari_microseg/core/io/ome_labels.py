"""Label images in OME-NGFF's ``labels`` layout: ome-zarr-py and napari-ome-zarr open them.

NGFF (0.4 with zarr v2, 0.5 with zarr v3) keeps a label image in the ``labels/<name>`` group
of the image it belongs to: a multiscale image with ``image-label`` metadata (colours per id,
``source`` pointing back to the image), the same scale levels as the image, and the group
``labels`` listing it. Two layouts are written:

* **Into an image**: a destination ``<image>.ome.zarr/labels/<name>`` whose ``<image>`` is an
  OME-Zarr image adds the labels to it. The image's arrays are never touched; the label group
  is written beside them in a hidden folder and renamed into place, then the ``labels`` list
  is rewritten atomically. Levels, axes, units and scales follow the image's own.
* **Standalone** (any other destination): the root is an OME-Zarr image of zeros that holds
  no chunk on disk (metadata only), with the labels in ``labels/<name>``. Not a label image
  at the root: NGFF places labels under an image, ome-zarr-py then finds them as labels of
  that image, and napari-ome-zarr 0.10, given a root label image, looks for its image two
  folders up and creates a zarr group there (in the user's folder). Our reader follows the
  root's :data:`LABELS_POINTER_KEY` and opens the labels, not the empty image.

Levels are made by nearest-neighbour sampling (ids are picked, never interpolated), halving
Y and X until both are at most :data:`MAX_PLANE` pixels; Z is kept (stacks are usually
anisotropic, and keeping Z keeps every level's planes on the image's planes).
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import (
    PARTIAL_MARK,
    atomic_write_text,
    partial_prefix,
    raise_if_disk_full,
    remove_stale_partials,
    replace_dir,
)
from .checks import label_dtype, validate_image
from .image_data import LABELS_POINTER_KEY, is_ome_image, zarr_group_attrs
from .outputs import is_ours

#: Levels are added until the largest of Y and X is at most this many pixels: a plane of that
#: size fills a screen, so a viewer never needs to read more than about one screen of ids.
MAX_PLANE = 1024
#: Colours are written for at most this many ids; above it ``colors`` is left out and viewers
#: use their own colour map (a JSON list of thousands of colours helps nobody).
MAX_COLOURED_IDS = 256
#: Hue step between consecutive ids (golden ratio): neighbouring ids get distant colours.
_HUE_STEP = 0.618033988749895
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def default_chunks(shape: tuple[int, ...], axes: str) -> tuple[int, ...]:
    """Chunk shape of our zarr writes: 256 along Y and X, 16 along the other axes."""
    return tuple(min(s, 256 if a in "YX" else 16) for s, a in zip(shape, axes))


def label_group_name(name: str) -> str:
    """``name`` made a safe zarr node name (letters, digits, ``_ . -``), e.g. a layer name."""
    safe = _NAME_UNSAFE.sub("_", name).strip("._") or "labels"
    return safe


def label_colours(ids: np.ndarray) -> list[dict[str, Any]] | None:
    """NGFF ``colors`` for the ids present: background transparent, others distinct.

    Parameters
    ----------
    ids : (K,) ndarray of int
        The distinct ids of the label image, 0 (background) included or not.

    Returns
    -------
    list of dict or None
        ``{"label-value": id, "rgba": [r, g, b, a]}`` (0-255) per id; None when there are
        more than :data:`MAX_COLOURED_IDS` objects.
    """
    objects = [int(i) for i in ids if i != 0]
    if len(objects) > MAX_COLOURED_IDS:
        return None
    colours = [{"label-value": 0, "rgba": [0, 0, 0, 0]}]
    for value in objects:
        rgb = colorsys.hsv_to_rgb((value * _HUE_STEP) % 1.0, 0.65, 1.0)
        colours.append({"label-value": value, "rgba": [round(c * 255) for c in rgb] + [255]})
    return colours


def level_shapes(
    shape: tuple[int, ...], axes: str, max_plane: int | None = None
) -> list[tuple[int, ...]]:
    """Shapes of the scale levels of a standalone label image: Y and X halved (rounding up).

    Parameters
    ----------
    shape : tuple of int
        Level 0, one size per letter of ``axes``.
    axes : str
        Axis letters, e.g. ``"ZYX"``.
    max_plane : int, optional
        Levels are added while Y or X is larger than this; :data:`MAX_PLANE` by default.

    Returns
    -------
    list of tuple of int
        Level 0 first.
    """
    limit = MAX_PLANE if max_plane is None else max_plane
    levels = [tuple(shape)]
    plane = [i for i, a in enumerate(axes) if a in "YX"]
    while max(levels[-1][i] for i in plane) > limit:
        last = levels[-1]
        levels.append(tuple(math.ceil(s / 2) if i in plane else s for i, s in enumerate(last)))
    return levels


def downsample_nearest(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``labels`` sampled onto ``shape`` by nearest neighbour: every value is an id of ``labels``.

    An axis whose size is ``ceil(n / k)`` for a whole ``k`` takes every k-th voxel (the
    stride-k pyramids most writers make); any other size takes voxel ``floor(i * n / m)``.

    Parameters
    ----------
    labels : ndarray of int
        Level 0.
    shape : tuple of int
        The level's shape, no larger than ``labels.shape`` along any axis.

    Returns
    -------
    ndarray
        Of ``shape`` and ``labels.dtype``.
    """
    out = labels
    for axis, (n, m) in enumerate(zip(labels.shape, shape)):
        if n == m:
            continue
        step = max(1, round(n / m))
        if math.ceil(n / step) == m:
            index = np.arange(m) * step
        else:
            index = np.minimum((np.arange(m) * n) // m, n - 1)
        out = np.take(out, index, axis=axis)
    return out


def labels_target_in_image(
    image: str | os.PathLike, name: str, shape: tuple[int, ...]
) -> Path | None:
    """Where labels of ``shape`` go inside the OME-Zarr image ``image``; None if they cannot.

    Parameters
    ----------
    image : path-like
        The image's store (e.g. the file a layer was opened from).
    name : str
        The label image's name (made safe with :func:`label_group_name`).
    shape : tuple of int
        The labels' shape, which must be the image's level-0 shape without channels.

    Returns
    -------
    Path or None
        ``<image>/labels/<name>``; None when ``image`` is not an OME-Zarr image or the
        shapes differ.
    """
    root = Path(image)
    if not is_ome_image(root):
        return None
    try:
        _image_grid(root, "ZYX"[-len(shape) :], tuple(shape))
    except ValueError:
        return None
    return root / "labels" / label_group_name(name)


def write_ome_labels(
    path: str | os.PathLike,
    labels: np.ndarray,
    *,
    axes: str | None = None,
    scale: tuple[float, ...] | None = None,
    chunks: tuple[int, ...] | None = None,
    overwrite: bool = True,
    zarr_format: int = 2,
) -> Path:
    """Write a label image in NGFF's ``labels`` layout, atomically.

    Parameters
    ----------
    path : path-like
        ``<image>.ome.zarr/labels/<name>`` to add the labels to that OME-Zarr image;
        anything else (usually ``<name>.ome.zarr``) for a standalone store.
    labels : (M, N) or (P, M, N) ndarray of int
        Object ids, 0 for background; kept exactly (uint8, uint16, uint32 or uint64).
    axes : str, optional
        Axis letters of ``labels``; ``"YX"`` or ``"ZYX"`` by default.
    scale : tuple of float, optional
        Voxel size in µm per axis of a standalone store. Inside an image, the image's
        scales and units are used, so the labels lie on its grid.
    chunks : tuple of int, optional
        Chunk shape of level 0; 256 along Y/X and 16 along Z by default.
    overwrite : bool
        Refuse to replace an existing store or label group when False.
    zarr_format : {2, 3}
        Of a standalone store: 2 writes NGFF 0.4, 3 writes NGFF 0.5. Inside an image the
        image's own format and version are used.

    Returns
    -------
    Path
        The store or label group written.

    Raises
    ------
    FileExistsError
        If the destination exists and ``overwrite`` is False, or a label group of the
        same name inside an image was not written by napari-microseg.
    ValueError
        If the labels do not match the image they are written into.
    ImageValidationError
        For non-integer or negative labels.
    DiskFullError
        If the disk fills up; nothing new is left behind and the previous result is kept.
    """
    labels = np.asarray(labels)
    axes = axes or ("ZYX" if labels.ndim == 3 else "YX")[-labels.ndim :]
    validate_image(labels, axes, name="The label image")
    labels = labels.astype(label_dtype(labels), copy=False)
    dest = Path(path)
    if os.path.lexists(dest) and not overwrite:
        raise FileExistsError(f"{dest} already exists; choose another name or allow overwriting.")
    image = dest.parent.parent
    if dest.parent.name == "labels" and is_ome_image(image):
        return _write_into_image(image, dest, labels, axes, chunks)
    return _write_standalone(dest, labels, axes, scale, chunks, zarr_format)


def _ngff_axes(axes: str, with_units: bool) -> list[dict[str, str]]:
    return [
        {"name": a.lower(), "type": "space"} | ({"unit": "micrometer"} if with_units else {})
        for a in axes
    ]


def _scale_transform(values: list[float]) -> list[dict[str, Any]]:
    return [{"type": "scale", "scale": [float(v) for v in values]}]


def _multiscale(name: str, axes: list[dict], datasets: list[dict], version: str) -> dict:
    entry: dict[str, Any] = {"name": name, "axes": axes, "datasets": datasets}
    if version == "0.4":
        entry["version"] = "0.4"  # 0.5 keeps the version once, beside "multiscales"
    return entry


def _wrap(ngff: dict[str, Any], version: str) -> dict[str, Any]:
    """Group attributes: NGFF keys at the top in 0.4, under ``"ome"`` (with the version) in 0.5."""
    return ngff if version == "0.4" else {"ome": {"version": version, **ngff}}


def _image_label(labels: np.ndarray, version: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"source": {"image": "../../"}}
    if version == "0.4":
        meta["version"] = "0.4"
    colours = label_colours(np.unique(labels))
    if colours is not None:
        meta["colors"] = colours
    return meta


def _write_label_group(
    group: Any,
    labels: np.ndarray,
    shapes: list[tuple[int, ...]],
    chunks: tuple[int, ...],
    multiscale: dict[str, Any],
    version: str,
) -> None:
    level = labels
    for dataset, shape in zip(multiscale["datasets"], shapes):
        # Each level from the one above: stride-2 steps, as the scales written for them say.
        level = downsample_nearest(level, shape)
        level_chunks = tuple(min(c, s) for c, s in zip(chunks, shape))
        group.create_array(dataset["path"], data=level, chunks=level_chunks)
    ngff = {"multiscales": [multiscale], "image-label": _image_label(labels, version)}
    # Our tag beside the NGFF keys: check_outputs replaces only label groups we wrote.
    group.attrs.update(_wrap(ngff, version) | {"microseg_kind": "labels"})


def _write_standalone(
    dest: Path,
    labels: np.ndarray,
    axes: str,
    scale: tuple[float, ...] | None,
    chunks: tuple[int, ...] | None,
    zarr_format: int,
) -> Path:
    import zarr

    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, not {zarr_format!r}.")
    version = "0.4" if zarr_format == 2 else "0.5"
    name = label_group_name(dest.name.split(".")[0])
    chunks = chunks or default_chunks(labels.shape, axes)
    shapes = level_shapes(labels.shape, axes)
    base = [float(s) for s in scale] if scale is not None else [1.0] * labels.ndim
    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": _scale_transform(
                [b * (2**level if a in "YX" else 1) for b, a in zip(base, axes)]
            ),
        }
        for level, shape in enumerate(shapes)
    ]
    # Units only with a known voxel size: a scale of 1 says nothing about micrometres.
    ngff_axes = _ngff_axes(axes, with_units=scale is not None)
    if dest.is_file():
        raise FileExistsError(f"{dest} is an existing file, not a zarr store; choose another name.")
    remove_stale_partials(dest)
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(dest), suffix=PARTIAL_MARK, dir=dest.parent))
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
        for level, shape in enumerate(shapes):
            # No data is written: every chunk equals the fill value, so the image costs
            # only its metadata, and tools that want an image beside the labels have one.
            root.create_array(
                str(level),
                shape=shape,
                dtype="uint8",
                chunks=tuple(min(c, s) for c, s in zip(chunks, shape)),
                fill_value=0,
            )
        image_name = f"{name} (no image: labels only)"
        root.attrs.update(
            _wrap({"multiscales": [_multiscale(image_name, ngff_axes, datasets, version)]}, version)
            | {"microseg_kind": "labels", LABELS_POINTER_KEY: f"labels/{name}"}
        )
        group = root.create_group("labels")
        group.attrs.update(_wrap({"labels": [name]}, version))
        _write_label_group(
            group.create_group(name),
            labels,
            shapes,
            chunks,
            _multiscale(name, ngff_axes, datasets, version),
            version,
        )
        replace_dir(tmp, dest)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise_if_disk_full(error, dest, labels.nbytes)
        raise
    return dest


def _image_grid(
    image: Path, axes: str, shape: tuple[int, ...]
) -> tuple[list[dict], list[dict], list[tuple[int, ...]], str, int]:
    """The image's axes, datasets and level shapes restricted to the labels' axes.

    Raises ValueError when the labels do not lie on the image's level 0.
    """
    import zarr

    found = zarr_group_attrs(image)
    if found is None:
        raise ValueError(f"{image} is not an OME-Zarr image.")
    attrs, zarr_format = found
    ngff = attrs.get("ome", attrs)
    multiscale = ngff["multiscales"][0]
    version = ngff.get("version") or multiscale.get("version") or "0.4"
    image_axes = multiscale.get("axes") or []
    names = [a["name"] if isinstance(a, dict) else str(a) for a in image_axes]
    group = zarr.open_group(str(image), mode="r")
    level_arrays = [group[d["path"]] for d in multiscale["datasets"]]
    image_shape = tuple(level_arrays[0].shape)
    keep = [i for i, n in enumerate(names) if n.upper() in axes]
    channels = {
        i
        for i, a in enumerate(image_axes)
        if (a.get("type") if isinstance(a, dict) else None) == "channel" or names[i].lower() == "c"
    }
    # One label per voxel serves every channel; any other extra axis (t) must be of size 1.
    others_single = all(
        image_shape[i] == 1 for i in range(len(names)) if i not in keep and i not in channels
    )
    letters = "".join(names[i].upper() for i in keep)
    if (
        len(names) != len(image_shape)
        or letters != axes
        or not others_single
        or tuple(image_shape[i] for i in keep) != shape
    ):
        raise ValueError(
            f"The labels ({'×'.join(map(str, shape))} {axes}) do not match the image "
            f"{image.name} ({'×'.join(map(str, image_shape))} {''.join(names).upper()}); "
            "export them as a separate OME-Zarr instead."
        )
    # Channels and size-1 axes (t, c) are left out: a label image has one value per voxel.
    # NGFF 0.4/0.5 axes of the image are kept as they are (names, types, units).
    axes_meta = [
        image_axes[i] if isinstance(image_axes[i], dict) else {"name": names[i]} for i in keep
    ]
    datasets = []
    for dataset in multiscale["datasets"]:
        transforms = []
        for transform in dataset.get("coordinateTransformations", []):
            kind = transform.get("type")
            if kind in ("scale", "translation") and kind in transform:
                transforms.append({"type": kind, kind: [transform[kind][i] for i in keep]})
        datasets.append(
            {"path": dataset["path"]}
            | ({"coordinateTransformations": transforms} if transforms else {})
        )
    shapes = [tuple(a.shape[i] for i in keep) for a in level_arrays]
    return axes_meta, datasets, shapes, version, zarr_format


def _write_into_image(
    image: Path, dest: Path, labels: np.ndarray, axes: str, chunks: tuple[int, ...] | None
) -> Path:
    import zarr

    name = dest.name
    if name != label_group_name(name):
        raise ValueError(
            f"{name!r} is not a safe label name; use letters, digits, '_', '.' or '-' "
            f"(for example {label_group_name(name)!r})."
        )
    axes_meta, datasets, shapes, version, zarr_format = _image_grid(image, axes, labels.shape)
    if os.path.lexists(dest) and not is_ours(dest):
        raise FileExistsError(
            f"{dest} already exists and was not written by napari-microseg, so it is never "
            "replaced; choose another label name."
        )
    folder = dest.parent
    created_folder = not folder.exists()
    if created_folder:
        # Only the group's metadata: the image's own arrays and attributes stay as they are.
        zarr.open_group(str(folder), mode="w-", zarr_format=zarr_format).attrs.update(
            _wrap({"labels": []}, version)
        )
    remove_stale_partials(dest)
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(dest), suffix=PARTIAL_MARK, dir=folder))
    replaced = dest.exists()
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
        _write_label_group(
            group,
            labels,
            shapes,
            chunks or default_chunks(labels.shape, axes),
            _multiscale(name, axes_meta, datasets, version),
            version,
        )
        replace_dir(tmp, dest)
        _list_label(folder, name, zarr_format, version)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if not replaced:
            # The group is listed last; a group renamed in but not listed is taken back.
            shutil.rmtree(dest, ignore_errors=True)
        if created_folder and not any(p.is_dir() for p in folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
        raise_if_disk_full(error, dest, labels.nbytes)
        raise
    return dest


def _list_label(folder: Path, name: str, zarr_format: int, version: str) -> None:
    """Add ``name`` to the ``labels`` list of the group ``folder``, rewriting it atomically."""
    meta_path = folder / ("zarr.json" if zarr_format == 3 else ".zattrs")
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    attrs = meta.setdefault("attributes", {}) if zarr_format == 3 else meta
    ngff = attrs.setdefault("ome", {"version": version}) if version != "0.4" else attrs
    names = list(ngff.get("labels", []))
    if name in names:
        return
    ngff["labels"] = [*names, name]
    atomic_write_text(meta_path, json.dumps(meta, indent=2))
