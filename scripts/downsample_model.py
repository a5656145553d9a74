"""Turn a U-Net trained on resampled images into one that resamples inside itself.

A config's ``pixel_size_um`` trains a network on images resampled to a coarser
pixel size (``configs/glas-unet-half.yaml``: GlaS at 1.24 µm instead of its
scanner's 0.62). Its card then says 1.24 µm, and prediction resamples every
image whose pixel size it knows. An image without one (a PNG, a TIFF without
resolution tags: most H&E files) is assumed to be at the model's pixel size,
and would be predicted at twice the scale it was learnt at.

This script keeps the weights and moves the resampling into the network: a
U-Net with ``downsample = factor`` averages ``factor`` x ``factor`` pixel
blocks before its first layer and upsamples its logits after the last, so its
card says the images' own pixel size (``pixel_size_um / factor``) and an
image without a pixel size is read right. Its recommended tile grows by the
factor, so each tile shows the network the same context as before.

    python scripts/downsample_model.py gland-he-half --factor 2 --out /tmp/gland-he-half-d2

The lineage records the conversion. Check the result with ``bundle_model.py
--evaluate-only`` (it predicts the images as they are, at 0.62 µm).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from napari_microseg.core.models.base import SegmentationModel


def downsampled(model: SegmentationModel, factor: int) -> SegmentationModel:
    """The same weights in a U-Net that pools ``factor`` x ``factor`` blocks itself."""
    from napari_microseg.core.models.build import build_model

    card = model.card
    if card.architecture != "unet":
        raise SystemExit(f"downsample_model: {card.name!r} is a {card.architecture}, not a U-Net.")
    if card.pixel_size_um is None:
        raise SystemExit(f"downsample_model: {card.name!r} has no pixel size to divide.")
    before = int(card.hyperparameters.get("downsample", 1))
    recommended = dict(card.recommended)
    if "tile_size" in recommended:
        recommended["tile_size"] = int(recommended["tile_size"]) * factor
    lineage = dict(card.lineage)
    lineage["downsampled"] = {
        "factor": factor,
        "pixel_size_um_learnt": card.pixel_size_um,
        "note": (
            f"trained on images resampled to {card.pixel_size_um:g} µm; the network now "
            f"averages {factor} x {factor} pixel blocks itself and takes images at "
            f"{card.pixel_size_um / factor:g} µm"
        ),
    }
    new_card = replace(
        card,
        hyperparameters={**card.hyperparameters, "downsample": before * factor},
        pixel_size_um=card.pixel_size_um / factor,
        recommended=recommended,
        lineage=lineage,
    )
    new = build_model(new_card)
    new.module.load_state_dict(model.module.state_dict())
    return new.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="trained U-Net: user-folder name or weights file")
    parser.add_argument("--factor", type=int, default=2, help="how many pixels per side to pool")
    parser.add_argument("--out", type=Path, required=True, help="where to save the new model")
    parser.add_argument("--name", help="the new model's name (default: the old one's)")
    args = parser.parse_args(argv)
    if args.factor < 2:
        raise SystemExit("downsample_model: --factor must be 2 or more.")
    from napari_microseg.core.models.checkpoint import save_checkpoint
    from napari_microseg.core.models.registry import load_model

    new = downsampled(load_model(args.model, device="cpu"), args.factor)
    if args.name:
        new.card = replace(new.card, name=args.name)
    path = save_checkpoint(new, args.out)
    print(
        f"Saved {path}: {new.card.name}, downsample {new.card.hyperparameters['downsample']}, "
        f"{new.card.pixel_size_um:g} µm per pixel, tile {new.card.recommended.get('tile_size')}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
