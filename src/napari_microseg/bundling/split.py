"""The validation split a training run used, rebuilt with the training code itself.

The data set is read by :func:`~.datasets.load_dataset` with the training
config's data settings, prepared by :func:`~napari_microseg.core.training.data.prepare`, and split
by :func:`~napari_microseg.core.training.split.split_validation` with the settings recorded in the
model's lineage. Two checks prove it is the same split: the prepared data's
hash equals the lineage's ``data_sha256``, and the split's description equals
the lineage's ``validation`` text. A data set with its own validation part
(Lucchi's ``val_images.tif`` / ``val_masks.tif``) is used as given, as training
did. Used by :mod:`.bundling`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.models.base import SegmentationModel
from ..core.training.split import image_span

if TYPE_CHECKING:
    from ..core.training.data import TrainingPair
    from ..core.training.datasets import Dataset


class BundleError(ValueError):
    """A model cannot be evaluated or bundled as asked; the message says why and what to do."""


@dataclass
class ValidationItem:
    """One held-out image (or stack) with its ground truth.

    Attributes
    ----------
    name : str
        File stem for its prediction and truth files.
    image : ndarray
        Raw pixels as the data set gives them (model input channels).
    axes : str
        ``"YX"``, ``"YXC"`` or ``"ZYX"``.
    truth : ndarray of int
        Object ids or a 0/1 mask, the image's spatial shape.
    """

    name: str
    image: np.ndarray
    axes: str
    truth: np.ndarray


@dataclass
class ValidationSplit:
    """The validation part of a training run's data, ready to predict.

    Attributes
    ----------
    kind : str
        Data set layout.
    items : list of ValidationItem
    description : str
        Where the items come from, for the card's ``metrics["data"]``.
    dataset : Dataset
        The data set read (its training pairs included).
    pixel_size_um : float or None
        Pixel size of the data set.
    training_regions : list of Region
        The annotated regions training learned from (empty when the data set
        has its own validation part and nothing was held out for tuning: then
        all of ``dataset.pairs`` trained).
    tuning_regions : list of Region
        Training planes held out from training for choosing post-processing
        (the lineage's ``tune_fraction``); empty when none were.
    """

    kind: str
    items: list[ValidationItem]
    description: str
    dataset: Dataset
    pixel_size_um: float | None = None
    notes: list[str] = field(default_factory=list)
    training_regions: list[Any] = field(default_factory=list)
    tuning_regions: list[Any] = field(default_factory=list)

    @property
    def pixels(self) -> int:
        """Spatial pixels over all items."""
        return int(sum(item.truth.size for item in self.items))


# ----------------------------------------------------------------------------- the split


def _lineage(model: SegmentationModel) -> dict[str, Any]:
    lineage = model.card.lineage
    if not isinstance(lineage, dict) or "settings" not in lineage or "data_sha256" not in lineage:
        raise BundleError(
            f"Model {model.name!r} has no training record (lineage with settings and data hash); "
            "only models trained by `microseg train` can be bundled."
        )
    return lineage


def load_training_data(
    data: str | os.PathLike,
    *,
    config: dict[str, Any] | None = None,
    kind: str | None = None,
    limit: int | None = None,
) -> Dataset:
    """Read the data set as training read it (the config's ``data`` section, then overrides)."""
    from ..core.training.datasets import load_dataset

    data_cfg = dict((config or {}).get("data") or {})
    if limit is None:
        limit = data_cfg.get("limit")
    return load_dataset(
        Path(data),
        kind=kind or data_cfg.get("kind"),
        split=data_cfg.get("split"),
        limit=limit,
        target=data_cfg.get("target"),
        grey=bool(data_cfg.get("grey", False)),
    )


def validation_split(
    model: SegmentationModel,
    data: str | os.PathLike,
    *,
    config: dict[str, Any] | None = None,
    kind: str | None = None,
    limit: int | None = None,
) -> ValidationSplit:
    """The validation part of the data ``model`` was trained on, exactly as training chose it.

    Parameters
    ----------
    model : SegmentationModel
        A model saved by ``microseg train`` (its lineage records the settings,
        the data hash and the split).
    data : path-like
        The data set folder used for training.
    config : dict, optional
        The training config (its ``data`` section: kind, split, limit, target, grey).
    kind : str, optional
        Data set layout, overriding the config's.
    limit : int, optional
        The ``--limit`` training was run with, if any.

    Returns
    -------
    ValidationSplit

    Raises
    ------
    BundleError
        When the data or the split differ from the ones training used.
    """
    from ..core.training.data import prepare
    from ..core.training.settings import TrainSettings
    from ..core.training.split import split_validation
    from .downsample import as_trained

    lineage = _lineage(model)
    model = as_trained(model)  # a network that resamples itself learnt from resampled data
    settings = TrainSettings.from_dict(
        {k: v for k, v in lineage["settings"].items() if k != "extra"}
    )
    dataset = load_training_data(data, config=config, kind=kind, limit=limit)
    prepared = prepare(dataset.pairs, model, boundary_width=settings.boundary_width)
    if prepared.data_hash != lineage["data_sha256"]:
        raise BundleError(
            f"The data read from {data} are not the data {model.name!r} was trained on (data "
            f"hash {prepared.data_hash[:12]} vs {lineage['data_sha256'][:12]} in its lineage). "
            "Give the same --data folder, config and --limit as the training run."
        )
    train_regions: list[Any] = []
    if dataset.validation:
        items = [_whole_item(pair) for pair in dataset.validation]
        val_data = prepare(dataset.validation, model, boundary_width=settings.boundary_width)
        split_text = f"{len(val_data.planes)} validation plane(s) given separately"
        names = ", ".join(f"{p.name} {np.asarray(p.image).shape}" for p in dataset.validation)
        description = f"the data set's own validation part ({names})"
    else:
        train_regions, val_regions, split_text = split_validation(
            prepared.planes, fraction=settings.val_fraction
        )
        lookup = _plane_lookup(dataset.pairs)
        items = [_region_item(region, lookup) for region in val_regions]
        description = "held-out part of the training data as training chose it"
    tuning_regions: list[Any] = []
    if settings.tune_fraction:
        from ..core.training.data import Region
        from ..core.training.split import split_tuning

        if dataset.validation:
            train_regions = [Region(plane, plane.annotated) for plane in prepared.planes]
        train_regions, tuning_regions, split_text = split_tuning(
            train_regions, fraction=settings.tune_fraction, validation=split_text
        )
    if not dataset.validation:
        description = f"{description}: {split_text}"
    if split_text != lineage.get("validation"):
        raise BundleError(
            f"The validation split rebuilt from the data ({split_text!r}) differs from the one "
            f"recorded when {model.name!r} was trained ({lineage.get('validation')!r}); check "
            "--data, the config and --limit."
        )
    return ValidationSplit(
        kind=dataset.kind,
        items=items,
        description=f"{dataset.description}: {description}",
        dataset=dataset,
        pixel_size_um=dataset.pixel_size_um,
        training_regions=train_regions,
        tuning_regions=tuning_regions,
    )


def training_items(split: ValidationSplit, count: int, *, seed: int = 0) -> list[ValidationItem]:
    """Up to ``count`` images training learned from, for choosing post-processing.

    Thresholds chosen on these never see the validation labels, so the
    validation score stays an honest estimate.

    Parameters
    ----------
    split : ValidationSplit
        From :func:`validation_split`.
    count : int
        How many to draw (all of them when there are fewer).
    seed : int
        The draw's random seed.

    Returns
    -------
    list of ValidationItem
        Training images (or annotated rectangles of them) with their labels.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}.")
    rng = np.random.default_rng(seed)
    if split.training_regions:
        lookup = _plane_lookup(split.dataset.pairs)
        regions = split.training_regions
        picks = sorted(rng.choice(len(regions), min(count, len(regions)), replace=False))
        return [_region_item(regions[i], lookup) for i in picks]
    pairs = split.dataset.pairs
    picks = sorted(rng.choice(len(pairs), min(count, len(pairs)), replace=False))
    return [_whole_item(pairs[i]) for i in picks]


def tuning_items(split: ValidationSplit) -> list[ValidationItem]:
    """The images held out from training for choosing post-processing.

    Parameters
    ----------
    split : ValidationSplit
        From :func:`validation_split`.

    Returns
    -------
    list of ValidationItem
        Empty when the run held none out (its lineage's ``tune_fraction`` is 0).
    """
    lookup = _plane_lookup(split.dataset.pairs)
    return [_region_item(region, lookup) for region in split.tuning_regions]


def _safe_stem(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "image"


def _pair_axes(pair: TrainingPair) -> str:
    image = np.asarray(pair.image)
    if pair.axes:
        return pair.axes.upper()
    return "YXC" if image.ndim == 3 and image.shape[-1] in (3, 4) else "YX"


def _whole_item(pair: TrainingPair) -> ValidationItem:
    return ValidationItem(
        name=_safe_stem(pair.name),
        image=np.asarray(pair.image),
        axes=_pair_axes(pair),
        truth=np.asarray(pair.labels),
    )


def _plane_lookup(pairs: list[TrainingPair]) -> dict[str, tuple[TrainingPair, int | None]]:
    """Plane name -> (pair, slice), named as
    :func:`~napari_microseg.core.training.data.prepare` names them."""
    lookup: dict[str, tuple[TrainingPair, int | None]] = {}
    for number, pair in enumerate(pairs):
        name = pair.name or f"image {number + 1}"
        axes = _pair_axes(pair)
        if "Z" in axes:
            depth = np.asarray(pair.image).shape[axes.index("Z")]
            lookup.update({f"{name} z={z}": (pair, z) for z in range(depth)})
        else:
            lookup[name] = (pair, None)
    return lookup


def _unzoomed(part: slice, factor: float, trained: int, whole: int) -> slice:
    """A slice of a resampled plane (``trained`` long) on the image's axis (``whole`` long).

    A slice that reaches the plane's end reaches the image's: rounding the plane's
    length must not cut the image's last row.
    """
    start, stop = image_span(part.start, part.stop, factor)
    return slice(min(start, whole), whole if part.stop == trained else min(stop, whole))


def _region_item(region: Any, lookup: dict[str, tuple[TrainingPair, int | None]]) -> ValidationItem:
    plane = region.plane
    if plane.name not in lookup:
        raise BundleError(f"Cannot find the image of the validation plane {plane.name!r}.")
    pair, z = lookup[plane.name]
    axes = _pair_axes(pair)
    image, labels = np.asarray(pair.image), np.asarray(pair.labels)
    if z is not None:
        image = np.take(image, z, axis=axes.index("Z"))
        labels = labels[z]
        axes = axes.replace("Z", "")
    box = region.bbox()
    if not region.mask[box].all():
        raise BundleError(
            f"The validation part of {plane.name!r} is not a rectangle; it cannot be evaluated "
            "as an image of its own."
        )
    if plane.zoom is not None:  # training resampled the plane: back to the image's pixels
        box = tuple(
            _unzoomed(part, factor, trained, whole)
            for part, factor, trained, whole in zip(
                box, plane.zoom, region.mask.shape, labels.shape[-2:]
            )
        )
    y, x = axes.index("Y"), axes.index("X")
    index: list[Any] = [slice(None)] * image.ndim
    index[y], index[x] = box
    suffix = (
        ""
        if box == (slice(0, labels.shape[0]), slice(0, labels.shape[1]))
        else (f"_y{box[0].start}-{box[0].stop}_x{box[1].start}-{box[1].stop}")
    )
    return ValidationItem(
        name=_safe_stem(plane.name) + suffix,
        image=image[tuple(index)],
        axes=axes,
        truth=labels[box],
    )
