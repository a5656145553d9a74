"""Pixel errors split by distance to the true boundary, and the truth moved by a pixel."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.core.evaluation import (
    accuracy,
    boundary_distance,
    errors_by_boundary_distance,
    shifted_self_accuracy,
)


def _membrane_image() -> np.ndarray:
    """Two 6 x 6 cells beside a 2-pixel membrane: (6, 14), membrane at columns 6-7."""
    cells = np.ones((6, 14), dtype=np.uint8)
    cells[:, 6:8] = 0
    cells[:, 8:] = 2
    return cells


def test_distance_counts_pixels_from_the_boundary_on_both_sides():
    distance = boundary_distance(_membrane_image())
    np.testing.assert_array_equal(distance[0], [6, 5, 4, 3, 2, 1, 1, 1, 1, 2, 3, 4, 5, 6])
    assert np.isinf(boundary_distance(np.ones((3, 3)))).all()


def test_a_membrane_drawn_one_pixel_thick_is_all_boundary_error():
    truth = _membrane_image()
    pred = truth.copy()
    pred[:, 5] = 0  # the membrane drawn one pixel wider on the left
    pred[0, 0] = 0  # and one pixel wrong far from any boundary
    bands = errors_by_boundary_distance(truth, pred)
    assert bands == {
        "<= 1": 6 / 84,
        "1-2": 0.0,
        "2-4": 0.0,
        "> 4": 1 / 84,
        "error": pytest.approx(1 - accuracy(truth, pred)),
    }


def test_bands_follow_the_edges_given():
    truth = _membrane_image()
    pred = truth.copy()
    pred[:, 3] = 0  # distance 3 from the membrane
    assert errors_by_boundary_distance(truth, pred, edges=(2, 3)) == {
        "<= 2": 0.0, "2-3": 6 / 84, "> 3": 0.0, "error": 6 / 84,
    }  # fmt: skip
    with pytest.raises(ValueError, match="increasing"):
        errors_by_boundary_distance(truth, pred, edges=(3, 2))
    with pytest.raises(ValueError, match="same pixels"):
        errors_by_boundary_distance(truth, pred[:, :-1])


def test_the_truth_moved_by_one_pixel_loses_its_boundary_rows():
    truth = _membrane_image()
    # Along x, each of the two membrane edges puts one of 13 overlapping columns wrong;
    # along y nothing changes.
    assert shifted_self_accuracy(truth) == pytest.approx((11 / 13 + 1.0) / 2)
    assert shifted_self_accuracy(truth, shift=2) == pytest.approx((8 / 12 + 1.0) / 2)
    with pytest.raises(ValueError, match="at least 1"):
        shifted_self_accuracy(truth, shift=0)
    with pytest.raises(ValueError, match="cannot be moved"):
        shifted_self_accuracy(truth[:1], shift=1)
