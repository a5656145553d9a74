"""Turn a U-Net trained on resampled images into one that resamples inside itself.

A config's ``pixel_size_um`` trains a network on images resampled to a coarser
pixel size (``configs/glas-unet-half.yaml``: GlaS at 1.24 µm instead of its
scanner's 0.62); its card then says 1.24 µm, and an image without a pixel size
(most H&E files) would be predicted at the wrong scale. This keeps the weights
in a U-Net with ``downsample = factor`` whose card says the images' own pixel
size (:mod:`napari_microseg.bundling.downsample`):

    python scripts/downsample_model.py gland-he-half --factor 2 --out /tmp/gland-he-half-d2

Then ``bundle_model.py`` evaluates and bundles it like any trained model (the
validation split is rebuilt as training saw the data).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="trained U-Net: user-folder name or weights file")
    parser.add_argument("--factor", type=int, default=2, help="how many pixels per side to pool")
    parser.add_argument("--out", type=Path, required=True, help="where to save the new model")
    parser.add_argument("--name", help="the new model's name (default: the old one's)")
    args = parser.parse_args(argv)
    if args.factor < 2:
        raise SystemExit("downsample_model: --factor must be 2 or more.")
    from napari_microseg.bundling.downsample import downsampled
    from napari_microseg.core.models.checkpoint import save_checkpoint
    from napari_microseg.core.models.registry import load_model

    try:
        new = downsampled(load_model(args.model, device="cpu"), args.factor)
    except ValueError as error:
        raise SystemExit(f"downsample_model: {error}") from error
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
