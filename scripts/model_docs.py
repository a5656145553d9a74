"""The Markdown of ``docs/models.md``: one section per bundled model, and the summary table.

Written by ``scripts/bundle_model.py`` when it bundles a model: the model's
section is replaced (its bundling log kept, plus one line; hand-written notes
after the log kept too) and the summary table rebuilt. Also writes the training
curve (CSV, and PNG when matplotlib is installed).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


#: Settings shown only where a run changed them from TrainSettings' defaults.
_SHOWN_WHEN_SET = ("class_balance", "boundary_width", "monitor", "tune_fraction")


def _settings_text(settings: dict[str, Any]) -> str:
    from napari_microseg.core.training.settings import TrainSettings

    keys = (
        "steps", "minutes", "batch_size", "patch_size", "learning_rate", "schedule", "loss",
        "edge_weights", "augment", "object_bias", "deep_supervision", "val_fraction",
        "val_every", "patience", "seed",
    )  # fmt: skip
    defaults = TrainSettings()
    shown = [f"{k} {settings[k]}" for k in keys if settings.get(k) is not None]
    shown += [
        f"{k} {settings[k]}"
        for k in _SHOWN_WHEN_SET
        if settings.get(k) is not None and settings[k] != getattr(defaults, k)
    ]
    return ", ".join(shown)


def _postprocess_text(post: dict[str, Any]) -> str:
    if "method" not in post:
        return ", ".join(f"{k} {v}" for k, v in post.items())
    defaults = {"method": None, "foreground_class": 1, "physical_units": False}
    from napari_microseg.core.postprocess import PostprocessPipeline

    base = PostprocessPipeline().to_dict()
    shown = [f"{post['method']}"] + [
        f"{k} {v}"
        for k, v in post.items()
        if k not in defaults and k in base and v != base[k] and v not in (None, False, 0, 0.0)
    ]
    return ", ".join(shown)


def _short(text: str, limit: int = 300) -> str:
    """``text``, cut at ``limit`` characters: a held-out list can name a hundred images."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(",", 1)[0] + ", … (the model card lists them all)"


