"""Inference followed by the model's recommended post-processing, as one job.

This is what "Segment" means for the widget and the API: probabilities from
:func:`~.inference.run_prediction`, then labels from the model card's
recommended :class:`~.postprocess.PostprocessPipeline` (or a given one).
Instance models give labels directly.

When the image's pixel size is known and far from the one the model was
trained at (the card's ``pixel_size_um``), the image is resampled in-plane to
the model's pixel size first and the results come back on the image's grid
(:mod:`.resample`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..models.base import ModelCard, SegmentationModel
from ..postprocess import PostprocessPipeline
from ..progress import Job
from .job import resolve_image
from .options import PredictOptions
from .predict import run_prediction
from .resample import (
    ResamplePlan,
    in_plane_spacing,
    nearest_planes,
    resample_plan,
    resample_plane_job,
)
from .stitching import Instances


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
    resampled : (float, float) or None
        The Y and X zoom factors the image was resampled by for the model
        (image pixel size / model pixel size), or None when it was not.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    scores: np.ndarray | None = None
    pipeline: dict[str, Any] | None = None
    resampled: tuple[float, float] | None = None


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


def scale_mismatch(card: ModelCard, spacing: Any, *, tolerance: float = 1.5) -> str | None:
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


def resampling_note(card: ModelCard, spacing: Any, axes: str, shape: tuple[int, ...]) -> str | None:
    """A sentence saying the image will be resampled to the model's pixel size, or None.

    Parameters
    ----------
    card : ModelCard
        The model's card (its ``pixel_size_um``).
    spacing : sequence of float or None
        The image's voxel size in µm per spatial axis.
    axes : str
        The image's axis letters.
    shape : tuple of int
        The image's shape.

    Returns
    -------
    str or None
        None when :func:`segment_job` would predict the image as it is.
    """
    plan = resample_plan(card.pixel_size_um, spacing, axes, shape)
    plane = in_plane_spacing(spacing, axes)
    if plan is None or plane is None or card.pixel_size_um is None:
        return None
    dy, dx = plane[0] * 1e3, plane[1] * 1e3
    image_nm = f"{dx:.3g}" if abs(dy - dx) < 1e-9 else f"{dy:.3g} x {dx:.3g}"
    return (
        f"Model {card.name!r} was trained at {card.pixel_size_um * 1e3:.3g} nm per pixel and "
        f"this image has {image_nm} nm per pixel: it is resampled {plan.factor[1]:.3g}x in Y "
        "and X for the prediction; probabilities and labels come back on the image's grid."
    )


def pixel_sizes_on_image_grid(
    pipeline: PostprocessPipeline, factor: tuple[float, float]
) -> PostprocessPipeline:
    """A pipeline with sizes in model pixels, rewritten for the image's (resampled) grid.

    A card's recommended sizes in pixels (``min_size``, radii...) are pixels
    of the model's training data; after in-plane resampling by ``factor``
    (image pixel size / model pixel size) one image pixel covers
    ``fy * fx`` model pixels. Sizes in µm need nothing (the image's spacing
    gives them), so a ``physical_units`` pipeline is returned as is.

    Parameters
    ----------
    pipeline : PostprocessPipeline
        Sizes in pixels of the model's grid.
    factor : (float, float)
        Y and X zoom factors of the resampling.

    Returns
    -------
    PostprocessPipeline
        Areas (volumes) divided by ``fy * fx``; radii and distances by
        ``sqrt(fy * fx)``.
    """
    if pipeline.physical_units:
        return pipeline
    area = float(factor[0] * factor[1])
    linear = area**0.5
    changes: dict[str, Any] = {
        "min_size": pipeline.min_size / area,
        "max_hole_size": pipeline.max_hole_size / area,
        "opening_radius": pipeline.opening_radius / linear,
        "closing_radius": pipeline.closing_radius / linear,
    }
    if pipeline.min_distance is not None:
        changes["min_distance"] = max(1, round(pipeline.min_distance / linear))
    if pipeline.h is not None and pipeline.markers == "distance":
        changes["h"] = pipeline.h / linear
    return replace(pipeline, **changes)


def segment_job(
    model: SegmentationModel,
    image: Any,
    *,
    axes: str | None = None,
    options: PredictOptions | None = None,
    pipeline: PostprocessPipeline | None = None,
    spacing: tuple[float, ...] | None = None,
    match_pixel_size: bool = True,
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
        Tiling and device settings; by default those the model card recommends
        (:meth:`~.options.PredictOptions.for_card`: tile size, overlap, TTA).
    pipeline : PostprocessPipeline, optional
        Overrides the model's recommended post-processing; its sizes in
        pixels are pixels of the image.
    spacing : tuple of float, optional
        Voxel size in µm per spatial axis (the axes without ``C``), for
        pipelines with sizes in µm and for ``match_pixel_size``. A spacing
        of 1 along Y and X means unknown (napari's default scale).
    match_pixel_size : bool
        When both the image's and the model's pixel sizes are known and
        differ by more than :data:`~.resample.TOLERANCE` along Y or X,
        resample the image in-plane to the model's pixel size, predict, and
        resample the probabilities (linearly; instance labels by nearest
        neighbour) back to the image's exact shape. Z and channels are never
        resampled. The card's recommended sizes in pixels are converted to
        the image's pixels.

    Returns
    -------
    SegmentResult
        Labels and probabilities on the image's grid.
    """
    result, factor = yield from predict_on_image_grid(
        model,
        image,
        axes=axes,
        options=options,
        spacing=spacing,
        match_pixel_size=match_pixel_size,
    )
    return (
        yield from labels_on_image_grid(model, result, factor, pipeline=pipeline, spacing=spacing)
    )


