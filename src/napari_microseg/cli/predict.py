"""``microseg predict``: tiled inference on files or folders, then post-processing to labels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .predict_common import check_options, is_zarr, load, prediction_options, with_cli_overrides

#: Post-processing methods of :mod:`napari_microseg.core.postprocess`.
METHODS = ("otsu", "threshold", "hysteresis", "watershed")


def register(subparsers: Any) -> None:
    from ..core.inference.options import DEFAULT_TILE, DEFAULTS
    from ..core.inference.tiling import BLEND_MODES

    parser = subparsers.add_parser(
        "predict",
        help="segment images with a model: tiled inference, then post-processing to labels",
        description="Predict INPUT (an image, several images, or a folder of images) tile by "
        "tile with a model, post-process the probabilities into a label image as the model "
        "card recommends (or as --postprocess says), and write it. The model is loaded once "
        "for all inputs. With several inputs or a folder, --out is a folder and file names are "
        "kept. Every output path is checked before the model loads: an existing file is "
        "replaced only if napari-microseg wrote it and --overwrite is given, never an input.",
    )
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="image(s) or folder")
    parser.add_argument("--model", required=True, help="registry name or model file")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="labels file (.tif, .png, .zarr) for one input, or a folder for several",
    )
    parser.add_argument(
        "--probabilities",
        type=Path,
        metavar="PATH",
        help="also write the (K, ...) probabilities: a .tif or .zarr file for one input "
        "(.zarr streams to disk, for volumes larger than memory), a folder for several",
    )
    parser.add_argument(
        "--tile", type=int, help=f"tile side in pixels (default: model card, {DEFAULT_TILE})"
    )
    parser.add_argument(
        "--overlap",
        type=float,
        help=f"tile overlap in [0, 1) (default: model card, {DEFAULTS.overlap})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="tiles per batch (default: measured to fill a CUDA GPU, 1 on the CPU; halved on "
        "out-of-memory)",
    )
    parser.add_argument(
        "--no-amp",
        dest="amp",
        action="store_false",
        default=None,
        help="predict in float32 (default: mixed precision on CUDA, and on CPUs with native "
        "bfloat16)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="run the network through torch.compile (slow to start; dropped if it fails)",
    )
    parser.add_argument(
        "--blend", choices=BLEND_MODES, default=DEFAULTS.blend, help="tile blending"
    )
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average the 8 flips and rotations, about 8x slower (default: as the model card "
        "recommends; --no-tta turns it off)",
    )
    parser.add_argument(
        "--device", default=DEFAULTS.device, help="auto (default), cpu, cuda, cuda:N, mps"
    )
    parser.add_argument("--axes", help="axis letters of the inputs, e.g. ZYX (needed for 4D/5D)")
    parser.add_argument("--slice-axis", help="3D: cut 2D planes along this axis (default Z)")
    parser.add_argument(
        "--ortho", action="store_true", help="3D: average predictions along Z, Y and X planes"
    )
    parser.add_argument(
        "--postprocess",
        choices=METHODS,
        metavar="METHOD",
        help=f"post-processing ({', '.join(METHODS)}); default: the model card's, else otsu",
    )
    parser.add_argument("--threshold", type=float, help="threshold for --postprocess threshold")
    parser.add_argument(
        "--no-resample",
        dest="resample",
        action="store_false",
        help="predict at the image's own pixel size even when it is far from the one the model "
        "was trained at (default: resample Y and X to the model card's pixel size for the "
        "prediction, results on the image's grid; not done for .zarr probabilities or "
        "block-by-block runs)",
    )
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument(
        "--keep-going",
        dest="keep_going",
        action="store_true",
        help="report an input that fails and go on with the others, then exit with code 1 "
        "(default when an INPUT is a folder)",
    )
    batch.add_argument(
        "--no-keep-going",
        "--fail-fast",
        dest="keep_going",
        action="store_false",
        help="stop at the first input that fails (default for files)",
    )
    from . import add_overwrite_argument
    from .predict_chunked import register_arguments

    add_overwrite_argument(parser)
    register_arguments(parser)
    parser.set_defaults(func=run, keep_going=None)


def run(args: argparse.Namespace) -> int:
    from ..core.inference.segment import recommended_pipeline
    from ..core.io.outputs import check_outputs
    from . import CommandError
    from .predict_chunked import run_chunked, wants_chunked

    inputs = expand_inputs(args.inputs)
    check_options(args)
    if args.axes:
        check_axes(inputs, args.axes)
    if wants_chunked(args, inputs):
        return run_chunked(args, inputs, load)
    folders = any(p.is_dir() and not is_zarr(p) for p in args.inputs)
    several = len(inputs) > 1 or folders
    if several and args.out.suffix:
        raise CommandError(
            f"{len(inputs)} inputs need --out to be a folder, not the file {args.out}."
        )
    plan = [(path, *_outputs_of(path, args, several)) for path in inputs]
    outputs = [output for _, labels, prob in plan for output in (labels, prob) if output]
    # Every path is checked before anything is written and before the model loads.
    check_outputs(outputs, [*args.inputs, *inputs], overwrite=args.overwrite)
    if several:
        args.out.mkdir(parents=True, exist_ok=True)
        if args.probabilities is not None:
            args.probabilities.mkdir(parents=True, exist_ok=True)
    model = load(args.model, args.device)
    print(f"Model {model.name!r} ({model.card.architecture}, {model.task}).")
    if model.task == "instance":
        if args.probabilities is not None:
            raise CommandError("An instance model gives objects, not probabilities; drop it.")
    else:  # a bad --postprocess/--threshold combination fails here, before any inference
        with_cli_overrides(recommended_pipeline(model.card, model.n_classes), args)
    keep_going = folders if args.keep_going is None else args.keep_going
    failed: list[str] = []
    for number, (path, labels, prob) in enumerate(plan, 1):
        print(f"[{number}/{len(inputs)}] {path.name}")
        try:
            predict_one(model, path, labels.path, prob.path if prob else None, args)
        except (CommandError, ValueError, OSError, MemoryError) as error:
            if not keep_going:
                raise
            print(f"  skipped {path}: {error}", file=sys.stderr)
            failed.append(path.name)
    if not failed:
        return 0
    print(
        f"{len(inputs) - len(failed)} of {len(inputs)} images segmented; {len(failed)} skipped "
        f"({', '.join(failed)}): see the messages above, fix those files and run them again.",
        file=sys.stderr,
    )
    return 1


def check_axes(inputs: list[Path], axes: str) -> None:
    """Refuse an ``--axes`` that does not fit an input, in seconds, before the model loads.

    Volumes open lazily (their headers), so this reads no pixels of a TIFF or zarr.
    """
    from ..core.io.volumes import open_volume

    for path in inputs:
        open_volume(path, axes=axes)


def _outputs_of(path: Path, args: argparse.Namespace, several: bool) -> tuple[Any, Any]:
    """The labels and probabilities outputs (or None) of one input."""
    from ..core.io.outputs import Output

    if not several:
        prob = args.probabilities and Output(args.probabilities, "--probabilities")
        return Output(args.out, "--out"), prob
    name = f"{_stem(path)}.tif"
    labels = Output(args.out / name, "--out", str(path))
    prob = args.probabilities and Output(args.probabilities / name, "--probabilities", str(path))
    return labels, prob


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders (other than zarr stores) become their images, in name order."""
    from ..core.io.image_data import IMAGE_SUFFIXES, ZARR_SUFFIXES, natural_key
    from . import CommandError

    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise CommandError(f"{path} does not exist.")
        if path.is_dir() and not is_zarr(path):
            inside = [
                p
                for p in path.iterdir()
                if not p.name.startswith(".")
                and (p.name.lower().endswith(IMAGE_SUFFIXES + ZARR_SUFFIXES) or is_zarr(p))
            ]
            if not inside:
                raise CommandError(f"The folder {path} holds no images (TIFF, PNG, JPEG, zarr).")
            found += sorted(inside, key=lambda p: natural_key(p.name))
        else:
            found.append(path)
    return found


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def predict_one(
    model: Any, path: Path, labels_path: Path, prob_path: Path | None, args: argparse.Namespace
) -> None:
    """Predict one image and write its labels (and probabilities)."""
    from ..core.inference.predict import run_prediction
    from ..core.inference.segment import predict_on_image_grid, resampling_note
    from ..core.inference.stitching import Instances
    from ..core.io.images import describe, imread
    from ..core.io.outputs import staged_store
    from ..core.progress import drain

    image = imread(path, axes=args.axes)
    print(f"  {describe(image)}")
    options = prediction_options(args, model.card)
    factor = None
    streamed = prob_path is not None and prob_path.suffix.lower() == ".zarr"
    if streamed:
        import zarr

        note = resampling_note(model.card, image.scale, image.axes, tuple(image.data.shape))
        if note and getattr(args, "resample", True):
            print("  (not resampled to the model's pixel size: .zarr probabilities stream as is)")
        # A new store replaces the old one only when complete: Ctrl-C keeps a finished result.
        with staged_store(prob_path) as store:
            out = _zarr_probabilities(store, model, image)
            drain(run_prediction(model, image.data, axes=image.axes, out=out, options=options))
        result = zarr.open_array(str(prob_path), mode="r")
    else:
        job = predict_on_image_grid(
            model,
            image.data,
            axes=image.axes,
            options=options,
            spacing=image.scale,
            match_pixel_size=getattr(args, "resample", True),
        )
        result, factor = drain(job)
        if factor is not None:
            print(f"  resampled {factor[1]:.3g}x in Y and X to the model's pixel size and back")
    if isinstance(result, Instances):
        if args.postprocess:
            print("  (--postprocess ignored: an instance model gives objects directly)")
        labels = result.labels
    else:
        if prob_path is not None and not streamed:
            _write_probabilities(prob_path, result, image)
        labels = _postprocess(model, result, image, args, factor)
    _write_labels(labels_path, labels, image)
    print(f"  {int(labels.max())} objects -> {labels_path}")


