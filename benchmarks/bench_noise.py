"""How noisy each of bench_adapt's simulated sessions is, and whether the product smooths it.

For every bundled semantic model and every shift of ``bench_adapt.py``, the
annotation pool's noise level (:func:`napari_microseg.core.inference.denoise.
session_noise`) over the level the model's card records for its training inputs
(``normalization["noise"]``), and the Gaussian sigma that
:func:`~napari_microseg.core.inference.denoise.choose_sigma` takes for it
(None: the session is left as it is). Label-free, as the product decides it; no
model is run, so it takes seconds.

Examples
--------
::

    PYTHONPATH=src python benchmarks/bench_noise.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The sibling benchmark's data, splits and shifts.
import bench_adapt


def planes_of(images: np.ndarray) -> list[np.ndarray]:
    """Each image as (Y, X) or (C, Y, X), as ``noise_level`` takes it."""
    return [np.moveaxis(image, -1, 0) if image.ndim == 3 else image for image in images]


def main(argv: list[str] | None = None) -> int:
    from napari_microseg.core.inference.denoise import choose_sigma, session_noise
    from napari_microseg.core.models.registry import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--models", default=",".join(bench_adapt.MODELS))
    args = parser.parse_args(argv)
    print("| model | shift | noise | over the card's | sigma taken |")
    print("|---|---|---|---|---|")
    for name in [m for m in args.models.split(",") if m]:
        reference = load_model(name, device="cpu").card.normalization.get("noise")
        data = bench_adapt.load_data(name, args.data)
        colour = data["axes"].endswith("C")
        for kind in ("none", *bench_adapt.SHIFTS):
            if kind == "stain" and not colour:
                continue
            images = data["pool_images"]
            if kind != "none":
                images = bench_adapt.shift(kind, images, data["pool_labels"])[0]
            planes = planes_of(images)
            level = session_noise(planes)
            ratio = "–" if level is None or not reference else f"{level / reference:.2f}"
            noise = "–" if level is None else f"{level:.4f}"
            sigma = choose_sigma(planes, reference)
            print(f"| {name} | {kind} | {noise} | {ratio} | {sigma} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
