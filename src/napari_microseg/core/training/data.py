"""Training data from (image, labels) pairs: annotated planes, targets and a validation split.

Sparse annotation is the normal case: a user corrects two slices of a stack,
or paints part of one image. Only what was annotated counts:

* the annotated slices of a stack are found automatically (the slices whose
  labels are not empty), or given explicitly;
* within them every pixel counts (unpainted pixels are background), unless an
  explicit annotated-region mask says which pixels are known;
* everything else is ignored by the losses.

Each annotated slice (or 2D image) becomes a :class:`Plane`: the image
normalized as the model card says (once over the whole image or volume, as
inference does), its object ids, its class targets for the model and its
annotated mask. :func:`~.split.split_validation` then holds part of the
annotation out for validation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..inference.denoise import apply_smoothing, session_noise
from ..inference.illumination import apply_flat_field
from ..inference.job import match_channels
from ..inference.normalize import fit_normalizer, intensity_quantiles
from ..inference.resample import nearest_planes, resample_plan, resample_plane_job
from ..models.base import SegmentationModel
from ..progress import drain
from .targets import class_targets, instance_ids


class TrainingDataError(ValueError):
    """The training data cannot be used as given; the message says why and what to do."""


#: Above this many resampled images, one note says it for all of them.
MAX_RESAMPLING_NOTES = 3


@dataclass
class TrainingPair:
    """One image with its labels, as given by the user.

    Parameters
    ----------
    image : array-like
        2D (``YX``, ``YXC``, ``CYX``) or a stack (``ZYX``, ``ZYXC``, ``ZCYX``).
    labels : array-like of int
        Object ids (or class ids for multi-class models), 0 = background; the
        image's shape without its channel axis.
    annotated : array-like of bool, optional
        True where the labels are known; by default every pixel of every
        annotated slice.
    axes : str, optional
        Axis letters of ``image``; guessed from the two shapes when omitted.
    slices : sequence of int, optional
        Annotated slices of a stack; found automatically when omitted.
    name : str
        For messages and the lineage record.
    spacing : sequence of float, optional
        Voxel size in µm per spatial axis (the axes without ``C``). When it and
        the model's pixel size are known and far apart, the planes are resampled
        in Y and X to the model's pixel size, as prediction resamples them
        (:func:`~napari_microseg.core.inference.resample.resample_plan`), so the
        model learns the images as it will see them.
    """

    image: Any
    labels: Any
    annotated: Any = None
    axes: str | None = None
    slices: Sequence[int] | None = None
    name: str = ""
    spacing: Sequence[float] | None = None


@dataclass
class Plane:
    """One annotated 2D plane, ready for training.

    Attributes
    ----------
    image : (C, H, W) ndarray of float32
        Normalized input, C = the model's input channels.
    instances : (H, W) ndarray of int32
        One id per object, 0 = background.
    target : (H, W) ndarray of uint8
        Class index per pixel for the model.
    annotated : (H, W) ndarray of bool
        Pixels whose labels count.
    name : str
        ``"<pair name> z=12"``.
    source : int
        Index of the training pair it comes from.
    z : int or None
        Its slice in that pair's stack; None for a 2D image.
    zoom : (float, float) or None
        Y and X factors by which the image's plane was resampled to the model's
        pixel size (so row ``r`` here is row ``r / zoom[0]`` of the image);
        None when it was not.
    """

    image: np.ndarray
    instances: np.ndarray
    target: np.ndarray
    annotated: np.ndarray
    name: str = ""
    source: int = 0
    z: int | None = None
    zoom: tuple[float, float] | None = None
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.annotated.shape  # type: ignore[return-value]


@dataclass
class Region:
    """The part of a plane used for training or for validation.

    Attributes
    ----------
    plane : Plane
    mask : (H, W) ndarray of bool
        The plane's annotated pixels that belong to this part.
    """

    plane: Plane
    mask: np.ndarray

    @property
    def pixels(self) -> int:
        return int(self.mask.sum())

    @property
    def objects(self) -> int:
        """Objects with at least one pixel in this region."""
        ids = np.unique(self.plane.instances[self.mask])
        return int(np.count_nonzero(ids))

    def bbox(self, margin: int = 0) -> tuple[slice, slice]:
        """Bounding box of the mask grown by ``margin`` pixels, clipped to the plane."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        height, width = self.mask.shape
        return (
            slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, height)),
            slice(max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, width)),
        )


