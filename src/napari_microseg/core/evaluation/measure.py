"""Per-object measurements in physical units, and a summary of a label image.

Built on :func:`skimage.measure.regionprops_table` with its ``spacing``
argument, so anisotropic voxels (FIB-SEM, confocal stacks) are measured right.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path


def measure_objects(
    labels: np.ndarray,
    *,
    intensity: np.ndarray | None = None,
    scale: tuple[float, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Measure every object of a 2D or 3D label image.

    Parameters
    ----------
    labels : (M, N) or (P, M, N) ndarray of int
        Object ids, 0 for background.
    intensity : ndarray, optional
        An image of the same spatial shape (a trailing RGB axis is allowed); adds
        mean, min and max intensity per object.
    scale : tuple of float, optional
        Pixel (voxel) size in µm per axis; 1 (pixel units) when omitted.

    Returns
    -------
    dict of str to ndarray
        One entry per column, one value per object: ``label``; ``area_um2`` (2D) or
        ``volume_um3`` (3D); ``centroid_<axis>_um``; ``bbox_min_<axis>`` and
        ``bbox_max_<axis>`` (pixels, max exclusive); ``equivalent_diameter_um``;
        ``mean/min/max_intensity`` with an intensity image; and in 2D
        ``perimeter_um`` and ``eccentricity``. Units say "px" when ``scale`` is None.
    """
    from skimage.measure import regionprops_table

    labels = np.asarray(labels)
    ndim = labels.ndim
    if ndim not in (2, 3):
        raise ValueError(f"Measurements need a 2D or 3D label image, not {ndim}D.")
    spacing = tuple(float(s) for s in scale) if scale is not None else (1.0,) * ndim
    if len(spacing) != ndim:
        raise ValueError(f"The voxel size {spacing} has {len(spacing)} values for {ndim}D labels.")
    unit = "um" if scale is not None else "px"
    properties = ["label", "area", "centroid", "bbox", "equivalent_diameter_area"]
    if ndim == 2:
        properties += ["perimeter", "eccentricity"]
    if intensity is not None:
        intensity = np.asarray(intensity)
        if intensity.shape[:ndim] != labels.shape:
            raise ValueError(
                f"The intensity image {intensity.shape} does not match the labels {labels.shape}."
            )
        properties += ["intensity_mean", "intensity_min", "intensity_max"]
    table = regionprops_table(
        labels.astype(np.int64, copy=False),
        intensity_image=intensity,
        properties=properties,
        spacing=spacing,
    )
    axes = "ZYX"[-ndim:]
    columns: dict[str, np.ndarray] = {"label": table["label"]}
    size_name = f"area_{unit}2" if ndim == 2 else f"volume_{unit}3"
    columns[size_name] = table["area"]
    for i, axis in enumerate(axes):
        columns[f"centroid_{axis.lower()}_{unit}"] = table[f"centroid-{i}"]
    for i, axis in enumerate(axes):
        columns[f"bbox_min_{axis.lower()}"] = table[f"bbox-{i}"]
        columns[f"bbox_max_{axis.lower()}"] = table[f"bbox-{i + ndim}"]
    columns[f"equivalent_diameter_{unit}"] = table["equivalent_diameter_area"]
    if ndim == 2:
        columns[f"perimeter_{unit}"] = table["perimeter"]
        columns["eccentricity"] = table["eccentricity"]
    if intensity is not None:
        for stat in ("mean", "min", "max"):
            keys = [k for k in table if k.startswith(f"intensity_{stat}")]
            # RGB intensities come per channel; report their average.
            columns[f"{stat}_intensity"] = np.mean([table[k] for k in keys], axis=0)
    return columns


def summarize(columns: dict[str, np.ndarray]) -> dict[str, Any]:
    """Object count and total and mean size from :func:`measure_objects` columns."""
    size_key = next(k for k in columns if k.startswith(("area_", "volume_")))
    sizes = np.asarray(columns[size_key], float)
    return {
        "objects": int(sizes.size),
        f"total_{size_key}": float(sizes.sum()),
        f"mean_{size_key}": float(sizes.mean()) if sizes.size else 0.0,
    }


def measurements_csv(columns: dict[str, np.ndarray]) -> str:
    """The columns as CSV text, one row per object."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = list(columns)
    writer.writerow(names)
    for row in zip(*(columns[n] for n in names)):
        writer.writerow([_format(v) for v in row])
    return buffer.getvalue()


def is_measurements_header(header: str) -> bool:
    """True for the header row of a table :func:`measurements_csv` wrote.

    Examples
    --------
    >>> is_measurements_header("label,area_um2,centroid_y_um,equivalent_diameter_um")
    True
    >>> is_measurements_header("label,class")
    False
    """
    names = header.split(",")
    return names[0] == "label" and any(n.startswith("equivalent_diameter_") for n in names)


def write_measurements(
    path: str | os.PathLike, columns: dict[str, np.ndarray], *, overwrite: bool = True
) -> Path:
    """Write the measurement table to CSV atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(measurements_csv(columns), encoding="utf-8")
    return Path(path)


def _format(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)
