"""Export of a label image and its measurements as one cancellable job.

The job writes the labels (TIFF, PNG or OME-Zarr), then measures every object
and writes the per-object CSV and the summary CSV (count, total and mean size).
Each file is written atomically, so cancelling or a failure (a full disk, a
folder that became unwritable) leaves either the complete new file or the
previous one, never a partial file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.image_data import is_ome_image
from ..io.ome_labels import write_ome_labels
from ..io.writers import write_labels
from ..progress import Job, Progress
from .measure import measure_objects, summarize, write_measurements, write_summary

LABEL_FORMATS = {"TIFF": ".tif", "PNG": ".png", "OME-Zarr": ".ome.zarr"}


@dataclass
class ExportResult:
    """What an export wrote."""

    files: list[Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def export_job(
    labels: np.ndarray,
    labels_path: str | Path | None,
    *,
    scale: tuple[float, ...] | None = None,
    csv_path: str | Path | None = None,
    summary_path: str | Path | None = None,
    intensity: np.ndarray | None = None,
) -> Job[ExportResult]:
    """Write labels and/or measurements; a generator yielding :class:`Progress`.

    Parameters
    ----------
    labels : (M, N) or (P, M, N) ndarray of int
        The label image.
    labels_path : path-like or None
        ``.tif``/``.tiff``, ``.png`` or ``.zarr`` destination, or
        ``<image>.ome.zarr/labels/<name>`` to add the labels to that OME-Zarr image
        (NGFF layout, see :mod:`..io.ome_labels`); None to skip.
    scale : tuple of float, optional
        Voxel size in µm, kept in the files and used for the measurements.
    csv_path : path-like, optional
        Where to write the per-object measurements.
    summary_path : path-like, optional
        Where to write the summary: object count, total and mean size.
    intensity : ndarray, optional
        Image whose intensities are measured per object.

    Returns
    -------
    ExportResult
        The files written and the summary (count, total and mean size).
    """
    labels = np.asarray(labels)
    steps = 1 + sum(p is not None for p in (labels_path, csv_path, summary_path))
    result = ExportResult()
    done = 0
    if labels_path is not None:
        yield Progress(done, steps, "writing labels")
        path = Path(labels_path)
        in_image = path.parent.name == "labels" and is_ome_image(path.parent.parent)
        if path.name.lower().endswith(".zarr") or in_image:
            written = write_ome_labels(path, labels, axes="ZYX"[-labels.ndim :], scale=scale)
        else:
            written = write_labels(path, labels, scale=scale)
        result.files.append(written)
        done += 1
    yield Progress(done, steps, "measuring objects")
    columns = measure_objects(labels, intensity=intensity, scale=scale)
    result.summary = summarize(columns)
    done += 1
    if csv_path is not None:
        yield Progress(done, steps, "writing measurements")
        result.files.append(write_measurements(csv_path, columns))
        done += 1
    if summary_path is not None:
        yield Progress(done, steps, "writing the summary")
        result.files.append(write_summary(summary_path, result.summary))
        done += 1
    yield Progress(steps, steps, "done")
    return result
