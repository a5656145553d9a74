"""What a few-shot user hands over, checked before any training, and the part they edited.

A fine-tune on a handful of corrections fails late and confusingly when the
annotations cannot teach anything (empty, one class) or the image does not fit
the model (colour into a grey model): :func:`check_annotation`,
:func:`check_classes` and :func:`check_modality` say so first, in one sentence.
A user who fixed a few objects can train on just those and a margin around them
(:func:`edited_region`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..models.base import SegmentationModel
from .data import TrainingDataError

__all__ = [
    "EDIT_MARGIN",
    "check_annotation",
    "check_classes",
    "check_modality",
    "edited_region",
    "guess_axes",
    "image_channels",
]

#: Largest mean difference between colour channels (in 8-bit units) of an image still called grey.
GREY_TOLERANCE = 2.0
#: Modalities whose images are colour by nature; a grey model of these takes colour images.
COLOUR_MODALITIES = ("h&e", "brightfield", "histology", "rgb", "colour", "color")


def guess_axes(shape: tuple[int, ...], axes: str | None) -> str:
    if axes is not None:
        axes = axes.upper()
        if len(axes) != len(shape) or set(axes) - set("ZCYX") or len(set(axes)) != len(axes):
            raise TrainingDataError(
                f"Axes {axes!r} do not fit an image of shape {shape}; use the letters Z, C, Y, "
                "X, one per axis (for example 'ZYX' or 'YXC')."
            )
        return axes
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        return "YXC" if shape[-1] in (3, 4) else "ZYX"
    if len(shape) == 4 and shape[-1] in (3, 4):
        return "ZYXC"
    raise TrainingDataError(
        f"Cannot tell the axes of an image of shape {shape}; give them (for example 'ZYX')."
    )


# ----------------------------------------------------------------------------- input checks


def image_channels(image: Any, axes: str | None) -> tuple[int, bool]:
    """Colour channels of an image and whether it is truly coloured (not R = G = B).

    Returns
    -------
    channels : int
        1 for grey, 3 or 4 for RGB(A).
    coloured : bool
        False for grey images and for RGB copies of grey ones.
    """
    data = image.data if hasattr(image, "axes") and hasattr(image, "data") else image
    axes = guess_axes(tuple(data.shape), axes or getattr(image, "axes", None))
    if "C" not in axes:
        return 1, False
    c = axes.index("C")
    channels = int(data.shape[c])
    if channels not in (3, 4):
        return channels, False
    moved = np.moveaxis(np.asarray(data), c, -1)
    flat = moved.reshape(-1, channels)[:, :3]
    step = max(1, flat.shape[0] // 200_000)
    sample = flat[::step].astype(np.float32)
    if data.dtype.kind == "f" and np.nanmax(np.abs(sample)) <= 1.0:
        sample = sample * 255.0
    spread = float(np.mean(sample.max(axis=1) - sample.min(axis=1)))
    return channels, spread > GREY_TOLERANCE


def check_modality(model: SegmentationModel, image: Any, axes: str | None = None) -> None:
    """Refuse, before any training, an image of another kind than the model was made for.

    A colour (RGB) image given to a grey model of a grey modality (EM,
    fluorescence), or a grey image given to a colour model: prediction would
    convert it silently, but adapting or fine-tuning on it would teach the
    model a different kind of image. RGB copies of grey images pass, and so do
    grey models of colour modalities (brightfield, H&E), whose training data were
    made grey the same way.

    Raises
    ------
    TrainingDataError
        Saying which model takes which kind of image, and what to do.
    """
    channels, coloured = image_channels(image, axes)
    modality = (model.card.modality or "").lower()
    colour_kind = any(word in modality for word in COLOUR_MODALITIES)
    wanted = model.in_channels // (2 * int(model.card.context_slices or 0) + 1)
    what = f"{model.name!r} ({model.card.modality or 'no modality given'})"
    if wanted == 1 and coloured and not colour_kind:
        raise TrainingDataError(
            f"The image is in colour (RGB) but the model {what} takes greyscale images: adapting "
            "it to a colour image would teach it another modality. Pick a model made for this "
            "kind of image (an RGB one such as gland-he for H&E), or make the image grey first "
            "if it really is a grey image saved in colour."
        )
    if wanted == 3 and channels == 1 and colour_kind:
        raise TrainingDataError(
            f"The image is greyscale but the model {what} takes colour (RGB) images: adapting it "
            "to a grey image would teach it another modality. Pick a greyscale model, or open "
            "the colour image itself."
        )


def check_annotation(labels: Any, annotated: Any = None) -> int:
    """Refuse empty or single-class annotations at once, before anything is prepared.

    Parameters
    ----------
    labels : array-like of int
        Object ids, 0 = background.
    annotated : array-like of bool, optional
        The pixels that count; by default every pixel of the slices (or the
        image) holding any label.

    Returns
    -------
    int
        The number of annotated pixels.

    Raises
    ------
    TrainingDataError
        No annotated pixel, no object, or no background among the annotated pixels.
    """
    labels = np.asarray(labels)
    if annotated is None:
        if labels.ndim == 3:
            painted = (labels.reshape(labels.shape[0], -1) != 0).any(axis=1)
            mask = np.zeros(labels.shape, bool)
            mask[painted] = True
        else:
            mask = np.full(labels.shape, bool(np.any(labels)))
    else:
        mask = np.asarray(annotated, bool)
        if mask.shape != labels.shape:
            raise TrainingDataError(
                f"The annotated region is shaped {mask.shape} but the labels are {labels.shape}."
            )
    count = int(mask.sum())
    if count == 0:
        raise TrainingDataError(
            "The labels have no annotated pixels. Paint or correct objects on at least one "
            "slice first."
        )
    objects = int(np.count_nonzero(labels[mask]))
    if objects == 0:
        raise TrainingDataError(
            "The annotated region contains no object, only background: paint at least one "
            "object (ideally several)."
        )
    if objects == count:
        raise TrainingDataError(
            "Every annotated pixel belongs to an object, so the annotation has a single "
            "class: the model would learn that everything is foreground. Leave the background "
            "unpainted (label 0) around the objects."
        )
    return count


def check_classes(summary: dict[str, Any]) -> None:
    """Refuse annotations whose annotated pixels are all of one class.

    Parameters
    ----------
    summary : dict
        :attr:`~.data.PreparedData.summary`, with ``pixels_per_class``.

    Raises
    ------
    TrainingDataError
        When only one class has annotated pixels: the model would learn that
        every pixel is that class.
    """
    counts = summary.get("pixels_per_class") or {}
    present = [name for name, count in counts.items() if count > 0]
    if len(present) < 2:
        only = present[0] if present else "none"
        raise TrainingDataError(
            f"Every annotated pixel is of one class ({only!r}): the model would learn that "
            "everything is that class. Annotate some pixels of the other class(es) too (leave "
            "background unpainted inside an annotated slice, or include background in the "
            "annotated region)."
        )


# ----------------------------------------------------------------------------- partial corrections

#: Pixels around the edited objects that count as annotated too: the context a user looked at
#: while correcting (the background next to a fixed object is known to be background).
EDIT_MARGIN = 16


def edited_region(before: Any, after: Any, *, margin: int = EDIT_MARGIN) -> np.ndarray:
    """The annotated region of a partial correction: every touched object plus a margin.

    A user who fixed a few objects of a segmentation knows those objects (and the
    background right around them), not the rest of the slice, which may still
    hold the model's mistakes. The region is every pixel whose label changed,
    grown to the whole of every object it touched (its old and its new id), then
    by ``margin`` pixels in the plane (each slice of a stack on its own).

    Parameters
    ----------
    before : (Y, X) or (Z, Y, X) array-like of int
        The labels as the model made them.
    after : array-like of int, same shape
        The corrected labels.
    margin : int
        Pixels added around the touched objects.

    Returns
    -------
    ndarray of bool, the labels' shape
        True where the corrected labels count for training (all False: nothing edited).

    Raises
    ------
    TrainingDataError
        When the two label images differ in shape.

    Examples
    --------
    >>> before = np.zeros((1, 9), int); before[0, 2:4] = 1
    >>> after = before.copy(); after[0, 6] = 2
    >>> edited_region(before, after, margin=1).astype(int)
    array([[0, 0, 0, 0, 0, 1, 1, 1, 0]])
    """
    from scipy import ndimage as ndi

    old, new = np.asarray(before), np.asarray(after)
    if old.shape != new.shape:
        raise TrainingDataError(
            f"The corrected labels are shaped {new.shape} but the labels they correct are "
            f"{old.shape}; compare labels of the same image."
        )
    changed = old != new
    region = np.zeros(old.shape, bool)
    stack = old.ndim == 3
    for z in range(old.shape[0]) if stack else [None]:
        index = (z,) if stack else ()
        touched = changed[index]
        if not touched.any():
            continue
        plane = touched.copy()
        for labels in (old[index], new[index]):
            ids = np.unique(labels[touched])
            ids = ids[ids != 0]
            if ids.size:
                plane |= np.isin(labels, ids)
        if margin > 0:
            # A square neighbourhood: the margin is the same along rows, columns and diagonals.
            plane = ndi.binary_dilation(plane, np.ones((3, 3), bool), iterations=int(margin))
        region[index] = plane
    return region
