"""Scale-out: a zarr volume predicted block by block, in one process and on local Dask workers.

Measured, each run in a fresh subprocess so that memory is its own:

* **memory**: peak RSS of the driver and of every worker process while a
  synthetic uint8 zarr volume (``--size-gb``) is predicted into float32
  probabilities (2 classes, so the output is 8x the input) and labelled;
* **throughput** in megavoxels per second in this process (out-of-core, no
  Dask) and with 1, 2 and 4 local Dask workers (``--workers``), the ratio to
  one worker, and the CPU count that bounds it;
* **rss** (``--parts rss``): peak RSS, speed and output size of one process
  predicting a larger volume (``--rss-gb``; drawn as 16 distinct 8-slice
  slabs, the others rolled copies) with a single 3x3 convolution, so that
  what is measured is the block-by-block machinery around the network;
  probabilities stored as ``--rss-dtype`` (uint8 by default), torch with
  ``--rss-threads`` threads (1 by default; 0: torch's default);
* **resume**: a run killed (SIGKILL) half way, then started again: the time
  of the second run against a full one, and whether its output equals an
  uninterrupted run's bit for bit.

The network is a small U-Net (depth 2, 8 base channels, untrained: only the
arithmetic matters here), saved to a file that each worker loads once.

Run: ``python benchmarks/bench_scale.py`` (8 Mvoxels; about 10 minutes on 2 busy
CPU cores). ``--parts memory,scale,resume,rss`` picks parts. The issue's 8 GB
volume: ``python benchmarks/bench_scale.py --parts rss --rss-gb 8 --folder /tmp``
(about 25 minutes on 2 busy cores; needs ~15 GB of disk, removed at the end).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TILE = 256
CHUNKS = (8, 256, 256)
#: Work unit: 4 blocks per 8 slices of 1024 x 1024, so that 4 workers all have work.
BLOCK = (8, 512, 512)


def make_volume(path: Path, size_gb: float, seed: int = 0, distinct: int | None = None) -> tuple:
    """A synthetic uint8 FIB-SEM-like volume (blobs on noise) of about ``size_gb``, slab by slab.

    With ``distinct``, only that many 8-slice slabs are drawn; the others are
    copies of them rolled by random offsets along Y and X (what the network
    computes is the same; drawing 8 GB of blobs and noise would take longer
    than predicting them).
    """
    import zarr
    from scipy import ndimage as ndi

    side = 2048 if size_gb >= 0.25 else 1024
    depth = max(int(size_gb * 2**30 / side**2), CHUNKS[0])
    shape = (depth, side, side)
    store = zarr.create_array(store=str(path), shape=shape, chunks=CHUNKS, dtype="uint8")
    rng = np.random.default_rng(seed)
    drawn: list[np.ndarray] = []
    for z in range(0, depth, CHUNKS[0]):
        n = min(CHUNKS[0], depth - z)
        if distinct is not None and len(drawn) >= distinct:
            pick = drawn[int(rng.integers(len(drawn)))][:n]
            shift = tuple(int(v) for v in rng.integers(0, side, 2))
            store[z : z + n] = np.roll(pick, shift, axis=(1, 2))
            continue
        slab = rng.random((n, side // 8, side // 8), dtype=np.float32)
        slab = ndi.zoom(ndi.gaussian_filter(slab, 2), (1, 8, 8), order=1)
        noise = rng.normal(0, 0.05, slab.shape).astype(np.float32)
        slab = np.clip((slab - 0.3) * 400 + 60 + noise * 255, 0, 255).astype(np.uint8)
        store[z : z + n] = slab
        if distinct is not None and n == CHUNKS[0]:
            drawn.append(slab)
    return shape


def make_model(folder: Path) -> Path:
    import torch

    from napari_microseg.core.models.build import create_model
    from napari_microseg.core.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("unet", name="bench-scale", depth=2, base_width=8)
    return save_checkpoint(model, folder / "bench-scale", overwrite=True)


# ----------------------------------------------------------------------------- one run


def peak_mb() -> float:
    """This process's peak RSS in MB: VmHWM, which (unlike ru_maxrss) does not inherit the
    parent's peak across fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(args: argparse.Namespace) -> dict:
    """One prediction (and labelling) in this process; returns timings and peak RSS."""
    from napari_microseg.core.blocks.cluster import DaskExecutor, ModelRef, cluster_client
    from napari_microseg.core.blocks.labels import label_to_zarr
    from napari_microseg.core.blocks.predict import predict_to_zarr
    from napari_microseg.core.inference.options import PredictOptions
    from napari_microseg.core.io.zarr_arrays import read_zarr
    from napari_microseg.core.models.registry import load_model
    from napari_microseg.core.postprocess import PostprocessPipeline
    from napari_microseg.core.progress import drain

    model = load_model(args.model, device="cpu")
    image = read_zarr(args.input)
    options = PredictOptions(tile_size=TILE, device="cpu")
    pipeline = PostprocessPipeline(method="threshold", threshold=0.5)
    result: dict = {}

    def work(executor, ref):
        started = time.perf_counter()
        done = drain(
            predict_to_zarr(
                model,
                image,
                args.out,
                options=options,
                chunks=CHUNKS,
                block=BLOCK,
                executor=executor,
                model_ref=ref,
            ),
            show=False,
        )
        result["predict_s"] = time.perf_counter() - started
        result["skipped"] = done.skipped
        result["blocks"] = done.blocks
        if args.labels:
            started = time.perf_counter()
            labels = drain(
                label_to_zarr(
                    done.probabilities,
                    args.out + ".labels.zarr",
                    pipeline,
                    block=BLOCK,
                    executor=executor,
                    overwrite=True,
                ),
                show=False,
            )
            result["labels_s"] = time.perf_counter() - started
            result["objects"] = labels.n_objects

    if args.workers:
        with cluster_client(workers=args.workers, memory_limit="2GB") as client:
            work(DaskExecutor(client), ModelRef(args.model, "cpu"))
            peaks = client.run(peak_mb)
            result["worker_rss_mb"] = sorted(peaks.values())
    else:
        work(None, None)
    result["driver_rss_mb"] = peak_mb()
    return result


