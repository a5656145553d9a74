"""The worker-thread side of a block-by-block Segment run (see :mod:`._zarr_job`).

:func:`block_segment_job` predicts into a zarr store and labels into a second
one, resuming a store this plugin wrote with the same settings; its progress
events carry the phase and whether the store exists, so the GUI side can show
the filling layer. Nothing here touches napari or Qt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.progress import Job, Progress
from ._block_plan import BlockOutputs

if TYPE_CHECKING:
    from ..core.blocks.labels import LabelResult
    from ..core.blocks.predict import ChunkedResult
    from ..core.inference.job import PredictOptions
    from ..core.models.base import SegmentationModel

#: Keys the worker adds to ``Progress.info``: the job's phase, and whether the store exists.
PHASE = "microseg_phase"
READY = "microseg_ready"


@dataclass
class BlockOutcome:
    """What the worker returns.

    Attributes
    ----------
    model : SegmentationModel
        The model used (kept warm by the widget).
    prediction : ChunkedResult
        The probabilities written.
    labels : LabelResult or None
        The labels written, None when not made (more than 3 spatial axes).
    pipeline : dict
        The post-processing (resolved when labels were made).
    """

    model: SegmentationModel
    prediction: ChunkedResult
    labels: LabelResult | None
    pipeline: dict[str, Any]


def _tag(event: Progress, phase: str, ready: bool) -> Progress:
    return replace(event, info={**event.info, PHASE: phase, READY: ready})


def _written_by_us(path: Path) -> bool:
    import zarr

    try:
        return "microseg_job" in dict(zarr.open(str(path), mode="r").attrs)
    except Exception:  # anything that is not a readable zarr store is not ours
        return False


def resumable(start: Callable[[bool], Job[Any]], path: Path, phase: str) -> Job[Any]:
    """Run a zarr job that resumes its output; start over once if the output is stale.

    ``start(overwrite)`` makes the job. An output written by another model,
    input or settings makes the core refuse it when opening it (after the
    job's first event); when that output is one of ours it is replaced, since
    its name says it holds this layer's result with this model. Events are
    tagged with the phase and whether the output exists yet.

    Raises
    ------
    ChunkedError
        If the path holds something that napari-microseg did not write.
    """
    from ..core.blocks.store import ChunkedError

    for overwrite in (False, True):
        job = start(overwrite)
        seen = 0
        try:
            while True:
                try:
                    event = next(job)
                except StopIteration as stop:
                    return stop.value
                except ChunkedError as error:
                    if overwrite or seen != 1:
                        raise
                    if not _written_by_us(path):
                        raise ChunkedError(
                            f"{path} already exists and was not written by napari-microseg; "
                            "move or rename it, then run again."
                        ) from error
                    break
                seen += 1
                yield _tag(event, phase, seen > 1 and path.exists())
        finally:
            job.close()
        yield Progress(
            0, None, f"{path.name} holds an older result: starting over", info={PHASE: phase}
        )
    raise AssertionError("unreachable")  # pragma: no cover


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
        Yields the core's :class:`Progress` events, tagged with :data:`PHASE`
        (``"predict"``, ``"predicted"`` once all blocks are done, ``"labels"``).
    """
    from ..core.blocks.labels import label_to_zarr
    from ..core.blocks.predict import predict_to_zarr
    from ..core.inference.segment import pipeline_spacing, recommended_pipeline

    if model is None:
        yield Progress(0, None, "loading the model")
        from ..core.models.registry import load_model

        model = load_model(model_path, device=options.device)
    try:
        prediction = yield from resumable(
            lambda overwrite: predict_to_zarr(
                model,
                data,
                str(outputs.probabilities),
                axes=axes,
                options=options,
                chunks=chunks,
                overwrite=overwrite,
            ),
            outputs.probabilities,
            "predict",
        )
        found = f", {prediction.skipped} found done" if prediction.skipped else ""
        yield Progress(
            prediction.blocks,
            prediction.blocks,
            f"probabilities complete ({prediction.blocks} blocks{found})",
            info={PHASE: "predicted", READY: True},
        )
        n_classes = int(prediction.probabilities.shape[0])
        pipeline = recommended_pipeline(model.card, n_classes)
        ndim = len(prediction.probabilities.shape) - 1
        if ndim > 3:
            return BlockOutcome(model, prediction, None, pipeline.to_dict())
        spacing = pipeline_spacing(pipeline, model.card, spacing, ndim)
        labels = yield from resumable(
            lambda overwrite: label_to_zarr(
                prediction.probabilities,
                str(outputs.labels),
                pipeline,
                spacing=spacing,
                overwrite=overwrite,
            ),
            outputs.labels,
            "labels",
        )
    except OSError as error:
        reason = error.strerror or str(error)
        raise OSError(
            f"Reading the image or writing the results in {outputs.folder} failed ({reason})."
        ) from error
    labels.labels.attrs["microseg_kind"] = "labels"
    return BlockOutcome(model, prediction, labels, labels.pipeline)
