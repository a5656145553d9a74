"""Training throughput: steps and patches per second of the real training loop, GPU busy time.

Run from the repository root::

    python benchmarks/bench_training.py                       # CPU: tiny U-Net + 3 configs
    python benchmarks/bench_training.py --device cuda         # on a GPU machine, as is
    python benchmarks/bench_training.py --baseline-src /tmp/before/src   # side by side

Each measurement runs in a fresh process (``--one``), which builds the real
:class:`~napari_microseg.core.training.loop.Trainer` for a config (its network,
data, augmentation, weight maps, loss and settings), takes a few warm-up
steps, then times ``--steps`` calls of the trainer's own step (batch from the
data pipeline, transfer, forward, loss, backward, optimizer) and one
validation. It also times, in the same process:

* **pipeline**: the data pipeline alone (batches per second times the batch),
  with the run's number of data workers;
* **network**: the same step on one fixed batch, without the pipeline (the
  ceiling the loop can reach; on the CPU the network's own cost).

Cases: ``tiny`` (issue #19's "near-free" network: a U-Net of depth 2 and base
width 4, trained on ``configs/isbi-membrane.yaml``'s data, augmentation and
weight maps; the target is 200 patches of 256x256 per second on a 2-core CPU)
and every config named with ``--configs``. On CUDA the default settings apply:
mixed precision, channels-last, the automatic GPU batch; the script prints
the GPU's utilisation sampled during the timed steps (``torch.cuda.utilization``,
else ``nvidia-smi``).

``--baseline-src DIR`` runs every case also with another copy of the source
tree (``DIR`` is put first on ``PYTHONPATH``; e.g. a checkout of an earlier
commit), alternating the two, so the ratios come from the same minutes of a
shared machine. Code without the data pipeline of #19 is measured through the
same Trainer methods (its patches are made in the step).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = ("isbi-membrane", "glas-unet", "dsb-nuclei")
TINY = {"depth": 2, "base_width": 4}


# ----------------------------------------------------------------------------- GPU busy time


class Utilisation:
    """Samples the GPU's utilisation (percent busy) every ``period`` seconds in a thread."""

    def __init__(self, index: int = 0, period: float = 0.2) -> None:
        self.index, self.period = index, period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.source = "none"

    def _read(self) -> float | None:
        import torch

        try:
            self.source = "torch.cuda.utilization"
            return float(torch.cuda.utilization(self.index))
        except Exception:  # pynvml missing: ask nvidia-smi
            pass
        try:
            out = subprocess.run(
                [
                    "nvidia-smi",
                    f"--id={self.index}",
                    "--query-gpu=utilization.gpu",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=5,
            )
            self.source = "nvidia-smi"
            return float(out.stdout.strip().splitlines()[0])
        except Exception:
            self.source = "unavailable"
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is not None:
                self.samples.append(value)
            self._stop.wait(self.period)

    def __enter__(self) -> Utilisation:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


# ----------------------------------------------------------------------------- one case


def build_trainer(case: str, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The Trainer of a case, set up as a run of it would be."""
    import torch

    from napari_microseg.cli.train import read_config
    from napari_microseg.core.models.build import create_model
    from napari_microseg.core.models.device import select_device
    from napari_microseg.core.training.data import Region, prepare
    from napari_microseg.core.training.datasets import load_dataset
    from napari_microseg.core.training.loop import Trainer
    from napari_microseg.core.training.settings import TrainSettings
    from napari_microseg.core.training.split import split_validation

    name = "isbi-membrane" if case == "tiny" else case
    config = read_config(ROOT / "configs" / f"{name}.yaml")
    data_cfg = dict(config.get("data") or {})
    folder = Path(args.data_root) / Path(data_cfg["path"]).name
    dataset = load_dataset(
        folder,
        kind=data_cfg.get("kind"),
        split=data_cfg.get("split"),
        limit=args.limit,
        target=data_cfg.get("target"),
        grey=bool(data_cfg.get("grey", False)),
    )
    training = dict(config.get("training") or {})
    training.update(steps=10_000, minutes=None)
    if args.workers is not None:
        training["data_workers"] = args.workers
    try:
        settings = TrainSettings.from_dict(training).validate()
    except Exception:  # code from before #19 knows no data_workers
        training.pop("data_workers", None)
        settings = TrainSettings.from_dict(training).validate()
    hyper = dict(config.get("hyperparameters") or {})
    if case == "tiny":
        hyper.update(TINY)
    torch.manual_seed(0)
    model = create_model(
        config["family"],
        name=name,
        in_channels=int(config.get("in_channels", 1)),
        classes=config.get("classes") or ("background", "foreground"),
        normalization=config.get("normalization"),
        **hyper,
    )
    choice = select_device(args.device)
    model.module.to(choice.device)
    data = prepare(dataset.pairs, model, boundary_width=settings.boundary_width)
    if dataset.validation:
        val = prepare(dataset.validation, model, boundary_width=settings.boundary_width)
        train_regions = [Region(p, p.annotated) for p in data.planes]
        val_regions = [Region(p, p.annotated) for p in val.planes]
    else:
        train_regions, val_regions, _ = split_validation(
            data.planes, fraction=settings.val_fraction
        )
    trainer = Trainer(
        model, settings, device=choice, train_regions=train_regions, val_regions=val_regions
    )
    info = {
        "case": case,
        "config": name,
        "network": f"{config['family']} {hyper}",
        "device": str(choice),
        "planes": len(data.planes),
        "patch": settings.patch_size,
    }
    return trainer, info


def measure(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """Steps per second of one case's training loop (in this process)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    trainer, info = build_trainer(case, args)
    cuda = trainer.device.kind == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    trainer._setup()
    info["setup_s"] = round(time.perf_counter() - t0, 2)  # weight maps once per plane (#19)
    new_pipeline = hasattr(trainer, "_start_loader")
    if new_pipeline:
        trainer._start_loader()
    batch = int(getattr(trainer, "batch_size", trainer.settings.batch_size))
    info.update(
        batch=batch,
        data_workers=getattr(trainer, "workers", "in step (before #19)"),
        amp=bool(trainer.amp),
        channels_last=bool(getattr(trainer, "channels_last", False)),
        prepare_s=round(t0 - started, 2),
    )
    steps = args.steps or (200 if cuda else (60 if case == "tiny" else 6))
    for _ in range(args.warmup):
        trainer._train_step()
    sync()
    with Utilisation() if cuda else _Nothing() as busy:
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer._train_step()
        sync()
        loop_s = time.perf_counter() - t0
    info.update(
        steps=steps,
        loop_steps_per_s=round(steps / loop_s, 3),
        loop_patches_per_s=round(steps * batch / loop_s, 2),
    )
    if cuda:
        info["gpu_utilisation_percent"] = None if busy.mean is None else round(busy.mean, 1)
        info["gpu_utilisation_source"] = busy.source
    # The data pipeline alone (the loader the loop used, or the old in-step sampler).
    t0 = time.perf_counter()
    n_batches = max(steps // 2, 3)
    for _ in range(n_batches):
        if new_pipeline:
            trainer.loader.next()
        else:
            trainer.sampler.batch(batch)
    pipe_s = time.perf_counter() - t0
    info["pipeline_patches_per_s"] = round(n_batches * batch / pipe_s, 2)
    if new_pipeline:
        trainer._stop_loader()
    # The network alone on a fixed batch: the ceiling of the loop.
    fixed = trainer.sampler.batch(0, batch) if new_pipeline else trainer.sampler.batch(batch)
    info["network_steps_per_s"] = _network_only(trainer, fixed, steps, sync, new_pipeline)
    t0 = time.perf_counter()
    trainer._validate()
    sync()
    validation_s = time.perf_counter() - t0
    interval = trainer.settings.val_every or 25
    info.update(
        validation_s=round(validation_s, 2),
        validation_share_at_val_every=round(
            validation_s / (validation_s + interval * loop_s / steps), 4
        ),
        val_every=interval,
    )
    return info


def _network_only(trainer: Any, fixed: dict[str, Any], steps: int, sync, new: bool) -> float:
    """Steps per second of the trainer's step when every batch is ``fixed`` (no pipeline)."""

    class Fixed:
        def next(self) -> dict[str, Any]:
            return fixed

        def batch(self, *args: Any) -> dict[str, Any]:
            return fixed

        def close(self) -> None:
            pass

    if new:
        trainer.loader = Fixed()
    else:
        trainer.sampler = Fixed()
    n = max(steps // 2, 3)
    trainer._train_step()
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        trainer._train_step()
    sync()
    if new:
        trainer.loader = None
    return round(n / (time.perf_counter() - t0), 3)


class _Nothing:
    mean = None
    source = "cpu"

    def __enter__(self) -> _Nothing:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


# ----------------------------------------------------------------------------- driver


def run_child(case: str, args: argparse.Namespace, src: str, workers: int | None) -> dict:
    env = dict(os.environ, PYTHONPATH=src)
    command = [
        sys.executable,
        __file__,
        "--one",
        case,
        "--device",
        args.device,
        "--data-root",
        str(args.data_root),
        "--warmup",
        str(args.warmup),
    ]
    for flag, value in (
        ("--steps", args.steps),
        ("--limit", args.limit),
        ("--threads", args.threads),
        ("--workers", workers),
    ):
        if value is not None:
            command += [flag, str(value)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        return {"case": case, "error": (out.stderr or out.stdout).strip().splitlines()[-3:]}
    return json.loads(lines[-1])


def loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="configs/<x>.yaml")
    parser.add_argument("--no-tiny", action="store_true", help="skip the near-free U-Net case")
    parser.add_argument(
        "--steps", type=int, help="timed steps (default: 60 tiny, 6 configs on CPU; 200 on CUDA)"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--limit", type=int, default=8, help="images or slices read per data set")
    parser.add_argument(
        "--workers",
        default=None,
        help="data workers to compare, e.g. 0,1 (default: the settings' auto)",
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--baseline-src", help="another source tree to measure side by side")
    parser.add_argument("--repeat", type=int, default=1, help="alternate the variants this often")
    parser.add_argument("--out", help="write every measurement to this JSON file")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        args.workers = None if args.workers in (None, "None") else int(args.workers)
        print(json.dumps(measure(args.one, args)))
        return 0
    cases = ([] if args.no_tiny else ["tiny"]) + [c for c in args.configs.split(",") if c]
    workers = [None] if args.workers is None else [int(w) for w in args.workers.split(",")]
    variants: list[tuple[str, str, int | None]] = []
    if args.baseline_src:
        variants.append(("before", str(Path(args.baseline_src).resolve()), None))
    variants += [
        (f"after, workers={w if w is not None else 'auto'}", str(ROOT / "src"), w) for w in workers
    ]
    results = []
    print(f"device {args.device}; load average {loadavg()}", flush=True)
    header = (
        "| case | code | batch | workers | loop steps/s | loop patches/s | pipeline "
        "patches/s | network-only steps/s | validation s | GPU busy % |"
    )
    print(header + "\n|" + "---|" * 10, flush=True)
    for case in cases:
        for _ in range(args.repeat):
            for label, src, w in variants:
                result = run_child(case, args, src, w)
                result.update(code=label, load=loadavg())
                results.append(result)
                if "error" in result:
                    print(f"| {case} | {label} | error: {result['error']} |", flush=True)
                    continue
                print(
                    f"| {case} | {label} | {result['batch']} | {result['data_workers']} | "
                    f"{result['loop_steps_per_s']} | {result['loop_patches_per_s']} | "
                    f"{result['pipeline_patches_per_s']} | {result['network_steps_per_s']} | "
                    f"{result['validation_s']} | {result.get('gpu_utilisation_percent', '-')} |",
                    flush=True,
                )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