@dataclass
class PreparedData:
    """The planes of all pairs, with a fingerprint of the data and notes for the user.

    Attributes
    ----------
    planes : list of Plane
    data_hash : str
        SHA-256 of the raw image planes, labels and annotated masks used.
    summary : dict
        Planes, annotated pixels, objects, pixels per class, slices per pair.
    notes : list of str
        Warnings worth showing (a single annotated object...).
    """

    planes: list[Plane]
    data_hash: str
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- annotation


def annotated_slices(labels: Any, *, annotated: Any = None) -> list[int]:
    """Indices of the annotated slices of a label stack ``(Z, Y, X)``.

    Parameters
    ----------
    labels : (Z, Y, X) array-like
        A slice is annotated when any of its labels is non-zero.
    annotated : (Z, Y, X) array-like of bool, optional
        When given, a slice is annotated when any of its pixels is marked.

    Returns
    -------
    list of int

    Examples
    --------
    >>> labels = np.zeros((5, 4, 4), np.uint8)
    >>> labels[1, 0, 0] = labels[3, 2, 2] = 7
    >>> annotated_slices(labels)
    [1, 3]
    """
    source = np.asarray(annotated if annotated is not None else labels)
    if source.ndim < 3:
        raise ValueError(f"annotated_slices takes a stack (Z, Y, X), got shape {source.shape}.")
    flat = source.reshape(source.shape[0], -1)
    return [int(z) for z in np.flatnonzero((flat != 0).any(axis=1))]


