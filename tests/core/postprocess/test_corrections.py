"""Label-correction edits on hand-built arrays with exact answers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.core.postprocess import corrections as ops


def two_blobs(ndim: int) -> np.ndarray:
    labels = np.zeros((5, 12, 12)[-ndim:], np.uint16)
    labels[..., 1:5, 1:5] = 3
    labels[..., 6:10, 6:11] = 7
    return labels


@pytest.mark.parametrize("ndim", [2, 3])
def test_merge_gives_the_smallest_id(ndim):
    labels = two_blobs(ndim)
    edit = ops.merge_labels(labels, [7, 3])
    merged = edit.apply(labels.copy())
    assert set(np.unique(merged)) == {0, 3}
    assert edit.n_pixels == (labels == 7).sum()


def test_merge_needs_two_objects():
    assert ops.merge_labels(two_blobs(2), [3]).n_pixels == 0


@pytest.mark.parametrize("ndim", [2, 3])
def test_delete(ndim):
    labels = two_blobs(ndim)
    assert set(np.unique(ops.delete_labels(labels, [3]).apply(labels.copy()))) == {0, 7}


def test_split_a_dumbbell_at_two_seeds():
    labels = np.zeros((10, 21), np.uint32)
    labels[2:8, 1:8] = 5
    labels[2:8, 13:20] = 5
    labels[4:6, 8:13] = 5  # thin neck
    labels[0, 0] = 9
    split = ops.split_label(labels, 5, np.array([[5, 4], [5, 16]])).apply(labels.copy())
    assert set(np.unique(split)) == {0, 5, 9, 10}
    assert (split[2:8, 1:8] == 5).all() and (split[2:8, 13:20] == 10).all()


def test_split_needs_two_seeds_inside():
    labels = two_blobs(2)
    with pytest.raises(ValueError, match="two seed points"):
        ops.split_label(labels, 3, np.array([[2, 2], [11, 11]]))
    with pytest.raises(ValueError, match="no object 4"):
        ops.split_label(labels, 4, np.array([[2, 2], [3, 3]]))


@pytest.mark.parametrize("ndim", [2, 3])
def test_remove_small(ndim):
    labels = two_blobs(ndim)
    labels[..., 11, 11] = 9
    kept = ops.remove_small(labels, 3 if ndim == 2 else 10).apply(labels.copy())
    assert set(np.unique(kept)) == {0, 3, 7}


def test_fill_holes_only_fills_enclosed_background():
    labels = np.zeros((7, 7), np.uint8)
    labels[1:6, 1:6] = 2
    labels[3, 3] = 0  # a hole
    labels[0, 0] = 4
    edit = ops.fill_holes(labels)
    assert edit.n_pixels == 1
    assert edit.apply(labels.copy())[3, 3] == 2


def test_relabel_sequential_keeps_order():
    labels = np.array([[0, 5, 5, 90], [12, 0, 0, 90]], np.uint32)
    out = ops.relabel_sequential(labels).apply(labels.copy())
    np.testing.assert_array_equal(out, [[0, 1, 1, 3], [2, 0, 0, 3]])


def test_neighbour_object_wraps_around():
    labels = two_blobs(2)
    assert ops.neighbour_object(labels, 3, +1)[0] == 7
    assert ops.neighbour_object(labels, 7, +1)[0] == 3
    assert ops.neighbour_object(labels, 3, -1)[0] == 7
    assert ops.neighbour_object(labels, 0, +1)[0] == 3
    _, centroid = ops.neighbour_object(labels, 3, +1)
    assert centroid == pytest.approx((7.5, 8.0))
    assert ops.neighbour_object(np.zeros((3, 3), int), 0) is None


def test_count_objects():
    assert ops.count_objects(two_blobs(3)) == 2
