"""The settings shared by the block tasks of :func:`~.labels.label_to_zarr` (all three passes).

Its own module so that the passes (:mod:`.labels`, :mod:`.faces`) import it without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..postprocess import PostprocessPipeline
from .grid import BlockGrid


@dataclass(frozen=True)
class LabelTask:
    """What a worker needs for the label passes (small, picklable).

    Attributes
    ----------
    prob : zarr array
        ``(K, *spatial)`` probabilities.
    out : zarr array
        ``spatial`` uint32 labels.
    pipeline : PostprocessPipeline
        With its thresholds resolved for the whole volume.
    grid : BlockGrid
        The blocks (over the spatial shape).
    halo : int
        Voxels read around a block for the opening, closing and watershed.
    spacing : tuple of float or None
        Voxel size in µm, for pipelines in µm.
    """

    prob: Any
    out: Any
    pipeline: PostprocessPipeline
    grid: BlockGrid
    halo: int
    spacing: tuple[float, ...] | None
