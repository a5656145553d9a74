"""``microseg measure``: one CSV row per object, in physical units, and a summary file.

Examples
--------
::

    microseg measure labels.tif --out objects.csv                  # + objects_summary.csv
    microseg measure labels.tif --image stack.tif --out objects.csv --voxel-size 0.05,0.005,0.005
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``measure`` sub-command."""
    parser = subparsers.add_parser(
        "measure",
        help="measure every object of a label image (size, position, shape, intensity) to CSV",
        description="Write one CSV row per object of a 2D or 3D label image: area (2D) or "
        "volume (3D), centroid, bounding box, equivalent diameter, perimeter and eccentricity "
        "(2D), and the mean/min/max intensity of --image (per channel for colour images). "
        "Every column name ends with its unit: um, um2, um3 from the voxel size, or px when "
        "no voxel size is known. A summary file (object count, total and mean size) is "
        "written beside it. Masks (0/1, 0/255 or boolean) count their connected components "
        "as objects.",
    )
    parser.add_argument("labels", type=Path, metavar="LABELS", help="label image (TIFF, PNG, zarr)")
    parser.add_argument(
        "--image", type=Path, metavar="IMG", help="image of the same shape to measure intensities"
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="OUT.csv", help="the per-object table (CSV)"
    )
    parser.add_argument(
        "--summary",
        type=Path,
        metavar="SUMMARY.csv",
        help="the summary: count, total and mean size (default: OUT_summary.csv)",
    )
    parser.add_argument(
        "--voxel-size",
        metavar="[Z,]Y,X",
        help="voxel size in µm, one value per axis (default: the file's own, from LABELS, "
        "else IMG)",
    )
    from . import add_overwrite_argument

    add_overwrite_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core.evaluation.contingency import as_instances, is_binary
    from ..core.evaluation.export import export_job
    from ..core.evaluation.measure import is_measurements_header, summary_path_for
    from ..core.io.outputs import Output, check_outputs
    from ..core.progress import drain
    from . import CommandError
    from .evaluate import read_labels

    summary_path = args.summary or summary_path_for(args.out)
    inputs = [p for p in (args.labels, args.image) if p is not None]
    outputs = [
        Output(args.out, "--out", csv_header=is_measurements_header),
        Output(summary_path, "--summary", csv_header=is_measurements_header),
    ]
    check_outputs(outputs, inputs, overwrite=args.overwrite)
    labels, scale = read_labels(args.labels, "LABELS")
    if labels.dtype != bool and not np.issubdtype(labels.dtype, np.integer):
        raise CommandError(
            f"LABELS {args.labels.name} holds {labels.dtype} values, not object ids; make a "
            "label image first (microseg postprocess) or save the labels as integers."
        )
    if is_binary(labels) and int(labels.max(initial=0)) in (1, 255):
        # A mask (0/1, 0/255, boolean): its objects are its connected components. Other
        # images keep their ids, even with one object, so rows match the ids in the file.
        labels = as_instances(labels, name=f"LABELS {args.labels.name}")
    intensity, image_scale = _read_intensity(args.image, labels.shape)
    if args.voxel_size is not None:
        scale = _parse_voxel_size(args.voxel_size, labels.ndim)
    elif scale is None:
        scale = image_scale
    if scale is not None and len(scale) != labels.ndim:
        scale = None  # the file's voxel size does not describe these axes
    job = export_job(
        labels, None, scale=scale, csv_path=args.out, summary_path=summary_path, intensity=intensity
    )
    result = drain(job)
    print(", ".join(f"{key}: {value:.6g}" for key, value in result.summary.items()))
    if scale is None:
        print("Sizes are in pixels: no voxel size is known for LABELS (--voxel-size gives µm).")
    print("Wrote " + ", ".join(str(p) for p in result.files))
    return 0


def _read_intensity(
    path: Path | None, shape: tuple[int, ...]
) -> tuple[Any, tuple[float, ...] | None]:
    """The image to measure, channels last, and its voxel size; (None, None) without one."""
    if path is None:
        return None, None
    import numpy as np

    from ..core.io.images import imread
    from . import CommandError

    image = imread(path)
    if "T" in image.axes:
        raise CommandError(
            f"--image {path.name} has axes {image.axes}; measure one time point at a time."
        )
    data = np.asarray(image.data)
    if "C" in image.axes:
        data = np.moveaxis(data, image.axes.index("C"), -1)
    spatial = data.shape[: len(shape)]
    if spatial != shape or data.ndim > len(shape) + 1:
        raise CommandError(
            f"--image {path.name} has shape {data.shape} (axes {image.axes}) but LABELS has "
            f"shape {shape}; give the image the labels were made from."
        )
    return data, image.scale


def _parse_voxel_size(text: str, ndim: int) -> tuple[float, ...]:
    from . import CommandError

    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != ndim or not all(v > 0 for v in values):
        axes = "Z,Y,X" if ndim == 3 else "Y,X"
        raise CommandError(
            f"--voxel-size {text!r} must be {ndim} positive numbers in µm ({axes}) for these "
            f"{ndim}D labels, e.g. {','.join(['0.005'] * ndim)}."
        )
    return values
