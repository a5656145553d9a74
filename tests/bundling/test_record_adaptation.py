"""scripts/record_adaptation.py: bench_adapt's label-free figures become the card's advice."""

from __future__ import annotations

import json
from pathlib import Path

from script_loader import load_script

ROOT = Path(__file__).resolve().parents[2]


def run(model: str, shift: str, shifted: float, adapted: float) -> dict:
    return {
        "model": model,
        "shift": shift,
        "shifted": {"dice": shifted},
        "adapted": {"dice": adapted},
    }


def test_one_harmful_shift_makes_the_advice_and_noise_does_not(tmp_path, monkeypatch):
    script = load_script("record_adaptation")
    result = {
        "command": "python benchmarks/bench_adapt.py --models a,b",
        "runs": [
            run("a", "gamma", 0.80, 0.85),
            run("a", "blur_noise", 0.71, 0.43),
            run("b", "gamma", 0.80, 0.797),  # within the tolerance: not harm
            run("b", "pixel_size", 0.70, 0.84),
        ],
    }
    found = script.verdicts([result])
    assert found["a"]["label_free"] is False and found["b"]["label_free"] is True
    assert found["a"]["shifts"]["blur_noise"] == {"shifted": 0.71, "adapted": 0.43}

    monkeypatch.setattr(script, "BUNDLED", tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({"name": "a", "recommended": {"tile_size": 64}}))
    script.write("a", found["a"])
    card = json.loads((tmp_path / "a.json").read_text())
    assert card["recommended"]["tile_size"] == 64
    assert card["recommended"]["adaptation"]["label_free"] is False
    assert card["recommended"]["adaptation"]["measured_by"] == [result["command"]]


def tuned(model: str, shift: str, rate: float | None, **dice: float) -> dict:
    entry = run(model, shift, 0.70, 0.80)
    if rate is not None:
        entry["learning_rate"] = rate
    entry.update({f"shots={key[1:]}": {"dice": value} for key, value in dice.items()})
    return entry


def test_the_learning_rate_with_the_best_mean_dice_is_recorded_and_kept(tmp_path, monkeypatch):
    script = load_script("record_adaptation")
    # Runs without their own rate ran at the file's default (bench_adapt before --lr).
    default = {
        "command": "bench_adapt --models a",
        "settings": {"learning_rate": 1e-3},
        "runs": [tuned("a", "gamma", None, n1=0.60, n2=0.70), tuned("a", "blur", None, n2=0.80)],
    }
    gentler = {
        "command": "bench_adapt --models a --lr 1e-4",
        "runs": [tuned("a", "gamma", 1e-4, n2=0.81), tuned("a", "blur", 1e-4, n2=0.79)],
    }
    found = script.verdicts([default, gentler])
    # Compared on the two 2-shot runs both rates have: 0.75 at 1e-3, 0.80 at 1e-4.
    assert found["a"]["learning_rate"] == 1e-4
    assert found["a"]["mean_dice_by_learning_rate"] == {"0.0001": 0.8, "0.001": 0.75}
    assert found["a"]["learning_rate_runs"] == 2
    assert "learning_rate" not in script.verdicts([default])["a"]

    monkeypatch.setattr(script, "BUNDLED", tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({"name": "a"}))
    script.write("a", found["a"])
    # A later label-free-only verdict keeps the rate and its evidence.
    script.write("a", script.verdicts([default])["a"])
    adaptation = json.loads((tmp_path / "a.json").read_text())["recommended"]["adaptation"]
    assert adaptation["learning_rate"] == 1e-4
    assert adaptation["learning_rate_measured_by"] == [default["command"], gentler["command"]]
    assert adaptation["measured_by"] == [default["command"]]


def test_the_pull_towards_the_start_is_compared_at_one_rate_and_kept(tmp_path, monkeypatch):
    script = load_script("record_adaptation")
    plain = {
        "command": "bench_adapt --models a",
        "runs": [tuned("a", "gamma", 1e-4, n2=0.80), tuned("a", "blur", 1e-4, n2=0.82)],
    }
    pulled_runs = [tuned("a", "gamma", 1e-4, n2=0.81), tuned("a", "blur", 1e-4, n2=0.85)]
    for entry in pulled_runs:
        entry["anchor_decay"] = 0.1
    pulled = {"command": "bench_adapt --models a --anchor-decay 0.1", "runs": pulled_runs}
    found = script.verdicts([plain, pulled])["a"]
    assert found["anchor_decay"] == 0.1 and found["anchor_decay_runs"] == 2
    assert found["mean_dice_by_anchor_decay"] == {"0": 0.81, "0.1": 0.83}
    # Runs with a pull do not enter the comparison of learning rates.
    assert "learning_rate" not in found

    monkeypatch.setattr(script, "BUNDLED", tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({"name": "a"}))
    script.write("a", found)
    script.write("a", script.verdicts([plain])["a"])  # a later verdict that measured no pull
    adaptation = json.loads((tmp_path / "a.json").read_text())["recommended"]["adaptation"]
    assert adaptation["anchor_decay"] == 0.1
    assert adaptation["anchor_decay_measured_by"] == [plain["command"], pulled["command"]]


