"""Segment a volume of any size block by block: probabilities into zarr, then labels into zarr.

:func:`segment_to_zarr` is the one job the CLI (``microseg predict --chunked``) and
the Segment widget run on volumes larger than memory: it predicts into a zarr store
(:func:`~.predict.predict_to_zarr`), post-processes with the model's recommended
pipeline (:func:`~napari_microseg.core.inference.segment.recommended_pipeline`, with
optional overrides) and labels across blocks into a second store
(:func:`~.labels.label_to_zarr`). Both stores resume: a job started again on the same
outputs skips the prediction blocks already written and finds complete labels done.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..progress import Job, Progress
from .store import ChunkedError

if TYPE_CHECKING:
    from ..inference.options import PredictOptions
    from .labels import LabelResult
    from .predict import ChunkedResult

#: ``Progress.info`` key of the job's events: ``"predict"``, ``"predicted"`` (one event,
#: once every block is written) or ``"labels"``.
PHASE = "microseg_phase"
#: ``Progress.info`` key: True once the current phase's output store is open for this job
#: (a display may show it while it fills).
READY = "microseg_ready"


@dataclass
class BlockSegmentResult:
    """What :func:`segment_to_zarr` wrote.

    Attributes
    ----------
    prediction : ChunkedResult
        The ``(K, *spatial)`` probabilities, with the blocks done and skipped.
    labels : LabelResult or None
        The uint32 labels over the spatial shape; None when no labels were asked for.
    pipeline : dict
        The post-processing, as stored in model cards (its thresholds resolved on
        the whole map when labels were made).
    """

    prediction: ChunkedResult
    labels: LabelResult | None
    pipeline: dict[str, Any]


def segment_to_zarr(
    model: Any,
    image: Any,
    probabilities: Any,
    labels: Any | None,
    *,
    axes: str | None = None,
    options: PredictOptions | None = None,
    spacing: Sequence[float] | None = None,
    postprocess: Mapping[str, Any] | None = None,
    chunks: Sequence[int] | None = None,
    block: Sequence[int] | None = None,
    executor: Any = None,
    model_ref: Any = None,
    probability_dtype: str = "float32",
    threads: int | None = None,
    overwrite: bool = False,
    replace_stale: bool = False,
) -> Job[BlockSegmentResult]:
    """Predict a volume block by block into zarr, then label it across blocks into zarr.

    Parameters
    ----------
    model : SegmentationModel or torch.nn.Module
        A semantic model; its card's recommended post-processing makes the labels.
    image : zarr array, dask array, ndarray, memmap or ImageData
        The input, axes as in ``axes``.
    probabilities : path-like or zarr array
        Where the ``(K, *spatial)`` probabilities go (resumed when written by the
        same job).
    labels : path-like or zarr array or None
        Where the uint32 labels over the spatial shape go; None stops after the
        probabilities (e.g. for more than 3 spatial axes, which cannot be labelled
        block by block).
    axes : str, optional
        Axis letters of ``image``, guessed for 2D and 3D images.
    options : PredictOptions, optional
        Tiling, device and normalization settings (ortho is not supported).
    spacing : sequence of float, optional
        The image's voxel size in µm per spatial axis, for pipelines in µm (the
        model's pixel size when None, see
        :func:`~napari_microseg.core.inference.segment.pipeline_spacing`).
    postprocess : mapping, optional
        Fields of :class:`~napari_microseg.core.postprocess.PostprocessPipeline`
        that override the model's recommendation (e.g. ``{"method": "threshold",
        "threshold": 0.5}``).
    chunks : sequence of int, optional
        Output chunk shape over the spatial axes (default
        :func:`~.predict.default_chunks`).
    block : sequence of int, optional
        Work unit of both passes, whole chunks (default :func:`~.predict.choose_block`).
    executor : LocalExecutor or DaskExecutor, optional
        Where the block tasks run; this process by default.
    model_ref : ModelRef, optional
        How Dask workers load the model themselves.
    probability_dtype : {"float32", "float16", "uint8"}
        How probabilities are stored (see :func:`~.predict.predict_to_zarr`).
    threads : int, optional
        Torch threads in this process while predicting.
    overwrite : bool
        Replace existing outputs that belong to another job (or are no zarr array).
    replace_stale : bool
        Replace an output path holding a result that napari-microseg wrote for
        another model, input or settings, instead of refusing it; anything else in
        the way is still refused.

    Returns
    -------
    BlockSegmentResult
        Yields the :class:`Progress` events of both passes, their ``info`` tagged
        with :data:`PHASE` and :data:`READY`. Closing the job stops within one
        block; the blocks written are kept for the next run.

    Raises
    ------
    ChunkedError
        For an instance model, the ortho mode, bad chunks or blocks, or an output
        path holding something else.
    ValueError
        If the pipeline gives sizes in µm and neither ``spacing`` nor the model
        gives a pixel size.
    """
    from ..inference.job import as_model
    from ..inference.segment import pipeline_spacing, recommended_pipeline
    from .labels import label_to_zarr
    from .predict import predict_to_zarr

    model = as_model(model)
    prediction = yield from _phase(
        lambda overwrite: predict_to_zarr(
            model,
            image,
            probabilities,
            axes=axes,
            options=options,
            chunks=chunks,
            block=block,
            executor=executor,
            overwrite=overwrite,
            model_ref=model_ref,
            probability_dtype=probability_dtype,
            threads=threads,
        ),
        probabilities,
        "predict",
        overwrite=overwrite,
        replace_stale=replace_stale,
    )
    found = f", {prediction.skipped} found done" if prediction.skipped else ""
    yield Progress(
        prediction.blocks,
        prediction.blocks,
        f"probabilities complete ({prediction.blocks} blocks{found})",
        info={PHASE: "predicted", READY: True},
    )
    prob = prediction.probabilities
    pipeline = recommended_pipeline(model.card, int(prob.shape[0]))
    if postprocess:
        pipeline = replace(pipeline, **postprocess)
    if labels is None:
        return BlockSegmentResult(prediction, None, pipeline.to_dict())
    spacing = pipeline_spacing(pipeline, model.card, spacing, len(prob.shape) - 1)
    labelled = yield from _phase(
        lambda overwrite: label_to_zarr(
            prob,
            labels,
            pipeline,
            spacing=spacing,
            block=block,
            executor=executor,
            overwrite=overwrite,
        ),
        labels,
        "labels",
        overwrite=overwrite,
        replace_stale=replace_stale,
    )
    labelled.labels.attrs["microseg_kind"] = "labels"  # readers open it as a Labels layer
    return BlockSegmentResult(prediction, labelled, labelled.pipeline)


def _phase(
    start: Callable[[bool], Job[Any]],
    out: Any,
    phase: str,
    *,
    overwrite: bool,
    replace_stale: bool,
) -> Job[Any]:
    """Run one zarr pass with its events tagged; with ``replace_stale``, redo it on a stale output.

    ``start(overwrite)`` makes the pass. A pass refuses an output made by another
    job when it opens it, right after its first event; that is the only refusal
    that starting over with ``overwrite`` can cure.
    """
    for again in (False, True):
        job = start(overwrite or again)
        seen = 0
        try:
            while True:
                try:
                    event = next(job)
                except StopIteration as stop:
                    return stop.value
                except ChunkedError as error:
                    if again or overwrite or not replace_stale or seen != 1:
                        raise
                    if not _written_by_us(out):
                        raise ChunkedError(
                            f"{out} already exists and was not written by napari-microseg; "
                            "move or rename it, then run again."
                        ) from error
                    break
                seen += 1
                ready = seen > 1 and _exists(out)
                yield replace(event, info={**event.info, PHASE: phase, READY: ready})
        finally:
            job.close()  # a cancelled job stops its pass here; the blocks written are kept
        name = Path(str(out)).name
        yield Progress(0, None, f"{name} holds an older result: starting over", info={PHASE: phase})
    raise AssertionError("unreachable")  # pragma: no cover


def _is_path(out: Any) -> bool:
    return isinstance(out, str) or hasattr(out, "__fspath__")


def _exists(out: Any) -> bool:
    return os.path.exists(out) if _is_path(out) else True


def _written_by_us(out: Any) -> bool:
    """True when ``out`` is a zarr array that a block job of this package wrote."""
    import zarr

    try:
        array = zarr.open(str(out), mode="r") if _is_path(out) else out
        return "microseg_job" in dict(array.attrs)
    except Exception:  # anything that is not a readable zarr store is not ours
        return False
