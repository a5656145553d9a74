"""``microseg demo``: segment the sample FIB-SEM stack, headless or in napari."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("microseg-demo")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="segment the sample FIB-SEM stack (headless) or open it in napari (--gui)",
        description="Segment the synthetic FIB-SEM sample stack and write a labels TIFF and a "
        "PNG preview, or open napari with the sample and the plugin's widgets (--gui).",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument("--gui", action="store_true", help="open napari instead of writing files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.gui:
        from ..demo_gui import NoDisplayError, open_demo_viewer
        from . import CommandError

        try:
            open_demo_viewer(run_event_loop=True)
        except NoDisplayError as error:
            raise CommandError(str(error)) from error
        return 0
    return write_demo(args.out)


def write_demo(out: Path) -> int:
    """Segment the sample stack and write ``*_labels.tif`` and ``*_preview.png`` into ``out``.

    The bundled model made for the sample (``mito-em`` for FIB-SEM) segments it
    with its recommended settings when it is installed and trained at the
    sample's pixel size; otherwise a classical pipeline does, and the output
    says why. (``mito-em`` is trained at 5 nm per pixel; resampled from the
    sample's 10 nm it reaches foreground Dice 0.47 on the sample, the classical
    pipeline 0.65: the synthetic mitochondria are smaller than real ones.)
    """
    import numpy as np

    from ..core import synthetic
    from ..core.writers import write_image, write_labels

    out.mkdir(parents=True, exist_ok=True)
    sample = synthetic.fibsem_mitochondria()
    print(f"Sample: synthetic FIB-SEM stack {sample.image.shape} (ZYX), voxel 10 nm.")
    labels = segment_sample(sample, "fibsem_mitochondria")
    truth = sample.labels > 0
    found = labels > 0
    dice = 2 * np.logical_and(truth, found).sum() / max(truth.sum() + found.sum(), 1)
    labels_path = write_labels(out / f"{sample.name}_labels.tif", labels, scale=sample.scale)
    preview_path = write_image(out / f"{sample.name}_preview.png", preview(sample.image, labels))
    print(
        f"Found {labels.max()} objects ({int(sample.labels.max())} in the ground truth); "
        f"foreground Dice {dice:.3f}."
    )
    print(f"Wrote {labels_path}")
    print(f"Wrote {preview_path}")
    return 0


def segment_sample(sample: Any, key: str) -> Any:
    """Labels of a sample: its bundled model when usable, else the classical fallback."""
    from ..core.classical import segment_dark_objects
    from ..core.models.base import ModelError
    from ..core.models.bundled import SAMPLE_MODELS
    from ..core.models.registry import bundled_entries

    name = SAMPLE_MODELS[key]
    entry = next((e for e in bundled_entries() if e.name == name), None)
    why = "no bundled deep-learning model for this sample yet"
    if entry is not None and not entry.usable:
        why = f"the bundled model {name!r} cannot be used: {entry.problem}"
    elif entry is not None:
        card = _card(entry)
        if _scale_mismatch(card, sample):
            why = _resampling_is_not_enough(card, sample)
        else:
            try:
                return _segment_with(entry, sample)
            except ModelError as error:
                why = f"the bundled model {name!r} failed: {error}"
    method = "classical segmentation (smoothing, Otsu threshold, opening, size filter)"
    print(f"Method: {method}; {why}.")
    return segment_dark_objects(sample.image)


def _card(entry: Any) -> Any:
    from ..core.models.checkpoint import inspect_checkpoint

    return inspect_checkpoint(entry.path).card


def _scale_mismatch(card: Any, sample: Any) -> str | None:
    from ..core.segment import scale_mismatch

    return scale_mismatch(card, sample.scale)


def _resampling_is_not_enough(card: Any, sample: Any) -> str:
    """Why the demo does not use a bundled model trained at another pixel size."""
    return (
        f"the bundled model {card.name!r} was trained at "
        f"{card.pixel_size_um * 1e3:.3g} nm per pixel and the sample has "
        f"{sample.scale[-1] * 1e3:.3g} nm per pixel; resampled to the model's pixel size (as "
        "`microseg predict` and the Segment widget do by default) it still misses many of the "
        "sample's synthetic mitochondria, which are smaller than the real ones it learned "
        "(README: Bundled models)"
    )


def _segment_with(entry: Any, sample: Any) -> Any:
    from ..core.bundling import recommended_options
    from ..core.models.registry import load_model
    from ..core.progress import drain
    from ..core.segment import segment_job

    model = load_model(entry.path, device="auto")
    options = recommended_options(model, device="auto")
    trained_on = model.card.trained_on or "see its card"
    print(
        f"Method: the bundled model {entry.name!r} ({entry.family}; {trained_on}) with its "
        f"recommended tile size {options.tile_size} and post-processing."
    )
    job = segment_job(model, sample.image, axes=sample.axes, options=options, spacing=sample.scale)
    return drain(job, show=False).labels


def preview(image: Any, labels: Any) -> Any:
    """Middle slice: the image beside the image with coloured object overlays, RGB uint8."""
    import numpy as np
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    middle = image.shape[0] // 2 if image.ndim == 3 else slice(None)
    grey = np.asarray(image[middle], dtype=np.float32)
    grey = (grey - grey.min()) / max(float(np.ptp(grey)), 1e-6)
    slice_labels = np.asarray(labels[middle])
    overlay = label2rgb(slice_labels, image=grey, alpha=0.35, bg_label=0)
    overlay[find_boundaries(slice_labels, mode="inner")] = (1.0, 1.0, 0.0)
    side = np.concatenate([np.repeat(grey[..., None], 3, axis=-1), overlay], axis=1)
    return (np.clip(side, 0, 1) * 255).astype(np.uint8)
