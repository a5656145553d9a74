"""Inference followed by the model's recommended post-processing, as one job.

This is what "Segment" means for the widget and the API: probabilities from
:func:`~.inference.run_prediction`, then labels from the model card's
recommended :class:`~.postprocess.PostprocessPipeline` (or a given one).
Instance models give labels directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .inference import PredictOptions, run_prediction
from .instances import Instances
from .models.base import ModelCard, SegmentationModel
from .postprocess import PostprocessPipeline
from .progress import Job


@dataclass
class SegmentResult:
    """Probabilities and labels of one segmentation.

    Attributes
    ----------
    labels : ndarray of uint32
        Object ids over the image's spatial shape.
    probabilities : (K, ...) ndarray of float32 or None
        Class probabilities (None for instance models).
    scores : ndarray or None
        Instance models: ``scores[label]``.
    pipeline : dict or None
        The post-processing used, as stored in model cards.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    scores: np.ndarray | None = None
    pipeline: dict[str, Any] | None = None


def recommended_pipeline(card: ModelCard, n_classes: int) -> PostprocessPipeline:
    """The card's recommended post-processing, fitted to the model's outputs.

    A single sigmoid channel is its own foreground (class 0); otherwise class 1
    is the foreground. Without a recommendation: Otsu, fill holes.
    """
    stored = card.recommended.get("postprocess")
    pipeline = (
        PostprocessPipeline.from_dict(stored)
        if isinstance(stored, dict) and "method" in stored
        else PostprocessPipeline(method="otsu", fill_holes=True)
    )
    if n_classes == 1 and pipeline.foreground_class != 0:
        from dataclasses import replace

        pipeline = replace(pipeline, foreground_class=0, boundary_class=None)
    return pipeline


def pipeline_spacing(
    pipeline: PostprocessPipeline,
    card: ModelCard,
    spacing: tuple[float, ...] | None,
    ndim: int,
) -> tuple[float, ...] | None:
    """The voxel size to post-process with: the image's, else the model's pixel size.

    Raises
    ------
    ValueError
        If the pipeline's sizes are in µm and neither the image nor the model
        gives a pixel size.
    """
    if spacing is not None and len(spacing) != ndim:
        spacing = None
    if pipeline.physical_units and spacing is None:
        if card.pixel_size_um is None:
            raise ValueError(
                "The post-processing gives sizes in µm but the image has no voxel size. "
                "Set the image's scale (µm per pixel) or use sizes in pixels."
            )
        # The model was trained at this pixel size; assume the image matches it.
        spacing = (float(card.pixel_size_um),) * ndim
    return spacing


def scale_mismatch(
    card: ModelCard, spacing: Any, *, tolerance: float = 1.5
) -> str | None:
    """A sentence when the image's pixels are much larger or smaller than the model's.

    A network sees objects at the size it was trained on: mitochondria twice as
    small (in pixels) as in training are missed. Only the in-plane (last two)
    axes count; unknown sizes (no card pixel size, no spacing, or a spacing of
    1, napari's unitless default) give None.

    Parameters
    ----------
    card : ModelCard
        The model's card (its ``pixel_size_um``).
    spacing : sequence of float or None
        The image's voxel size in µm per axis.
    tolerance : float
        Ratios within ``[1 / tolerance, tolerance]`` pass.

    Returns
    -------
    str or None
        What is wrong and what to do, or None when the scales agree or are unknown.
    """
    if card.pixel_size_um is None or spacing is None or len(spacing) < 2:
        return None
    plane = [float(v) for v in list(spacing)[-2:]]
    if any(v <= 0 for v in plane) or all(v == 1.0 for v in plane):
        return None
    ratio = (plane[0] * plane[1]) ** 0.5 / float(card.pixel_size_um)
    if 1 / tolerance <= ratio <= tolerance:
        return None
    return (
        f"Model {card.name!r} was trained at {card.pixel_size_um * 1e3:.3g} nm per pixel but "
        f"this image has {plane[-1] * 1e3:.3g} nm per pixel ({ratio:.2g}x): objects will look "
        f"{'smaller' if ratio > 1 else 'larger'} than in training. Rescale the image by "
        f"{ratio:.2g} (for example with skimage.transform.rescale) or pick a model trained at "
        "this pixel size."
    )


def segment_job(
    model: SegmentationModel,
    image: Any,
    *,
    axes: str | None = None,
    options: PredictOptions | None = None,
    pipeline: PostprocessPipeline | None = None,
    spacing: tuple[float, ...] | None = None,
) -> Job[SegmentResult]:
    """Predict, then post-process; a generator yielding Progress, returning :class:`SegmentResult`.

    Parameters
    ----------
    model : SegmentationModel
        A loaded model.
    image : ndarray or dask array
        The image, axes as in ``axes``.
    axes : str, optional
        Axis letters (``"YX"``, ``"YXC"``, ``"ZYX"``...).
    options : PredictOptions, optional
        Tiling and device settings.
    pipeline : PostprocessPipeline, optional
        Overrides the model's recommended post-processing.
    spacing : tuple of float, optional
        Voxel size in µm, for pipelines with sizes in µm.
    """
    result = yield from run_prediction(model, image, axes=axes, options=options)
    if isinstance(result, Instances):
        return SegmentResult(labels=result.labels, scores=result.scores)
    probabilities = np.asarray(result)
    if pipeline is None:
        pipeline = recommended_pipeline(model.card, probabilities.shape[0])
    spacing = pipeline_spacing(pipeline, model.card, spacing, probabilities.ndim - 1)
    labels = yield from pipeline.run_job(probabilities, class_axis=0, spacing=spacing)
    return SegmentResult(labels, probabilities, None, pipeline.to_dict())
