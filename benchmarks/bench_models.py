"""CPU inference speed of the bundled models, in megapixels per second.

For each model: a synthetic image of its modality (grey nuclei for 1-channel
models, H&E-like RGB for 3-channel ones), 1024 x 1024 pixels by default,
segmented on the CPU with the card's recommended tile size and overlap, with
as many threads as the machine has cores. The best of ``--repeats`` timed runs
(after one untimed warm-up on a small image) gives

* ``mpx_per_s_cpu``: tiled prediction (normalization, tiles, blending);
* ``mpx_per_s_cpu_segment``: prediction plus the recommended post-processing,
  what the Segment widget does.

Other work on the machine (a training run) slows the measurement down, so the
result records ``other_load``: the cores that other processes kept busy while
the timed runs ran (this process's own CPU time taken out of the machine's,
which the load average, recorded too, cannot do).

Run: ``python benchmarks/bench_models.py`` (every bundled model; a table), or
``python benchmarks/bench_models.py mito-em path/to/model.safetensors --json``.
``scripts/bundle_model.py`` calls :func:`measure_speed` and stores the result
in the model card (``recommended["mpx_per_s_cpu"]`` and ``recommended["speed"]``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from typing import Any

import numpy as np


def synthetic_input(channels: int, size: int) -> tuple[np.ndarray, str]:
    """A test image for a model taking ``channels`` channels, and its axes."""
    from napari_microseg.core.io import synthetic

    if channels == 3:
        return synthetic.he_glands((size, size)).image, "YXC"
    if channels == 1:
        return synthetic.fluorescence_nuclei((size, size)).image, "YX"
    rng = np.random.default_rng(0)
    return rng.random((size, size, channels), dtype=np.float32), "YXC"


def cpu_sample() -> tuple[float, float, float] | None:
    """(wall seconds, busy CPU seconds of the whole machine, CPU seconds of this process).

    None where the machine's CPU times cannot be read (psutil missing).
    """
    try:
        import psutil
    except ImportError:
        return None
    total = psutil.cpu_times()
    # guest time is already counted in user time on Linux
    idle = sum(getattr(total, name, 0.0) for name in ("idle", "iowait", "guest", "guest_nice"))
    own = os.times()
    return time.monotonic(), sum(total) - idle, own.user + own.system


def other_load(
    start: tuple[float, float, float] | None, end: tuple[float, float, float] | None
) -> float | None:
    """Cores kept busy by other processes between two :func:`cpu_sample` readings."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    elsewhere = (end[1] - start[1]) - (end[2] - start[2])
    return round(max(0.0, elsewhere / (end[0] - start[0])), 2)


def measure_speed(
    model: Any,
    *,
    size: int = 1024,
    threads: int | None = None,
    repeats: int = 2,
) -> dict[str, Any]:
    """CPU speed of ``model`` with its recommended settings, in megapixels per second.

    Parameters
    ----------
    model : SegmentationModel
        A loaded model (moved to the CPU for the measurement).
    size : int
        Side of the square test image in pixels.
    threads : int, optional
        Torch threads; the machine's cores by default.
    repeats : int
        Timed runs; the fastest counts.

    Returns
    -------
    dict
        ``mpx_per_s_cpu``, ``mpx_per_s_cpu_segment``, ``seconds_predict``,
        ``seconds_postprocess``, ``image``, ``tile_size``, ``overlap``, ``tta``,
        ``threads``, ``cpu``, ``cores``, ``load_average``, ``other_load`` (cores
        other processes kept busy while timing; None where unknown), ``torch``,
        ``measured``.
    """
    import torch

    from napari_microseg.bundling.bundle import cpu_name
    from napari_microseg.core.inference.options import PredictOptions
    from napari_microseg.core.inference.predict import run_prediction
    from napari_microseg.core.inference.segment import recommended_pipeline
    from napari_microseg.core.inference.stitching import Instances
    from napari_microseg.core.progress import drain

    threads = int(threads or os.cpu_count() or 1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.to("cpu").eval()
    options = PredictOptions.for_card(model.card, device="cpu")
    image, axes = synthetic_input(model.in_channels, size)
    try:
        warm, _ = synthetic_input(model.in_channels, min(size, 256))
        drain(run_prediction(model, warm, axes=axes, options=options), show=False)
        best_predict, best_post = float("inf"), float("inf")
        start_sample = cpu_sample()
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            result = drain(run_prediction(model, image, axes=axes, options=options), show=False)
            middle = time.perf_counter()
            if not isinstance(result, Instances):
                pipeline = recommended_pipeline(model.card, result.shape[0])
                pipeline.run(np.asarray(result), class_axis=0)
            end = time.perf_counter()
            best_predict = min(best_predict, middle - start)
            best_post = min(best_post, end - middle)
        busy_elsewhere = other_load(start_sample, cpu_sample())
    finally:
        torch.set_num_threads(before)
    megapixels = size * size / 1e6
    return {
        "mpx_per_s_cpu": round(megapixels / best_predict, 3),
        "mpx_per_s_cpu_segment": round(megapixels / (best_predict + best_post), 3),
        "seconds_predict": round(best_predict, 3),
        "seconds_postprocess": round(best_post, 3),
        "image": f"{size}x{size} synthetic {'RGB' if model.in_channels == 3 else 'grey'}",
        "tile_size": options.tile_size,
        "overlap": options.overlap,
        "tta": options.tta,
        "threads": threads,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "other_load": busy_elsewhere,
        "torch": torch.__version__,
        "measured": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "script": "benchmarks/bench_models.py",
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """The results as a plain-text table."""
    header = ("model", "MP/s predict", "MP/s segment", "tile", "threads", "load", "others")
    lines = [header]
    for row in rows:
        lines.append(
            (
                row["model"],
                f"{row['mpx_per_s_cpu']:.2f}",
                f"{row['mpx_per_s_cpu_segment']:.2f}",
                str(row["tile_size"]),
                str(row["threads"]),
                "" if row["load_average"] is None else f"{row['load_average']:.1f}",
                "" if row.get("other_load") is None else f"{row['other_load']:.1f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths))
        )
        for line in lines
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="names or files (default: every bundled model)")
    parser.add_argument("--size", type=int, default=1024, help="test image side (1024)")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs, best counts (2)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    from napari_microseg.core.models.checkpoint import checkpoint_paths, load_checkpoint
    from napari_microseg.core.models.registry import bundled_entries, load_model

    names = args.models or [e.name for e in bundled_entries() if e.usable]
    if not names:
        print("No bundled model found (src/napari_microseg/models/ is empty).", file=sys.stderr)
        return 1
    rows = []
    for name in names:
        # A file is timed as it is, whatever the registry lists under its name.
        is_file = any(path.is_file() for path in checkpoint_paths(name))
        model = load_checkpoint(name, device="cpu") if is_file else load_model(name, device="cpu")
        rows.append(
            {
                "model": model.name,
                **measure_speed(model, size=args.size, threads=args.threads, repeats=args.repeats),
            }
        )
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
