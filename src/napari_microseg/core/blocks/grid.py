"""The geometry of block-by-block jobs: the block grid, block shapes, a block's region.

A volume larger than memory is cut into *blocks*: whole chunks of the output
zarr array (:class:`BlockGrid`; their shape: :func:`~.predict.choose_block`). A block is predicted
from its *region* (:class:`HaloPlan`): the block grown by every tile of the
whole-volume tile plan that touches it, plus the neighbouring slices a 2.5D
model reads; :func:`read_region` reads it. Used by :mod:`.predict` and
:mod:`.labels`.

Examples
--------
>>> grid = BlockGrid((5, 70, 90), (2, 32, 64))
>>> grid.grid, len(grid)
((3, 3, 2), 18)
>>> grid.interior(17)
(slice(4, 5, None), slice(64, 70, None), slice(64, 90, None))
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..inference.job import PredictionJob
from ..inference.planes import SINGLE, is_lazy

Region = tuple[slice, ...]


# ----------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class BlockGrid:
    """Blocks tiling a spatial shape; the last block of each axis may be shorter.

    Parameters
    ----------
    shape : tuple of int
        The spatial shape, e.g. ``(Z, Y, X)``.
    block : tuple of int
        The block shape, one value per axis of ``shape``.
    """

    shape: tuple[int, ...]
    block: tuple[int, ...]

    @property
    def grid(self) -> tuple[int, ...]:
        """Blocks along each axis."""
        return tuple(math.ceil(s / b) for s, b in zip(self.shape, self.block))

    def __len__(self) -> int:
        return math.prod(self.grid)

    def position(self, index: int) -> tuple[int, ...]:
        """The block's position in the grid, from its flat (raster-order) index."""
        return tuple(int(i) for i in np.unravel_index(index, self.grid))

    def interior(self, index: int) -> Region:
        """The voxels the block owns, as one slice per axis."""
        return tuple(
            slice(p * b, min((p + 1) * b, s))
            for p, b, s in zip(self.position(index), self.block, self.shape)
        )

    def index_of(self, position: Sequence[int]) -> int:
        """The flat index of the block at a grid position."""
        return int(np.ravel_multi_index(tuple(position), self.grid))


# ----------------------------------------------------------------------------- halo


@dataclass(frozen=True)
class HaloPlan:
    """How far a block's region reaches beyond the block, per spatial axis.

    Attributes
    ----------
    spatial_axes : str
        Letters of the spatial axes.
    shape : tuple of int
        The spatial shape.
    tiles : dict
        Plane axes tiled by the whole-volume plan: letter -> ``(starts, tile)``;
        a plane axis shorter than a tile (mirrored up to one) maps to None and
        its region is the whole axis.
    context : dict
        Slice axis -> neighbouring slices a 2.5D model reads on each side.
    """

    spatial_axes: str
    shape: tuple[int, ...]
    tiles: dict[str, tuple[tuple[int, ...], int] | None]
    context: dict[str, int]

    @classmethod
    def from_job(cls, job: PredictionJob, spatial_axes: str, shape: Sequence[int]) -> HaloPlan:
        """The halo of a prediction planned on the whole volume (:func:`prepare_job`)."""
        (view,), (plan,) = job.views, job.plans
        sizes = dict(zip(spatial_axes, shape))
        tiles: dict[str, tuple[tuple[int, ...], int] | None] = {}
        for i, axis in enumerate(view.plane):
            fits = plan.shape[i] == sizes[axis]
            tiles[axis] = (plan.starts[i], plan.tile[i]) if fits else None
        context = {} if view.inner == SINGLE else {view.inner: job.context}
        return cls(spatial_axes, tuple(int(s) for s in shape), tiles, context)

    def region(self, interior: Region) -> Region:
        """The region to predict for a block: every tile touching it, and context slices."""
        out = []
        for axis, size, span in zip(self.spatial_axes, self.shape, interior):
            lo, hi = span.start, span.stop
            if axis in self.tiles:
                tiled = self.tiles[axis]
                if tiled is None:
                    lo, hi = 0, size
                else:
                    starts, tile = tiled
                    # Tiles touching [lo, hi): start < hi and start + tile > lo.
                    first = bisect.bisect_right(starts, lo - tile)
                    last = bisect.bisect_left(starts, hi) - 1
                    lo, hi = starts[first], starts[last] + tile
            elif axis in self.context:
                lo, hi = max(lo - self.context[axis], 0), min(hi + self.context[axis], size)
            out.append(slice(lo, hi))
        return tuple(out)


def read_region(source: Any, axes: str, region: Region) -> np.ndarray:
    """Read a spatial region of an image (all channels) into memory.

    Parameters
    ----------
    source : ndarray, memmap, zarr array or dask array
        The image, axes as in ``axes``.
    axes : str
        Its axis letters, e.g. ``"ZYX"`` or ``"ZYXC"``.
    region : tuple of slice
        One slice per spatial axis (``axes`` without C).

    Returns
    -------
    ndarray
        The pixels, same axes, the source's dtype.
    """
    spans = iter(region)
    index = tuple(slice(None) if a == "C" else next(spans) for a in axes)
    block = source[index]
    if is_lazy(block):
        # Never the distributed scheduler from inside a task: read here, synchronously.
        return np.asarray(block.compute(scheduler="sync"))
    return np.asarray(block)
