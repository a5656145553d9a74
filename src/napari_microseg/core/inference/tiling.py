"""Tile plans, blend windows, and the merger that stitches tiles back into planes.

A :class:`TilePlan` covers every pixel of a plane with equal-sized tiles that
overlap by a given fraction; tiles at the far border are shifted inwards so
that every tile lies inside the plane (the positions are the ones MONAI's
``sliding_window_inference`` uses, so both tile the same way). Planes smaller
than a tile are padded up to one tile by the caller.

A :class:`TileMerger` receives network outputs tile by tile
(``aggregate(values, location)``) and hands back finished rows as soon as no
later tile can touch them, so a plane of any height streams through a band of
a few tile heights.

Blending weights are separable: the weight of a tile is the outer product of a
1D window per axis (Gaussian with sigma = tile/8, or flat for plain
averaging). The sum of the weights over all tiles is then also separable, so
it is computed once per axis from the plan, and every tile is multiplied by
its already normalized weights: no weight accumulator is needed, and nothing
can overflow. Sums are kept in float64 so that a model computing
``f(x) = x + 1`` comes back as exactly ``x + 1`` in float32.

Examples
--------
>>> plan = TilePlan.create((5, 7), tile=4, overlap=0.5)
>>> plan.starts
((0, 1), (0, 2, 3))
>>> merger = TileMerger(plan, n_planes=1, n_channels=1, height=5, width=7)
>>> for y0, x0 in plan:
...     merger.aggregate(np.ones((1, 4, 4), np.float32), (0, y0, x0))
>>> [(start, block)] = merger.pop_ready()
>>> start, block.shape
(0, (1, 1, 5, 7))
>>> float(block.min()), float(block.max())
(1.0, 1.0)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Blend = Literal["gaussian", "average"]

#: The Gaussian window's sigma as a fraction of the tile size (nnU-Net's and MONAI's 1/8).
SIGMA_SCALE = 0.125
#: Smallest weight a window gives, so border pixels of a tile still count where nothing else does.
MIN_WEIGHT = 1e-3
_BLEND_ALIASES = {"gaussian": "gaussian", "average": "average", "constant": "average"}
#: The blend modes offered to users (``"constant"`` is an alias of ``"average"``).
BLEND_MODES: tuple[Blend, ...] = ("gaussian", "average")


def check_blend(blend: str) -> Blend:
    """Return the canonical blend mode, or raise a clear ``ValueError``."""
    canonical = _BLEND_ALIASES.get(str(blend).lower())
    if canonical is None:
        raise ValueError(
            f"blend={blend!r} is not a blend mode; use 'gaussian' (weights falling off towards "
            "tile borders) or 'average' (plain averaging of overlapping tiles)."
        )
    return canonical  # type: ignore[return-value]


def check_overlap(overlap: float) -> float:
    """Return ``overlap`` as a float in [0, 1), or raise a clear ``ValueError``."""
    try:
        value = float(overlap)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"overlap={overlap!r} must be a fraction of the tile in [0, 1): 0 for abutting "
            "tiles, 0.25 (the default) for a quarter-tile overlap. 1 would never advance."
        )
    return value


def tile_starts(size: int, tile: int, overlap: float) -> tuple[int, ...]:
    """Start positions of tiles of length ``tile`` covering ``size`` pixels.

    Parameters
    ----------
    size : int
        Length of the axis; at least ``tile`` (pad smaller axes first).
    tile : int
        Tile length.
    overlap : float
        Fraction of the tile shared by neighbours, in [0, 1).

    Returns
    -------
    tuple of int
        Increasing starts; the last one is ``size - tile`` so that no tile
        leaves the axis.

    Examples
    --------
    >>> tile_starts(10, 4, 0.25)
    (0, 3, 6)
    >>> tile_starts(4, 4, 0.5)
    (0,)
    """
    if tile < 1 or size < tile:
        raise ValueError(f"A tile of {tile} pixels cannot tile an axis of {size} pixels.")
    step = max(int(tile * (1.0 - overlap)), 1)
    count = math.ceil((size - tile) / step) + 1
    return tuple(min(i * step, size - tile) for i in range(count))


@dataclass(frozen=True)
class TilePlan:
    """Equal-sized overlapping tiles covering an N-dimensional plane.

    Attributes
    ----------
    shape : tuple of int
        Shape covered, each axis at least as long as the tile.
    tile : tuple of int
        Tile shape.
    starts : tuple of tuple of int
        Tile start positions along each axis; the tiles are their Cartesian product.
    overlap : float
        The overlap the plan was made with.
    """

    shape: tuple[int, ...]
    tile: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]
    overlap: float

    @classmethod
    def create(cls, shape: Sequence[int], tile: int | Sequence[int], overlap: float) -> TilePlan:
        """Plan tiles of shape ``tile`` over ``shape`` with the given overlap fraction."""
        shape = tuple(int(s) for s in shape)
        tiles = (int(tile),) * len(shape) if np.isscalar(tile) else tuple(int(t) for t in tile)
        overlap = check_overlap(overlap)
        starts = tuple(tile_starts(s, t, overlap) for s, t in zip(shape, tiles))
        return cls(shape, tiles, starts, overlap)

    @property
    def n_tiles(self) -> int:
        """Number of tiles in the plan."""
        return math.prod(len(s) for s in self.starts)

    def __len__(self) -> int:
        return self.n_tiles

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        """Tile origins in raster order (last axis fastest)."""
        return iter(itertools.product(*self.starts))


def blend_window(size: int, blend: Blend, sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """The 1D blending weights of one tile axis.

    Parameters
    ----------
    size : int
        Tile length along the axis.
    blend : {"gaussian", "average"}
        Gaussian importance weights (sigma = ``size * sigma_scale``), or ones.
    sigma_scale : float
        Sigma as a fraction of the tile.

    Returns
    -------
    (size,) ndarray of float64
        Weights in ``[MIN_WEIGHT, 1]``, peaking at the tile centre.
    """
    if check_blend(blend) == "average":
        return np.ones(size)
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    sigma = max(size * sigma_scale, 1e-6)
    # Never zero: a border pixel covered by one tile only must still get a value.
    return np.maximum(np.exp(-(x**2) / (2.0 * sigma**2)), MIN_WEIGHT)


def normalized_windows(plan: TilePlan, blend: Blend) -> list[dict[int, np.ndarray]]:
    """Per axis, the window of a tile starting at each position, divided by the weight sum.

    Returns
    -------
    list of dict
        ``windows[axis][start]`` is a ``(tile,)`` float64 array; the outer
        product over axes is the tile's final weight, and these weights sum to 1
        at every pixel of the plan.
    """
    result = []
    for size, tile, starts in zip(plan.shape, plan.tile, plan.starts):
        window = blend_window(tile, blend)
        total = np.zeros(size)
        for start in starts:
            total[start : start + tile] += window
        result.append({s: window / total[s : s + tile] for s in starts})
    return result


class RowRelease:
    """Which rows of a band of tiled planes are final: the release rule of the tile mergers.

    A row is final once every tile of its tile-row, and of the tile-rows before,
    was aggregated for every plane of the group. :class:`TileMerger` (host) and
    :class:`~.device_tiles.DeviceMerger` (device) keep their values their own way
    and share this bookkeeping.

    Parameters
    ----------
    plan : TilePlan
        The 2D plan (rows, columns).
    n_planes : int
        Planes in the group.
    height : int
        True height of a plane; padding rows are never released.
    row_align : int
        Release rows only in multiples of this many, except at the end.
    """

    def __init__(self, plan: TilePlan, *, n_planes: int, height: int, row_align: int = 1) -> None:
        self.plan = plan
        self.height = min(height, plan.shape[0])
        self.row_align = max(int(row_align), 1)
        self.origin = 0  # first row not yet released
        self._row_index = {y: i for i, y in enumerate(plan.starts[0])}
        self._expected = n_planes * len(plan.starts[1])
        self._done = [0] * len(plan.starts[0])
        self._next_row = 0  # first tile-row not yet complete

    @property
    def complete(self) -> bool:
        """True once every tile of every plane was counted."""
        return self._next_row == len(self._done)

    def top(self, y0: int) -> int:
        """Where a tile starting at plan row ``y0`` lands in the held band."""
        top = y0 - self.origin
        if top < 0:
            raise ValueError(f"Rows from {y0} on were already released; tiles came out of order.")
        return top

    def count(self, y0: int) -> None:
        """Count one aggregated tile of the tile-row starting at ``y0``."""
        self._done[self._row_index[y0]] += 1
        while self._next_row < len(self._done) and self._done[self._next_row] == self._expected:
            self._next_row += 1

    def release(self) -> tuple[int, int] | None:
        """``(start, stop)`` of the rows final now (and mark them released), or None."""
        if self.complete:
            stop = self.plan.shape[0]
        else:
            stop = self.plan.starts[0][self._next_row]
            if self.row_align > 1:
                stop -= stop % self.row_align
        stop = min(stop, self.height)
        if stop <= self.origin:
            return None
        start, self.origin = self.origin, stop
        return start, stop

    def check_complete(self) -> None:
        """Raise if some tile never arrived."""
        if not self.complete:
            raise RuntimeError(
                f"{sum(self._done)} of {self._expected * len(self._done)} tiles were aggregated; "
                "the plane is not complete."
            )


class TileMerger:
    """Blend 2D tiles of a group of planes, releasing rows as soon as they are final.

    Parameters
    ----------
    plan : TilePlan
        The 2D plan (rows, columns) every plane of the group is tiled with.
    n_planes : int
        Planes in the group; each tile belongs to one plane.
    n_channels : int
        K, the channels of every tile's values.
    height, width : int
        True size of a plane; rows and columns beyond it (padding) are dropped.
    blend : {"gaussian", "average"}
        How overlapping tiles are weighted.
    row_align : int
        Release rows only in multiples of this many (for example a zarr chunk
        height, so that each chunk is written once), except at the end.
    dtype : numpy dtype
        Accumulator type; float64 by default, so blending identical values is exact.

    Notes
    -----
    Tiles may arrive in any order across planes, but a row is released only
    once every tile of its tile-row (and of the tile-rows before) was
    aggregated, so raster order keeps the band a few tile heights tall.
    """

    def __init__(
        self,
        plan: TilePlan,
        *,
        n_planes: int,
        n_channels: int,
        height: int,
        width: int,
        blend: Blend = "gaussian",
        row_align: int = 1,
        dtype: type = np.float64,
    ) -> None:
        if len(plan.shape) != 2:
            raise ValueError("TileMerger blends 2D tiles; plan a 2D (rows, columns) shape.")
        self.plan = plan
        self.n_planes = n_planes
        self.n_channels = n_channels
        self.height = min(height, plan.shape[0])
        self.width = min(width, plan.shape[1])
        self.row_align = max(int(row_align), 1)
        self._windows = normalized_windows(plan, check_blend(blend))
        self.rows = RowRelease(plan, n_planes=n_planes, height=height, row_align=row_align)
        self._acc = np.zeros((n_channels, n_planes, 0, plan.shape[1]), dtype)

    @property
    def complete(self) -> bool:
        """True once every tile of every plane was aggregated."""
        return self.rows.complete

    def aggregate(self, values: np.ndarray, location: tuple[int, int, int]) -> None:
        """Add one tile.

        Parameters
        ----------
        values : (K, tile_rows, tile_cols) array
            The network's output for the tile.
        location : tuple of int
            ``(plane, y0, x0)``: plane index within the group and the tile origin.
        """
        plane, y0, x0 = location
        rows, cols = self.plan.tile
        if values.shape != (self.n_channels, rows, cols):
            raise ValueError(
                f"A tile's values have shape {values.shape}; expected "
                f"{(self.n_channels, rows, cols)}."
            )
        top = self.rows.top(y0)
        self._grow(top + rows)
        weight = np.multiply.outer(self._windows[0][y0], self._windows[1][x0])
        self._acc[:, plane, top : top + rows, x0 : x0 + cols] += values * weight
        self.rows.count(y0)

    def _grow(self, rows: int) -> None:
        if rows <= self._acc.shape[2]:
            return
        shape = (*self._acc.shape[:2], max(rows, 2 * self._acc.shape[2]), self._acc.shape[3])
        grown = np.zeros(shape, self._acc.dtype)
        grown[:, :, : self._acc.shape[2]] = self._acc
        self._acc = grown

    def pop_ready(self) -> list[tuple[int, np.ndarray]]:
        """Release the rows no later tile can touch.

        Returns
        -------
        list of (int, ndarray)
            ``(first_row, block)`` with ``block`` float32 of shape
            ``(K, n_planes, rows, width)``, cropped to the true plane size;
            empty when nothing new is final.
        """
        released = self.rows.release()
        if released is None:
            return []
        start, stop = released
        count = stop - start
        block = self._acc[:, :, :count, : self.width].astype(np.float32)
        # Shift the band up; the rows below stay zero for the next tiles.
        held = self._acc.shape[2]
        self._acc[:, :, : held - count] = self._acc[:, :, count:held].copy()
        self._acc[:, :, max(held - count, 0) :] = 0
        return [(start, block)]

    def finalize(self) -> list[tuple[int, np.ndarray]]:
        """Release every remaining row; raise if some tile never arrived."""
        self.rows.check_complete()
        return self.pop_ready()
