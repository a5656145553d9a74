"""Cut an image into 2D planes, read them band by band, and write results back.

Tiled inference sees every image as a stack of 2D planes:

* a 2D image is one plane;
* a 3D stack is cut along a slice axis (Z by default): ``(Z, Y, X)`` gives Z
  planes of ``(Y, X)``; other slice axes give ``(Z, X)`` or ``(Z, Y)`` planes;
* the ortho-plane mode makes three such :class:`View`\\ s of one volume and
  averages their predictions;
* extra axes (T) are looped over.

A :class:`View` is a lazy transposition of the input to
``(outer..., inner, C, rows, cols)``; nothing is read until
:meth:`View.read_raw` asks for a block of planes and rows, so NumPy, dask and
zarr inputs are all read slab by slab. :class:`OutputSink` writes the blended
blocks back into the result (a NumPy array, a memmap or a zarr array) in the
image's own axis order, and marks or removes a result that was not finished.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .normalize import Normalizer

#: Letter of the stand-in stack axis that turns a 2D image into a stack of one plane.
SINGLE = "_"


def is_lazy(data: Any) -> bool:
    """True for dask arrays (the lazy form every non-NumPy input is turned into)."""
    return type(data).__module__.startswith("dask")


def as_lazy_or_numpy(data: Any) -> Any:
    """NumPy arrays and dask arrays pass; zarr arrays become dask; the rest becomes NumPy."""
    if isinstance(data, np.ndarray) or is_lazy(data):
        return data
    if type(data).__module__.startswith("zarr"):
        import dask.array as da

        return da.from_zarr(data)
    if hasattr(data, "detach"):  # a torch tensor
        return data.detach().cpu().numpy()
    return np.asarray(data)


@dataclass(frozen=True)
class View:
    """The image seen as a stack of 2D planes.

    Attributes
    ----------
    array : ndarray or dask array
        The image transposed to ``(outer..., inner, C, rows, cols)``.
    outer : str
        Letters of the looped-over axes (T...), possibly empty.
    inner : str
        Letter of the slice axis, or :data:`SINGLE` for a 2D image.
    plane : str
        Letters of the plane's rows and columns, e.g. ``"YX"``.
    weight : float
        This view's share of the result (1/3 for each ortho-plane view).
    """

    array: Any
    outer: str
    inner: str
    plane: str
    weight: float = 1.0

    @property
    def outer_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[: len(self.outer)])

    @property
    def n_planes(self) -> int:
        """Planes along the slice axis."""
        return int(self.array.shape[len(self.outer)])

    @property
    def channels(self) -> int:
        return int(self.array.shape[-3])

    @property
    def plane_shape(self) -> tuple[int, int]:
        return int(self.array.shape[-2]), int(self.array.shape[-1])

    def inner_chunk(self) -> int | None:
        """Chunk length of a dask array along the slice axis, when it has one."""
        chunks = getattr(self.array, "chunks", None)
        if chunks is None or self.inner == SINGLE:
            return None
        return int(chunks[len(self.outer)][0])

    def read_raw(
        self,
        outer: tuple[int, ...],
        planes: tuple[int, int],
        rows: tuple[int, int],
        *,
        context: int = 0,
        min_shape: tuple[int, int] = (1, 1),
    ) -> np.ndarray:
        """Read and pad a band of rows of a group of planes, not normalized.

        Parameters
        ----------
        outer : tuple of int
            Index along the outer axes.
        planes : (int, int)
            ``[start, stop)`` along the slice axis.
        rows : (int, int)
            ``[start, stop)`` rows of the (padded) plane.
        context : int
            n neighbouring planes on each side to read as well (2.5D); planes
            beyond the stack repeat its first or last plane.
        min_shape : (int, int)
            The padded plane's shape; smaller planes are mirrored up to it.

        Returns
        -------
        (S + 2 * context, C, rows, cols) ndarray
            The image's dtype; may be a view of the image (do not write into it).
            Mirroring and repeating commute with the (elementwise) normalization,
            so normalizing this band gives what :meth:`read_band` gives.
        """
        start, stop = planes
        first = max(start - context, 0)
        last = min(stop + context, self.n_planes)
        height, width = self.plane_shape
        row_stop = min(rows[1], height)
        block = np.asarray(
            self.array[(*outer, slice(first, last), slice(None), slice(rows[0], row_stop))]
        )
        pad_rows = rows[1] - rows[0] - block.shape[2]
        pad_cols = max(min_shape[1] - width, 0)
        if pad_rows or pad_cols:
            block = np.pad(block, ((0, 0), (0, 0), (0, pad_rows), (0, pad_cols)), mode="reflect")
        before, after = first - (start - context), (stop + context) - last
        if before or after:
            block = np.pad(block, ((before, after), (0, 0), (0, 0), (0, 0)), mode="edge")
        return block

    def read_band(
        self,
        outer: tuple[int, ...],
        planes: tuple[int, int],
        rows: tuple[int, int],
        *,
        normalizer: Normalizer,
        context: int = 0,
        min_shape: tuple[int, int] = (1, 1),
    ) -> np.ndarray:
        """Read, normalize and pad a band on the host (see :meth:`read_raw`).

        The tile loop normalizes on the device instead
        (:class:`.device_tiles.DeviceNormalizer`); this is the host reference.

        Returns
        -------
        (S, C * (2 * context + 1), rows, cols) ndarray of float32
            Channels ordered neighbour by neighbour (the plane ``-context``
            first), each with the image's C channels.
        """
        block = self.read_raw(outer, planes, rows, context=context, min_shape=min_shape)
        block = normalizer(block, channel_axis=1)
        if context:
            count = planes[1] - planes[0]
            block = np.concatenate([block[i : i + count] for i in range(2 * context + 1)], axis=1)
        return np.ascontiguousarray(block)

    def groups(self, size: int) -> Iterator[tuple[tuple[int, ...], tuple[int, int]]]:
        """``(outer_index, (start, stop))`` for groups of at most ``size`` planes."""
        size = max(int(size), 1)
        for outer in itertools.product(*(range(n) for n in self.outer_shape)):
            for start in range(0, self.n_planes, size):
                yield outer, (start, min(start + size, self.n_planes))


def make_views(data: Any, axes: str, *, slice_axis: str | None, ortho: bool) -> list[View]:
    """The plane views of an image.

    Parameters
    ----------
    data : ndarray or dask array
        The image, axes as in ``axes``.
    axes : str
        Letters from ``"TZCYX"``, e.g. ``"ZYX"``, ``"YXC"``, ``"TZCYX"``.
    slice_axis : str, optional
        The axis to cut planes along (``"Z"`` by default when there is one).
    ortho : bool
        Three views, cut along Z, Y and X, each weighing 1/3.

    Returns
    -------
    list of View
    """
    spatial = axes.replace("C", "")
    if "C" not in axes:
        data, axes = data[..., None], axes + "C"
    if len(spatial) == 2:
        data, axes = data[None], SINGLE + axes
        return [_view(data, axes, "", SINGLE, spatial, 1.0)]
    if ortho:
        if not set("ZYX") <= set(spatial):
            raise ValueError(
                f"The ortho-plane mode needs a Z, Y and X volume; these axes are {axes!r}."
            )
        outer = "".join(a for a in spatial if a not in "ZYX")
        return [
            _view(data, axes, outer, inner, "".join(a for a in "ZYX" if a != inner), 1 / 3)
            for inner in "ZYX"
        ]
    candidates = [a for a in spatial if a not in "YX"]
    inner = (slice_axis or ("Z" if "Z" in spatial else candidates[-1])).upper()
    if inner not in spatial:
        raise ValueError(f"slice_axis={slice_axis!r} is not one of the image's axes {spatial!r}.")
    plane = "".join(a for a in "ZYX" if a in spatial and a != inner)[-2:]
    if len(plane) != 2:
        raise ValueError(f"Cutting {spatial!r} along {inner!r} leaves no 2D plane; pick Z.")
    outer = "".join(a for a in spatial if a not in plane and a != inner)
    return [_view(data, axes, outer, inner, plane, 1.0)]


def _view(data: Any, axes: str, outer: str, inner: str, plane: str, weight: float) -> View:
    order = outer + inner + "C" + plane
    array = data.transpose([axes.index(a) for a in order])
    return View(array, outer, inner, plane, weight)


class OutputSink:
    """Holds the result and writes blocks of planes into it in the image's axis order.

    Parameters
    ----------
    out : ndarray, memmap, zarr array or None
        Where to write; allocated in memory when None.
    spatial_axes : str
        The image's axes without C, e.g. ``"ZYX"``; the result is
        ``(K, *spatial)`` for probabilities or ``spatial`` for labels.
    spatial_shape : tuple of int
        The image's shape along ``spatial_axes``.
    labels : bool
        Labels (no class axis, integer ids) rather than probabilities.
    """

    def __init__(
        self, out: Any, spatial_axes: str, spatial_shape: tuple[int, ...], *, labels: bool
    ) -> None:
        self.out = out
        self.spatial_axes = spatial_axes
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.labels = labels
        self._ready = False
        if out is not None:
            self._check_spatial(out)

    def _check_spatial(self, out: Any) -> None:
        shape = tuple(out.shape)
        wanted = self.spatial_shape if self.labels else ("K", *self.spatial_shape)
        if shape[-len(self.spatial_shape) :] != self.spatial_shape or len(shape) != len(wanted):
            raise ValueError(
                f"out= has shape {shape}; the result has shape {wanted} "
                f"({'' if self.labels else 'classes, then '}the image's {self.spatial_axes})."
            )
        if is_lazy(out):
            raise TypeError("out= cannot be a dask array; pass a NumPy, memmap or zarr array.")

    def prepare(self, n_classes: int | None = None) -> None:
        """Allocate or check the result once K is known; mark a zarr result incomplete."""
        if self._ready:
            return
        if self.out is None:
            shape = self.spatial_shape if self.labels else (n_classes, *self.spatial_shape)
            self.out = np.zeros(shape, np.uint32 if self.labels else np.float32)
        elif not self.labels and int(self.out.shape[0]) != n_classes:
            raise ValueError(
                f"out= has {self.out.shape[0]} class channel(s) but the model predicts "
                f"{n_classes}; allocate out with shape {(n_classes, *self.spatial_shape)}."
            )
        if _is_zarr(self.out):
            self.out.attrs["complete"] = False
        self._ready = True

    def write(
        self,
        view: View,
        outer: tuple[int, ...],
        planes: tuple[int, int],
        first_row: int,
        block: np.ndarray,
        *,
        accumulate: bool = False,
    ) -> None:
        """Write a block of planes into the result.

        Parameters
        ----------
        view : View
            The view the block was computed in.
        outer, planes : see :meth:`View.read_band`
        first_row : int
            Row of the plane where ``block`` starts.
        block : (K, S, rows, cols) or (S, rows, cols) ndarray
            Probabilities (already multiplied by the view's weight) or labels.
        accumulate : bool
            Add to the result instead of replacing it (ortho views after the first).
        """
        rows = block.shape[-2]
        spans = {view.inner: slice(*planes), view.plane[0]: slice(first_row, first_row + rows)}
        spans[view.plane[1]] = slice(None)
        spans.update(zip(view.outer, outer))
        index = tuple(spans[a] for a in self.spatial_axes)
        order = [a for a in self.spatial_axes if a not in view.outer]
        source = [view.inner, *view.plane]
        if view.inner == SINGLE:
            block = block[:, 0] if not self.labels else block[0]
            source = list(view.plane)
        lead = 0 if self.labels else 1
        perm = list(range(lead)) + [lead + source.index(a) for a in order]
        block = np.transpose(block, perm)
        if not self.labels:
            index = (slice(None), *index)
        if accumulate:
            block = np.asarray(self.out[index]) + block
        self.out[index] = block.astype(self.out.dtype, copy=False)

    def finish(self) -> Any:
        """Flush, mark a zarr result complete, and return the result."""
        if isinstance(self.out, np.memmap):
            self.out.flush()
        if _is_zarr(self.out):
            self.out.attrs["complete"] = True
        return self.out

    def abort(self) -> None:
        """Leave no partial result: remove a memmap's file, blank an array, mark zarr incomplete."""
        out = self.out
        if out is None or not self._ready:
            return
        if _is_zarr(out):
            out.attrs["complete"] = False
        elif isinstance(out, np.memmap):
            filename = getattr(out, "filename", None)
            with contextlib.suppress(OSError):
                out.flush()
                if filename:
                    os.remove(filename)
        elif isinstance(out, np.ndarray):
            out[...] = np.nan if np.issubdtype(out.dtype, np.floating) else 0


def _is_zarr(array: Any) -> bool:
    return type(array).__module__.startswith("zarr") and hasattr(array, "attrs")


def group_size(
    view: View, *, tile: int, in_channels: int, n_classes: int, budget_bytes: float, labels: bool
) -> int:
    """How many planes to process together within a memory budget.

    Per plane: the input band (``in_channels`` x a tile's rows, float32), the
    blending band (``n_classes`` + 1 weights x about two tiles' rows, float32,
    on the device) and, for labels, the whole plane of ids. Dask inputs are grouped by whole chunks
    along the slice axis when they fit, so each chunk is read once per band.
    """
    height, width = view.plane_shape
    width = max(width, tile)
    per_plane = in_channels * tile * width * 4 + (n_classes + 1) * 2 * tile * width * 4
    if labels:
        per_plane += max(height, tile) * width * 4
    size = max(int(budget_bytes // per_plane), 1)
    size = min(size, view.n_planes, 64)
    chunk = view.inner_chunk()
    if chunk and size >= chunk:
        size = size // chunk * chunk
    return max(size, 1)


def padded_shape(shape: tuple[int, int], tile: tuple[int, int]) -> tuple[int, int]:
    """The plane shape after mirroring small planes up to one tile."""
    return (max(shape[0], tile[0]), max(shape[1], tile[1]))


def count_tiles(views: list[View], plans: list[Any]) -> int:
    """Tiles over all views and planes, for progress totals."""
    return sum(
        math.prod(view.outer_shape) * view.n_planes * plan.n_tiles
        for view, plan in zip(views, plans)
    )
