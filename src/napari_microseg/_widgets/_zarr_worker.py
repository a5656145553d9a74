"""The worker-thread side of a block-by-block Segment run (see :mod:`._zarr_job`).

:func:`block_segment_job` loads the model unless it is warm and runs the core's
:func:`~napari_microseg.core.blocks.segment.segment_to_zarr` into the layer's two
stores, replacing a store this plugin wrote with other settings. Its progress events
carry the phase and whether the store exists
(:data:`~napari_microseg.core.blocks.segment.PHASE`, ``READY``), so the GUI side can
show the filling layer. Nothing here touches napari or Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.progress import Job, Progress
from ._block_plan import BlockOutputs

if TYPE_CHECKING:
    from ..core.blocks.segment import BlockSegmentResult
    from ..core.inference.options import PredictOptions
    from ..core.models.base import SegmentationModel

#: Spatial axes that the labels can be made over block by block (Z, Y, X).
MAX_LABEL_AXES = 3


@dataclass
class BlockOutcome:
    """What the worker returns.

    Attributes
    ----------
    model : SegmentationModel
        The model used (kept warm by the widget).
    result : BlockSegmentResult
        The probabilities and labels written (labels None for more than 3 spatial
        axes), and the post-processing (resolved when labels were made).
    """

    model: SegmentationModel
    result: BlockSegmentResult


def block_segment_job(
    model: SegmentationModel | None,
    model_path: str,
    data: Any,
    axes: str,
    options: PredictOptions,
    outputs: BlockOutputs,
    spacing: tuple[float, ...] | None,
    chunks: tuple[int, ...] | None,
) -> Job[BlockOutcome]:
    """Worker-thread job: load the model (unless warm), predict into zarr, then label into zarr.

    Parameters
    ----------
    model : SegmentationModel or None
        A warm model, or None to load ``model_path``.
    model_path : str
        The model's weights.
    data : array-like
        The image (dask, zarr or NumPy), axes as in ``axes``.
    axes : str
        Its axis letters.
    options : PredictOptions
        Tiling and device settings.
    outputs : BlockOutputs
        Where the probabilities and labels go.
    spacing : tuple of float or None
        Voxel size in µm, for pipelines in µm.
    chunks : tuple of int or None
        Output chunks over the spatial axes (None: the core's default).

    Returns
    -------
    BlockOutcome
        Yields the core's :class:`Progress` events, tagged with the phase
        (``"predict"``, ``"predicted"`` once all blocks are done, ``"labels"``).
    """
    from ..core.blocks.segment import segment_to_zarr

    if model is None:
        yield Progress(0, None, "loading the model")
        from ..core.models.registry import load_model

        model = load_model(model_path, device=options.device)
    # More spatial axes (a time series of volumes) are post-processed one time point at a time.
    labelled = len(axes.replace("C", "")) <= MAX_LABEL_AXES
    try:
        result = yield from segment_to_zarr(
            model,
            data,
            str(outputs.probabilities),
            str(outputs.labels) if labelled else None,
            axes=axes,
            options=options,
            spacing=spacing,
            chunks=chunks,
            replace_stale=True,  # the stores' names say they hold this layer's results
        )
    except OSError as error:
        reason = error.strerror or str(error)
        raise OSError(
            f"Reading the image or writing the results in {outputs.folder} failed ({reason})."
        ) from error
    return BlockOutcome(model, result)
