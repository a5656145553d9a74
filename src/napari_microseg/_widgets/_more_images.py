"""The Fine-tune widget's other images: learn from several images of a session at once.

The Segment widget names its result ``"<image> <model> labels"``, so each
labels layer it made knows its image by name. Besides the image and labels the
widget trains on, the user may tick other such labels layers ("also learn
from"); each counts whole (every non-empty slice of a stack, the whole of a 2D
image) and is normalised with its own image, as prediction normalises it
(:func:`~..core.training.jobs.finetune`'s ``more``). Images nobody corrected
can be ticked too ("uncorrected images"): the label-free start measures its
batch-norm statistics on them as well (``unlabelled``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels

from .._reader import layer_voxel_size
from .segment import image_axes

if TYPE_CHECKING:
    import napari

    from ..core.training.data import TrainingPair


def pixel_size_um(image: Any, axes: str) -> tuple[float, ...] | None:
    """The image layer's voxel size in µm, for the jobs to resample to the model's pixel size.

    Planes far from the model's pixel size are resampled to it, as Segment does; None
    (a scale of 1, unknown) leaves them as they are.
    """
    return layer_voxel_size(image, len(axes.replace("C", ""))).size_um


def _spatial_shape(image: Image) -> tuple[int, ...]:
    return tuple(image.data.shape[:-1] if image.rgb else image.data.shape)


def image_for_labels(viewer: napari.Viewer, labels: Labels) -> Image | None:
    """The image layer ``labels`` was made from, or None.

    The image whose name followed by a space starts the labels' name (the longest
    such name, so ``"cells 2"`` wins over ``"cells"``) and whose shape matches.
    """
    found = [
        layer
        for layer in viewer.layers
        if isinstance(layer, Image)
        and labels.name.startswith(f"{layer.name} ")
        and _spatial_shape(layer) == tuple(np.shape(labels.data))
    ]
    return max(found, key=lambda layer: len(layer.name)) if found else None


def other_corrections(
    viewer: napari.Viewer, chosen: Labels | None, image: Image | None
) -> list[tuple[str, Labels]]:
    """Choices for "also learn from": labels layers of other images, as (text, layer).

    Parameters
    ----------
    viewer : napari.Viewer
    chosen : Labels or None
        The labels layer the widget trains on (left out).
    image : Image or None
        Its image (labels made from it are left out: they would repeat it).
    """
    choices = []
    for layer in viewer.layers:
        if not isinstance(layer, Labels) or layer is chosen:
            continue
        source = image_for_labels(viewer, layer)
        if source is not None and source is not image:
            choices.append((f"{layer.name} (on {source.name})", layer))
    return choices


def training_pairs(viewer: napari.Viewer, layers: Iterable[Labels]) -> list[TrainingPair]:
    """Copies of the ticked labels layers with their images, ready for ``finetune(more=...)``.

    Raises
    ------
    ValueError
        A layer was removed, its image cannot be found, or it holds no label;
        the message names the layer and what to do.
    """
    from ..core.training.annotations import check_annotation

    pairs = []
    for layer in layers:
        if layer not in viewer.layers:
            raise ValueError(f"{layer.name!r} was removed; untick it under 'also learn from'.")
        image = image_for_labels(viewer, layer)
        if image is None:
            raise ValueError(
                f"The image that {layer.name!r} was made from is gone or was renamed; untick it "
                "under 'also learn from'."
            )
        labels = np.array(layer.data, copy=True)  # the user may keep painting while it trains
        try:
            check_annotation(labels, None)
        except ValueError as error:
            raise ValueError(f"{layer.name}: {error}") from error
        pairs.append(_snapshot(image, labels, layer.name))
    return pairs


def uncorrected_images(
    viewer: napari.Viewer, image: Image | None, corrected: Iterable[Labels]
) -> list[tuple[str, Image]]:
    """Choices for "uncorrected images": image layers other than ``image``, the images of
    the ``corrected`` labels layers and the probabilities a widget made, as (name, layer)."""
    taken = {id(image)} | {id(image_for_labels(viewer, layer)) for layer in corrected}
    return [
        (layer.name, layer)
        for layer in viewer.layers
        # A widget's result (Segment's probabilities) records its model: not an image.
        if isinstance(layer, Image)
        and id(layer) not in taken
        and "model" not in (layer.metadata or {})
    ]


def statistics_pairs(viewer: napari.Viewer, layers: Iterable[Image]) -> list[TrainingPair]:
    """Copies of the ticked uncorrected images for ``finetune(unlabelled=...)`` (no labels).

    Raises
    ------
    ValueError
        A layer was removed or its axes cannot be told; the message says what to do.
    """
    pairs = []
    for layer in layers:
        if layer not in viewer.layers:
            raise ValueError(f"{layer.name!r} was removed; untick it under 'uncorrected images'.")
        pairs.append(_snapshot(layer, None, layer.name))
    return pairs


def _snapshot(image: Image, labels: np.ndarray | None, name: str) -> TrainingPair:
    """A copy of the image layer's pixels with its axes and voxel size, for a worker thread."""
    from ..core.training.data import TrainingPair

    axes = image_axes(image)
    return TrainingPair(
        np.array(image.data, copy=True),
        labels,
        axes=axes,
        name=name,
        spacing=pixel_size_um(image, axes),
    )
