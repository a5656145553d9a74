r"""Make a trained U-Net wider without losing what it learnt (Net2WiderNet).

A wider network costs several times a training step and, from scratch, hours
before it catches up with the narrow one. This starts it from the narrow one's
function (:mod:`napari_microseg.bundling.widen`), so a CPU run of an hour or
two trains only what the extra channels add:

    python scripts/widen_model.py gland-he-third --base-width 32 --out /tmp/gland-he-third-w32
    microseg train --config configs/glas-unet-third-wide.yaml \
        --init /tmp/gland-he-third-w32.safetensors --data ...
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "model", help="trained U-Net: user-folder name, bundled name or weights file"
    )
    parser.add_argument("--base-width", type=int, required=True, help="channels of the first level")
    parser.add_argument(
        "--noise", type=float, default=0.01, help="noise on the copies, relative to each layer's"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of that noise")
    parser.add_argument("--out", type=Path, required=True, help="where to save the new model")
    parser.add_argument("--name", help="the new model's name (default: the old one's)")
    args = parser.parse_args(argv)
    from napari_microseg.bundling.widen import widened
    from napari_microseg.core.models.checkpoint import save_checkpoint
    from napari_microseg.core.models.registry import load_model

    try:
        wide = widened(
            load_model(args.model, device="cpu"), args.base_width, noise=args.noise, seed=args.seed
        )
    except ValueError as error:
        raise SystemExit(f"widen_model: {error}") from error
    if args.name:
        wide.card = replace(wide.card, name=args.name)
    path = save_checkpoint(wide, args.out)
    parameters = sum(p.numel() for p in wide.module.parameters())
    print(
        f"Saved {path}: {wide.card.name}, base width {args.base_width} "
        f"({parameters / 1e6:.2f} M parameters)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
