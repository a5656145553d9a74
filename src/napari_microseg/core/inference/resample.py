"""In-plane resampling to the pixel size a model was trained at, and back.

A network sees objects at the size (in pixels) it was trained on: a model
trained at 5 nm per pixel misses mitochondria imaged at 10 nm per pixel. When
the image's pixel size is known and far from the model card's
``pixel_size_um``, :func:`~.segment.segment_job` resamples the image in-plane
(Y and X only: never Z, never channels) to the model's pixel size, predicts,
and resamples the probabilities back to the image's exact grid with
:func:`resample_plane_job` (linear interpolation, antialiased when shrinking).

Work goes plane by plane (one Y-X plane of one channel at a time), in
float32, so the only full-size arrays are the input and output.

Examples
--------
>>> plan = resample_plan(0.005, (0.05, 0.01, 0.01), "ZYX", (4, 100, 60))
>>> plan.factor, plan.shape
((2.0, 2.0), (4, 200, 120))
>>> resample_plan(0.005, (1.0, 1.0), "YX", (100, 60)) is None  # unitless: unknown
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..progress import Job, Progress

#: Pixel-size ratios (image / model) within ``[1 / TOLERANCE, TOLERANCE]`` are not resampled.
TOLERANCE = 1.25


@dataclass(frozen=True)
class ResamplePlan:
    """How an image is resampled to a model's pixel size.

    Attributes
    ----------
    factor : (float, float)
        Zoom factors along Y and X (image pixel size / model pixel size): 2.0
        doubles the number of pixels.
    source : tuple of int
        The image's full shape (channels included).
    shape : tuple of int
        The resampled image's shape: Y and X scaled and rounded, other axes kept.
    y_axis, x_axis : int
        Positions of Y and X in ``source``.
    """

    factor: tuple[float, float]
    source: tuple[int, ...]
    shape: tuple[int, ...]
    y_axis: int
    x_axis: int

    @property
    def area_factor(self) -> float:
        """Pixels of the resampled grid per pixel of the image's grid."""
        return self.factor[0] * self.factor[1]

    def describe(self, model_pixel_um: float) -> str:
        """One sentence: from which pixel size to which, and the shapes."""
        ny, nx = self.source[self.y_axis], self.source[self.x_axis]
        my, mx = self.shape[self.y_axis], self.shape[self.x_axis]
        return (
            f"Resampling {ny}x{nx} to {my}x{mx} pixels ({self.factor[1]:.3g}x), the model's "
            f"{model_pixel_um * 1e3:.3g} nm per pixel"
        )


def in_plane_spacing(spacing: Sequence[float] | None, axes: str) -> tuple[float, float] | None:
    """The known Y and X pixel sizes of an image, or None when unknown.

    Parameters
    ----------
    spacing : sequence of float or None
        Voxel size in µm per spatial axis (the axes without ``C``), or at least
        the last two (Y, X).
    axes : str
        Axis letters of the image (``"ZYX"``, ``"YXC"``...).

    Returns
    -------
    (float, float) or None
        ``(dy, dx)`` in µm; None without a spacing, with non-positive sizes,
        or with 1 along both Y and X (napari's unitless default scale).
    """
    if spacing is None or len(spacing) < 2:
        return None
    values = [float(v) for v in spacing]
    spatial = axes.replace("C", "")
    if len(values) == len(spatial):
        plane = (values[spatial.index("Y")], values[spatial.index("X")])
    else:
        plane = (values[-2], values[-1])
    if any(not np.isfinite(v) or v <= 0 for v in plane) or plane == (1.0, 1.0):
        return None
    return plane


def resample_plan(
    model_pixel_um: float | None,
    spacing: Sequence[float] | None,
    axes: str,
    shape: Sequence[int],
    *,
    tolerance: float = TOLERANCE,
) -> ResamplePlan | None:
    """The resampling that brings an image to the model's pixel size, or None.

    Parameters
    ----------
    model_pixel_um : float or None
        The model card's ``pixel_size_um``.
    spacing : sequence of float or None
        The image's voxel size in µm (see :func:`in_plane_spacing`).
    axes : str
        Axis letters of the image, with ``Y`` and ``X``.
    shape : sequence of int
        The image's shape.
    tolerance : float
        No resampling when the image / model pixel-size ratio along both Y
        and X lies within ``[1 / tolerance, tolerance]``.

    Returns
    -------
    ResamplePlan or None
        None when a pixel size is unknown or both ratios are within tolerance.
    """
    plane = in_plane_spacing(spacing, axes)
    if model_pixel_um is None or model_pixel_um <= 0 or plane is None:
        return None
    factor = (plane[0] / float(model_pixel_um), plane[1] / float(model_pixel_um))
    if all(1 / tolerance <= f <= tolerance for f in factor):
        return None
    y_axis, x_axis = axes.index("Y"), axes.index("X")
    new = list(shape)
    new[y_axis] = max(1, round(shape[y_axis] * factor[0]))
    new[x_axis] = max(1, round(shape[x_axis] * factor[1]))
    return ResamplePlan(factor, tuple(int(s) for s in shape), tuple(new), y_axis, x_axis)


