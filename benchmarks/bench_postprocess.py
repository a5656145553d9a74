"""Time post-processing and metrics, and show that 3D memory stays bounded.

Run from the repository root::

    python benchmarks/bench_postprocess.py            # 2048 x 2048 and 100 x 1024 x 1024
    python benchmarks/bench_postprocess.py --quick    # small sizes, a few seconds

Prints one table row per case: the median wall time over ``--repeat`` runs,
and for the 3D cases the peak memory allocated on top of the input (traced
with :mod:`tracemalloc`, which sees every NumPy buffer), in MiB and in bytes
per voxel. The output label image alone is 4 bytes per voxel (uint32).

The probability maps are synthetic and reproducible (seeded): Gaussian blobs
pushed through a steep sigmoid, like a segmentation network's output.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_microseg.core.evaluation.evaluate import evaluate_images
from napari_microseg.core.postprocess import PostprocessPipeline


def blob_map(shape: tuple[int, int], *, seed: int = 0, spacing: int = 24) -> np.ndarray:
    """A 2D probability map with about one blob per ``spacing``² pixels, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    impulses = np.zeros(shape, np.float32)
    n = shape[0] * shape[1] // spacing**2
    impulses[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = 1.0
    smooth = ndi.gaussian_filter(impulses, spacing / 4)
    smooth /= np.percentile(smooth[smooth > 0], 99)
    return (1.0 / (1.0 + np.exp(-12.0 * (smooth - 0.35)))).astype(np.float32)


def stack_map(shape: tuple[int, int, int], *, seed: int = 0) -> np.ndarray:
    """A 3D map: a 2D blob map drifting by 2 pixels per slice, so objects are slanted tubes."""
    base = blob_map(shape[1:], seed=seed)
    out = np.empty(shape, np.float32)
    for z in range(shape[0]):
        out[z] = np.roll(base, 2 * z, axis=1)
    return out


def timed(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def peak_memory(run: Callable[[], Any]) -> int:
    """Peak bytes allocated while ``run`` runs, beyond what was allocated before."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = run()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    del result
    return peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per 2D case (median)")
    parser.add_argument("--skip-3d", action="store_true", help="only the 2D cases")
    args = parser.parse_args(argv)
    size_2d = (512, 512) if args.quick else (2048, 2048)
    size_3d = (10, 256, 256) if args.quick else (100, 1024, 1024)

    rows: list[tuple[str, str, float, str, str, int]] = []
    prob = blob_map(size_2d)
    cases_2d = {
        "otsu": PostprocessPipeline(method="otsu"),
        "otsu + fill holes + min size": PostprocessPipeline(fill_holes=True, min_size=20),
        "hysteresis (Otsu defaults)": PostprocessPipeline(method="hysteresis"),
        "hysteresis + min size": PostprocessPipeline(method="hysteresis", min_size=20),
        "watershed (distance, h-maxima)": PostprocessPipeline(method="watershed"),
        "watershed (min_distance=5)": PostprocessPipeline(method="watershed", min_distance=5),
    }
    shape_2d = "x".join(map(str, size_2d))
    labels = None
    for name, pipeline in cases_2d.items():
        repeat = args.repeat if "watershed" not in name else max(1, args.repeat // 2)
        seconds, out = timed(lambda p=pipeline: p.run(prob), repeat)
        rows.append((name, shape_2d, seconds, "", "", int(out.max())))
        if name == "otsu":
            labels = out
    resolved = PostprocessPipeline(method="hysteresis").resolve(prob)
    seconds, out = timed(lambda: resolved.run(prob), args.repeat)
    rows.append(("hysteresis, thresholds resolved", shape_2d, seconds, "", "", int(out.max())))

    assert labels is not None
    shifted = np.roll(labels, 2, axis=1)
    seconds, row = timed(lambda: evaluate_images(labels, shifted), max(1, args.repeat // 2))
    rows.append(("evaluate (all metrics)", shape_2d, seconds, "", "", int(row["n_true"])))
    seconds, row = timed(
        lambda: evaluate_images(labels, shifted, metrics=["pixel", "ap", "counts"]), args.repeat
    )
    rows.append(("evaluate (pixel, AP, counts)", shape_2d, seconds, "", "", int(row["n_true"])))

    if not args.skip_3d:
        volume = stack_map(size_3d)
        shape_3d = "x".join(map(str, size_3d))
        for name, pipeline in {
            "otsu": PostprocessPipeline(method="otsu"),
            "hysteresis + min size": PostprocessPipeline(method="hysteresis", min_size=50),
            "otsu + fill holes + min size": PostprocessPipeline(fill_holes=True, min_size=50),
        }.items():
            seconds, out = timed(lambda p=pipeline: p.run(volume), 1)
            objects = int(out.max())
            del out
            peak = peak_memory(lambda p=pipeline: p.run(volume))
            rows.append(
                (
                    name,
                    shape_3d,
                    seconds,
                    f"{peak / 2**20:.0f}",
                    f"{peak / volume.size:.1f}",
                    objects,
                )
            )

    print(
        f"napari-microseg post-processing benchmark ({platform.processor() or platform.machine()}, "
        f"NumPy {np.__version__})"
    )
    header = ("case", "shape", "time (s)", "peak extra MiB", "bytes/voxel", "objects")
    widths = [32, 14, 9, 15, 12, 8]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for name, shape, seconds, mib, per_voxel, objects in rows:
        cells = (name, shape, f"{seconds:.3f}", mib, per_voxel, str(objects))
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))


if __name__ == "__main__":
    main()
