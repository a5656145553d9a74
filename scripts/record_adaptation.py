"""Record in each bundled card whether label-free adaptation helped it in bench_adapt.

``benchmarks/bench_adapt.py`` measures, per bundled model and simulated new
session, the held-out Dice after the shift and after "Adapt to this image"
(batch-norm statistics re-estimated on the new images, no labels). Where that
adaptation lowered the Dice under any measured shift, nothing at run time can
tell (there are no labels to check it with), so the card says so and the
Fine-tune widget and ``microseg adapt`` warn and propose fine-tuning on a few
corrected images instead (which checks every start on held-out pixels).

This script writes ``recommended["adaptation"]`` into the shipped cards
(``src/napari_microseg/models/NAME.json``), atomically; the weights are not
touched.

Examples
--------
::

    python scripts/record_adaptation.py /tmp/adapt/nuclei-fluo.json /tmp/adapt/mito-em.json
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
    """Per model: ``label_free`` (never lowered the Dice) and the figures behind it."""
    found: dict[str, dict[str, Any]] = {}
    for result in results:
        for run in result.get("runs", []):
            model = found.setdefault(run["model"], {"shifts": {}, "commands": []})
            shifted, adapted = run["shifted"]["dice"], run["adapted"]["dice"]
            model["shifts"][run["shift"]] = {"shifted": shifted, "adapted": adapted}
            if result["command"] not in model["commands"]:
                model["commands"].append(result["command"])
    for model in found.values():
        figures = model["shifts"].values()
        model["label_free"] = all(f["adapted"] >= f["shifted"] - TOLERANCE for f in figures)
    return found


def write(name: str, verdict: dict[str, Any]) -> Path:
    """Put the verdict into the shipped card of ``name`` (atomically); return its path."""
    from napari_microseg.core.io.atomic import atomic_path

    path = BUNDLED / f"{name}.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    card.setdefault("recommended", {})["adaptation"] = {
        "label_free": verdict["label_free"],
        "dice_shifted_vs_adapted": verdict["shifts"],
        "measured_by": verdict["commands"],
    }
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
        print(f"  -> {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
