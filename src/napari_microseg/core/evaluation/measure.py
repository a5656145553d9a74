"""Per-object measurements in physical units, and a summary of a label image.

Built on :func:`skimage.measure.regionprops_table` with its ``spacing``
argument, so anisotropic voxels (FIB-SEM, confocal stacks) are measured right.
Every column name carries its unit; the per-object table and its summary (count,
total and mean size) are written as CSV files whose header rows mark them as ours
(:func:`is_measurements_header`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path

#: Channel suffixes of the intensity columns of a colour image (RGB, RGBA).
COLOUR_CHANNELS = {3: "rgb", 4: "rgba"}


def measure_objects(
    labels: np.ndarray,
    *,
    intensity: np.ndarray | None = None,
    scale: tuple[float, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Measure every object of a 2D or 3D label image.

    Every column name ends with its unit (``um``, ``um2``, ``um3``, or ``px``...
    without a voxel size); the intensity columns are in the image's own values and
    ``eccentricity`` has no unit.

    Parameters
    ----------
    labels : (M, N) or (P, M, N) ndarray of int
        Object ids, 0 for background.
    intensity : (M, N[, C]) or (P, M, N[, C]) ndarray, optional
        An image of the same spatial shape, with an optional trailing channel axis;
        adds mean, min and max intensity per object, per channel for several channels.
    scale : tuple of float, optional
        Pixel (voxel) size in µm per axis; 1 (pixel units) when omitted.

    Returns
    -------
    dict of str to ndarray
        One entry per column, one value per object: ``label``; ``area_um2`` (2D) or
        ``volume_um3`` (3D); ``centroid_<axis>_um``; ``bbox_min_<axis>_px`` and
        ``bbox_max_<axis>_px`` (pixel indices, max exclusive); ``equivalent_diameter_um``;
        with an intensity image ``mean/min/max_intensity``, or one column per channel
        for several channels (``mean_intensity_r``, ``_g``, ``_b`` for RGB, ``_c0``,
        ``_c1``... otherwise); and in 2D ``perimeter_um`` and ``eccentricity``. Units
        are ``px`` when ``scale`` is None; the perimeter is ``perimeter_px`` on
        pixels that are not square.
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
        properties += ["eccentricity"]
    channels: list[str] = []
    if intensity is not None:
        intensity = np.asarray(intensity)
        if intensity.shape[:ndim] != labels.shape or intensity.ndim > ndim + 1:
            raise ValueError(
                f"The intensity image {intensity.shape} does not match the labels {labels.shape}."
            )
        if intensity.ndim == ndim + 1:
            n = intensity.shape[-1]
            channels = [f"_{c}" for c in COLOUR_CHANNELS.get(n, [f"c{i}" for i in range(n)])]
        properties += ["intensity_mean", "intensity_min", "intensity_max"]
    ids = labels.astype(np.int64, copy=False)
    table = regionprops_table(
        ids,
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
        # Pixel indices whatever the voxel size, so the box can crop the array.
        columns[f"bbox_min_{axis.lower()}_px"] = table[f"bbox-{i}"]
        columns[f"bbox_max_{axis.lower()}_px"] = table[f"bbox-{i + ndim}"]
    columns[f"equivalent_diameter_{unit}"] = table["equivalent_diameter_area"]
    if ndim == 2:
        # A perimeter scales to µm on square pixels only (scikit-image refuses others,
        # even by a rounding error); on other pixels it stays in pixels, as its name says.
        perimeter = regionprops_table(ids, properties=["perimeter"])["perimeter"]
        if math.isclose(spacing[0], spacing[1], rel_tol=1e-6):
            columns[f"perimeter_{unit}"] = perimeter * spacing[0]
        else:
            columns["perimeter_px"] = perimeter
        columns["eccentricity"] = table["eccentricity"]
    if intensity is not None:
        for stat in ("mean", "min", "max"):
            if not channels:
                columns[f"{stat}_intensity"] = table[f"intensity_{stat}"]
            for i, suffix in enumerate(channels):
                columns[f"{stat}_intensity{suffix}"] = table[f"intensity_{stat}-{i}"]
    return columns


def summarize(columns: dict[str, np.ndarray]) -> dict[str, Any]:
    """Object count and total and mean size from :func:`measure_objects` columns.

    Examples
    --------
    >>> summarize({"label": np.array([1, 2]), "area_um2": np.array([1.0, 3.0])})
    {'objects': 2, 'total_area_um2': 4.0, 'mean_area_um2': 2.0}
    """
    size_key = next(k for k in columns if k.startswith(("area_", "volume_")))
    sizes = np.asarray(columns[size_key], float)
    return {
        "objects": int(sizes.size),
        f"total_{size_key}": float(sizes.sum()),
        f"mean_{size_key}": float(sizes.mean()) if sizes.size else 0.0,
    }


def measurements_csv(columns: dict[str, np.ndarray]) -> str:
    """The columns as CSV text, one row per object."""
    return _csv_text(list(columns), zip(*columns.values()))


def summary_csv(summary: dict[str, Any]) -> str:
    """A :func:`summarize` result as CSV text: its header row and one row of values.

    Examples
    --------
    >>> summary_csv({"objects": 2, "total_area_um2": 4.0, "mean_area_um2": 2.0})
    'objects,total_area_um2,mean_area_um2\\n2,4,2\\n'
    """
    return _csv_text(list(summary), [summary.values()])


def summary_path_for(table: str | os.PathLike) -> Path:
    """Where the summary of the measurement table ``table`` goes: ``<table>_summary.csv``.

    Examples
    --------
    >>> summary_path_for("out/objects.csv").as_posix()
    'out/objects_summary.csv'
    """
    table = Path(table)
    return table.with_name(f"{table.stem}_summary.csv")


def is_measurements_header(header: str) -> bool:
    """True for the header row of a table :func:`measurements_csv` or :func:`summary_csv` wrote.

    Examples
    --------
    >>> is_measurements_header("label,area_um2,centroid_y_um,equivalent_diameter_um")
    True
    >>> is_measurements_header("objects,total_volume_um3,mean_volume_um3")
    True
    >>> is_measurements_header("label,class")
    False
    """
    names = header.split(",")
    if names[0] == "objects":
        return len(names) == 3 and names[1].startswith(("total_area_", "total_volume_"))
    return names[0] == "label" and any(n.startswith("equivalent_diameter_") for n in names)


def write_measurements(
    path: str | os.PathLike, columns: dict[str, np.ndarray], *, overwrite: bool = True
) -> Path:
    """Write the measurement table to CSV atomically."""
    return _write_text(path, measurements_csv(columns), overwrite=overwrite)


def write_summary(
    path: str | os.PathLike, summary: dict[str, Any], *, overwrite: bool = True
) -> Path:
    """Write a :func:`summarize` result to CSV atomically."""
    return _write_text(path, summary_csv(summary), overwrite=overwrite)


def _write_text(path: str | os.PathLike, text: str, *, overwrite: bool) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _csv_text(names: list[str], rows: Iterable[Iterable[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_format(v) for v in row])
    return buffer.getvalue()


def _format(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)
