"""scripts/model_docs.py: the summary table of docs/models.md."""

from __future__ import annotations

from types import SimpleNamespace

from script_loader import load_script


def _card(target):
    return SimpleNamespace(
        architecture="unet",
        metrics={"target": target},
        lineage={"dataset": {"kind": "glas"}},
        recommended={"mpx_per_s_cpu": 17.0},
    )


def test_the_summary_shows_the_interval_when_the_card_has_one():
    target = {"label": "object F1", "minimum": 0.88, "value": 0.8638, "met": False}
    with_interval = {**target, "interval": {"low": 0.8071, "high": 0.9152}}
    table = load_script("model_docs").summary_table(
        {"gland-he": _card(with_interval), "gland-he-micronet": _card(target)}
    )
    rows = {line.split(" | ")[0]: line for line in table.splitlines()}
    assert "| 0.864 [0.807, 0.915] | no | 17.00 |" in rows["| [gland-he](#gland-he)"]
    assert "| 0.864 | no |" in rows["| [gland-he-micronet](#gland-he-micronet)"]


def test_settings_show_what_a_run_changed_from_the_defaults():
    settings = {"steps": 9500, "class_balance": 0.5, "boundary_width": 2, "monitor": "dice",
                "tune_fraction": 0.0, "learning_rate": 0.001}  # fmt: skip
    text = load_script("model_docs")._settings_text(settings)
    assert text == "steps 9500, learning_rate 0.001, class_balance 0.5, boundary_width 2"
