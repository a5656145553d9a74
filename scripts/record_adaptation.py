"""Record in each bundled card what bench_adapt found about adapting it.

``benchmarks/bench_adapt.py`` measures, per bundled model and simulated new
session, the held-out Dice after the shift, after "Adapt to this image"
(batch-norm statistics re-estimated on the new images, no labels) and after
fine-tuning on 1, 2 and 4 annotated slices or images.

* Where label-free adaptation lowered the Dice under any measured shift,
  nothing at run time can tell (there are no labels to check it with), so the
  card says so (``label_free: false``) and the Fine-tune widget and
  ``microseg adapt`` warn and propose fine-tuning on a few corrected images
  instead (which checks every start on held-out pixels).
* Where the results hold fine-tunes of one model at several learning rates
  (``bench_adapt.py --lr``), the rate with the best mean Dice on the images the
  annotations never touched becomes the card's ``learning_rate``, the default of
  ``TrainSettings.for_finetune(card)``; the means are recorded beside it.
* Likewise for the pull towards the start (``bench_adapt.py --anchor-decay``):
  compared on fine-tunes at the same learning rate, the best becomes the card's
  ``anchor_decay`` (runs that do not record one had none); and for the step limit
  (``bench_adapt.py --steps``), compared at the same rate and pull: the card's
  ``steps``. Fine-tunes are compared only with the same shift, number of
  annotated images and the same images.
* Where the results hold fine-tunes on **one** annotated image that took gradient
  steps (``--shots 1``), and any of them scored below not adapting (the product's
  score, the card's metric on segmented labels, where measured; else the Dice),
  the card says so (``train_on_one_image: false``): a fine-tune on one image of
  that model then takes no gradient step and only tries the label-free
  corrections, judged on all the annotated pixels
  (``TrainSettings.train_one_plane``). One image's held-out pixels cannot see
  this (they approved every such run).

A value recorded before stays unless the new results compare several. The
label-free figures are replaced as a whole (new weights make old figures
stale), unless ``--merge`` says the weights are the ones measured before: then
a re-measured shift replaces its figure, the others stay, and the verdict is
taken over all of them.

This script writes ``recommended["adaptation"]`` into the shipped cards
(``src/napari_microseg/models/NAME.json``), atomically; the weights are not
touched.

Examples
--------
::

    python scripts/record_adaptation.py /tmp/adapt/nuclei-fluo.json /tmp/adapt/mito-em.json
    python scripts/record_adaptation.py /tmp/adapt/gland-he.json /tmp/adapt/gland-he-lr1e-4.json
    python scripts/record_adaptation.py --merge /tmp/adapt/nuclei-fluo-blur-noise.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "src" / "napari_microseg" / "models"
#: A Dice loss smaller than this is noise, not harm.
TOLERANCE = 0.005


def run_steps(run: dict[str, Any], result: dict[str, Any]) -> int | None:
    """The step limit of a run's fine-tunes: recorded, else its command's ``--steps``, else
    the file's default."""
    if run.get("steps") is not None:
        return int(run["steps"])
    found = re.search(r"--steps[ =](\d+)", result.get("command", ""))
    if found:
        return int(found.group(1))
    default = result.get("settings", {}).get("steps")
    return None if default is None else int(default)


