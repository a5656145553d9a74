"""Checks that an array can be shown, segmented or saved as labels, with clear messages."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Axis letters we use: T time, Z depth, C channel, Y rows, X columns.
KNOWN_AXES = "TZCYX"


class ImageValidationError(ValueError):
    """An array cannot be used as an image; the message says what to do."""


def validate_image(data: Any, axes: str | None = None, *, name: str = "The image") -> None:
    """Check that an array can be shown and segmented; raise a clear error if not.

    Parameters
    ----------
    data : array-like
        The pixels.
    axes : str, optional
        One letter per axis. Without it, arrays of more than 4 axes are refused
        because their meaning cannot be guessed.
    name : str
        How to call the array in messages.

    Raises
    ------
    ImageValidationError
        For an empty array, an array with too many or unnamed axes, a
        non-numeric or complex array, or a float image made only of NaN or
        infinite values.
    """
    shape = tuple(getattr(data, "shape", ()))
    if len(shape) < 2:
        raise ImageValidationError(
            f"{name} has {len(shape)} dimension(s); an image needs at least 2 (Y and X)."
        )
    if 0 in shape:
        raise ImageValidationError(f"{name} is empty (shape {shape}); there is nothing to show.")
    if axes is None and len(shape) > 4:
        raise ImageValidationError(
            f"{name} has {len(shape)} dimensions {shape} and no axis names. Give its axes "
            "(for example axes='TZCYX') or pick one time point and channel first."
        )
    if axes is not None:
        if len(axes) != len(shape):
            raise ImageValidationError(
                f"{name} has shape {shape} but axes {axes!r} name {len(axes)} axes."
            )
        unknown = set(axes) - set(KNOWN_AXES)
        if unknown or len(set(axes)) != len(axes):
            raise ImageValidationError(
                f"{name} has axes {axes!r}; use each of the letters {KNOWN_AXES} at most once."
            )
    dtype = np.dtype(getattr(data, "dtype", np.float64))
    if np.issubdtype(dtype, np.complexfloating):
        raise ImageValidationError(
            f"{name} holds complex values ({dtype}); complex images are not supported; take "
            "abs() (the magnitude) or .real of the array, or export the magnitude, first."
        )
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise ImageValidationError(f"{name} holds {dtype} values, not numbers.")
    if np.issubdtype(dtype, np.floating) and isinstance(data, np.ndarray):
        if not np.isfinite(data).any():
            raise ImageValidationError(
                f"{name} contains only NaN or infinite values; there is no signal to show or "
                "segment. Check the export settings of the acquisition software."
            )


def finite_range(data: np.ndarray) -> tuple[float, float]:
    """Min and max over the finite values, for contrast limits; (0, 1) when constant."""
    values = np.asarray(data)
    if np.issubdtype(values.dtype, np.floating):
        values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    if high <= low:
        high = low + 1.0
    return low, high


def label_dtype(labels: np.ndarray) -> np.dtype:
    """The unsigned dtype that holds every id of ``labels`` exactly.

    uint8 input stays uint8; anything else becomes uint16 when the ids fit,
    otherwise uint32, otherwise uint64.
    """
    labels = np.asarray(labels)
    if labels.dtype in (np.dtype(bool), np.dtype(np.uint8)):
        return np.dtype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ImageValidationError(
            f"Label images hold integer object ids, not {labels.dtype} values. "
            "Threshold or round the image into integer labels first."
        )
    if labels.size and labels.min() < 0:
        raise ImageValidationError("Label ids must be >= 0 (0 is background); found negative ids.")
    top = int(labels.max()) if labels.size else 0
    for dtype in (np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)
