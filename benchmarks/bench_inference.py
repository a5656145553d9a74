"""Tiled inference against MONAI's ``sliding_window_inference``: speed, agreement, memory.

Measured in one run, alternating ours and MONAI's on the same network (the
default U-Net: depth 4, 32 base channels, trained for 30 steps on synthetic
nuclei so that its outputs are decisive), the same pre-normalized images (a
2048x2048 grey image and a 64x512x512 stack, cut into YX slices), tile 256,
overlap 0.25, Gaussian blending, float32, both under ``torch.inference_mode``,
each at batch sizes 1 and 2 (``--batch-sizes``; 1 is the fastest for both on a
small CPU), plus ours at its default precision where that is not float32
(bfloat16 on CPUs that have it natively):

* throughput (megapixels per second) and the ratio ours / MONAI, at the same
  batch size and best against best;
* agreement: mean absolute difference of the foreground probabilities and the
  Dice of the two masks thresholded at 0.5;
* achieved GFLOP/s (convolutions counted by hooks) against the machine's own
  convolution throughput (the best of 3x3 convolutions shaped like the
  U-Net's layers, timed alone, in float32 and bfloat16);
* peak RSS of a subprocess predicting a zarr volume several times larger than
  the memory it is allowed (``--rss-gb``; a single 3x3 convolution there,
  since the point is memory, not FLOPs).

MONAI is a benchmark-only dependency (``pip install monai``; the ``bench`` extra).

Run: ``python benchmarks/bench_inference.py`` (all parts, about 6 minutes on
2 CPU cores), or pick parts: ``--parts 2d,3d,flops,rss``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TILE, OVERLAP = 256, 0.25


def build_unet(train_steps: int, seed: int = 0):
    """The default U-Net, trained a few steps on synthetic nuclei so its outputs are decisive."""
    import torch

    from napari_microseg.core.inference.normalize import normalize
    from napari_microseg.core.io import synthetic
    from napari_microseg.core.models.unet import UNet

    torch.manual_seed(seed)
    net = UNet(1, 2)
    sample = synthetic.fluorescence_nuclei((512, 512), seed=seed)
    image, mask = normalize(sample.image), (sample.labels > 0).astype(np.int64)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    weight = torch.tensor([1.0, 3.0])  # nuclei cover ~13% of the image
    rng = np.random.default_rng(seed)
    for _ in range(train_steps):
        ys, xs = rng.integers(0, 512 - 96, (2, 4))
        crops = [(slice(y, y + 96), slice(x, x + 96)) for y, x in zip(ys, xs)]
        x = torch.from_numpy(np.stack([image[c] for c in crops]))[:, None]
        target = torch.from_numpy(np.stack([mask[c] for c in crops]))
        loss = torch.nn.functional.cross_entropy(net(x), target, weight=weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def ours(net, image, batch_size, amp=False):
    from napari_microseg.core.inference.predict import predict

    return predict(
        net,
        image,
        tile_size=TILE,
        overlap=OVERLAP,
        blend="gaussian",
        batch_size=batch_size,
        device="cpu",
        normalization=None,
        amp=amp,
    )


def ours_default(net, image, batch_size):
    """What a user gets without asking: bfloat16 where the CPU has it natively."""
    return ours(net, image, batch_size, amp=None)


def monai(net, image, batch_size):
    import torch
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(image)
    if image.ndim == 2:
        roi, x = (TILE, TILE), x[None, None]

        def predictor(tiles):
            return net(tiles).softmax(1)
    else:  # slices of a stack: windows one slice deep, net applied in 2D
        roi, x = (1, TILE, TILE), x[None, None]

        def predictor(tiles):
            return net(tiles[:, :, 0]).softmax(1)[:, :, None]

    with torch.inference_mode():
        out = sliding_window_inference(
            x, roi, batch_size, predictor, overlap=OVERLAP, mode="gaussian", sigma_scale=0.125
        )
    return out[0].numpy()


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    fa, fb = a[1], b[1]
    ma, mb = fa > 0.5, fb > 0.5
    dice = 2 * np.logical_and(ma, mb).sum() / max(ma.sum() + mb.sum(), 1)
    difference = np.abs(fa - fb)
    return {
        "mad": float(difference.mean()),
        "max_abs_diff": float(difference.max()),
        # Differences sit in the overlaps, where a tile's Gaussian weight falls under
        # 1e-3: MONAI clamps the product of the two axes' weights at 1e-3, we clamp each
        # axis (which keeps the weights separable), so the overlapping tiles mix slightly
        # differently where their predictions differ (near their borders).
        "fraction_diff_over_0.01": float((difference > 0.01).mean()),
        "dice": float(dice),
        "fraction_flipped": float((ma != mb).mean()),
        "foreground_fraction": float(ma.mean()),
    }


def compare(name, net, image, batch_sizes, repeats, bf16):
    """Alternate ours and MONAI at every batch size; report the best time of each."""
    contenders = []
    for batch in batch_sizes:
        contenders += [(f"ours_b{batch}", ours, batch), (f"monai_b{batch}", monai, batch)]
    if bf16:
        contenders.append((f"ours_default_b{batch_sizes[0]}", ours_default, batch_sizes[0]))
    times: dict[str, list[float]] = {key: [] for key, _, _ in contenders}
    outputs = {}
    for _ in range(repeats):
        for key, fn, batch in contenders:
            start = time.perf_counter()
            outputs[key] = fn(net, image, batch)
            times[key].append(time.perf_counter() - start)
            print(f"  {name} {key}: {times[key][-1]:.2f} s", flush=True)
    megapixels = image.size / 1e6
    best = {k: min(v) for k, v in times.items()}
    first = batch_sizes[0]
    report = {
        "image": f"{name} {image.shape}",
        "seconds": best,
        "mpx_per_s": {k: megapixels / t for k, t in best.items()},
        "speedup_same_batch": {
            f"b{b}": best[f"monai_b{b}"] / best[f"ours_b{b}"] for b in batch_sizes
        },
        "speedup_best_vs_best": min(best[f"monai_b{b}"] for b in batch_sizes)
        / min(best[f"ours_b{b}"] for b in batch_sizes),
        "agreement": agreement(outputs[f"ours_b{first}"], outputs[f"monai_b{first}"]),
    }
    if bf16:
        key = f"ours_default_b{first}"
        report["speedup_default_vs_monai_best"] = (
            min(best[f"monai_b{b}"] for b in batch_sizes) / best[key]
        )
        report["agreement_default"] = agreement(outputs[key], outputs[f"monai_b{first}"])
    return report


def count_flops(net, shape) -> float:
    """Multiply-adds x 2 of every convolution for one input of ``shape`` (N, C, H, W)."""
    import torch

    total = [0.0]

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.ConvTranspose2d):
            spatial = inputs[0].shape[-2] * inputs[0].shape[-1]
        else:
            spatial = output.shape[-2] * output.shape[-1]
        k = module.kernel_size[0] * module.kernel_size[1]
        per = module.in_channels // module.groups * module.out_channels * k
        total[0] += 2.0 * per * spatial * output.shape[0]

    handles = [
        m.register_forward_hook(hook)
        for m in net.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    with torch.inference_mode():
        net(torch.zeros(shape))
    for h in handles:
        h.remove()
    return total[0]


def machine_conv_gflops(repeats: int = 4, bf16: bool = False) -> float:
    """The machine's own convolution throughput: the best of 3x3 convolutions shaped like
    the U-Net's layers (64 to 256 channels), timed alone, NHWC, float32 (or bfloat16)."""
    import contextlib

    import torch

    best = 0.0
    for channels, side, batch in ((64, 256, 2), (128, 128, 4), (256, 64, 8)):
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval()
        conv = conv.to(memory_format=torch.channels_last)
        x = torch.randn(batch, channels, side, side).contiguous(memory_format=torch.channels_last)
        flops = 2.0 * channels * channels * 9 * side * side * batch
        cast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), cast:
            conv(x)
            for _ in range(repeats):
                start = time.perf_counter()
                conv(x)
                best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


