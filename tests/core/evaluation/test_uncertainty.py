"""Bootstrap intervals of a mean over images (core/evaluation/uncertainty.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_microseg.core.evaluation.evaluate import mean_intervals
from napari_microseg.core.evaluation.uncertainty import (
    MIN_IMAGES,
    bootstrap_interval,
    paired_difference,
)


def test_equal_scores_have_no_spread():
    interval = bootstrap_interval([0.75] * 5)
    assert (interval.mean, interval.low, interval.high, interval.n) == (0.75, 0.75, 0.75, 5)


def test_half_of_twenty_images_right_gives_the_binomial_quantiles():
    # A resampled mean of 20 zeros and ones is Binomial(20, 0.5) / 20, whose 2.5% and
    # 97.5% quantiles are 6/20 and 14/20.
    interval = bootstrap_interval([0.0, 1.0] * 10)
    assert interval.mean == 0.5
    assert interval.low == pytest.approx(0.30, abs=0.026)
    assert interval.high == pytest.approx(0.70, abs=0.026)
    assert 0.5 in interval and 0.25 not in interval


def test_more_images_give_a_narrower_interval():
    few = bootstrap_interval([0.0, 1.0] * 5)
    many = bootstrap_interval([0.0, 1.0] * 500)
    assert many.high - many.low < (few.high - few.low) / 5


def test_the_seed_makes_it_reproducible():
    scores = np.linspace(0.5, 1.0, 17)
    assert bootstrap_interval(scores, seed=3) == bootstrap_interval(scores, seed=3)
    other = bootstrap_interval(scores, seed=4)
    assert other.low == pytest.approx(bootstrap_interval(scores).low, abs=0.01)


def test_a_constant_gain_on_the_same_images_is_surely_apart():
    # The images differ a lot from each other, the two models by 0.02 on each one: the
    # unpaired intervals overlap, the paired difference is exactly 0.02.
    base = np.array([0.2, 0.9, 0.5, 1.0, 0.4, 0.7, 0.6, 0.3])
    better = base + 0.02
    a, b = bootstrap_interval(base), bootstrap_interval(better)
    assert a.high > b.low
    difference = paired_difference(better, base)
    assert difference.mean == pytest.approx(0.02)
    assert difference.low == pytest.approx(0.02) and difference.high == pytest.approx(0.02)
    assert 0.0 not in difference


def test_gains_and_losses_that_cancel_are_not_apart():
    first = [0.9, 0.6, 0.8, 0.7, 0.9, 0.5]
    second = [0.8, 0.7, 0.7, 0.8, 0.8, 0.6]
    assert 0.0 in paired_difference(first, second)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bootstrap_interval([0.5] * (MIN_IMAGES - 1)), "at least 3"),
        (lambda: bootstrap_interval([0.5, math.nan, 0.7]), "finite"),
        (lambda: bootstrap_interval([0.5, 0.6, 0.7], confidence=1.0), "confidence"),
        (lambda: bootstrap_interval([0.5, 0.6, 0.7], resamples=0), "resamples"),
        (lambda: paired_difference([0.5, 0.6, 0.7], [0.5, 0.6]), "same images"),
    ],
)
def test_bad_input_says_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_mean_intervals_give_score_columns_only():
    rows = [
        {"image": "a", "object_f1": 1.0, "n_true": 3, "object_hausdorff": math.inf},
        {"image": "b", "object_f1": 0.5, "n_true": 2, "object_hausdorff": 4.0},
        {"image": "c", "object_f1": 0.75, "n_true": 1, "object_hausdorff": 2.0},
        {"image": "d", "object_f1": "", "n_true": 1, "object_hausdorff": 2.0},
    ]
    intervals = mean_intervals(rows)
    # Counts are not scores; an infinite distance has no mean to bound; empty cells are skipped.
    assert list(intervals) == ["object_f1"]
    assert intervals["object_f1"].n == 3 and intervals["object_f1"].mean == pytest.approx(0.75)
    assert mean_intervals(rows[:2]) == {}