def verdicts(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model: ``label_free`` (never lowered the Dice), the best fine-tune learning rate,
    pull towards the start and step limit (each only where several were measured on the same
    fine-tunes otherwise) and the figures behind them."""
    found: dict[str, dict[str, Any]] = {}
    # model -> learning rate -> (steps, shift, shots, slices) -> Dice on the never-annotated
    # images; a fine-tune is compared only with the same one at another value
    tuned: dict[str, dict[float, dict[tuple[Any, ...], float]]] = {}
    # model -> anchor decay -> (learning rate, steps, shift, shots, slices) -> Dice
    anchored: dict[str, dict[float, dict[tuple[Any, ...], float]]] = {}
    # model -> step limit -> (learning rate, anchor decay, shift, shots, slices) -> Dice
    stepped: dict[str, dict[float, dict[tuple[Any, ...], float]]] = {}
    for result in results:
        default_rate = result.get("settings", {}).get("learning_rate")
        for run in result.get("runs", []):
            model = found.setdefault(run["model"], {"shifts": {}, "commands": []})
            shifted, adapted = run["shifted"]["dice"], run["adapted"]["dice"]
            model["shifts"][run["shift"]] = {"shifted": shifted, "adapted": adapted}
            if result["command"] not in model["commands"]:
                model["commands"].append(result["command"])
            rate = run.get("learning_rate", default_rate)
            shots = {
                (key, tuple(value.get("slices") or ())): value["dice"]
                for key, value in run.items()
                if key.startswith("shots=")
            }
            anchor = float(run.get("anchor_decay") or 0.0)
            steps = run_steps(run, result)
            if rate is None or not shots:
                continue
            shift = run["shift"]
            if anchor == 0:
                scores = tuned.setdefault(run["model"], {}).setdefault(float(rate), {})
                scores.update({(steps, shift, *key): dice for key, dice in shots.items()})
            scores = anchored.setdefault(run["model"], {}).setdefault(anchor, {})
            scores.update({(rate, steps, shift, *key): dice for key, dice in shots.items()})
            if steps is not None:
                scores = stepped.setdefault(run["model"], {}).setdefault(steps, {})
                scores.update({(rate, anchor, shift, *key): dice for key, dice in shots.items()})
    for result in results:
        for run in result.get("runs", []):
            one = one_image_figures(run)
            if one:
                model = found[run["model"]]
                model.setdefault("one_image_scores", {}).update(one)
    for name, model in found.items():
        model["label_free"] = label_free(model["shifts"].values())
        if model.get("one_image_scores"):
            model["train_on_one_image"] = all(
                f["one_image"] >= f["shifted"] - TOLERANCE
                for f in model["one_image_scores"].values()
            )
        for setting, scores in (
            ("learning_rate", tuned),
            ("anchor_decay", anchored),
            ("steps", stepped),
        ):
            best = best_of(scores.get(name, {}))
            if best is not None:
                model[setting], model[f"mean_dice_by_{setting}"], model[f"{setting}_runs"] = best
    return found


def one_image_figures(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The run's fine-tune on one image, if it took gradient steps: ``{"shift image N":
    {"shifted", "one_image", "metric"}}`` on the product's score (segmented) where both
    were measured, else the Dice; {} otherwise."""
    one = run.get("shots=1")
    if not isinstance(one, dict) or not one.get("steps"):
        return {}
    shifted = run["shifted"]
    if isinstance(one.get("segmented"), dict) and isinstance(shifted.get("segmented"), dict):
        metric = one["segmented"]["metric"]
        before, after = shifted["segmented"]["score"], one["segmented"]["score"]
    else:
        metric, before, after = "dice", shifted["dice"], one["dice"]
    slices = ",".join(str(s) for s in one.get("slices") or ())
    key = f"{run['shift']} image {slices} ({run_steps(run, {}) or 'default'} steps)"
    return {key: {"shifted": before, "one_image": after, "metric": metric}}


def label_free(figures: Any) -> bool:
    """Whether label-free adaptation never lowered the Dice by more than :data:`TOLERANCE`."""
    return all(f["adapted"] >= f["shifted"] - TOLERANCE for f in figures)


def best_of(
    scores: dict[float, dict[tuple[Any, ...], float]],
) -> tuple[float, dict[str, float], int] | None:
    """The value with the best mean Dice over the fine-tunes every value ran, or None.

    Returns the value, the mean per value and how many fine-tunes each mean covers;
    None with fewer than two values or no fine-tune that all of them ran.
    """
    if len(scores) < 2:
        return None
    common = set.intersection(*(set(found) for found in scores.values()))
    if not common:
        return None
    means = {
        value: sum(found[key] for key in common) / len(common) for value, found in scores.items()
    }
    table = {f"{value:g}": round(mean, 4) for value, mean in sorted(means.items())}
    return max(means, key=lambda value: means[value]), table, len(common)


def write(name: str, verdict: dict[str, Any], *, merge: bool = False) -> Path:
    """Put the verdict into the shipped card of ``name`` (atomically); return its path.

    A learning rate, anchor decay or step limit recorded before stays unless this verdict
    compared several.
    With ``merge``, the label-free figures of shifts this verdict did not measure stay (same
    weights), and ``label_free`` is decided over all of them.
    """
    from napari_microseg.core.io.atomic import atomic_path

    path = BUNDLED / f"{name}.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    recommended = card.setdefault("recommended", {})
    previous = recommended.get("adaptation") or {}
    shifts, commands = dict(verdict["shifts"]), list(verdict["commands"])
    if merge:
        shifts = {**(previous.get("dice_shifted_vs_adapted") or {}), **shifts}
        earlier = [c for c in previous.get("measured_by") or [] if c not in commands]
        commands = earlier + commands
    adaptation = {
        "label_free": label_free(shifts.values()),
        "dice_shifted_vs_adapted": shifts,
        "measured_by": commands,
    }
    for setting in ("learning_rate", "anchor_decay", "steps"):
        keys = (setting, f"mean_dice_by_{setting}", f"{setting}_runs")
        if setting in verdict:
            adaptation.update({key: verdict[key] for key in keys})
            adaptation[f"{setting}_measured_by"] = verdict["commands"]
        else:  # what an earlier comparison found stays, with every key about it
            adaptation.update({key: value for key, value in previous.items() if setting in key})
    if "train_on_one_image" in verdict:
        scores, measured_by = verdict["one_image_scores"], list(verdict["commands"])
        if merge:
            scores = {**(previous.get("one_image_scores") or {}), **scores}
            earlier = previous.get("train_on_one_image_measured_by") or []
            measured_by = [c for c in earlier if c not in measured_by] + measured_by
        adaptation["train_on_one_image"] = all(
            f["one_image"] >= f["shifted"] - TOLERANCE for f in scores.values()
        )
        adaptation["one_image_scores"] = scores
        adaptation["train_on_one_image_measured_by"] = measured_by
    else:  # what earlier one-image fine-tunes found stays
        adaptation.update({k: v for k, v in previous.items() if "one_image" in k})
    recommended["adaptation"] = adaptation
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="bench_adapt.py JSON outputs")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="the weights are those measured before: keep the label-free figures of the "
        "shifts these results did not measure",
    )
    args = parser.parse_args(argv)
    results = [json.loads(path.read_text(encoding="utf-8")) for path in args.results]
    for name, verdict in verdicts(results).items():
        if not (BUNDLED / f"{name}.json").is_file():
            print(f"{name}: not a bundled model; skipped", file=sys.stderr)
            continue
        path = write(name, verdict, merge=args.merge)
        recorded = json.loads(path.read_text(encoding="utf-8"))["recommended"]["adaptation"]
        shifts = ", ".join(
            f"{kind} {f['shifted']:.3f} -> {f['adapted']:.3f}"
            for kind, f in recorded["dice_shifted_vs_adapted"].items()
        )
        print(f"{name}: label-free {'helps' if recorded['label_free'] else 'HURTS'} ({shifts})")
        for setting in ("learning_rate", "anchor_decay", "steps"):
            if setting in verdict:
                print(
                    f"  fine-tune {setting.replace('_', ' ')} {verdict[setting]:g} (mean Dice "
                    f"over {verdict[f'{setting}_runs']} fine-tunes: "
                    f"{verdict[f'mean_dice_by_{setting}']})"
                )
        if "train_on_one_image" in recorded and "train_on_one_image" in verdict:
            verdict_text = "train" if recorded["train_on_one_image"] else "no gradient steps"
            print(
                f"  fine-tunes on one image: {verdict_text} "
                f"({len(recorded['one_image_scores'])} measured)"
            )
        print(f"  -> {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
