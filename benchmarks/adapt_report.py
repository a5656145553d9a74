"""Issue #21's target and the tables of ``bench_adapt.py``, on its runs (dicts as in its JSON)."""

from __future__ import annotations

from typing import Any

#: Issue #21: where a shift costs at least this much...
TARGET_DROP = 0.10
#: ... two annotated slices recover at least this much (or come within WITHIN of the source)...
TARGET_GAIN = 0.10
WITHIN = 0.03
#: ... within this many seconds on the CPU.
TARGET_SECONDS = 180.0


def argmax_dice(entry: dict[str, Any]) -> float:
    """The network's score: foreground Dice of the argmax (``bench_adapt.evaluate``)."""
    return entry["dice"]


def segmented_score(entry: dict[str, Any]) -> float:
    """The product's score: the card's metric after post-processing (``bench_adapt.segmented``)."""
    return entry["segmented"]["score"]


def target(run: dict[str, Any], score: Any = argmax_dice) -> dict[str, Any]:
    """Issue #21's target for one model and shift, with 2 annotated slices/images.

    ``score`` reads one evaluation's score: :func:`argmax_dice` (the default) or
    :func:`segmented_score`.
    """
    source, shifted = score(run["source"]), score(run["shifted"])
    two = run.get("shots=2")
    drop = source - shifted
    if two is None:
        return {"drop": round(drop, 4), "applies": drop >= TARGET_DROP, "holds": None}
    gain = score(two) - shifted
    recovered = gain >= TARGET_GAIN or score(two) >= source - WITHIN
    return {
        "drop": round(drop, 4),
        "applies": drop >= TARGET_DROP,
        "gain_2": round(gain, 4),
        "wall_s_2": two["wall_s"],
        "holds": bool(recovered and two["wall_s"] <= TARGET_SECONDS)
        if drop >= TARGET_DROP
        else None,
        "not_worse": bool(score(two) >= shifted - 0.005),
    }


def segmented_table(runs: list[dict[str, Any]], shots: list[int]) -> str:
    """The product's scores (``bench_adapt.segmented``) and issue #21's target on them."""
    head = ["model", "shift", "metric", "source", "shifted", "adapted (no labels)"]
    head += [f"{n} shot(s)" for n in shots] + ["target (2 shots)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        if "segmented" not in run["source"]:
            continue
        cells = [run["model"], run["shift"], run["source"]["segmented"]["metric"]]
        cells += [f"{segmented_score(run[key]):.3f}" for key in ("source", "shifted", "adapted")]
        for n in shots:
            r = run.get(f"shots={n}")
            cells.append(f"{segmented_score(r):.3f} ({r['kept']})" if r else "–")
        cells.append(verdict(run.get("target_segmented") or target(run, segmented_score)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(t: dict[str, Any]) -> str:
    """One table cell for a :func:`target` result."""
    if not t["applies"]:
        return f"drop {t['drop']:+.3f} < 0.10: n/a"
    if t["holds"] is None:
        return "not run"
    return f"{'holds' if t['holds'] else 'NOT met'} (gain {t['gain_2']:+.3f})"


def table(runs: list[dict[str, Any]], shots: list[int]) -> str:
    """The network's scores (argmax Dice) of every lever, and issue #21's target on them."""
    flat = any("flat_field" in run for run in runs)
    head = ["model", "shift", "source", "shifted"]
    # With --flat-field every later column starts from the corrected model.
    head += ["flat field: source / shifted"] if flat else []
    head += ["adapted (no labels)", "matched", "matched + adapted (--match)"]
    head += [f"{n} shot(s)" for n in shots] + ["target (2 shots)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        cells = [run["model"], run["shift"], f"{run['source']['dice']:.3f}"]
        cells.append(f"{run['shifted']['dice']:.3f}")
        if flat:
            f = run.get("flat_field")
            cells.append(f"{f['source']['dice']:.3f} / {f['shifted']['dice']:.3f}" if f else "–")
        a = run["adapted"]
        cells.append(f"{a['dice']:.3f} ({a['wall_s']:.1f} s / {a['cpu_s']:.1f} s CPU)")
        cells.append(f"{run['matched']['dice']:.3f}" if "matched" in run else "–")
        both = run.get("adapted_matched")
        cells.append(
            f"{both['dice']:.3f} ({both['wall_s']:.1f} s / {both['cpu_s']:.1f} s CPU)"
            if both
            else "–"
        )
        for n in shots:
            r = run.get(f"shots={n}")
            cells.append(
                f"{r['dice']:.3f} ({r['wall_s']:.0f} s / {r['cpu_s']:.0f} s CPU; {r['kept']})"
                if r
                else "–"
            )
        cells.append(verdict(run["target"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
