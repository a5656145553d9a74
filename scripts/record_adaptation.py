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

This script writes ``recommended["adaptation"]`` into the shipped cards
(``src/napari_microseg/models/NAME.json``), atomically; the weights are not
touched.

Examples
--------
::

    python scripts/record_adaptation.py /tmp/adapt/nuclei-fluo.json /tmp/adapt/mito-em.json
    python scripts/record_adaptation.py /tmp/adapt/gland-he.json /tmp/adapt/gland-he-lr1e-4.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "src" / "napari_microseg" / "models"
#: A Dice loss smaller than this is noise, not harm.
TOLERANCE = 0.005


def verdicts(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model: ``label_free`` (never lowered the Dice), the best fine-tune learning rate
    (``learning_rate``, only where several were measured) and the figures behind them."""
    found: dict[str, dict[str, Any]] = {}
    # model -> learning rate -> (shift, shots) -> Dice on the never-annotated images
    tuned: dict[str, dict[float, dict[tuple[str, str], float]]] = {}
    for result in results:
        default_rate = result.get("settings", {}).get("learning_rate")
        for run in result.get("runs", []):
            model = found.setdefault(run["model"], {"shifts": {}, "commands": []})
            shifted, adapted = run["shifted"]["dice"], run["adapted"]["dice"]
            model["shifts"][run["shift"]] = {"shifted": shifted, "adapted": adapted}
            if result["command"] not in model["commands"]:
                model["commands"].append(result["command"])
            rate = run.get("learning_rate", default_rate)
            shots = {key: value["dice"] for key, value in run.items() if key.startswith("shots=")}
            if rate is not None and shots:
                scores = tuned.setdefault(run["model"], {}).setdefault(float(rate), {})
                scores.update({(run["shift"], key): dice for key, dice in shots.items()})
    for name, model in found.items():
        figures = model["shifts"].values()
        model["label_free"] = all(f["adapted"] >= f["shifted"] - TOLERANCE for f in figures)
        rates = tuned.get(name, {})
        if len(rates) > 1:
            # Compare the rates on the fine-tunes every one of them ran.
            common = set.intersection(*(set(scores) for scores in rates.values()))
            if common:
                means = {
                    rate: sum(scores[key] for key in common) / len(common)
                    for rate, scores in rates.items()
                }
                model["learning_rate"] = max(means, key=lambda rate: means[rate])
                model["mean_dice_by_learning_rate"] = {
                    f"{rate:g}": round(mean, 4) for rate, mean in sorted(means.items())
                }
                model["learning_rate_runs"] = len(common)
    return found


def write(name: str, verdict: dict[str, Any]) -> Path:
    """Put the verdict into the shipped card of ``name`` (atomically); return its path.

    A learning rate recorded before stays unless this verdict measured one.
    """
    from napari_microseg.core.io.atomic import atomic_path

    path = BUNDLED / f"{name}.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    recommended = card.setdefault("recommended", {})
    previous = recommended.get("adaptation") or {}
    adaptation = {
        "label_free": verdict["label_free"],
        "dice_shifted_vs_adapted": verdict["shifts"],
        "measured_by": verdict["commands"],
    }
    keys = ("learning_rate", "mean_dice_by_learning_rate", "learning_rate_runs")
    if "learning_rate" in verdict:
        adaptation.update({key: verdict[key] for key in keys})
        adaptation["learning_rate_measured_by"] = verdict["commands"]
    else:  # what an earlier comparison of rates found stays
        kept = (*keys, "learning_rate_measured_by")
        adaptation.update({key: previous[key] for key in kept if key in previous})
    recommended["adaptation"] = adaptation
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="bench_adapt.py JSON outputs")
    args = parser.parse_args(argv)
    results = [json.loads(path.read_text(encoding="utf-8")) for path in args.results]
    for name, verdict in verdicts(results).items():
        if not (BUNDLED / f"{name}.json").is_file():
            print(f"{name}: not a bundled model; skipped", file=sys.stderr)
            continue
        path = write(name, verdict)
        shifts = ", ".join(
            f"{kind} {f['shifted']:.3f} -> {f['adapted']:.3f}"
            for kind, f in verdict["shifts"].items()
        )
        print(f"{name}: label-free {'helps' if verdict['label_free'] else 'HURTS'} ({shifts})")
        if "learning_rate" in verdict:
            print(
                f"  fine-tune learning rate {verdict['learning_rate']:g} (mean Dice by rate over "
                f"{verdict['learning_rate_runs']} fine-tunes: "
                f"{verdict['mean_dice_by_learning_rate']})"
            )
        print(f"  -> {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