def tiles_of(shape) -> int:
    from napari_microseg.core.inference.tiling import TilePlan

    plane = shape[-2:]
    return int(np.prod(shape[:-2])) * len(TilePlan.create(plane, TILE, OVERLAP))


# ----------------------------------------------------------------------------- peak RSS


def make_volume(path: Path, gigabytes: float) -> tuple[int, ...]:
    """A float32 zarr volume of about ``gigabytes``, written slab by slab."""
    import zarr

    side = 4096
    depth = max(round(gigabytes * 2**30 / (side * side * 4)), 1)
    array = zarr.create_array(
        store=str(path), shape=(depth, side, side), chunks=(4, 512, 512), dtype="float32"
    )
    yy, xx = np.mgrid[:side, :side].astype(np.float32)
    pattern = np.sin(yy / 37.0) * np.cos(xx / 23.0)
    for z in range(0, depth, 4):
        slab = np.stack([pattern + 0.1 * k for k in range(min(4, depth - z))])
        array[z : z + len(slab)] = slab
    return array.shape


def rss_child(volume: str, out: str, budget_mb: float) -> None:
    """Runs in a subprocess: predict the zarr volume into a zarr result, print peak RSS."""
    import torch
    import zarr

    from napari_microseg.core.inference.options import PredictOptions
    from napari_microseg.core.inference.predict import run_prediction
    from napari_microseg.core.progress import drain

    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1).eval()  # cheap: this part measures memory
    source = zarr.open_array(volume, mode="r")
    baseline = _peak_rss_mb()
    result = zarr.create_array(
        store=out, shape=(1, *source.shape), chunks=(1, 4, 512, 512), dtype="float16"
    )
    options = PredictOptions(tile_size=512, batch_size=4, device="cpu", memory_budget_mb=budget_mb)
    start = time.perf_counter()
    drain(run_prediction(net, source, out=result, options=options), show=False)
    print(
        json.dumps(
            {
                "peak_rss_mb": _peak_rss_mb(),
                "rss_after_imports_mb": baseline,
                "seconds": time.perf_counter() - start,
                "complete": bool(result.attrs["complete"]),
            }
        )
    )


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(gigabytes: float, budget_mb: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as folder:
        volume = Path(folder) / "volume.zarr"
        start = time.perf_counter()
        shape = make_volume(volume, gigabytes)
        print(f"  wrote {volume} {shape} float32 in {time.perf_counter() - start:.0f} s")
        command = [sys.executable, __file__, "--rss-child", str(volume), str(Path(folder) / "o")]
        child = subprocess.run(
            [*command, "--budget-mb", str(budget_mb)],
            capture_output=True,
            text=True,
            check=True,
        )
        report = json.loads(child.stdout.strip().splitlines()[-1])
    volume_mb = float(np.prod(shape)) * 4 / 2**20
    report.update(
        volume_shape=list(shape),
        volume_mb=volume_mb,
        volume_over_peak_rss=volume_mb / report["peak_rss_mb"],
    )
    return report


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="2d,3d,flops,rss")
    parser.add_argument(
        "--batch-sizes", default="1,2", help="tiles per batch, both sides; comma-separated"
    )
    parser.add_argument(
        "--no-bf16", action="store_true", help="skip ours at default precision (bfloat16 here)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="alternations for the 2D image")
    parser.add_argument("--size", type=int, default=2048, help="side of the 2D image")
    parser.add_argument("--stack-depth", type=int, default=64, help="slices of the 3D stack")
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--rss-gb", type=float, default=4.0, help="size of the zarr volume")
    parser.add_argument("--budget-mb", type=float, default=128.0, help="memory_budget_mb")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(*args.rss_child, args.budget_mb)
        return 0

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    results: dict[str, object] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "batch_sizes": args.batch_sizes,
    }
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    from napari_microseg.core.inference.forward import cpu_has_fast_bfloat16

    bf16 = not args.no_bf16 and cpu_has_fast_bfloat16()
    try:
        import monai as monai_module

        results["monai"] = monai_module.__version__
    except ImportError:
        if parts & {"2d", "3d"}:
            print("MONAI is not installed: pip install monai (benchmark only).")
            return 1
    from napari_microseg.core.inference.normalize import normalize
    from napari_microseg.core.io import synthetic

    if parts & {"2d", "3d", "flops"}:
        start = time.perf_counter()
        net = build_unet(args.train_steps)
        seconds = time.perf_counter() - start
        print(f"U-Net ready ({args.train_steps} training steps, {seconds:.0f} s)")
    if "2d" in parts:
        image = normalize(synthetic.fluorescence_nuclei((args.size, args.size)).image)
        name = f"{args.size}x{args.size}"
        results["2d"] = compare(name, net, image, batch_sizes, args.repeats, bf16)
        print(json.dumps(results["2d"], indent=1))
    if "3d" in parts:
        stack = normalize(synthetic.fibsem_mitochondria((args.stack_depth, 512, 512)).image)
        name = f"{args.stack_depth}x512x512"
        results["3d"] = compare(name, net, stack, batch_sizes, 1, bf16)
        print(json.dumps(results["3d"], indent=1))
    if "flops" in parts:
        per_tile = count_flops(net, (1, 1, TILE, TILE))
        peaks = {"float32": machine_conv_gflops()}
        if bf16:
            peaks["bfloat16"] = machine_conv_gflops(bf16=True)
        flops = {"gflop_per_tile": per_tile / 1e9, "machine_conv_gflops": peaks}
        for key in ("2d", "3d"):
            if key in results:
                shape = (args.size,) * 2 if key == "2d" else (args.stack_depth, 512, 512)
                total = per_tile * tiles_of(shape)
                for side, seconds in results[key]["seconds"].items():
                    achieved = total / seconds / 1e9
                    flops[f"{key}_{side}_gflops"] = achieved
                    peak = peaks["bfloat16" if "default" in side else "float32"]
                    flops[f"{key}_{side}_fraction_of_machine"] = achieved / peak
        results["flops"] = flops
        print(json.dumps(flops, indent=1))
    if "rss" in parts:
        results["rss"] = peak_rss(args.rss_gb, args.budget_mb)
        print(json.dumps(results["rss"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