def labels_on_image_grid(
    model: SegmentationModel,
    result: np.ndarray | Instances,
    factor: tuple[float, float] | None,
    *,
    pipeline: PostprocessPipeline | None = None,
    spacing: tuple[float, ...] | None = None,
) -> Job[SegmentResult]:
    """The post-processing half of :func:`segment_job`, on a prediction already made.

    Scoring several post-processing settings on one image predicts it once
    (``scripts/tune_postprocess.py``) and still labels it exactly as
    :func:`segment_job` would.

    Parameters
    ----------
    model : SegmentationModel
        The model that predicted ``result``; its card gives the recommended
        post-processing when ``pipeline`` is None.
    result : (K, ...) ndarray of float32 or Instances
        What :func:`predict_on_image_grid` returned for the image.
    factor : (float, float) or None
        The zoom factors :func:`predict_on_image_grid` returned with it.
    pipeline, spacing
        As for :func:`segment_job`.

    Returns
    -------
    SegmentResult
        Labels and probabilities on the image's grid.
    """
    if isinstance(result, Instances):
        return SegmentResult(labels=result.labels, scores=result.scores, resampled=factor)
    probabilities = np.asarray(result)
    if pipeline is None:
        pipeline = recommended_pipeline(model.card, probabilities.shape[0])
        if factor is not None:
            pipeline = pixel_sizes_on_image_grid(pipeline, factor)
    spacing = pipeline_spacing(pipeline, model.card, spacing, probabilities.ndim - 1)
    labels = yield from pipeline.run_job(probabilities, class_axis=0, spacing=spacing)
    return SegmentResult(labels, probabilities, None, pipeline.to_dict(), factor)


def predict_on_image_grid(
    model: SegmentationModel,
    image: Any,
    *,
    axes: str | None = None,
    options: PredictOptions | None = None,
    spacing: tuple[float, ...] | None = None,
    match_pixel_size: bool = True,
) -> Job[tuple[np.ndarray | Instances, tuple[float, float] | None]]:
    """Predict at the model's pixel size, with the result on the image's grid.

    The prediction half of :func:`segment_job` (same parameters): when
    ``match_pixel_size`` and the image's and the model's pixel sizes are known
    and differ by more than :data:`~.resample.TOLERANCE`, the image's Y-X
    planes are resampled to the model's pixel size, predicted, and the
    probabilities resampled back linearly (instance labels by nearest
    neighbour) to the image's exact shape. Progress comes per stage:
    resampled planes, then tiles, then planes again.

    Returns
    -------
    result : (K, ...) ndarray of float32 or Instances
        On the image's grid.
    factor : (float, float) or None
        The Y and X zoom factors used (image / model pixel size), or None
        when the image was predicted as it is.
    """
    options = options or PredictOptions.for_card(model.card)
    plan: ResamplePlan | None = None
    if match_pixel_size and model.card.pixel_size_um is not None:
        # The image as the model takes it (colour fitted), so it is converted and told once.
        image, axes = resolve_image(image, axes, model)
        plan = resample_plan(model.card.pixel_size_um, spacing, axes, tuple(image.shape))
        if plan is not None:
            image = yield from resample_plane_job(
                image,
                plan.y_axis,
                plan.x_axis,
                (plan.shape[plan.y_axis], plan.shape[plan.x_axis]),
                message=plan.describe(float(model.card.pixel_size_um)),
            )
    result = yield from run_prediction(model, image, axes=axes, options=options)
    if plan is None or axes is None:
        return result, None
    y, x, size = _spatial_plane(plan, axes)
    if isinstance(result, Instances):
        labels = nearest_planes(result.labels, y, x, size)
        return Instances(labels, result.scores), plan.factor
    probabilities = yield from resample_plane_job(
        result,
        y + 1,
        x + 1,
        size,
        message="Resampling the probabilities to the image's pixel size",
        dtype=np.float32,
    )
    return probabilities, plan.factor


def _spatial_plane(plan: ResamplePlan, axes: str) -> tuple[int, int, tuple[int, int]]:
    """Y and X positions among the spatial axes (no ``C``), and the image's Y, X lengths."""
    spatial = axes.replace("C", "")
    size = (plan.source[plan.y_axis], plan.source[plan.x_axis])
    return spatial.index("Y"), spatial.index("X"), size