def _zarr_probabilities(path: Path, model: Any, image: Any) -> Any:
    import zarr

    spatial = image.spatial_axes
    shape = tuple(image.data.shape[i] for i, a in enumerate(image.axes) if a != "C")
    chunks = tuple(min(s, 256 if a in "YX" else 16) for a, s in zip(spatial, shape))
    array = zarr.create_array(
        store=str(path),
        shape=(model.n_classes, *shape),
        chunks=(1, *chunks),
        dtype="float32",
        overwrite=True,
    )
    array.attrs["axes"] = ["c", *spatial.lower()]
    array.attrs["microseg_kind"] = "image"  # our tag: see core.io.outputs
    return array


def _postprocess(
    model: Any,
    prob: Any,
    image: Any,
    args: argparse.Namespace,
    factor: tuple[float, float] | None = None,
) -> Any:
    """Labels by the card's post-processing (its pixel sizes made the image's) or --postprocess."""

    import numpy as np

    from ..core.inference.segment import (
        pipeline_spacing,
        pixel_sizes_on_image_grid,
        recommended_pipeline,
    )

    prob = np.asarray(prob)
    pipeline = recommended_pipeline(model.card, prob.shape[0])
    if factor is not None:
        pipeline = pixel_sizes_on_image_grid(pipeline, factor)
    pipeline = with_cli_overrides(pipeline, args)
    spacing = pipeline_spacing(pipeline, model.card, image.scale, prob.ndim - 1)
    return pipeline.run(prob, class_axis=0, spacing=spacing)


def _write_probabilities(path: Path, prob: Any, image: Any) -> None:
    from ..core.io.writers import write_image

    axes = "C" + image.spatial_axes
    write_image(path, prob, scale=image.scale, axes=axes)
    print(f"  probabilities -> {path}")


def _write_labels(path: Path, labels: Any, image: Any) -> None:
    from ..core.io.writers import write_labels
    from ..core.io.zarr_arrays import write_ome_zarr

    # <image>.zarr/labels/<name> is a label group inside an OME-Zarr image (OME-NGFF).
    into_image = path.parent.name == "labels" and path.parent.parent.suffix.lower() == ".zarr"
    if path.suffix.lower() == ".zarr" or into_image:
        write_ome_zarr(path, labels, axes=image.spatial_axes, scale=image.scale, kind="labels")
    else:
        write_labels(path, labels, scale=image.scale, axes=image.spatial_axes)
