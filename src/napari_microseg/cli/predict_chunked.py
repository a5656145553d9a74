"""``microseg predict`` for volumes larger than memory: block by block into zarr, on Dask.

Chosen when ``--chunked``, ``--scheduler`` or ``--workers`` is given, or when
a zarr input goes to a ``.zarr`` output. Probabilities and labels are written
to zarr block by block by :func:`napari_microseg.core.blocks.segment.segment_to_zarr`;
a run started again on the same outputs skips the blocks already written. This
module parses the options, picks the executor and prints the summary.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .predict_common import is_zarr, pipeline_overrides, prediction_options


def register_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the out-of-core and distributed options to ``microseg predict``."""
    group = parser.add_argument_group(
        "volumes larger than memory",
        "Predict block by block into zarr (--out and --probabilities end in .zarr); a run "
        "started again on the same outputs resumes where it stopped, and --overwrite replaces "
        "stores holding another job's result.",
    )
    group.add_argument(
        "--chunked",
        action="store_true",
        help="predict block by block into zarr (automatic for a zarr input and a .zarr --out)",
    )
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on a Dask cluster: scheduler address (tcp://host:8786) or scheduler.json",
    )
    where.add_argument(
        "--workers", type=int, metavar="N", help="run on a local Dask cluster of N worker processes"
    )
    group.add_argument(
        "--chunks",
        type=int,
        nargs="+",
        metavar="SIZE",
        help="output chunk shape over the spatial axes, e.g. 16 256 256 (default)",
    )
    group.add_argument(
        "--block",
        type=int,
        nargs="+",
        metavar="SIZE",
        help="work unit per task, whole chunks (default: chunks grown to ~1024 along Y and X)",
    )
    group.add_argument(
        "--probability-dtype",
        choices=["float32", "float16", "uint8"],
        help="how probabilities are stored (implies --chunked): float32 (default, exact), "
        "float16 (half the size, within 0.00025) or uint8 (a quarter, round(p * 255), "
        "within 0.002)",
    )
    group.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads of this process (default: one per core); 1 is often faster on "
        "cores shared with other busy processes",
    )


def wants_chunked(args: argparse.Namespace, inputs: list[Path]) -> bool:
    """True when the run should go block by block."""
    if args.chunked or args.scheduler or args.workers or args.probability_dtype:
        return True
    out_zarr = str(args.out).lower().endswith(".zarr")
    return out_zarr and len(inputs) == 1 and is_zarr(inputs[0])


def run_chunked(
    args: argparse.Namespace, inputs: list[Path], load: Callable[[str, str], Any]
) -> int:
    """Predict one volume block by block, on this machine or a Dask cluster.

    ``load(model, device)`` loads the model (the one-line errors of ``microseg predict``).
    """
    from ..core.io.outputs import Output, check_outputs
    from . import CommandError

    if len(inputs) != 1:
        raise CommandError(
            f"Block-by-block prediction takes one volume, not {len(inputs)}; run once per volume."
        )
    if not str(args.out).lower().endswith(".zarr"):
        raise CommandError(f"Block-by-block labels go to a .zarr store; --out is {args.out}.")
    if args.ortho:
        raise CommandError("--ortho is not available block by block; drop it or --chunked.")
    if args.workers is not None and args.workers < 1:
        raise CommandError(f"--workers must be at least 1, got {args.workers}.")
    if args.threads is not None and args.threads < 1:
        raise CommandError(f"--threads must be at least 1, got {args.threads}.")
    prob_path = args.probabilities or args.out.with_name(_stem(args.out) + ".probabilities.zarr")
    if not str(prob_path).lower().endswith(".zarr"):
        raise CommandError(f"--probabilities must be a .zarr store here, not {prob_path}.")
    # Our stores are resumed (the block job checks they hold this job) or, with --overwrite,
    # replaced; anything else there, or an input, is refused before the model loads.
    outputs = [Output(args.out, "--out"), Output(prob_path, "--probabilities")]
    check_outputs(outputs, [*args.inputs, *inputs], overwrite=args.overwrite, resume=True)
    if args.workers or args.scheduler:
        from ..core.blocks.cluster import DaskExecutor, cluster_client

        with cluster_client(args.scheduler, workers=args.workers) as client:
            workers = len(client.scheduler_info().get("workers", {}))
            where = args.scheduler or "a local cluster"
            print(f"Dask: {workers} worker(s) on {where}.")
            return _run(args, inputs[0], prob_path, load, DaskExecutor(client))
    return _run(args, inputs[0], prob_path, load, None)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _run(
    args: argparse.Namespace,
    path: Path,
    prob_path: Path,
    load: Callable[[str, str], Any],
    executor: Any,
) -> int:
    from ..core.blocks.cluster import ModelRef
    from ..core.blocks.segment import segment_to_zarr
    from ..core.io.images import describe
    from ..core.io.volumes import open_volume
    from ..core.progress import drain

    image = open_volume(path, axes=args.axes)
    print(f"{path.name}: {describe(image)}")
    model = load(args.model, args.device)
    print(f"Model {model.name!r} ({model.card.architecture}, {model.task}).")
    result = drain(
        segment_to_zarr(
            model,
            image,
            str(prob_path),
            str(args.out),
            axes=image.axes,
            options=prediction_options(args, model.card),
            spacing=image.scale,
            postprocess=pipeline_overrides(args),
            chunks=args.chunks,
            block=args.block,
            executor=executor,
            # Dask workers load the model themselves rather than receive it.
            model_ref=ModelRef(str(args.model), args.device) if executor is not None else None,
            probability_dtype=args.probability_dtype or "float32",
            threads=args.threads,
            overwrite=args.overwrite,
        )
    )
    prediction, labels = result.prediction, result.labels
    resumed = f", {prediction.skipped} found done" if prediction.skipped else ""
    print(
        f"  {prediction.probabilities.dtype} probabilities -> {prob_path} "
        f"({prediction.blocks} blocks{resumed}, {prediction.seconds:.1f} s)"
    )
    print(f"  {labels.n_objects} objects -> {args.out} ({labels.seconds:.1f} s)")
    return 0
