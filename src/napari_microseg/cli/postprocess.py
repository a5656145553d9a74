"""``microseg postprocess``: turn probability maps into label images, in batch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: argparse destination -> PostprocessPipeline field, for options given on the command line.
_FIELDS = {
    "method": "method",
    "threshold": "threshold",
    "low": "low",
    "high": "high",
    "foreground_class": "foreground_class",
    "boundary_class": "boundary_class",
    "markers": "markers",
    "h": "h",
    "min_distance": "min_distance",
    "compactness": "compactness",
    "opening": "opening_radius",
    "closing": "closing_radius",
    "fill_holes": "fill_holes",
    "max_hole_size": "max_hole_size",
    "min_size": "min_size",
    "physical_units": "physical_units",
    "connectivity": "connectivity",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "postprocess",
        help="turn probability maps into label images (otsu, hysteresis, watershed, cleanup)",
        description="Threshold probability maps (TIFF, (Y,X) or (Z,Y,X) in [0, 1], or a (K,...) "
        "class stack with --class), split touching objects, clean up, and write label TIFFs "
        "(uint16, or uint32 beyond 65535 objects) that keep the voxel size. Settings come "
        "from the options, from --pipeline (a saved pipeline or a model card's recommended "
        "post-processing), or both (options win).",
    )
    parser.add_argument("prob", type=Path, nargs="+", metavar="PROB", help="probability TIFF(s)")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output labels file (one PROB) or folder (several PROB: NAME_labels.tif)",
    )
    parser.add_argument(
        "--method",
        choices=["otsu", "threshold", "hysteresis", "watershed"],
        help="otsu (default), threshold (fixed, needs --threshold), hysteresis, watershed",
    )
    parser.add_argument("--threshold", type=float, help="fixed threshold (default: Otsu's)")
    parser.add_argument("--low", type=float, help="hysteresis low threshold (default: Otsu's)")
    parser.add_argument(
        "--high", type=float, help="hysteresis high threshold (default: halfway to the maximum)"
    )
    parser.add_argument(
        "--class",
        dest="foreground_class",
        type=int,
        metavar="K",
        help="PROB is a (K, ...) class stack; use class K as foreground",
    )
    parser.add_argument(
        "--boundary-class", type=int, metavar="B", help="boundary class of the stack (watershed)"
    )
    parser.add_argument("--markers", choices=["distance", "probability"], help="watershed markers")
    parser.add_argument("--h", type=float, help="watershed h-maxima height")
    parser.add_argument("--min-distance", type=int, help="watershed: peaks this far apart (px)")
    parser.add_argument("--compactness", type=float, help="compact watershed (> 0)")
    parser.add_argument("--opening", type=float, metavar="R", help="binary opening radius")
    parser.add_argument("--closing", type=float, metavar="R", help="binary closing radius")
    parser.add_argument(
        "--fill-holes", action="store_const", const=True, help="fill holes inside objects"
    )
    parser.add_argument("--max-hole-size", type=float, metavar="S", help="fill holes up to S")
    parser.add_argument("--min-size", type=float, metavar="S", help="remove objects below S")
    parser.add_argument(
        "--physical-units",
        action="store_const",
        const=True,
        help="sizes and radii in µm (µm², µm³), using the file's voxel size",
    )
    parser.add_argument("--connectivity", type=int, help="1 (faces, default) to ndim (corners)")
    parser.add_argument(
        "--pipeline", type=Path, metavar="JSON", help="start from a saved pipeline or model card"
    )
    parser.add_argument(
        "--save-pipeline", type=Path, metavar="JSON", help="also save the settings used as JSON"
    )
    from . import add_overwrite_argument

    add_overwrite_argument(parser)
    parser.set_defaults(func=run)


def build_pipeline(args: argparse.Namespace) -> Any:
    """The pipeline from ``--pipeline`` (if any) with the given options on top."""
    from ..core.postprocess import PostprocessPipeline
    from . import CommandError

    base: dict[str, Any] = {}
    if args.pipeline is not None:
        try:
            stored = json.loads(args.pipeline.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise CommandError(f"Cannot read the pipeline {args.pipeline}: {error}") from error
        if isinstance(stored, dict) and "recommended" in stored:  # a model card
            stored = stored["recommended"].get("postprocess")
            if not stored:
                raise CommandError(f"The model card {args.pipeline} recommends no post-processing.")
        if not isinstance(stored, dict):
            raise CommandError(f"{args.pipeline} holds no post-processing pipeline.")
        base = stored
    given = {field: getattr(args, dest) for dest, field in _FIELDS.items()}
    given = {k: v for k, v in given.items() if v is not None}
    if "threshold" in given and "method" not in given and "method" not in base:
        given["method"] = "threshold"  # --threshold alone means a fixed threshold
    return PostprocessPipeline.from_dict({**base, **given})


def run(args: argparse.Namespace) -> int:
    from ..core.io.atomic import atomic_write_text
    from ..core.io.outputs import Output, check_outputs
    from ..core.io.writers import write_labels
    from . import CommandError

    pipeline = build_pipeline(args)
    stack = args.foreground_class is not None or args.boundary_class is not None
    stack = stack or pipeline.boundary_class is not None
    folder = len(args.prob) > 1 or args.out.is_dir()
    if folder:
        targets = [args.out / f"{_stem(p)}_labels.tif" for p in args.prob]
    else:
        if args.out.suffix.lower() not in (".tif", ".tiff"):
            raise CommandError(f"--out {args.out} must be a .tif file (or a folder).")
        targets = [args.out]
    outputs = [Output(t, "--out", str(p)) for p, t in zip(args.prob, targets)]
    if args.save_pipeline is not None:
        outputs.append(Output(args.save_pipeline, "--save-pipeline"))
    inputs = [*args.prob, *([args.pipeline] if args.pipeline is not None else [])]
    check_outputs(outputs, inputs, overwrite=args.overwrite)
    if folder:
        args.out.mkdir(parents=True, exist_ok=True)
    for source, target in zip(args.prob, targets):
        prob, class_axis, axes, scale = _read_probabilities(source, stack=stack)
        try:
            used = pipeline.resolve(prob, class_axis=class_axis)  # Otsu once, reported below
            labels = used.run(prob, class_axis=class_axis, spacing=scale)
        except ValueError as error:
            raise CommandError(f"{source.name}: {error}") from error
        write_labels(target, labels, scale=scale, axes=axes)
        print(f"{source.name}: {int(labels.max())} objects ({used.describe()}) -> {target}")
    if args.save_pipeline is not None:
        atomic_write_text(args.save_pipeline, json.dumps(pipeline.to_dict(), indent=2) + "\n")
        print(f"Wrote {args.save_pipeline}")
    return 0


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _read_probabilities(
    path: Path, *, stack: bool
) -> tuple[Any, int | None, str, tuple[float, ...] | None]:
    """The map, its class axis (stacks), its spatial axes and voxel size in µm."""
    import numpy as np

    from ..core.io.images import imread
    from . import CommandError

    image = imread(path)
    data, axes, scale = np.asarray(image.data), image.axes, image.scale
    if "T" in axes:
        raise CommandError(f"{path.name} has a time axis ({axes}); post-process one time point.")
    class_axis = None
    if stack:
        class_axis = axes.index("C") if "C" in axes else 0
        letter = axes[class_axis]
        if letter != "C" and scale is not None:
            scale = scale[1:]  # the first axis was read as Z; it holds classes
        axes = axes.replace(letter, "", 1)
        axes = {2: "YX", 3: "ZYX"}.get(len(axes), axes)
    elif "C" in axes:
        raise CommandError(
            f"{path.name} has {data.shape[axes.index('C')]} channels ({axes}); pass --class K "
            "to pick the foreground class of a class-probability stack."
        )
    if len(axes) not in (2, 3):
        raise CommandError(
            f"{path.name} has shape {data.shape}; expected (Y,X), (Z,Y,X) or a (K,...) stack "
            "with --class."
        )
    if scale is not None and len(scale) != len(axes):
        scale = None
    return data, class_axis, axes, scale