def resample_plane_job(
    data: Any,
    y_axis: int,
    x_axis: int,
    size: tuple[int, int],
    *,
    message: str = "Resampling",
    dtype: Any = None,
) -> Job[np.ndarray]:
    """Resample every Y-X plane of an array to ``size``; yields Progress per plane group.

    Linear interpolation on pixel centres (the grid corners stay aligned, as
    ``skimage.transform.resize``), antialiased when shrinking; other axes are
    untouched. Planes are read one group at a time, so a dask or zarr input
    is never loaded whole, and nothing is computed in float64.

    Parameters
    ----------
    data : ndarray or dask/zarr array
        Any number of axes, among them Y (``y_axis``) and X (``x_axis``).
    y_axis, x_axis : int
        Positions of Y and X.
    size : (int, int)
        The new Y and X lengths.
    message : str
        The progress message.
    dtype : dtype, optional
        The result's dtype: default float32 for float input, else the input's
        (integer images are rounded and clipped back, to keep memory low).

    Returns
    -------
    ndarray
        ``data`` with Y and X of lengths ``size``.
    """
    import torch
    import torch.nn.functional as F

    source_dtype = np.dtype(data.dtype)
    if dtype is None:
        dtype = np.float32 if source_dtype.kind in "fcb" else source_dtype
    dtype = np.dtype(dtype)
    ny, nx = int(data.shape[y_axis]), int(data.shape[x_axis])
    others = [i for i in range(data.ndim) if i not in (y_axis, x_axis)]
    other_shape = tuple(int(data.shape[i]) for i in others)
    out_shape = list(data.shape)
    out_shape[y_axis], out_shape[x_axis] = size
    out = np.empty(tuple(out_shape), dtype)
    planes = int(np.prod(other_shape)) if other_shape else 1
    # Planes per torch call: about 8 M input pixels, at least one.
    group = max(1, min(planes, (8 << 20) // max(ny * nx, 1)))
    shrink = size[0] < ny or size[1] < nx
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    yield Progress(0, planes, message)
    flat_index = list(np.ndindex(*other_shape)) if other_shape else [()]
    for start in range(0, planes, group):
        chunk = flat_index[start : start + group]
        stack = np.empty((len(chunk), ny, nx), np.float32)
        for k, index in enumerate(chunk):
            stack[k] = _plane(data, index, others, y_axis, x_axis)
        tensor = torch.from_numpy(stack)[:, None]
        if (ny, nx) == tuple(size):
            resized = tensor
        else:
            resized = F.interpolate(
                tensor, size=size, mode="bilinear", align_corners=False, antialias=shrink
            )
        planes_out = resized[:, 0].numpy()
        if info is not None:
            planes_out = np.clip(np.rint(planes_out), info.min, info.max)
        for k, index in enumerate(chunk):
            target = [slice(None)] * data.ndim
            for axis, i in zip(others, index):
                target[axis] = i
            view = out[tuple(target)]
            # ``view`` keeps Y and X in the array's order.
            view[...] = planes_out[k] if y_axis < x_axis else planes_out[k].T
        yield Progress(min(start + group, planes), planes, message)
    return out


def _plane(data: Any, index: tuple[int, ...], others: list[int], y_axis: int, x_axis: int) -> Any:
    """One Y-X plane as float32, Y first."""
    selection: list[Any] = [slice(None)] * data.ndim
    for axis, i in zip(others, index):
        selection[axis] = i
    plane = np.asarray(data[tuple(selection)], dtype=np.float32)
    return plane if y_axis < x_axis else plane.T


def nearest_planes(
    labels: np.ndarray, y_axis: int, x_axis: int, size: tuple[int, int]
) -> np.ndarray:
    """Resample labels in Y and X by nearest neighbour (pixel centres), ids kept exactly.

    Parameters
    ----------
    labels : ndarray of int
        Any number of axes.
    y_axis, x_axis : int
        Positions of Y and X.
    size : (int, int)
        The new Y and X lengths.

    Returns
    -------
    ndarray
        Same dtype, Y and X of lengths ``size``.
    """
    rows = _nearest_index(labels.shape[y_axis], size[0])
    cols = _nearest_index(labels.shape[x_axis], size[1])
    return np.take(np.take(labels, rows, axis=y_axis), cols, axis=x_axis)


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel centre."""
    centres = (np.arange(n_out) + 0.5) * (n_in / n_out)
    return np.clip(np.floor(centres).astype(np.intp), 0, n_in - 1)