def subprocess_run(input_: Path, out: Path, model: Path, workers: int, labels: bool) -> dict:
    command = [
        sys.executable,
        __file__,
        "_run",
        "--input",
        str(input_),
        "--out",
        str(out),
        "--model",
        str(model),
        "--workers",
        str(workers),
    ]
    if labels:
        command.append("--labels")
    started = time.perf_counter()
    text = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(text.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    return result


# ----------------------------------------------------------------------------- parts


def part_memory(folder: Path, volume: Path, voxels: int, model: Path, workers: int) -> None:
    local = subprocess_run(volume, folder / "mem-local.zarr", model, 0, True)
    spread = subprocess_run(volume, folder / "mem-dask.zarr", model, workers, True)
    print(f"\n## memory ({voxels / 1e6:.0f} Mvoxels, input {voxels / 2**30:.2f} GiB)")
    print(
        f"  one process, out-of-core: peak RSS {local['driver_rss_mb']:.0f} MB "
        f"(predict {local['predict_s']:.1f} s, labels {local['labels_s']:.1f} s, "
        f"{local['objects']} objects)"
    )
    print(
        f"  {workers} Dask workers: driver {spread['driver_rss_mb']:.0f} MB, workers "
        + ", ".join(f"{v:.0f}" for v in spread["worker_rss_mb"])
        + " MB"
    )


def du_mb(path: Path) -> float:
    """Bytes on disk under a folder, in MB."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) / 1e6


def part_rss(folder: Path, size_gb: float, dtype: str, threads: int | None) -> None:
    """Peak RSS and speed on a larger volume with a single 3x3 convolution."""
    volume = folder / "big.zarr"
    started = time.perf_counter()
    shape = make_volume(volume, size_gb, seed=1, distinct=16)
    written = time.perf_counter() - started
    out = folder / "big-prob.zarr"
    command = [sys.executable, __file__, "_rss", "--input", str(volume), "--out", str(out)]
    command += ["--probability-dtype", dtype]
    if threads:
        command += ["--threads", str(threads)]
    started = time.perf_counter()
    text = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - started
    result = json.loads(text.strip().splitlines()[-1])
    voxels = math.prod(shape)
    size = 2 * voxels * np.dtype(dtype).itemsize
    print(
        f"\n## a larger volume {shape} ({voxels / 2**30:.2f} GiB uint8 in, "
        f"{du_mb(volume) / 1e3:.2f} GB on disk; written in {written:.0f} s)"
    )
    print(
        f"  one process, one 3x3 convolution, {dtype} probabilities "
        f"({size / 2**30:.1f} GiB raw, {du_mb(out) / 1e3:.2f} GB on disk), torch threads "
        f"{result['threads']}: {result['predict_s']:.0f} s ({wall:.0f} s with start-up), "
        f"{voxels / result['predict_s'] / 1e6:.1f} Mvox/s; peak RSS {result['rss_mb']:.0f} MB "
        f"(import torch alone: {result['torch_mb']:.0f} MB)"
    )


def run_rss(args: argparse.Namespace) -> dict:
    import torch

    torch_mb = peak_mb()
    from napari_microseg.core.blocks.predict import predict_to_zarr
    from napari_microseg.core.inference.options import PredictOptions
    from napari_microseg.core.io.zarr_arrays import read_zarr
    from napari_microseg.core.progress import drain

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 2, 3, padding=1)
    options = PredictOptions(
        tile_size=TILE, device="cpu", normalization={"kind": "range", "min": 0, "max": 255}
    )
    started = time.perf_counter()
    drain(
        predict_to_zarr(
            conv,
            read_zarr(args.input),
            args.out,
            options=options,
            chunks=CHUNKS,
            block=(CHUNKS[0], 1024, 1024),
            probability_dtype=args.probability_dtype,
            threads=args.threads,
        ),
        show=False,
    )
    return {
        "predict_s": time.perf_counter() - started,
        "rss_mb": peak_mb(),
        "torch_mb": torch_mb,
        "threads": args.threads or torch.get_num_threads(),
    }


def part_scale(folder: Path, volume: Path, voxels: int, model: Path, counts: list[int]) -> None:
    print(f"\n## throughput ({voxels / 1e6:.0f} Mvoxels, {os.cpu_count()} CPUs)")
    base = None
    for workers in [0, *counts]:
        run = subprocess_run(volume, folder / f"scale-{workers}.zarr", model, workers, False)
        rate = voxels / run["predict_s"] / 1e6
        if workers == 1:
            base = rate
        ratio = f", x{rate / base:.2f} of 1 worker" if base and workers > 1 else ""
        where = f"{workers} worker(s)" if workers else "one process, no Dask"
        print(f"  {where}: {run['predict_s']:.1f} s, {rate:.2f} Mvox/s{ratio}")


def part_resume(folder: Path, volume: Path, model: Path) -> None:
    import zarr

    from napari_microseg.core.blocks.store import resume_state

    full = subprocess_run(volume, folder / "full.zarr", model, 0, False)
    out = folder / "killed.zarr"
    command = [
        sys.executable,
        __file__,
        "_run",
        "--input",
        str(volume),
        "--out",
        str(out),
        "--model",
        str(model),
        "--workers",
        "0",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done, total = 0, full["blocks"]
    while process.poll() is None and done < total // 2:
        time.sleep(0.5)
        try:
            done = len(resume_state(zarr.open_array(str(out), mode="r"))["done"])
        except Exception:  # not created yet
            done = 0
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    again = subprocess_run(volume, out, model, 0, False)
    same = np.array_equal(
        zarr.open_array(str(out), mode="r")[:], zarr.open_array(str(folder / "full.zarr"))[:]
    )
    print("\n## resume")
    print(
        f"  full run {full['predict_s']:.1f} s; killed after {again['skipped']}/{total} blocks; "
        f"second run {again['predict_s']:.1f} s (wall {again['wall_s']:.1f} s with start-up); "
        f"equal to an uninterrupted run: {same}"
    )


def main() -> None:
    if sys.argv[1:2] == ["_rss"]:
        run = argparse.ArgumentParser()
        run.add_argument("--input", required=True)
        run.add_argument("--out", required=True)
        run.add_argument("--probability-dtype", default="float32")
        run.add_argument("--threads", type=int)
        print(json.dumps(run_rss(run.parse_args(sys.argv[2:]))))
        return
    if sys.argv[1:2] == ["_run"]:
        run = argparse.ArgumentParser()
        for name in ("--input", "--out", "--model"):
            run.add_argument(name, required=True)
        run.add_argument("--workers", type=int, default=0)
        run.add_argument("--labels", action="store_true")
        print(json.dumps(run_job(run.parse_args(sys.argv[2:]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=0.008, help="input volume size (uint8)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to compare")
    parser.add_argument("--parts", default="memory,scale,resume")
    parser.add_argument("--rss-gb", type=float, default=1.0, help="volume of the rss part")
    parser.add_argument(
        "--rss-dtype", default="uint8", help="probability storage of the rss part (float32...)"
    )
    parser.add_argument(
        "--rss-threads", type=int, default=1, help="torch threads of the rss part (0: default)"
    )
    parser.add_argument("--folder", help="where the volumes go (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        volume = folder / "volume.zarr"
        started = time.perf_counter()
        shape = make_volume(volume, args.size_gb)
        voxels = math.prod(shape)
        print(
            f"volume {shape} uint8 ({voxels / 2**30:.2f} GiB) written in "
            f"{time.perf_counter() - started:.0f} s; chunks {CHUNKS}, tile {TILE}"
        )
        model = make_model(folder)
        counts = [int(n) for n in args.workers.split(",")]
        parts = args.parts.split(",")
        if "memory" in parts:
            part_memory(folder, volume, voxels, model, max(counts))
        if "scale" in parts:
            part_scale(folder, volume, voxels, model, counts)
        if "resume" in parts:
            part_resume(folder, volume, model)
        if "rss" in parts:
            part_rss(folder, args.rss_gb, args.rss_dtype, args.rss_threads)


if __name__ == "__main__":
    main()
