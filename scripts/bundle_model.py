"""Bundle a trained model: evaluate it on its validation split, time it, card it, ship it.

Takes a model trained by ``microseg train`` (from the user's model folder, or a
path) and

1. rounds its weights to float16 (what ships) and predicts the validation split
   that training used (rebuilt by :mod:`napari_microseg.bundling.bundle` with the
   training code, checked against the lineage's data hash and split) with the
   card's recommended tile size, overlap and post-processing, then scores the
   predictions with ``microseg evaluate``;
2. measures its CPU speed with ``benchmarks/bench_models.py`` (all cores);
3. writes the complete card: validation metrics, the target of issue #8 and
   whether it was met, training data, settings, time, steps and hardware, the
   recommended tile and post-processing, the speed and the commands;
4. saves float16 safetensors + JSON card into ``src/napari_microseg/models/``,
   atomically, refusing more than 30 MB (100 MB for all bundled models);
5. updates ``docs/models.md`` (the model's section, a line in its bundling log)
   and writes the training curve to ``docs/models/<name>-training.csv`` (and
   ``.png`` when matplotlib is installed).

Examples
--------
::

    python scripts/bundle_model.py mito-em --data ../shared/data/lucchi
    python scripts/bundle_model.py membrane-em --data ../shared/data/isbi2012
    # re-evaluate the shipped file, writing nothing but the predictions:
    python scripts/bundle_model.py mito-em --data ../shared/data/lucchi \\
        --model src/napari_microseg/models/mito-em.safetensors --evaluate-only --keep /tmp/mito-val
    microseg evaluate /tmp/mito-val/pred /tmp/mito-val/truth
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import importlib.util
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_microseg.core.evaluation.uncertainty import Interval

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "models.md"
CONFIGS = ROOT / "configs"


# ----------------------------------------------------------------------------- helpers


def _bench_module() -> Any:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_models
    finally:
        sys.path.pop(0)
    return bench_models


def sibling(name: str) -> Any:
    """``scripts/<name>.py`` as a module, also when this script is itself loaded by path."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_config(*names: str, folder: Path = CONFIGS) -> Path | None:
    """The training config in ``folder`` whose ``name`` is one of ``names``."""
    import yaml

    for path in sorted(folder.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("name") in names:
            return path
    return None


def shown_path(path: Path) -> str:
    """A path as the documentation shows it: relative to the project, or ``../shared/...``."""
    resolved = path.resolve()
    for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
        try:
            return prefix + str(resolved.relative_to(base))
        except ValueError:
            continue
    return str(path)


def find_source(source: str) -> Path:
    """The weights file of ``source``: a path, else a model of that name in the user folder."""
    from napari_microseg.core.models.checkpoint import checkpoint_paths
    from napari_microseg.core.models.entries import scan_folder
    from napari_microseg.core.models.registry import user_models_dir

    path = Path(source).expanduser()
    weights, card = checkpoint_paths(path)
    if weights.exists() or card.exists():
        return weights
    entries = scan_folder(user_models_dir(), "user")
    for entry in entries:
        if entry.name == source and entry.usable:
            return entry.path
    names = ", ".join(e.name for e in entries if e.usable) or "none"
    raise SystemExit(
        f"No trained model {source!r} in {user_models_dir()} (its models: {names}). Give "
        "--model NAME_OR_PATH, or set NAPARI_MICROSEG_MODELS to the folder training saved into."
    )


def retrain_command(
    config_path: Path | None, data: Path, lineage: dict, config: dict, limit: int | None = None
) -> str:
    """The ``microseg train`` command that reproduces the training run (and its conversion
    to a U-Net that resamples its input itself, when the lineage records one)."""
    from napari_microseg.core.models.base import LINEAGE_DOWNSAMPLED, LINEAGE_WIDENED

    parts = ["microseg", "train"]
    if config_path is not None:
        parts += ["--config", shown_path(config_path)]
    parts += ["--data", shown_path(data)]
    if limit is not None:
        parts += ["--limit", str(limit)]
    settings = lineage.get("settings", {})
    configured = dict(config.get("training") or {})
    for key in ("steps", "minutes", "seed"):
        if key in settings and settings[key] != configured.get(key, settings[key]):
            parts += [f"--{key}", str(settings[key])]
    start = lineage.get("initial_weights")
    widening = ""
    if isinstance(start, dict) and start.get("model"):
        # Warm-started: the weights it began from are named (their SHA-256 is in the lineage).
        wider = start.get(LINEAGE_WIDENED)
        if isinstance(wider, dict) and wider.get("model"):
            # ... from a narrow model made wider first: that step comes before training.
            widening = shlex.join(
                ["python", "scripts/widen_model.py", str(wider["model"]), "--base-width",
                 str(wider["base_width_to"]), "--noise", str(wider.get("noise", 0.01)),
                 "--seed", str(wider.get("seed", 0)), "--out", str(start["model"])]
            ) + " && "  # fmt: skip
            parts += ["--init", f"{start['model']}.safetensors"]
        else:
            parts += ["--init", str(start["model"])]
    command = widening + shlex.join(parts)
    pooled = lineage.get(LINEAGE_DOWNSAMPLED)
    if isinstance(pooled, dict) and config.get("name"):
        # Trained on resampled images, then given a network that resamples them itself.
        name, factor = str(config["name"]), int(pooled["factor"])
        command += " && " + shlex.join(
            ["python", "scripts/downsample_model.py", name, "--factor", str(factor),
             "--out", f"{name}-d{factor}"]
        )  # fmt: skip
    return command


def read_mean_row(path: Path) -> dict[str, Any]:
    """The ``mean`` row of a ``microseg evaluate`` CSV, numbers as floats."""
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    mean = next(row for row in rows if row["image"] == "mean")
    out: dict[str, Any] = {"image": "mean", "n_images": len(rows) - 1}
    for key, value in mean.items():
        if key != "image" and value not in ("", None):
            out[key] = float(value)
    return out


def metric_interval(path: Path, metric: str) -> Interval | None:
    """The bootstrap interval over images of one column's mean, from a ``microseg evaluate``
    CSV; None when fewer than three images have a finite value."""
    from napari_microseg.core.evaluation.evaluate import mean_intervals

    with open(path, newline="", encoding="utf-8") as stream:
        rows = [row for row in csv.DictReader(stream) if row["image"] != "mean"]
    return mean_intervals(rows, [metric]).get(metric)


def parse_postprocess(text: str | None) -> dict[str, Any] | None:
    """A pipeline dict from JSON text or a JSON file (a saved pipeline or a model card)."""
    if not text:
        return None
    # JSON text is never a file name (and may be longer than a file name may be).
    inline = text.lstrip().startswith("{")
    try:
        data = json.loads(text if inline else Path(text).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SystemExit(
            f"--postprocess: not a JSON object or a readable JSON file ({error})."
        ) from None
    if isinstance(data, dict) and "recommended" in data:
        data = data["recommended"].get("postprocess")
    if not isinstance(data, dict):
        raise SystemExit("--postprocess must be a JSON object (a post-processing pipeline).")
    return data


# ----------------------------------------------------------------------------- main


#: Where a card's description starts to speak of a missed target (what follows says what
#: would close it).
MISSED = " Below its issue #8 target on the validation split: "


def target_description(
    description: str, label: str, value: float, minimum: float, *, met: bool
) -> str:
    """The card's description with what it says of the target brought up to date.

    A model bundled again keeps its description but not an earlier miss: the sentence
    :data:`MISSED` and everything after it (what would close the gap) goes, and a new
    miss is said again.

    Examples
    --------
    >>> missed = target_description("U-Net.", "mean AP", 0.324, 0.4, met=False)
    >>> missed
    'U-Net. Below its issue #8 target on the validation split: mean AP 0.324 < 0.4.'
    >>> target_description(missed + " Train longer.", "mean AP", 0.43, 0.4, met=True)
    'U-Net.'
    """
    kept = description.split(MISSED.strip())[0].strip()
    if met:
        return kept
    return f"{kept}{MISSED}{label} {value:.3f} < {minimum}.".strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bundle_model.py",
        description="Evaluate a trained model on its validation split, time it on the CPU, "
        "write its complete card and ship it as float16 in src/napari_microseg/models/.",
    )
    parser.add_argument("name", help="bundled name (mito-em, membrane-em, ...)")
    parser.add_argument("--data", type=Path, required=True, help="the data set training used")
    parser.add_argument("--kind", choices=["lucchi", "isbi2012", "dsb2018", "glas"])
    parser.add_argument("--model", help="trained model: user-folder name or file (default: NAME)")
    parser.add_argument("--config", type=Path, help="training config (default: configs/*.yaml "
                        "whose name is the model's)")  # fmt: skip
    parser.add_argument("--limit", type=int, help="the --limit training ran with, if any")
    parser.add_argument("--tile", type=int, help="recommended tile size (default: the card's)")
    parser.add_argument("--overlap", type=float, help="recommended overlap (default: the card's)")
    parser.add_argument("--postprocess", help="recommended post-processing: JSON or a JSON file")
    parser.add_argument(
        "--tta",
        choices=["on", "off"],
        help="test-time augmentation by default (as tune_postprocess.py --try tta=false,true "
        "advises; default: the card's, else off)",
    )
    parser.add_argument("--hardware", help="what training ran on (default: lineage device + CPU)")
    parser.add_argument("--device", default="auto", help="device for the evaluation predictions")
    parser.add_argument("--keep", type=Path, help="keep predictions and truths in this folder")
    parser.add_argument("--speed-size", type=int, default=1024, help="speed test image side")
    parser.add_argument("--repeats", type=int, default=2, help="timed speed runs (best counts)")
    parser.add_argument("--evaluate-only", action="store_true", help="evaluate and time; write "
                        "no model, card or docs")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace a bundled model")
    parser.add_argument("--out", type=Path, help="bundled folder (default: the package's)")
    parser.add_argument("--docs", type=Path, default=DOCS, help="documentation file to update")
    return parser


def busy_warning(speed: dict[str, Any]) -> str:
    """A warning when other processes slowed the speed measurement down, else ``""``.

    Judged on the cores other processes kept busy while timing (``other_load``);
    the load average, which counts the timing's own threads, only where that is unknown.
    """
    cores = speed.get("cores") or 1
    others, load = speed.get("other_load"), speed.get("load_average")
    if others is not None:
        if others <= 0.25 * cores:
            return ""
        what = f"other processes kept {others} of {cores} cores busy"
    elif load is not None and load > 0.5 * cores:
        what = f"load average {load} on {cores} cores"
    else:
        return ""
    return (
        f"warning: the machine was busy while timing ({what}): the speed is too low. "
        "Re-run with --overwrite when it is idle."
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import yaml

    from napari_microseg.bundling.bundle import (
        bundled_card,
        float16_copy,
        machine_description,
        predict_split,
        save_bundled,
    )
    from napari_microseg.bundling.split import BundleError, validation_split
    from napari_microseg.cli import main as microseg
    from napari_microseg.core.inference.options import PredictOptions
    from napari_microseg.core.models.bundled import BUNDLED, TARGETS, card_problems
    from napari_microseg.core.models.checkpoint import inspect_checkpoint, load_checkpoint
    from napari_microseg.core.models.entries import scan_folder
    from napari_microseg.core.models.registry import bundled_models_dir, user_models_dir

    source = find_source(args.model or args.name)
    trained = load_checkpoint(source, device="cpu")
    lineage = trained.card.lineage
    config_path = args.config or find_config(trained.name, args.name)
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path else {}
    if config_path is None and args.kind is None:
        raise SystemExit(f"No config in {CONFIGS} names {trained.name!r}; give --config or --kind.")
    print(
        f"Model {trained.name!r} from {source}" + (f", config {config_path}" if config_path else "")
    )
    if args.tile:
        trained.card.recommended["tile_size"] = args.tile
    if args.overlap is not None:
        trained.card.recommended["overlap"] = args.overlap
    if args.tta is not None:
        trained.card.recommended["tta"] = args.tta == "on"
    post = parse_postprocess(args.postprocess)
    if post is not None:
        trained.card.recommended["postprocess"] = post
    model = float16_copy(trained)

    try:
        split = validation_split(model, args.data, config=config, kind=args.kind, limit=args.limit)
    except BundleError as error:
        raise SystemExit(f"bundle_model: {error}") from error
    print(f"Validation split: {split.description} ({len(split.items)} item(s), "
          f"{split.pixels / 1e6:.1f} MP)")  # fmt: skip
    target = TARGETS[split.kind]
    spec = BUNDLED.get(args.name)
    if spec is not None and spec.kind != split.kind:
        print(f"warning: {args.name} is meant for {spec.kind} data, not {split.kind}.")

    with tempfile.TemporaryDirectory(prefix=f"bundle-{args.name}-") as scratch:
        work = args.keep or Path(scratch)
        pred, truth, table = work / "pred", work / "truth", work / "evaluate.csv"
        options = PredictOptions.for_card(model.card)
        print(f"Predicting the validation split (tile {options.tile_size}, overlap "
              f"{options.overlap}, TTA {'on' if options.tta else 'off'}, the recommended "
              "post-processing)...")  # fmt: skip
        predict_split(model, split, pred, truth, device=args.device, show=True)
        by_hand = shlex.join(["microseg", "evaluate", str(pred), str(truth), "--csv", str(table)])
        print(f"$ {by_hand}")
        code = microseg(["evaluate", str(pred), str(truth), "--csv", str(table)])
        if code:
            raise SystemExit(f"microseg evaluate failed (exit code {code}).")
        row = read_mean_row(table)
        interval = metric_interval(table, TARGETS[split.kind].metric)

    bench = _bench_module()
    print(f"Timing on the CPU ({args.speed_size}x{args.speed_size}, all cores)...")
    speed = bench.measure_speed(model, size=args.speed_size, repeats=args.repeats)
    busy = busy_warning(speed)
    if busy:
        print(busy)
    value = row.get(target.metric, float("nan"))
    spread = (
        f", {interval.confidence:.0%} bootstrap interval over the {interval.n} images "
        f"{interval.low:.3f}-{interval.high:.3f}"
        if interval is not None
        else ""
    )
    print(
        f"\n{target.label}: {value:.4f}{spread} (target >= {target.minimum}: "
        f"{'met' if target.met(value) else 'NOT MET'}); CPU {speed['mpx_per_s_cpu']:.2f} MP/s "
        f"prediction, {speed['mpx_per_s_cpu_segment']:.2f} MP/s with post-processing "
        f"(load average {speed['load_average']}, other processes {speed.get('other_load')} "
        "cores)."
    )
    if args.evaluate_only:
        return 0

    out = args.out or bundled_models_dir()
    data_shown = shown_path(args.data)
    shipped = f"{shown_path(out / args.name)}.safetensors"
    commands = {
        "retrain": retrain_command(config_path, args.data, lineage, config, args.limit),
        "evaluate": shlex.join(
            [
                "python",
                "scripts/bundle_model.py",
                args.name,
                "--data",
                data_shown,
                "--model",
                shipped,
                "--evaluate-only",
                "--keep",
                f"/tmp/{args.name}-val",
            ]
        ),
        "evaluate_by_hand": f"microseg evaluate /tmp/{args.name}-val/pred "
        f"/tmp/{args.name}-val/truth",
        "speed": f"python benchmarks/bench_models.py {args.name}",
    }
    device = lineage.get("device", "unknown device")
    hardware = args.hardware or f"{device}; {machine_description()}"
    card = bundled_card(
        model,
        name=args.name,
        split=split,
        row=row,
        speed=speed,
        hardware=hardware,
        retrain_command=commands["retrain"],
        evaluate_command=f"{commands['evaluate']} && {commands['evaluate_by_hand']}",
        source=str(source),
        data_config={
            **(config.get("data") or {}),
            **({"limit": args.limit} if args.limit is not None else {}),
        },
    )
    if interval is not None:
        card.metrics["target"]["interval"] = {
            "low": round(interval.low, 4),
            "high": round(interval.high, 4),
            "confidence": interval.confidence,
            "images": interval.n,
            "method": "percentile bootstrap of the mean over images",
        }
    card.description = target_description(
        card.description, target.label, value, target.minimum, met=card.metrics["target"]["met"]
    )
    problems = card_problems(card)
    if problems:
        raise SystemExit(f"bundle_model: the card is incomplete: {'; '.join(problems)}")
    try:
        weights = save_bundled(model, card, out, overwrite=args.overwrite)
    except BundleError as error:
        raise SystemExit(f"bundle_model: {error}") from error
    info = inspect_checkpoint(weights)
    size_mb = info.size_bytes / 1e6
    print(f"Wrote {weights} and {info.card_file} ({size_mb:.1f} MB).")

    docs = sibling("model_docs")
    curves = docs.write_curve(args.docs.parent / "models", args.name, lineage.get("history", []))
    cards = {e.name: e.card for e in scan_folder(out, "bundled") if e.usable and e.card}
    today = _dt.date.today().isoformat()
    verdict = "target met" if target.met(value) else "target not met"
    command = shlex.join(["python", "scripts/bundle_model.py", *(argv or sys.argv[1:])])
    log_line = (
        f"- {today}: {target.label} {value:.4f} ({verdict}), {speed['mpx_per_s_cpu']:.2f} MP/s "
        f"on {speed['threads']} threads (load {speed['load_average']}, other processes "
        f"{speed.get('other_load')} cores); from "
        f"`{shown_path(source)}` with `{command}`"
    )
    docs.update_docs(args.docs, card, size_mb, commands, log_line, cards)
    for path in [*curves, args.docs]:
        print(f"Wrote {path}")
    user_twin = [e for e in scan_folder(user_models_dir(), "user") if e.name == args.name]
    if user_twin and out.resolve() == bundled_models_dir().resolve():
        print(
            f"Note: the user model {args.name!r} ({user_twin[0].path}) now has the same name as "
            "the bundled one, which takes precedence; rename or remove the user copy."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
