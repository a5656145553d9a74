"""scripts/compare_scores.py: paired differences of two evaluate CSVs."""

from __future__ import annotations

import pytest
from script_loader import load_script

from napari_microseg.core.evaluation.evaluate import write_csv


def _csv(path, scores):
    rows = [{"image": name, "object_f1": value} for name, value in scores.items()]
    mean = sum(scores.values()) / len(scores)
    return write_csv(path, [*rows, {"image": "mean", "object_f1": mean}])


def test_a_gain_on_every_image_is_told_apart(tmp_path, capsys):
    base = {"a": 0.5, "b": 0.9, "c": 0.7, "d": 0.6}
    first = _csv(tmp_path / "first.csv", {k: v + 0.1 for k, v in base.items()})
    second = _csv(tmp_path / "second.csv", {**base, "e": 1.0})
    assert load_script("compare_scores").main([str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert "Only in one of the two, left out: e" in out
    assert "object_f1 on 4 images" in out and "first - second  +0.100 [+0.100, +0.100]" in out
    assert "first better on 4 image(s), worse on 0" in out and "first is better" in out


def test_mixed_results_are_not_apart(tmp_path, capsys):
    first = _csv(tmp_path / "first.csv", {"a": 0.9, "b": 0.6, "c": 0.8, "d": 0.7})
    second = _csv(tmp_path / "second.csv", {"a": 0.8, "b": 0.7, "c": 0.7, "d": 0.8})
    assert load_script("compare_scores").main([str(first), str(second)]) == 0
    assert "not apart on these images" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("metric", "message"), [("object_f1", "at least 3"), ("nope", "no column 'nope'")]
)
def test_bad_input_is_one_clear_line(tmp_path, metric, message):
    first = _csv(tmp_path / "first.csv", {"a": 0.9, "b": 0.6})
    second = _csv(tmp_path / "second.csv", {"a": 0.8, "b": 0.7})
    with pytest.raises(SystemExit, match=message):
        load_script("compare_scores").main([str(first), str(second), "--metric", metric])


def test_a_missing_file_says_what_to_give(tmp_path):
    with pytest.raises(SystemExit, match="is not a file"):
        load_script("compare_scores").main([str(tmp_path / "a.csv"), str(tmp_path / "b.csv")])
