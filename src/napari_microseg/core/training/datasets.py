"""Read the public benchmark data sets into training pairs, from wherever they lie.

Four layouts are known (the folder is always given by the caller; nothing is
copied into the project):

``lucchi``
    EPFL hippocampus mitochondria (FIB-SEM), Lucchi++ labels:
    ``train_images.tif`` / ``train_masks.tif`` and ``val_images.tif`` /
    ``val_masks.tif``, stacks (Z, Y, X) of uint8, masks 0/255.
``isbi2012``
    ISBI 2012 EM membranes: ``train_images.tif`` / ``train_labels.tif``, labels
    0 = membrane, 255 = cell interior.
``glas``
    GlaS 2015 glands (H&E): ``images/<name>.png`` (RGB), ``labels/<name>.tif``
    (instance ids) and ``index.csv`` with a ``split`` column.
``dsb2018``
    Data Science Bowl 2018 nuclei: ``images/<id>.png`` (RGB; grey images have
    R = G = B), ``labels/<id>.tif`` (instance ids) and ``index.csv``.

Examples
--------
>>> data = load_dataset("/path/to/lucchi", limit=4)  # doctest: +SKIP
>>> data.kind, len(data.pairs), data.validation is not None  # doctest: +SKIP
('lucchi', 1, True)
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .data import TrainingDataError, TrainingPair

#: Data set kinds and the files that identify them.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "lucchi": ("train_images.tif", "train_masks.tif"),
    "isbi2012": ("train_images.tif", "train_labels.tif"),
    "glas": ("images", "labels", "index.csv"),
    "dsb2018": ("images", "labels", "index.csv"),
}
#: Voxel sizes (Z, Y, X) and pixel sizes in µm, as the data sets' sources give them: a
#: model trained at another pixel size (a config's ``pixel_size_um``) resamples from these.
LUCCHI_SPACING_UM = (0.005, 0.005, 0.005)
ISBI_SPACING_UM = (0.05, 0.004, 0.004)
GLAS_PIXEL_UM = 0.62


@dataclass
class Dataset:
    """Training (and, when the data set has them, validation) pairs of one data set.

    Attributes
    ----------
    kind : str
        A key of :data:`LAYOUTS`.
    path : Path
        The folder read.
    pairs : list of TrainingPair
        Training pairs.
    validation : list of TrainingPair or None
        The data set's own validation split, if it has one.
    pixel_size_um : float or None
        Pixel size in µm, when the data set documents it.
    modality : str
        ``"EM"``, ``"H&E"``, ``"fluorescence / brightfield"``.
    description : str
        One line for logs and the model card's ``trained_on``.
    """

    kind: str
    path: Path
    pairs: list[TrainingPair]
    validation: list[TrainingPair] | None = None
    pixel_size_um: float | None = None
    modality: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def detect_layout(path: str | os.PathLike) -> str:
    """The layout of the data set folder ``path``; :class:`TrainingDataError` if unknown."""
    folder = Path(path)
    if not folder.is_dir():
        raise TrainingDataError(f"The data folder {folder} does not exist; check --data.")
    names = {p.name for p in folder.iterdir()}
    if {"train_images.tif", "train_masks.tif"} <= names:
        return "lucchi"
    if {"train_images.tif", "train_labels.tif"} <= names:
        return "isbi2012"
    if {"images", "labels", "index.csv"} <= names:
        header = (folder / "index.csv").read_text(encoding="utf-8").splitlines()[:1]
        return "dsb2018" if header and header[0].startswith("image_id") else "glas"
    raise TrainingDataError(
        f"{folder} is not a known data set layout ({', '.join(LAYOUTS)}): expected "
        "train_images.tif with train_masks.tif or train_labels.tif, or images/, labels/ and "
        "index.csv."
    )


def load_dataset(
    path: str | os.PathLike,
    *,
    kind: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    target: str | None = None,
    grey: bool = False,
) -> Dataset:
    """Read a data set folder into training pairs.

    Parameters
    ----------
    path : path-like
        The data set's folder (for example ``shared/data/lucchi``).
    kind : str, optional
        One of :data:`LAYOUTS`; detected from the files when omitted.
    split : str, optional
        Which rows of ``index.csv`` to read (``"train_subset"`` for GlaS,
        ``"train"`` for DSB); every row by default.
    limit : int, optional
        Read at most this many slices (stacks, evenly spread) or images (the first
        ones in ``index.csv`` order), for quick runs.
    target : str, optional
        ISBI 2012 only: ``"membrane"`` (default; membranes are the foreground) or
        ``"cells"`` (cell interiors are the objects).
    grey : bool
        Read RGB images as one grey channel (DSB grey images, 1-channel models).

    Returns
    -------
    Dataset
    """
    folder = Path(path)
    kind = kind or detect_layout(folder)
    if kind not in LAYOUTS:
        raise TrainingDataError(f"Unknown data set kind {kind!r}; known: {', '.join(LAYOUTS)}.")
    missing = [name for name in LAYOUTS[kind] if not (folder / name).exists()]
    if missing:
        raise TrainingDataError(f"{folder} is not a {kind} folder: {', '.join(missing)} missing.")
    if limit is not None and limit < 1:
        raise TrainingDataError(f"limit must be at least 1, got {limit}.")
    if kind == "lucchi":
        return _lucchi(folder, limit)
    if kind == "isbi2012":
        return _isbi(folder, limit, target or "membrane")
    return _indexed(folder, kind, split, limit, grey)


def _read(path: Path) -> np.ndarray:
    """The image or stack in ``path``; a damaged file is a :class:`TrainingDataError` naming it.

    Every file is read (and decoded) here, in the main process, before training
    starts, so a corrupt one stops the run with its name, not in a data
    worker's traceback hours later.
    """
    # The layouts fix the axes (stacks are Z, Y, X), so no guessing: a 3-slice stack read
    # by a general reader could pass for an RGB image.
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            array = np.asarray(tifffile.imread(path))
        else:
            import imageio.v3 as iio

            array = np.asarray(iio.imread(path))
    except FileNotFoundError as error:
        raise TrainingDataError(f"{path} is missing: {error}.") from error
    except MemoryError:
        raise
    # Readers raise many kinds of errors for a damaged file (ValueError, OSError, zlib.error,
    # struct.error, IndexError...): whatever the kind, the user needs the file's name.
    except Exception as error:
        raise TrainingDataError(
            f"Cannot read {path}: {type(error).__name__}: {error}. The file is damaged or not "
            "an image; replace it (or remove it and its row in index.csv) and train again."
        ) from error
    if array.size == 0:
        # A truncated file can decode to nothing without an error.
        raise TrainingDataError(
            f"Cannot read {path}: it holds no pixels. The file is damaged; replace it (or "
            "remove it and its row in index.csv) and train again."
        )
    return array


def _spread(n: int, limit: int | None) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def _stack_pair(images: Path, labels: Path, limit: int | None, name: str) -> TrainingPair:
    image, mask = _read(images), _read(labels)
    picks = _spread(image.shape[0], limit)
    return TrainingPair(
        image[picks],
        (mask[picks] > 0).astype(np.uint8),
        axes="ZYX",
        name=name,
        spacing=LUCCHI_SPACING_UM,
    )


def _lucchi(folder: Path, limit: int | None) -> Dataset:
    train = _stack_pair(
        folder / "train_images.tif", folder / "train_masks.tif", limit, "lucchi train"
    )
    validation = None
    if (folder / "val_images.tif").exists() and (folder / "val_masks.tif").exists():
        val_limit = None if limit is None else max(1, limit // 3)
        validation = [
            _stack_pair(
                folder / "val_images.tif", folder / "val_masks.tif", val_limit, "lucchi val"
            )
        ]
    return Dataset(
        "lucchi",
        folder,
        [train],
        validation,
        pixel_size_um=LUCCHI_SPACING_UM[-1],
        modality="EM",
        description="EPFL hippocampus FIB-SEM (Lucchi++ labels), mitochondria",
    )


def _isbi(folder: Path, limit: int | None, target: str) -> Dataset:
    if target not in ("membrane", "cells"):
        raise TrainingDataError(f"ISBI target must be 'membrane' or 'cells', got {target!r}.")
    image = _read(folder / "train_images.tif")
    labels = _read(folder / "train_labels.tif")
    picks = _spread(image.shape[0], limit)
    # The original polarity: 0 = membrane, 255 = cell interior.
    fg = labels[picks] == 0 if target == "membrane" else labels[picks] > 0
    pair = TrainingPair(
        image[picks],
        fg.astype(np.uint8),
        axes="ZYX",
        name=f"isbi2012 {target}",
        spacing=ISBI_SPACING_UM,
    )
    return Dataset(
        "isbi2012",
        folder,
        [pair],
        None,
        pixel_size_um=ISBI_SPACING_UM[-1],
        modality="EM",
        description=f"ISBI 2012 ssTEM Drosophila VNC, {target}",
    )


def _indexed(folder: Path, kind: str, split: str | None, limit: int | None, grey: bool) -> Dataset:
    key = "image_id" if kind == "dsb2018" else "name"
    with open(folder / "index.csv", newline="", encoding="utf-8") as stream:
        rows = [row for row in csv.DictReader(stream) if split is None or row["split"] == split]
    if not rows:
        raise TrainingDataError(f"{folder}/index.csv has no rows of split {split!r}.")
    rows = rows[:limit] if limit else rows
    pairs = []
    for row in rows:
        name = row[key]
        image = _read(folder / "images" / f"{name}.png")
        if image.ndim == 3 and image.shape[-1] == 4:
            image = image[..., :3]
        if grey and image.ndim == 3:
            image = image.mean(axis=-1).astype(np.float32)
        labels = _read(folder / "labels" / f"{name}.tif")
        pairs.append(
            TrainingPair(
                image,
                labels,
                axes="YXC" if image.ndim == 3 else "YX",
                name=name,
                spacing=(GLAS_PIXEL_UM,) * 2 if kind == "glas" else None,
            )
        )
    if kind == "glas":
        return Dataset(
            "glas",
            folder,
            pairs,
            None,
            pixel_size_um=GLAS_PIXEL_UM,
            modality="H&E",
            description="GlaS 2015 colorectal H&E, glands",
        )
    return Dataset(
        "dsb2018",
        folder,
        pairs,
        None,
        modality="fluorescence / brightfield",
        description="Data Science Bowl 2018 stage1_train, nuclei",
    )


def with_limit(dataset: Dataset, limit: int | None) -> Dataset:
    """The data set with at most ``limit`` training pairs (a quick look at a big one)."""
    if limit is None:
        return dataset
    return replace(dataset, pairs=dataset.pairs[:limit])
