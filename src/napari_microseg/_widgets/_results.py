"""The Segment widget's result layers: labels on top and selected, probabilities readable.

After a run the labels go on top of the layer list, selected for Correct and
Export; the probabilities go below them as the foreground class alone (a faint
magenta overlay, no class slider) unless the user asks for all classes. Both
keep the model, the image's file and the voxel size in their metadata, and
never overwrite a layer the user edited (:func:`._layer_edits.put_result`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_info

from .._reader import spatial_units
from ._layer_edits import put_result

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from ..core.inference.segment import SegmentResult
    from ..core.models.base import SegmentationModel


def show_results(
    viewer: napari.Viewer,
    layer: Image,
    axes: str,
    model: SegmentationModel,
    result: SegmentResult,
    offset: tuple[int, ...],
    physical: tuple[float, ...] | None = None,
    *,
    all_classes: bool = False,
) -> str | None:
    """Show the results over the image: labels on top and selected, probabilities below.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the layers go.
    layer : Image
        The segmented image layer; ``axes`` are its axis letters (``"ZYX"``, ``"YXC"``...).
    model, result
        The model and what it found.
    offset : tuple of int
        Where the segmented region starts in the layer, in data pixels.
    physical : tuple of float, optional
        The voxel size the run used, in µm; the result layers keep it in their
        metadata, so Export measures in µm even when the image's scale is 1.
    all_classes : bool
        Show every class's probabilities (with a class slider), not the foreground alone.

    Returns
    -------
    str or None
        The status line ("17 objects..."); None when the image layer is gone.
    """
    if layer not in viewer.layers:
        show_info("The image layer was removed; results discarded.")
        return None
    spatial_ndim = result.labels.ndim
    scale = tuple(layer.scale)[-spatial_ndim:]
    translate = tuple(
        t + o * s for t, o, s in zip(tuple(layer.translate)[-spatial_ndim:], offset, scale)
    )
    units = result_units(layer, axes, spatial_ndim)
    base = f"{layer.name} {model.name}"
    origin = Path(layer.source.path).name if layer.source.path else f"the image {layer.name!r}"
    voxel_meta = {"voxel_size_um": physical, "voxel_size_from": origin} if physical else {}
    # Export writes next to the image's file, and Fine-tune starts from this model.
    made_by = {"model": model.name, "image_path": layer.source.path or None}
    note = ""
    if result.probabilities is not None:
        note = add_probabilities(
            viewer,
            f"{base} probabilities",
            result,
            all_classes=all_classes,
            scale=scale,
            translate=translate,
            units=units,
            metadata={"classes": model.classes, **made_by, **voxel_meta},
        )
    put_result(
        viewer,
        f"{base} labels",
        result.labels,
        "labels",
        scale=scale,
        translate=translate,
        units=units,
        metadata={**voxel_meta, **made_by},
        opacity=0.5,
        visible=True,
    )
    # put_result leaves the result on top of the layer list; select it for Correct and Export.
    viewer.layers.selection.active = viewer.layers[-1]
    count = len(np.unique(result.labels)) - 1
    return f"{count} objects" + note


def add_probabilities(
    viewer: napari.Viewer,
    name: str,
    result: SegmentResult,
    *,
    all_classes: bool,
    scale: tuple[float, ...],
    translate: tuple[float, ...],
    units: tuple[Any, ...],
    metadata: dict[str, Any],
) -> str:
    """Add the foreground probabilities (or all classes when asked) as a faint overlay.

    The class stack would add a slider and, shown whole, wash the image out with
    the background class; the foreground map alone is what Post-process needs
    unless the model's pipeline uses a boundary class.

    Returns
    -------
    str
        A note for the status line ("" when there is nothing to say).
    """
    probabilities = result.probabilities
    n_classes = probabilities.shape[0]
    pipeline = dict(result.pipeline or {})
    foreground = int(pipeline.get("foreground_class", 1 if n_classes > 1 else 0))
    foreground = min(max(foreground, 0), n_classes - 1)
    look = {"colormap": "magenta", "contrast_limits": (0.0, 1.0), "blending": "additive"}
    if all_classes:
        put_result(
            viewer,
            name,
            probabilities,
            "image",
            scale=(1.0, *scale),
            translate=(0.0, *translate),
            units=("pixel", *units),
            metadata={**metadata, "class_axis": 0, "postprocess": result.pipeline},
            opacity=0.5,
            **look,
        )
        # The class slider is the first axis: start it on the foreground, not background.
        class_axis = viewer.dims.ndim - probabilities.ndim
        viewer.dims.set_current_step(class_axis, foreground)
        return ""
    single = {**pipeline, "foreground_class": 0, "boundary_class": None}
    put_result(
        viewer,
        name,
        probabilities[foreground],
        "image",
        scale=scale,
        translate=translate,
        units=units,
        metadata={
            **metadata,
            "foreground_class": foreground,
            "postprocess": single if result.pipeline is not None else None,
        },
        opacity=0.4,
        **look,
    )
    if pipeline.get("boundary_class") is not None:
        return (
            "; the probabilities show the foreground class only: tick 'all classes' to "
            "tune Post-process with the boundary class too"
        )
    return ""


def result_units(layer: Image, axes: str, ndim: int) -> tuple[Any, ...]:
    """Units of the result layers: µm where the image has a voxel size, else the image's.

    napari's scale bar shows a unit only when all layers agree, so an image with a
    physical scale still in napari's default ``pixel`` units is switched to µm too.
    """
    axes = axes.replace("C", "")[-ndim:]
    own = tuple(layer.units)[-ndim:]
    physical_scale = any(float(s) != 1.0 for s in tuple(layer.scale)[-ndim:])
    if physical_scale and all(str(u) == "pixel" for u in own):
        units = spatial_units(axes)
        layer.units = (*tuple(layer.units)[: layer.ndim - ndim], *units)
        return units
    return own