def parse_slices(text: str | Sequence[int] | None) -> list[int] | None:
    """``"3,10-12"`` -> ``[3, 10, 11, 12]``; a list passes; None or ``""`` gives None."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if not isinstance(text, str):
        return [int(v) for v in text]
    values: list[int] = []
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        start, dash, stop = part.partition("-")
        try:
            values.extend(range(int(start), int(stop) + 1) if dash else [int(start)])
        except ValueError as error:
            raise TrainingDataError(
                f"Cannot read the slice list {text!r}: use numbers and ranges like 3,10-12."
            ) from error
    return values


# ----------------------------------------------------------------------------- layout


def _layout(
    image_shape: tuple[int, ...], labels_shape: tuple[int, ...], axes: str | None, name: str
) -> str:
    """The image's axes (letters from ZCYX), checked against the labels' shape."""
    if axes is not None:
        axes = axes.upper()
        if len(axes) != len(image_shape) or set(axes) - set("ZCYX") or len(set(axes)) != len(axes):
            raise TrainingDataError(
                f"{name}: axes {axes!r} do not fit an image of shape {image_shape}; use the "
                "letters Z, C, Y, X, one per axis (for example 'ZYX' or 'YXC')."
            )
    elif image_shape == labels_shape:
        axes = "YX" if len(image_shape) == 2 else "ZYX" if len(image_shape) == 3 else None
    elif len(image_shape) == len(labels_shape) + 1 and image_shape[:-1] == labels_shape:
        axes = {2: "YXC", 3: "ZYXC"}.get(len(labels_shape))
    elif len(image_shape) == len(labels_shape) + 1 and image_shape[1:] == labels_shape:
        axes = {2: "CYX", 3: "CZYX"}.get(len(labels_shape))
    if axes is None:
        raise TrainingDataError(
            f"{name}: the labels are shaped {labels_shape} but the image is {image_shape}. They "
            "must cover the same pixels (the image may have one extra colour or channel axis). "
            "Check that the labels belong to this image."
        )
    spatial = tuple(n for a, n in zip(axes, image_shape) if a != "C")
    if spatial != labels_shape:
        raise TrainingDataError(
            f"{name}: the labels are shaped {labels_shape} but the image ({axes}) is "
            f"{image_shape}; their Y and X (and Z) sizes must match. Check that the labels "
            "belong to this image."
        )
    return axes


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise TrainingDataError(
                f"{name}: the labels hold fractional values; they must be integer object "
                "ids (or class ids). Use a labels layer, not a probability image."
            )
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iu":
        raise TrainingDataError(f"{name}: labels of type {labels.dtype} are not object ids.")
    if labels.size and labels.min() < 0:
        raise TrainingDataError(f"{name}: the labels hold negative values; ids must be >= 0.")
    return labels


# ----------------------------------------------------------------------------- preparation


def prepare(
    pairs: Sequence[TrainingPair],
    model: SegmentationModel,
    *,
    boundary_width: int = 1,
) -> PreparedData:
    """Turn the user's pairs into annotated planes for ``model``.

    Parameters
    ----------
    pairs : sequence of TrainingPair
    model : SegmentationModel
        Its card gives the input channels, normalization, classes and context slices.
    boundary_width : int
        Width of the boundary class for background / foreground / boundary models.

    Returns
    -------
    PreparedData

    Raises
    ------
    TrainingDataError
        For mismatched shapes, unusable labels, slices out of range, no annotated
        pixel at all, or no object in the annotated region.
    ModelError
        When the image's channels do not match the model's input.
    """
    card = model.card
    context = int(card.context_slices or 0)
    planes: list[Plane] = []
    digest = hashlib.sha256()
    per_pair: list[dict[str, Any]] = []
    notices: list[str] = []
    resampled: list[str] = []
    for number, pair in enumerate(pairs):
        name = pair.name or f"image {number + 1}"
        image = (
            pair.image.data
            if hasattr(pair.image, "axes") and hasattr(pair.image, "data")
            else pair.image
        )
        axes = pair.axes or (pair.image.axes if hasattr(pair.image, "axes") else None)
        image = np.asarray(image) if not hasattr(image, "shape") else image
        labels = _check_labels(np.asarray(getattr(pair.labels, "data", pair.labels)), name)
        axes = _layout(tuple(image.shape), tuple(labels.shape), axes, name)
        # Colour to grey (or back) exactly as prediction does, so a model learns what it sees.
        image, axes, notice = match_channels(image, axes, card)
        if notice and notice not in notices:
            notices.append(notice)
        channel_axis = axes.index("C") if "C" in axes else None
        channels = int(image.shape[channel_axis]) if channel_axis is not None else 1
        model.check_channels(channels * (2 * context + 1), image_name=name)
        annotated = None
        if pair.annotated is not None:
            annotated = np.asarray(getattr(pair.annotated, "data", pair.annotated)).astype(bool)
            if annotated.shape != labels.shape:
                raise TrainingDataError(
                    f"{name}: the annotated-region mask is shaped {annotated.shape} but the "
                    f"labels are {labels.shape}."
                )
        stack = "Z" in axes
        chosen = _chosen_slices(labels, annotated, pair.slices, stack, name)
        plan = resample_plan(card.pixel_size_um, pair.spacing, axes, tuple(image.shape))
        size = None if plan is None else (plan.shape[plan.y_axis], plan.shape[plan.x_axis])
        if plan is not None and card.pixel_size_um is not None:
            resampled.append(f"{name}: {plan.describe(float(card.pixel_size_um))}")
        # A model adapted with a flat field learns from corrected planes, as it will predict.
        image = apply_flat_field(image, axes, card.normalization, lazy=True)
        # ... and a model adapted to a noisy session learns from smoothed planes, likewise,
        # blurred as much in the model's pixels as prediction (which resamples, then smooths).
        zoom = None if plan is None else plan.factor
        image = apply_smoothing(image, axes, card.normalization, lazy=True, zoom=zoom)
        normalizer = fit_normalizer(image, card.normalization, channel_axis=channel_axis)
        # (Z, C, Y, X) view of the image, without reading it.
        order = [axes.index(a) for a in "ZCYX" if a in axes]
        view = (
            np.transpose(image, order) if isinstance(image, np.ndarray) else image.transpose(order)
        )
        if channel_axis is None:
            view = view[:, None] if stack else view[None]
        if not stack:
            view = view[None]
        label_stack = labels if stack else labels[None]
        mask_stack = None if annotated is None else (annotated if stack else annotated[None])
        for z in chosen:
            raw = np.asarray(view[z])
            image_plane = _with_context(view, z, context, normalizer, raw)
            if not (
                np.isfinite(image_plane).all() and (raw.dtype.kind != "f" or np.isfinite(raw).all())
            ):
                # Caught here, before training, rather than as a loss of NaN many steps later.
                where = f"{name} (slice {z})" if stack else name
                raise TrainingDataError(
                    f"{where}: the image holds NaN or infinite values (a damaged file or a "
                    "failed conversion); fix or replace it and train again."
                )
            plane_labels = np.asarray(label_stack[z])
            plane_mask = (
                np.ones(plane_labels.shape, bool) if mask_stack is None else mask_stack[z].copy()
            )
            if size is not None:
                image_plane = drain(resample_plane_job(image_plane, 1, 2, size), show=False)
                plane_labels = nearest_planes(plane_labels, 0, 1, size)
                plane_mask = nearest_planes(plane_mask, 0, 1, size)
            instances = instance_ids(plane_labels)
            target = class_targets(
                plane_labels, card.classes, instances=instances, boundary_width=boundary_width
            )
            small = instances.max(initial=0) < 2**16
            planes.append(
                Plane(
                    image=image_plane,
                    instances=instances.astype(np.uint16 if small else np.int32),
                    target=target,
                    annotated=plane_mask,
                    name=f"{name} z={z}" if stack else name,
                    source=number,
                    z=int(z) if stack else None,
                    zoom=zoom,
                )
            )
            if size is not None:  # the same pixels at another pixel size are other data
                digest.update(str(size).encode())
            for part in (raw, plane_labels, np.packbits(plane_mask)):
                digest.update(str((part.shape, part.dtype.str)).encode())
                digest.update(np.ascontiguousarray(part).tobytes())
        per_pair.append(
            {
                "name": name,
                "axes": axes,
                "shape": list(image.shape),
                "slices": chosen if stack else None,
                "resampled": None if plan is None else [round(f, 4) for f in plan.factor],
            }
        )
    notices.extend(resampling_notes(resampled, len(pairs)))
    return _finish(planes, digest.hexdigest(), per_pair, model, notices)


def resampling_notes(resampled: list[str], total: int) -> list[str]:
    """What was resampled, one note per image for a few, one note in all for many.

    A data set of 85 images at another pixel size than the model's would
    otherwise print 85 lines and fill the model's lineage with them.
    """
    if len(resampled) <= MAX_RESAMPLING_NOTES:
        return list(resampled)
    return [
        f"{len(resampled)} of {total} images resampled to the model's pixel size, as "
        f"prediction will; the first: {resampled[0]}"
    ]


def _chosen_slices(
    labels: np.ndarray,
    annotated: np.ndarray | None,
    slices: Sequence[int] | None,
    stack: bool,
    name: str,
) -> list[int]:
    if not stack:
        if slices not in (None, [], [0], (0,)):
            raise TrainingDataError(f"{name} is a 2D image; it has no slices to choose.")
        source = annotated if annotated is not None else labels
        return [0] if np.any(source) else []
    depth = labels.shape[0]
    if slices is not None:
        chosen = sorted({int(z) for z in slices})
        bad = [z for z in chosen if not 0 <= z < depth]
        if bad:
            raise TrainingDataError(
                f"{name}: slice(s) {', '.join(map(str, bad))} are outside the stack, whose "
                f"slices are 0 to {depth - 1}."
            )
        return chosen
    return annotated_slices(labels, annotated=annotated)


def _with_context(view: Any, z: int, context: int, normalizer: Any, raw: np.ndarray) -> np.ndarray:
    """The plane's normalized channels, with ``context`` neighbours each side for 2.5D models.

    Neighbours are ordered from ``-context`` to ``+context`` and the stack's ends
    repeat, exactly as inference reads them.
    """
    plane = normalizer(raw, channel_axis=0)
    if not context:
        return np.ascontiguousarray(plane, dtype=np.float32)
    depth = view.shape[0]
    parts = [
        normalizer(np.asarray(view[min(max(z + dz, 0), depth - 1)]), channel_axis=0)
        if dz
        else plane
        for dz in range(-context, context + 1)
    ]
    return np.ascontiguousarray(np.concatenate(parts, axis=0), dtype=np.float32)


def _finish(
    planes: list[Plane],
    data_hash: str,
    per_pair: list[dict[str, Any]],
    model: SegmentationModel,
    notes: list[str],
) -> PreparedData:
    annotated_px = sum(int(p.annotated.sum()) for p in planes)
    if not planes or annotated_px == 0:
        raise TrainingDataError(
            "The labels have no annotated pixels. Paint or correct objects on at least one "
            "slice (every pixel of a painted slice counts, unpainted ones as background), or "
            "name the annotated slices explicitly."
        )
    objects = sum(int(np.count_nonzero(np.unique(p.instances[p.annotated]))) for p in planes)
    if objects == 0:
        raise TrainingDataError(
            "The annotated region contains no object, only background: the model would learn "
            "to find nothing. Paint at least one object (ideally several) in the annotated "
            "slices."
        )
    n_classes = max(model.n_classes, 2)
    counts = np.zeros(n_classes, np.int64)
    for p in planes:
        counts += np.bincount(p.target[p.annotated].astype(np.int64), minlength=n_classes)[
            :n_classes
        ]
    names = list(model.classes) if model.n_classes > 1 else ["background", *model.classes]
    notes = list(notes)
    if objects == 1:
        notes.append(
            "Only one object is annotated: the model learns from a single example and the "
            "validation part may hold no object, so its score says little. Annotate a few "
            "more objects for a reliable fine-tune."
        )
    summary = {
        "planes": len(planes),
        "annotated_pixels": annotated_px,
        "objects": objects,
        "pixels_per_class": {str(n): int(c) for n, c in zip(names, counts)},
        "images": per_pair,
    }
    return PreparedData(planes, data_hash, summary, notes)


def input_reference(planes: Sequence[Plane], max_samples: int = 2_000_000) -> list[float]:
    """Quantiles 0-100 % of the normalized inputs of ``planes`` (a model's intensity reference).

    Stored in a trained model's card (``normalization["reference"]``) so that
    images of another session can later be matched to what the model saw
    (:mod:`..inference.normalize`).

    Parameters
    ----------
    planes : sequence of Plane
        Their ``image`` (C, H, W) float32, already normalized.
    max_samples : int
        Values used at most, spread evenly over the planes.

    Returns
    -------
    list of 101 float
    """
    total = sum(p.image.size for p in planes)
    step = max(1, total // max_samples)
    sample = np.concatenate([p.image.ravel()[::step] for p in planes])
    return [float(v) for v in intensity_quantiles(sample)]


def centre_slice(image: np.ndarray, context: int) -> np.ndarray:
    """The channels of the centre slice of a (C, H, W) model input.

    A 2.5D model (``context`` neighbouring slices on each side) stacks ``2 *
    context + 1`` slices in its channels; measuring their noise together would
    hide it, since averaging slices averages their noise away.
    """
    channels = image.shape[0] // (2 * context + 1)
    return image[context * channels : (context + 1) * channels]


def input_noise(planes: Sequence[Plane], context: int = 0) -> float | None:
    """The median noise level of ``planes`` (:func:`~..inference.denoise.noise_level`).

    Stored in a trained model's card (``normalization["noise"]``): a session at
    least :data:`~..inference.denoise.NOISY_RATIO` times as noisy is smoothed.

    Parameters
    ----------
    planes : sequence of Plane
        Their ``image`` (C, H, W), normalized.
    context : int
        Neighbouring slices on each side stacked in the channels (2.5D models);
        only the centre slice's channels are measured (:func:`centre_slice`).

    Returns
    -------
    float or None
        None when no plane can tell (all constant).
    """
    level = session_noise(centre_slice(plane.image, context) for plane in planes)
    return None if level is None else round(level, 6)


def with_input_reference(data: PreparedData, model: SegmentationModel) -> SegmentationModel:
    """``model``, its card now recording the intensity and noise references of ``data``.

    The intensity reference lets images of another session be matched to what
    the model saw (``normalization["match"]``), the noise level tells a noisy
    session (:mod:`..inference.denoise`). Each is recorded only where the card
    has none: a fine-tune of a model that has them keeps them, since its inputs
    were matched (or smoothed) towards them.
    """
    spec = dict(model.card.normalization)
    if "reference" not in spec and spec.get("kind") != "none":
        spec["reference"] = input_reference(data.planes)
    if "noise" not in spec and spec.get("kind") != "none":
        level = input_noise(data.planes, int(model.card.context_slices or 0))
        if level is not None:
            spec["noise"] = level
    model.card.normalization = spec
    return model
