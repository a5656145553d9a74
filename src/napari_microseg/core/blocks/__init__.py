"""Stage 3, blocks: images larger than memory, block by block, in one process or on Dask.

:func:`segment_to_zarr` predicts a volume into a zarr store (:func:`predict_to_zarr`)
and labels it across blocks (:func:`label_to_zarr`), resumably; :mod:`.grid` cuts
the blocks, :mod:`.store` keeps the output and its resume record, :mod:`.executors`
and :mod:`.cluster` run the block tasks.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_HOMES = {
    "segment_to_zarr": "segment",
    "BlockSegmentResult": "segment",
    "predict_to_zarr": "predict",
    "ChunkedResult": "predict",
    "label_to_zarr": "labels",
    "LabelResult": "labels",
    "ChunkedError": "store",
    "resume_state": "store",
    "ClassView": "store",
    "BlockGrid": "grid",
    "LocalExecutor": "executors",
    "DaskExecutor": "cluster",
    "ModelRef": "cluster",
    "cluster_client": "cluster",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
