"""Helpers of ``microseg predict`` shared by the in-memory run (:mod:`.predict`) and the
block-by-block run (:mod:`.predict_chunked`), so that neither imports the other's module back."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def load(name_or_path: str, device: str) -> Any:
    """Load the model once, with a one-line error for unknown names or broken files."""
    from ..core.models.registry import load_model

    return load_model(name_or_path, device=device)


def is_zarr(path: Path) -> bool:
    """True for a zarr store: by its name, or a folder that holds one."""
    from ..core.io.image_data import ZARR_SUFFIXES, looks_like_zarr

    return path.name.lower().endswith(ZARR_SUFFIXES) or (path.is_dir() and looks_like_zarr(path))


def prediction_options(args: argparse.Namespace, card: Any) -> Any:
    """The prediction settings of in-memory and block-by-block runs.

    The model card's recommended tile size and overlap, then every option given.
    """
    from ..core.inference.options import PredictOptions

    return PredictOptions.for_card(card, **_given_options(args))


def check_options(args: argparse.Namespace) -> None:
    """Refuse bad prediction and post-processing options before the model loads.

    :class:`~napari_microseg.core.inference.options.PredictOptions` and
    :class:`~napari_microseg.core.postprocess.pipeline.PostprocessPipeline` check
    their fields when made; here they are made from the options given alone.
    """
    from ..core.inference.options import PredictOptions
    from ..core.postprocess.pipeline import PostprocessPipeline
    from . import CommandError

    if args.tile is not None and args.tile < 1:
        raise CommandError(f"--tile must be at least 1 pixel, got {args.tile}.")
    PredictOptions(**{k: v for k, v in _given_options(args).items() if v is not None})
    if args.threshold is not None:
        PostprocessPipeline(method="threshold", threshold=args.threshold)


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The prediction options of the command line, None where not given."""
    return {
        "tile_size": args.tile,
        "overlap": args.overlap,
        "blend": args.blend,
        "batch_size": args.batch_size,
        "device": args.device,
        "tta": args.tta,
        "slice_axis": args.slice_axis,
        "ortho": getattr(args, "ortho", None),
        "amp": getattr(args, "amp", None),
        "compile": getattr(args, "compile", None),
    }


def pipeline_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--postprocess`` and ``--threshold`` as post-processing fields, when given."""
    overrides: dict[str, Any] = {}
    if args.postprocess:
        overrides["method"] = args.postprocess
    if args.threshold is not None:
        overrides["threshold"] = args.threshold
    return overrides


def with_cli_overrides(pipeline: Any, args: argparse.Namespace) -> Any:
    """The pipeline with ``--postprocess`` and ``--threshold`` applied, when given."""
    from dataclasses import replace

    overrides = pipeline_overrides(args)
    return replace(pipeline, **overrides) if overrides else pipeline
