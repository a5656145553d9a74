"""GPU inference benchmark (#18): ours against MONAI, the bundled models, the GPU's utilisation.

One command, under 5 minutes on one GPU; the last lines it prints are the tables for
``docs/benchmarks.md``::

    PYTHONPATH=src python benchmarks/bench_gpu.py --out results/          # CUDA, full sizes

It runs unchanged on the CPU at small sizes (a smoke test of the script; on a CPU
without native bfloat16 the AMP rows are left out, emulated bfloat16 being 100x slower)::

    PYTHONPATH=src python benchmarks/bench_gpu.py --device cpu --size 256 \\
        --model-size 256 --volume 2x256x256 --repeats 1 --train-steps 2

Parts (``--parts``):

* ``monai``: the same network (the default U-Net, trained a few steps on synthetic
  nuclei so its outputs are decisive), the same image (``--size`` squared, float32),
  tile 256, overlap 0.25, Gaussian blending (sigma = tile / 8), at batch 4 and 32,
  with AMP off and on: :func:`napari_microseg.predict` against MONAI's
  ``sliding_window_inference`` given its best case (the image on the device, windows
  and the stitched result there, one download at the end). The two alternate, best
  of ``--repeats``; both timings include the upload and the download. Agreement:
  Dice of the foreground (probability > 0.5) against MONAI, and AMP against float32.
* ``models``: every bundled model with its card's settings and our defaults (AMP,
  automatic batch), in MP/s on a 2D image (``--model-size`` squared) and a volume
  (``--volume``, default 165x768x1024: the Lucchi FIB-SEM size); the instance model
  on the 2D image only.
* The GPU's utilisation while ours runs (``nvidia-smi``, or ``torch.cuda.utilization``),
  sampled every 50 ms.

MONAI is optional (its columns are then left out). The lent GPU machines have no
internet: download its wheel here (``pip download monai==1.6.1 --no-deps -d
gpu_wheels``; put the folder in an ignored path and carry it), then on the GPU::

    pip install --no-index --no-deps --target /tmp/site gpu_wheels/monai-*.whl
    PYTHONPATH=src:/tmp/site python3 benchmarks/bench_gpu.py --out $OUT
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_inference import TILE, build_unet  # the same network as on the CPU

OVERLAP = 0.25


# ----------------------------------------------------------------------------- utilisation


class Utilisation:
    """Samples the GPU's busy percentage in a thread while the ``with`` block runs."""

    def __init__(self, device: str, period: float = 0.05) -> None:
        self.device = device
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = self._reader()

    def _reader(self) -> Any:
        import torch

        if not self.device.startswith("cuda") or not torch.cuda.is_available():
            return None
        index = torch.device(self.device).index or 0
        with contextlib.suppress(Exception):
            torch.cuda.utilization(index)
            return lambda: float(torch.cuda.utilization(index))
        command = [
            "nvidia-smi",
            f"--id={index}",
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
        ]
        try:
            subprocess.run(command, capture_output=True, check=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return lambda: float(subprocess.run(command, capture_output=True, text=True).stdout)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            with contextlib.suppress(Exception):
                self.samples.append(self._read())

    def __enter__(self) -> Utilisation:
        if self._read is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- ours vs MONAI


def ours(net: Any, image: np.ndarray, batch: int | None, amp: bool, device: str) -> np.ndarray:
    from napari_microseg.core.inference.predict import predict

    return predict(
        net,
        image,
        tile_size=TILE,
        overlap=OVERLAP,
        blend="gaussian",
        batch_size=batch,
        device=device,
        normalization=None,
        amp=amp,
    )


def monai(net: Any, image: np.ndarray, batch: int, amp: bool, device: str) -> np.ndarray:
    """MONAI at its best: image, windows and the stitched result on the device."""
    import torch
    from monai.inferers import sliding_window_inference

    net = net.to(device)

    def predictor(tiles: torch.Tensor) -> torch.Tensor:
        return net(tiles).float().softmax(1)

    dtype = torch.bfloat16
    if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    kind = "cuda" if device.startswith("cuda") else "cpu"
    cast = torch.autocast(kind, dtype=dtype) if amp else contextlib.nullcontext()
    with torch.inference_mode(), cast:
        x = torch.from_numpy(image)[None, None].to(device)
        out = sliding_window_inference(
            x,
            (TILE, TILE),
            batch,
            predictor,
            overlap=OVERLAP,
            mode="gaussian",
            sigma_scale=0.125,
            sw_device=device,
            device=device,
        )
        return out[0].float().cpu().numpy()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    ma, mb = a[1] > 0.5, b[1] > 0.5
    return float(2 * np.logical_and(ma, mb).sum() / max(ma.sum() + mb.sum(), 1))


def timed(fn: Any, device: str) -> tuple[float, Any]:
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def compare(net: Any, image: np.ndarray, args: argparse.Namespace, have_monai: bool) -> dict:
    """Ours and MONAI alternating at batch 4 and 32, AMP off and on; best of the repeats."""
    rows = []
    megapixels = image.size / 1e6
    reference: dict[bool, np.ndarray] = {}
    utilisation: list[float] = []
    for amp in args.amp:
        for batch in args.batches:
            runs = {"ours": partial(ours, net, image, batch, amp, args.device)}
            if have_monai:
                runs["monai"] = partial(monai, net, image, batch, amp, args.device)
            for fn in runs.values():  # warm-up: cuDNN autotuning, allocator, MONAI's imports
                fn()
            best: dict[str, float] = {}
            outputs: dict[str, np.ndarray] = {}
            for _ in range(args.repeats):
                for name, fn in runs.items():
                    if name == "ours":
                        with Utilisation(args.device) as busy:
                            seconds, outputs[name] = timed(fn, args.device)
                        if busy.mean is not None:
                            utilisation.append(busy.mean)
                    else:
                        seconds, outputs[name] = timed(fn, args.device)
                    best[name] = min(best.get(name, np.inf), seconds)
                    print(f"  batch {batch} amp {amp} {name}: {seconds:.3f} s", flush=True)
            row = {
                "batch": batch,
                "amp": amp,
                "ours_s": best["ours"],
                "ours_mpx_s": megapixels / best["ours"],
            }
            if not amp:
                reference.setdefault(batch, outputs["ours"])
            elif batch in reference:
                row["dice_amp_vs_fp32"] = dice(outputs["ours"], reference[batch])
            if have_monai:
                row.update(
                    monai_s=best["monai"],
                    monai_mpx_s=megapixels / best["monai"],
                    ratio=best["monai"] / best["ours"],
                    dice_vs_monai=dice(outputs["ours"], outputs["monai"]),
                )
            rows.append(row)
            print(json.dumps(row), flush=True)
    auto = {}
    for amp in args.amp:
        ours(net, image, None, amp, args.device)
        seconds, _ = timed(lambda amp=amp: ours(net, image, None, amp, args.device), args.device)
        auto[f"amp_{amp}"] = {"seconds": seconds, "mpx_s": megapixels / seconds}
    return {
        "image": list(image.shape),
        "rows": rows,
        "ours_auto_batch": auto,
        "gpu_utilisation_percent": float(np.mean(utilisation)) if utilisation else None,
    }


# ----------------------------------------------------------------------------- bundled models


def model_input(card: Any, shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, str]:
    """A synthetic uint8 image of ``shape`` (YX or ZYX) with the card's channels."""
    from napari_microseg.core.io import synthetic

    side = min(shape[-1], 1024)
    if len(shape) == 3:
        base = synthetic.fibsem_mitochondria((4, min(shape[-2], 512), min(shape[-1], 512)))
        plane = base.image[1]
    else:
        plane = synthetic.fluorescence_nuclei((side, side), seed=seed).image
    plane = np.asarray(plane, np.float32)
    plane = (255 * (plane - plane.min()) / max(float(np.ptp(plane)), 1e-6)).astype(np.uint8)
    reps = [-(-s // p) for s, p in zip(shape[-2:], plane.shape)]
    tiled = np.tile(plane, reps)[: shape[-2], : shape[-1]]
    if len(shape) == 3:
        # Shift each slice a little so neighbouring slices differ, as in a real stack.
        image = np.stack([np.roll(tiled, 3 * z, axis=1) for z in range(shape[0])])
        axes = "ZYX"
    else:
        image, axes = tiled, "YX"
    neighbours = 2 * int(card.context_slices or 0) + 1
    if card.in_channels // neighbours == 3:
        image, axes = np.stack([image] * 3, axis=-1), axes + "C"
    return np.ascontiguousarray(image), axes


def bundled(args: argparse.Namespace) -> list[dict]:
    from napari_microseg.core.inference.predict import predict
    from napari_microseg.core.models.registry import bundled_entries, load_model

    rows = []
    for entry in bundled_entries():
        if not entry.usable:
            print(f"  {entry.name}: unusable ({entry.problem})")
            continue
        model = load_model(entry.name, device=args.device)
        shapes = [("2d", (args.model_size, args.model_size))]
        if model.task != "instance":
            shapes.append(("volume", tuple(args.volume)))
        for kind, shape in shapes:
            image, axes = model_input(model.card, shape)
            predict(model, image[:1] if kind == "volume" else image, axes=axes, device=args.device)
            with Utilisation(args.device) as busy:
                run = partial(predict, model, image, axes=axes, device=args.device)
                seconds, _ = timed(run, args.device)
            voxels = np.prod(shape)
            row = {
                "model": entry.name,
                "task": model.task,
                "input": f"{kind} {'x'.join(map(str, shape))}",
                "seconds": seconds,
                "mpx_s": voxels / 1e6 / seconds,
                "gpu_utilisation_percent": busy.mean,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# ----------------------------------------------------------------------------- report


def _rate(value: float) -> str:
    """MP/s with three significant digits (a CPU smoke test runs at a fraction of one)."""
    return f"{value:.3g} MP/s"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} %"


def tables(results: dict) -> str:
    lines = []
    if "monai" in results:
        part = results["monai"]
        shape = "x".join(map(str, part["image"]))
        lines += [
            f"Ours vs MONAI ({results['device_name']}, {shape} float32, tile {TILE}, "
            f"overlap {OVERLAP}, Gaussian; best of {results['repeats']}; "
            f"GPU busy while ours ran: {_percent(part['gpu_utilisation_percent'])})",
            "",
            "| batch | AMP | ours | MONAI | ours/MONAI | Dice vs MONAI | Dice AMP vs fp32 |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in part["rows"]:
            monai_cell = (
                f"{row['monai_s']:.2f} s ({_rate(row['monai_mpx_s'])})" if "ratio" in row else "–"
            )
            ratio = f"**{row['ratio']:.2f}x**" if "ratio" in row else "–"
            dice_monai = f"{row['dice_vs_monai']:.4f}" if "dice_vs_monai" in row else "–"
            dice_amp = f"{row['dice_amp_vs_fp32']:.4f}" if "dice_amp_vs_fp32" in row else "–"
            lines.append(
                f"| {row['batch']} | {'on' if row['amp'] else 'off'} | {row['ours_s']:.2f} s "
                f"({_rate(row['ours_mpx_s'])}) | {monai_cell} | {ratio} | {dice_monai} "
                f"| {dice_amp} |"
            )
        for key, value in part["ours_auto_batch"].items():
            amp = "on" if key == "amp_True" else "off"
            lines.append(f"| auto | {amp} | {_rate(value['mpx_s'])} | – | – | – | – |")
        lines.append("")
    if "models" in results:
        lines += [
            f"Bundled models ({results['device_name']}; card settings, default AMP and batch)",
            "",
            "| model | task | input | seconds | MP/s | GPU busy |",
            "|---|---|---|---|---|---|",
        ]
        for row in results["models"]:
            lines.append(
                f"| {row['model']} | {row['task']} | {row['input']} | {row['seconds']:.2f} "
                f"| {_rate(row['mpx_s'])} | {_percent(row['gpu_utilisation_percent'])} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, mps or cpu")
    parser.add_argument("--parts", default="monai,models", help="comma-separated")
    parser.add_argument("--size", type=int, default=8192, help="side of the 2D image vs MONAI")
    parser.add_argument("--batches", default="4,32", help="batch sizes vs MONAI")
    parser.add_argument(
        "--amp", default="off,on", help="precisions vs MONAI (on: skipped on CPUs without bf16)"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--model-size", type=int, default=4096, help="2D image of the models")
    parser.add_argument(
        "--volume", default="165x768x1024", help="volume of the bundled models, ZxYxX"
    )
    parser.add_argument("--out", type=Path, help="folder for results.json")
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.volume = [int(v) for v in args.volume.lower().split("x")]
    parts = set(args.parts.split(","))

    import torch

    from napari_microseg.core.inference.normalize import normalize
    from napari_microseg.core.io import synthetic
    from napari_microseg.core.models.device import select_device

    choice = select_device(args.device)
    args.device = choice.spec
    args.amp = [a.strip() == "on" for a in args.amp.split(",")]
    if choice.kind == "cpu" and True in args.amp:
        from napari_microseg.core.inference.forward import cpu_has_fast_bfloat16

        if not cpu_has_fast_bfloat16():
            # Emulated bfloat16 is 100x slower (we refuse it and run float32; MONAI would not).
            print("This CPU has no native bfloat16: the AMP rows are left out.")
            args.amp = [a for a in args.amp if not a]
    results: dict[str, Any] = {
        "device_name": str(choice),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "argv": sys.argv[1:] if argv is None else argv,
    }
    started = time.perf_counter()
    have_monai = False
    try:
        import monai as monai_module

        results["monai_version"] = monai_module.__version__
        have_monai = True
    except ImportError:
        print("MONAI is not installed: its columns are left out (see the docstring).")
    if "monai" in parts:
        net = build_unet(args.train_steps)
        base = normalize(synthetic.fluorescence_nuclei((min(args.size, 2048),) * 2).image)
        reps = -(-args.size // base.shape[0])
        image = np.ascontiguousarray(np.tile(base, (reps, reps))[: args.size, : args.size])
        results["monai"] = compare(net, image, args, have_monai)
    if "models" in parts:
        results["models"] = bundled(args)
    results["seconds"] = time.perf_counter() - started
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nTotal {results['seconds']:.0f} s\n")
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
