"""benchmarks/bench_adapt.py and adapt_report.py: the product's score beside the network's, and
the target on each."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    """``benchmarks/bench_adapt.py`` and its sibling modules, imported as the script does."""
    names = ("bench_adapt", "adapt_data", "adapt_report")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("bench_adapt")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
        for name in names:
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def report(bench):
    return importlib.import_module("adapt_report")


def test_segmented_scores_each_image_as_segmented_then_averages(bench, thresholding_model):
    images = np.zeros((2, 32, 32), np.uint8)
    truth = np.zeros((2, 32, 32), np.int32)
    images[:, 4:12, 4:12] = 255
    truth[:, 4:12, 4:12] = 1
    # The second image's truth has a second object the image does not show.
    truth[1, 20:28, 20:28] = 2

    scores = bench.segmented(thresholding_model, images, truth, "ZYX", "pixel_f1")

    assert scores["metric"] == "pixel_f1"
    # Image 0 is exact; image 1 finds one object of two, half the truth's pixels.
    assert scores["score"] == scores["pixel_f1"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-4)
    assert scores["object_f1"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-4)
    assert scores["ap_50_95"] == pytest.approx((1 + 1 / 2) / 2, abs=1e-4)


def test_a_given_pixel_size_reaches_the_segmentation(bench, thresholding_model, monkeypatch):
    from dataclasses import replace

    import napari_microseg.core.inference.segment as segment

    real = segment.segment_job
    seen = []

    def recording(*args, **kwargs):
        result = yield from real(*args, **kwargs)
        seen.append((kwargs.get("spacing"), result.resampled))
        return result

    monkeypatch.setattr(segment, "segment_job", recording)
    model = thresholding_model
    model.card = replace(model.card, pixel_size_um=0.625)
    images = np.zeros((1, 32, 32), np.uint8)
    truth = np.zeros((1, 32, 32), np.int32)
    images[:, 8:24, 8:24] = 255
    truth[:, 8:24, 8:24] = 1

    scores = bench.segmented(model, images, truth, "ZYX", "pixel_f1", spacing=(1.25, 1.25))

    # Pixels twice the model's: the image is resampled 2x for it, and labelled on its own grid.
    assert seen == [((1.25, 1.25), (2.0, 2.0))]
    assert scores["pixel_f1"] == pytest.approx(1.0, abs=0.05)
    bench.segmented(model, images, truth, "ZYX", "pixel_f1")
    assert seen[-1] == (None, None)


def run(source: tuple[float, float], shifted: tuple[float, float], two: tuple[float, float]):
    """A bench run: (argmax Dice, segmented score) of the source, shifted and 2-shot models."""

    def entry(dice: float, score: float) -> dict:
        return {"dice": dice, "segmented": {"metric": "ap_50_95", "score": score}}

    return {
        "model": "nuclei-fluo",
        "shift": "blur_noise",
        "source": entry(*source),
        "shifted": entry(*shifted),
        "adapted": entry(*shifted),
        "shots=2": {**entry(*two), "wall_s": 148.0, "kept": "trained"},
    }


def test_the_target_is_judged_on_either_score(report):
    # Worse by the argmax Dice, a large gain once segmented (as nuclei-fluo under blur + noise).
    r = run(source=(0.87, 0.55), shifted=(0.71, 0.23), two=(0.69, 0.42))

    by_dice = report.target(r)
    by_product = report.target(r, report.segmented_score)

    assert by_dice["applies"] and not by_dice["holds"] and not by_dice["not_worse"]
    assert by_product["applies"] and by_product["holds"] and by_product["not_worse"]
    assert by_product["gain_2"] == pytest.approx(0.19)


def test_the_segmented_table_says_the_verdict_and_skips_old_runs(report):
    old = run(source=(0.87, 0.55), shifted=(0.71, 0.23), two=(0.69, 0.42))
    for key in ("source", "shifted", "adapted", "shots=2"):
        del old[key]["segmented"]
    new = run(source=(0.87, 0.55), shifted=(0.71, 0.23), two=(0.69, 0.30))

    lines = report.segmented_table([old, new], [2]).splitlines()

    assert len(lines) == 3  # header, rule, the one run that was segmented
    assert "ap_50_95" in lines[2] and "0.300 (trained)" in lines[2]
    assert "NOT met (gain +0.070)" in lines[2]