def section_text(
    card: Any,
    size_mb: float,
    commands: dict[str, str],
    log: list[str],
    docs_dir: Path = DOCS.parent,
    notes: list[str] | tuple[str, ...] = (),
) -> str:
    """The Markdown section of one bundled model (``docs_dir``: the folder of models.md).

    ``notes`` are the hand-written lines after the bundling log (why a target
    is missed, the training log), kept when the model is bundled again.
    """
    from napari_microseg.core.models.bundled import BUNDLED

    lineage, metrics, rec = card.lineage, card.metrics, card.recommended
    target = metrics["target"]
    met = "**met**" if target["met"] else "**not met**"
    spec = BUNDLED.get(card.name)
    hyper = ", ".join(f"{k} {v}" for k, v in card.hyperparameters.items())
    validation = metrics.get("validation", {})
    shown = [
        f"{k} {_fmt(validation[k])}"
        for k in ("pixel_f1", "accuracy", "iou", "object_f1", "ap_50_95", "adapted_rand_error")
        if k in validation
    ]
    counts = ", ".join(
        f"{k} {int(validation[k])}" for k in ("n_true", "n_pred", "n_matched") if k in validation
    )
    speed = rec.get("speed", {})
    minutes = lineage.get("duration_s", 0) / 60
    curve = f"models/{card.name}-training"
    rows = [
        ("Model", f"{card.architecture} ({hyper}); {card.in_channels} channel(s) -> "
                  f"{', '.join(card.classes)}; float16, {size_mb:.1f} MB"),
        ("Training data", card.trained_on),
        ("Validation split", _short(metrics["data"].removeprefix("validation split: "))),
        ("Training", f"{lineage.get('steps')} steps (best step {lineage.get('best_step')}, "
                     f"stopped by {lineage.get('stopped')}), {minutes:.1f} min on "
                     f"{lineage.get('hardware')}"),
        ("Settings", _settings_text(lineage.get("settings", {}))),
        ("Recommended", f"tile {rec['tile_size']}, overlap {rec['overlap']}"
                        f"{', test-time augmentation' if rec.get('tta') else ''}; "
                        f"post-processing: {_postprocess_text(rec['postprocess'])}"),
        ("Target (issue #8)", f"{target['label']} >= {target['minimum']}: "
                              f"{_fmt(target['value'])}, {met}"),
        ("Validation metrics", "; ".join(shown) + (f" ({counts})" if counts else "")),
        ("CPU speed", f"{rec['mpx_per_s_cpu']:.2f} MP/s prediction, "
                      f"{speed.get('mpx_per_s_cpu_segment', float('nan')):.2f} MP/s with "
                      f"post-processing ({speed.get('threads')} threads, {speed.get('cpu')}, "
                      f"load average {speed.get('load_average')}"
                      + (f", other processes {speed['other_load']} cores"
                         if speed.get("other_load") is not None else "")
                      + " while measured)"),
        ("Training curve", f"[{curve}.csv]({curve}.csv)"
                           + (f" · ![validation curve]({curve}.png)"
                              if (docs_dir / f"{curve}.png").exists() else "")),
    ]  # fmt: skip
    table = ["| | |", "|---|---|"] + [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    title = f"## {card.name}" + (f": {spec.summary}" if spec else "")
    parts = [
        f"<!-- bundled:{card.name} -->",
        title,
        "",
        card.description,
        "",
        *table,
        "",
        "Retrain:",
        "",
        f"    {commands['retrain']}",
        "",
        "Evaluate the shipped file on the validation split (predictions and truths are kept in",
        "the `--keep` folder; the script runs `microseg evaluate` on them):",
        "",
        f"    {commands['evaluate']}",
        f"    {commands['evaluate_by_hand']}",
        "",
        "Speed:",
        "",
        f"    {commands['speed']}",
        "",
        "Bundling log:",
        "",
        *log,
        *(["", *notes] if notes else []),
        f"<!-- /bundled:{card.name} -->",
    ]
    return "\n".join(parts)


HEAD = """# Bundled models

The models shipped in `src/napari_microseg/models/` (float16 safetensors + JSON card each), what
they were trained on, how well they do on their validation split, and how to reproduce them.
Every section below is written by `scripts/bundle_model.py` when a model is bundled; the bundling
log at the end of a section keeps one line per run. Targets are those of issue #8, measured with
the project's own `microseg evaluate` on the validation split the training run held out.

Bundle a model that `microseg train` has finished (it is in the user's model folder; a
retrained bundled model is saved there as `<name>-2`, so add `--model mito-em-2`):

    python scripts/bundle_model.py mito-em --data ../shared/data/lucchi

Post-processing thresholds are chosen on training images only (on the tuning images a run
held out of training, when its config's `tune_fraction` held some out), never on the validation
split:

    python scripts/tune_postprocess.py nuclei-maskrcnn --data ../shared/data/dsb2018 \\
        --try score_threshold=0.5,0.7,0.9 --images 40

prints the best setting as JSON for `bundle_model.py --postprocess`.

List them with `microseg models`; time them all with `python benchmarks/bench_models.py`.
"""

_LOG_LINE = re.compile(r"- \d{4}-\d{2}-\d{2}: ")
_SECTION = re.compile(r"<!-- bundled:(?P<name>[^ ]+) -->\n.*?<!-- /bundled:(?P=name) -->", re.S)


def summary_table(cards: dict[str, Any]) -> str:
    """One row per bundled model."""
    from napari_microseg.core.models.bundled import BUNDLED

    lines = [
        "<!-- summary -->",
        "| model | family | data | target | value | met | MP/s (CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in [*BUNDLED, *sorted(set(cards) - set(BUNDLED))]:
        card = cards.get(name)
        if card is None:
            spec = BUNDLED[name]
            target = spec.target
            lines.append(
                f"| {name} | {spec.architecture} | {spec.kind} | {target.label} >= "
                f"{target.minimum} | not bundled yet | | |"
            )
            continue
        target = card.metrics.get("target", {})
        kind = card.lineage.get("dataset", {}).get("kind")
        speed = card.recommended.get("mpx_per_s_cpu", float("nan"))
        value = _fmt(target.get("value"))
        interval = target.get("interval")
        if isinstance(interval, dict) and "low" in interval and "high" in interval:
            # How far the mean over the validation images could move (bundle_model.py).
            value += f" [{_fmt(interval['low'])}, {_fmt(interval['high'])}]"
        lines.append(
            f"| [{name}](#{name}) | {card.architecture} | {kind} | {target.get('label')} >= "
            f"{target.get('minimum')} | {value} | "
            f"{'yes' if target.get('met') else 'no'} | {speed:.2f} |"
        )
    lines.append("<!-- /summary -->")
    return "\n".join(lines)


def update_docs(
    path: Path, card: Any, size_mb: float, commands: dict[str, str], log_line: str,
    cards: dict[str, Any],
) -> None:  # fmt: skip
    """Replace the model's section (keeping its log, plus ``log_line``) and the summary table."""
    from napari_microseg.core.io.atomic import atomic_path
    from napari_microseg.core.models.bundled import BUNDLED

    text = path.read_text(encoding="utf-8") if path.exists() else HEAD
    sections = {m.group("name"): m.group(0) for m in _SECTION.finditer(text)}
    # Hand-written text after the last model section (bioimage.io, notes on levers...)
    # stays after it; only the text before the summary and the sections is the head.
    ends = [m.end() for m in _SECTION.finditer(text)]
    tail = text[max(ends) :].strip() if ends else ""
    head = _SECTION.sub("", text[: max(ends)] if ends else text)
    head = re.sub(r"<!-- summary -->.*?<!-- /summary -->\n?", "", head, flags=re.S).rstrip()
    old = sections.get(card.name, "").splitlines()
    log = [line for line in old if _LOG_LINE.match(line)]
    # Hand-written lines after the log stay: only the generated part is rewritten.
    after = old.index("Bundling log:") + 1 if "Bundling log:" in old else len(old)
    notes = [line for line in old[after:-1] if not _LOG_LINE.match(line)]
    while notes and not notes[0].strip():
        notes.pop(0)
    sections[card.name] = section_text(
        card, size_mb, commands, [*log, log_line], path.parent, notes=notes
    )
    order = [n for n in BUNDLED if n in sections] + sorted(set(sections) - set(BUNDLED))
    body = "\n\n".join(sections[n] for n in order)
    new = f"{head}\n\n{summary_table(cards)}\n\n{body}\n" + (f"\n{tail}\n" if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(new, encoding="utf-8")


def write_curve(folder: Path, name: str, history: list[dict[str, Any]]) -> list[Path]:
    """The validation history as CSV (and PNG with matplotlib); the files written."""
    from napari_microseg.core.io.atomic import atomic_path

    if not history:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in history for k in row))
    csv_path = folder / f"{name}-training.csv"
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, keys)
        writer.writeheader()
        writer.writerows(history)
    written = [csv_path]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    steps = [row["step"] for row in history]
    fig, left = plt.subplots(figsize=(6, 3.2), dpi=100)
    for key in ("dice", "iou", "object_f1"):
        if key in keys:
            left.plot(steps, [row.get(key) for row in history], label=key)
    left.set_xlabel("step")
    left.set_ylabel("validation score")
    left.set_ylim(0, 1)
    if "val_loss" in keys:
        right = left.twinx()
        right.plot(steps, [row.get("val_loss") for row in history], "k--", label="val loss")
        right.set_ylabel("validation loss")
    left.legend(loc="lower right")
    left.set_title(f"{name}: validation during training")
    fig.tight_layout()
    png = folder / f"{name}-training.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return [*written, png]