def test_merge_keeps_the_shifts_not_measured_again_and_decides_over_all(tmp_path, monkeypatch):
    script = load_script("record_adaptation")
    monkeypatch.setattr(script, "BUNDLED", tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({"name": "a"}))
    first = {
        "command": "bench_adapt --models a",
        "runs": [run("a", "gamma", 0.80, 0.85), run("a", "blur_noise", 0.71, 0.43)],
    }
    script.write("a", script.verdicts([first])["a"])
    again = {
        "command": "bench_adapt --models a --shifts blur_noise",
        "runs": [run("a", "blur_noise", 0.71, 0.80)],
    }
    script.write("a", script.verdicts([again])["a"], merge=True)
    adaptation = json.loads((tmp_path / "a.json").read_text())["recommended"]["adaptation"]
    assert adaptation["dice_shifted_vs_adapted"] == {
        "gamma": {"shifted": 0.80, "adapted": 0.85},
        "blur_noise": {"shifted": 0.71, "adapted": 0.80},
    }
    assert adaptation["label_free"] is True
    assert adaptation["measured_by"] == [first["command"], again["command"]]

    # Without merge (new weights), the old figures go.
    script.write("a", script.verdicts([again])["a"])
    adaptation = json.loads((tmp_path / "a.json").read_text())["recommended"]["adaptation"]
    assert list(adaptation["dice_shifted_vs_adapted"]) == ["blur_noise"]
    assert adaptation["measured_by"] == [again["command"]]


def test_the_step_limit_is_compared_on_the_same_annotated_images(tmp_path, monkeypatch):
    script = load_script("record_adaptation")

    def runs(steps: int | None, **dice: float) -> list[dict]:
        made = []
        for shift, value in dice.items():
            entry = tuned("a", shift, 1e-3, n2=value)
            entry["shots=2"]["slices"] = [2, 7]
            if steps is not None:
                entry["steps"] = steps
            made.append(entry)
        return made

    short = {
        "command": "bench_adapt --models a",
        "settings": {"learning_rate": 1e-3, "steps": 400},
        "runs": runs(None, blur=0.86, gamma=0.90),  # older files record the limit only here
    }
    long = {"command": "bench_adapt --models a --steps 1000", "runs": runs(None, blur=0.89)}
    other_images = {"command": "bench_adapt --models a --steps 1000 --pick-seed 2", "runs": []}
    other_images["runs"] = runs(1000, gamma=0.10)
    other_images["runs"][0]["shots=2"]["slices"] = [4, 6]  # not the images the 400 ran on
    found = script.verdicts([short, long, other_images])["a"]
    # Only blur on slices 2 and 7 ran at both limits.
    assert found["steps"] == 1000 and found["steps_runs"] == 1
    assert found["mean_dice_by_steps"] == {"400": 0.86, "1000": 0.89}
    # The learning rate is not compared across step limits (one rate here: none recorded).
    assert "learning_rate" not in found

    monkeypatch.setattr(script, "BUNDLED", tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({"name": "a"}))
    script.write("a", found)
    script.write("a", script.verdicts([short])["a"], merge=True)  # no comparison: it stays
    adaptation = json.loads((tmp_path / "a.json").read_text())["recommended"]["adaptation"]
    assert adaptation["steps"] == 1000
    assert adaptation["steps_measured_by"] == [c["command"] for c in (short, long, other_images)]


def one_image(shift: str, shifted: float, after: float, steps: int = 675, image: int = 3) -> dict:
    """A bench_adapt run with a fine-tune on one image, scored segmented (mean AP)."""
    entry = run("n", shift, 0.71, 0.61)
    entry["shifted"]["segmented"] = {"metric": "ap_50_95", "score": shifted}
    entry["shots=1"] = {
        "dice": 0.72,
        "segmented": {"metric": "ap_50_95", "score": after},
        "slices": [image],
        "steps": steps,
    }
    return entry


def test_one_image_fine_tunes_worse_than_not_adapting_stop_one_image_training(
    tmp_path, monkeypatch
):
    script = load_script("record_adaptation")
    worse = {"command": "bench_adapt --shots 1", "runs": [one_image("blur_noise", 0.2325, 0.2165)]}
    found = script.verdicts([worse])["n"]
    assert found["train_on_one_image"] is False
    assert found["one_image_scores"] == {
        "blur_noise image 3 (default steps)": {
            "shifted": 0.2325,
            "one_image": 0.2165,
            "metric": "ap_50_95",
        }
    }
    # Within the tolerance, or without a gradient step (nothing learnt), it is no evidence.
    close = {"command": "c", "runs": [one_image("gamma", 0.32, 0.318)]}
    assert script.verdicts([close])["n"]["train_on_one_image"] is True
    untrained = {"command": "u", "runs": [one_image("gamma", 0.32, 0.10, steps=0)]}
    assert "train_on_one_image" not in script.verdicts([untrained])["n"]

    monkeypatch.setattr(script, "BUNDLED", tmp_path)
    (tmp_path / "n.json").write_text(json.dumps({"name": "n", "recommended": {}}))
    script.write("n", found)
    adaptation = json.loads((tmp_path / "n.json").read_text())["recommended"]["adaptation"]
    assert adaptation["train_on_one_image"] is False
    assert adaptation["train_on_one_image_measured_by"] == ["bench_adapt --shots 1"]
    # A later result without one-image fine-tunes keeps the verdict; a merged one adds to it.
    script.write("n", script.verdicts([untrained])["n"], merge=True)
    adaptation = json.loads((tmp_path / "n.json").read_text())["recommended"]["adaptation"]
    assert adaptation["train_on_one_image"] is False
    script.write("n", script.verdicts([close])["n"], merge=True)
    adaptation = json.loads((tmp_path / "n.json").read_text())["recommended"]["adaptation"]
    assert adaptation["train_on_one_image"] is False and len(adaptation["one_image_scores"]) == 2
    assert adaptation["train_on_one_image_measured_by"] == ["bench_adapt --shots 1", "c"]
