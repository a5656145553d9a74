"""Cost of each augmentation per 256x256 training patch, as the patch sampler makes it.

Run from the repository root::

    python benchmarks/bench_augment.py
    python benchmarks/bench_augment.py --baseline-src /tmp/before/src   # before/after

For every augmentation alone (probability 1, the others off), for the
``default`` and ``light`` presets, and for no augmentation, it times
:meth:`PatchSampler.sample` with the U-Net weight map on: one patch of image,
class target, annotated mask and weight map, cut from a 512x512 plane
(synthetic nuclei, 60 objects), in one torch thread (as a data worker runs).
The weight map itself is computed once per plane and timed separately.
The H&E stain augmentation needs colour, so it is timed on a synthetic
512x512 RGB H&E plane, beside no augmentation on that plane.

``--baseline-src DIR`` measures another copy of the source tree (e.g. a
checkout of an earlier commit) in a fresh process, alternating with this one,
so before and after come from the same minutes of a shared machine.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SINGLE = {
    "crop": {"crop_p": 1.0},
    "hflip": {"hflip_p": 1.0},
    "vflip": {"vflip_p": 1.0},
    "rot90": {"rot90_p": 1.0},
    "rotate": {"rotate_p": 1.0},
    "affine (zoom, shear, shift)": {"affine_p": 1.0},
    "elastic": {"elastic_p": 1.0},
    "radial": {"distort_p": 1.0, "distort_kinds": ["radial"]},
    "piecewise": {"distort_p": 1.0, "distort_kinds": ["piecewise"]},
    "noise": {"noise_p": 1.0},
    "median blur": {"blur_p": 1.0},
    "sharpen": {"sharpen_p": 1.0},
}


def per_patch_ms(one, patches: int) -> float:
    """Milliseconds per call of ``one`` over ``patches`` calls, after one to warm up."""
    one()
    t0 = time.perf_counter()
    for _ in range(patches):
        one()
    return (time.perf_counter() - t0) / patches * 1e3


def measure(patches: int, patch: int) -> dict[str, float]:
    """Milliseconds per patch for every case (in this process, whichever code it imports)."""
    import numpy as np
    import torch

    from napari_microseg.core.io import synthetic
    from napari_microseg.core.models.build import create_model
    from napari_microseg.core.training import sampling
    from napari_microseg.core.training.augment import AugmentConfig, window_margin
    from napari_microseg.core.training.data import Region, TrainingPair, prepare
    from napari_microseg.core.training.targets import unet_weight_map

    torch.set_num_threads(1)
    sample = synthetic.fluorescence_nuclei((512, 512), n_objects=60, seed=0)
    model = create_model("unet", name="bench", depth=2, base_width=4)
    plane = prepare([TrainingPair(sample.image, sample.labels)], model).planes[0]
    regions = [Region(plane, plane.annotated)]

    def weight_fn(p):
        return unet_weight_map(p.instances, p.target, annotated=p.annotated)

    t0 = time.perf_counter()
    for _ in range(3):
        weights = weight_fn(plane)
    results = {"weight map, once per 512x512 plane": (time.perf_counter() - t0) / 3 * 1e3}
    plane.cache["weight"] = weights
    old = "augmenter" in inspect.signature(sampling.PatchSampler).parameters
    cases = {
        "none": AugmentConfig.preset("none"),
        **{
            name: AugmentConfig.from_value({"preset": "none", **fields})
            for name, fields in SINGLE.items()
        },
        "light preset": AugmentConfig.preset("light"),
        "default preset": AugmentConfig.preset("default"),
    }
    for name, config in cases.items():
        margin = window_margin(config, patch)
        if old:  # the sampler before #19: one augmenter and one stream for the run
            from napari_microseg.core.training.augment import Augmenter

            sampler = sampling.PatchSampler(
                regions,
                patch_size=patch,
                augmenter=Augmenter(config, seed=0),
                rng=np.random.default_rng(0),
                margin=margin,
                weight_fn=weight_fn,
            )

            def one(sampler=sampler):
                return sampler.sample()
        else:
            sampler = sampling.PatchSampler(
                regions,
                patch_size=patch,
                augment=config,
                seed=0,
                margin=margin,
                weight_fn=weight_fn,
            )
            rng = np.random.default_rng(0)

            def one(sampler=sampler, rng=rng):
                return sampler.sample(rng)

        results[name] = per_patch_ms(one, patches)
    if "stain_p" in {f.name for f in fields(AugmentConfig)}:
        he = synthetic.he_glands((512, 512), seed=0)
        rgb = create_model("unet", name="bench-rgb", in_channels=3, depth=2, base_width=4)
        colour = prepare([TrainingPair(he.image, he.labels, axes="YXC")], rgb).planes[0]
        for name, config in {
            "none, RGB plane": AugmentConfig.preset("none"),
            "H&E stain (RGB plane)": AugmentConfig.from_value({"preset": "none", "stain_p": 1.0}),
        }.items():
            sampler = sampling.PatchSampler(
                [Region(colour, colour.annotated)], patch_size=patch, augment=config, seed=0
            )
            rng = np.random.default_rng(0)
            results[name] = per_patch_ms(lambda s=sampler, r=rng: s.sample(r), patches)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=40, help="patches timed per case")
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--baseline-src", help="another source tree, measured side by side")
    parser.add_argument("--repeat", type=int, default=1, help="alternate before/after this often")
    parser.add_argument("--out", help="write the numbers to this JSON file")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.patches, args.patch)))
        return 0
    sources = [("after", str(ROOT / "src"))]
    if args.baseline_src:
        sources.insert(0, ("before", str(Path(args.baseline_src).resolve())))
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in sources}
    for _ in range(args.repeat):
        for label, src in sources:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    "--patches",
                    str(args.patches),
                    "--patch",
                    str(args.patch),
                ],
                env=dict(os.environ, PYTHONPATH=src),
                capture_output=True,
                text=True,
                check=True,
            )
            runs[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
    names = list(runs["after"][0])
    labels = list(runs)
    print(
        f"ms per {args.patch}x{args.patch} patch (image + target + annotated + weight map), "
        f"1 torch thread, median of {args.repeat} run(s) of {args.patches} patches"
    )
    print(
        "| augmentation | " + " | ".join(labels) + (" | speed-up |" if len(labels) == 2 else " |")
    )
    print("|---" * (len(labels) + 1 + (len(labels) == 2)) + "|")
    summary = {}
    for name in names:
        values = [sorted(r[name] for r in runs[label])[len(runs[label]) // 2] for label in labels]
        summary[name] = dict(zip(labels, values))
        cells = " | ".join(f"{v:.2f}" for v in values)
        ratio = f" | {values[0] / values[1]:.1f}x" if len(values) == 2 else ""
        print(f"| {name} | {cells}{ratio} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": runs, "median": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
