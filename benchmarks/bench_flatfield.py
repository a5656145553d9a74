"""What a label-free flat-field correction would recover under bench_adapt's shifts.

The lever of issue #21 for uneven illumination, the one simulated new session
that neither "Adapt to this image" (batch-norm statistics) nor two images of
fine-tuning undo (docs/benchmarks.md). Each evaluation image is corrected as a
model with ``normalization["flat_field"]`` corrects it
(:mod:`napari_microseg.core.inference.illumination`: divided by its smoothed
bright level, a Gaussian of ``fraction`` x the shorter side, and scaled back to
its mean brightness) before the bundled model segments it as usual. The
unshifted images are corrected too, to show what the correction costs where
nothing needed correcting.

Same data, splits, shifts and score as ``bench_adapt.py`` (foreground Dice over
every evaluation pixel).

Examples
--------
::

    PYTHONPATH=src python benchmarks/bench_flatfield.py --data ../shared/data \
        --models gland-he,mito-em,nuclei-fluo --out /tmp/flatfield.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The sibling benchmark's data, splits, shifts and score.
import bench_adapt

SHIFTS = ("illumination", "blur_noise", "gamma")
FRACTIONS = (0.125, 0.25)


def flat_field(images: np.ndarray, fraction: float) -> np.ndarray:
    """Each image corrected as the product does (:func:`~.illumination.correct_illumination`).

    Parameters
    ----------
    images : ndarray, shape (N, Y, X) or (N, Y, X, C)
        8-bit images; colour images share one background, so hues are kept.
    fraction : float
        Gaussian sigma of the background as a fraction of the shorter side.

    Returns
    -------
    ndarray of float32, same shape
        The corrected images, clipped to 0-255.
    """
    from napari_microseg.core.inference.illumination import correct_illumination

    axes = "ZYXC" if images.ndim == 4 else "ZYX"
    return correct_illumination(images, axes, fraction)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--models", default="gland-he,mito-em,nuclei-fluo")
    parser.add_argument("--out", type=Path, default=Path("bench_flatfield.json"), help="JSON")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)

    import torch

    from napari_microseg.core.models.registry import load_model

    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    for name in args.models.split(","):
        data = bench_adapt.load_data(name, args.data)
        axes, model = data["axes"], load_model(name, device="cpu")
        images, labels = data["eval_images"], data["eval_labels"]
        cases = {"none": (images, labels)}
        cases.update({kind: bench_adapt.shift(kind, images, labels) for kind in SHIFTS})
        for kind, (shifted, truth) in cases.items():
            row: dict[str, Any] = {"model": name, "shift": kind}
            row["as is"] = bench_adapt.evaluate(model, shifted, truth, axes)["dice"]
            for fraction in FRACTIONS:
                corrected = flat_field(shifted, fraction)
                row[f"flat {fraction:g}"] = bench_adapt.evaluate(model, corrected, truth, axes)[
                    "dice"
                ]
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2))
    columns = ["as is", *(f"flat {fraction:g}" for fraction in FRACTIONS)]
    print()
    print("| model | shift | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for row in rows:
        cells = " | ".join(f"{row[column]:.3f}" for column in columns)
        print(f"| {row['model']} | {row['shift']} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
