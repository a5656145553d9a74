"""scripts/record_adaptation.py: bench_adapt's label-free figures become the card's advice."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location(
        "record_adaptation", ROOT / "scripts" / "record_adaptation.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(model: str, shift: str, shifted: float, adapted: float) -> dict:
    return {
        "model": model,
        "shift": shift,
        "shifted": {"dice": shifted},
        "adapted": {"dice": adapted},
    }


def test_one_harmful_shift_makes_the_advice_and_noise_does_not(tmp_path, monkeypatch):
    script = load_script()
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
