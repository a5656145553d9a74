"""Metrics on hand-built label images with exact answers, 2D and 3D, and their edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import metrics as skm

from napari_microseg.core import evaluation as m
from napari_microseg.core.evaluation.contingency import compress_ids, overlap
from napari_microseg.core.evaluation.evaluate import COLUMNS, evaluate_images, select_metrics


def nd(array, ndim: int) -> np.ndarray:
    """A 2D case as is, or three identical slices for 3D (every ratio stays the same)."""
    array = np.asarray(array)
    return array if ndim == 2 else np.stack([array] * 3)


ndims = pytest.mark.parametrize("ndim", [2, 3])

# One big true object against four predicted quadrants.
BIG = np.pad(np.ones((6, 6), int), 1)
QUADRANTS = np.pad(np.kron(np.array([[1, 2], [3, 4]]), np.ones((3, 3), int)), 1)


# ----------------------------------------------------------------------------- input


def test_float_truth_is_refused():
    with pytest.raises(m.LabelImageError, match=r"float64 values.*post-process"):
        m.pixel_f1(np.zeros((3, 3)), np.zeros((3, 3), int))


def test_negative_labels_are_refused():
    with pytest.raises(m.LabelImageError, match="negative ids"):
        m.object_f1(np.array([[0, -1]]), np.array([[0, 1]]))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(m.LabelImageError, match=r"\(4, 4\).*\(4, 5\)"):
        m.iou(np.zeros((4, 5), int), np.zeros((4, 4), int))


def test_binary_masks_become_connected_components():
    mask = np.array([[255, 255, 0, 255]], np.uint8)
    np.testing.assert_array_equal(m.as_instances(mask), [[1, 1, 0, 2]])
    labels = np.array([[1, 1, 0, 2]])
    np.testing.assert_array_equal(m.as_instances(labels), labels)  # labels stay as they are
    assert m.object_f1(mask, labels) == 1.0


def test_large_ids_are_kept():
    truth = np.array([[70000, 70000, 0, 2**40]], np.uint64)
    pred = np.array([[3, 3, 0, 9]], np.uint32)
    table = m.overlap(truth, pred)
    assert table.true_ids.tolist() == [70000, 2**40]
    assert m.mean_average_precision(truth, pred) == 1.0
    matches = m.match_objects(truth, pred)
    assert matches.table["id"][:2].tolist() == [70000, 2**40]


def test_sparse_and_dense_contingency_agree():
    rng = np.random.default_rng(0)
    truth = rng.permutation(10000).reshape(100, 100) + 1  # 10,000 objects of one pixel
    pred = truth.copy()
    table = overlap(truth, pred)  # 10,000 x 10,000 cells: the sparse path
    assert table.pairs_true.size == 10000
    np.testing.assert_array_equal(
        table.true_ids[table.pairs_true], table.pred_ids[table.pairs_pred]
    )
    ids, compressed = compress_ids(np.array([[0, 2**40, 5]], np.uint64))
    assert ids.tolist() == [0, 5, 2**40] and compressed.tolist() == [[0, 2, 1]]


# ----------------------------------------------------------------------------- pixel level


@ndims
def test_pixel_metrics(ndim):
    truth = nd([[1, 1, 0, 0], [2, 2, 0, 0]], ndim)
    pred = nd([[5, 0, 5, 0], [5, 5, 0, 0]], ndim)  # TP 3, FP 1, FN 1, TN 3
    assert m.accuracy(truth, pred) == 0.75
    assert m.precision(truth, pred) == 0.75
    assert m.recall(truth, pred) == 0.75
    assert m.pixel_f1(truth, pred) == m.dice(truth, pred) == 0.75
    assert m.iou(truth, pred) == m.jaccard(truth, pred) == 0.6


@pytest.mark.parametrize(
    ("truth", "pred", "expected"),
    [
        (np.zeros((3, 3), int), np.zeros((3, 3), int), (1.0, 1.0, 1.0, 1.0, 1.0)),
        (np.eye(3, dtype=int), np.zeros((3, 3), int), (2 / 3, 0.0, 0.0, 0.0, 0.0)),
        (np.zeros((3, 3), int), np.eye(3, dtype=int), (2 / 3, 0.0, 0.0, 0.0, 0.0)),
    ],
    ids=["both-empty", "empty-prediction", "empty-truth"],
)
def test_pixel_metrics_when_empty(truth, pred, expected):
    scores = tuple(f(truth, pred) for f in (m.accuracy, m.precision, m.recall, m.pixel_f1, m.iou))
    assert scores == pytest.approx(expected)


# ----------------------------------------------------------------------------- GlaS


@ndims
def test_object_f1_counts_detections_covering_half_the_object(ndim):
    truth = nd([[1, 1, 0, 2, 2, 2, 0, 3, 3, 0]], ndim)
    pred = nd([[4, 4, 0, 0, 0, 5, 0, 6, 6, 7]], ndim)
    # 4 covers object 1, 5 only a third of 2, 6 covers 3, 7 is on background.
    assert m.object_f1(truth, pred) == pytest.approx(2 * 2 / (3 + 4))


@ndims
def test_object_dice_is_area_weighted_over_both_sets(ndim):
    truth = nd([[1, 1, 1, 1, 0, 2, 2]], ndim)
    pred = nd([[3, 3, 0, 0, 0, 4, 4]], ndim)
    # truth side: 4/6 * Dice(1, 3) + 2/6 * 1; prediction side: 2/4 * (2/3) + 2/4 * 1.
    dice13 = 2 * 2 / (4 + 2)
    expected = 0.5 * ((4 / 6) * dice13 + 2 / 6 + 0.5 * dice13 + 0.5)
    assert m.object_dice(truth, pred) == pytest.approx(expected)


@ndims
def test_object_hausdorff_of_shifted_squares(ndim):
    truth = nd(np.pad(np.ones((3, 3), int), ((0, 2), (0, 3))), ndim)
    pred = np.roll(truth, 1, axis=-1)
    assert m.object_hausdorff(truth, pred) == 1.0
    pred = np.roll(truth, 2, axis=-2)  # two rows down
    assert m.object_hausdorff(truth, pred) == 2.0


def test_object_hausdorff_uses_the_nearest_object_without_overlap():
    truth = np.array([[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    pred = np.array([[0, 0, 0, 2, 0, 0, 0, 0, 0, 3]])
    # truth: H(1, 2) = 3; prediction: H(2, 1) = 3 and H(3, 1) = 9, equal weights.
    assert m.object_hausdorff(truth, pred) == pytest.approx(0.5 * (3 + (3 + 9) / 2))


def test_object_hausdorff_in_physical_units():
    truth = np.array([[1, 1, 0], [0, 0, 0]])
    pred = np.array([[0, 0, 0], [2, 2, 0]])
    assert m.object_hausdorff(truth, pred) == 1.0
    assert m.object_hausdorff(truth, pred, spacing=(2.5, 1.0)) == 2.5


@pytest.mark.parametrize(
    ("metric", "both_empty", "one_empty"),
    [(m.object_f1, 1.0, 0.0), (m.object_dice, 1.0, 0.0), (m.object_hausdorff, 0.0, np.inf)],
)
def test_glas_metrics_when_empty(metric, both_empty, one_empty):
    empty, some = np.zeros((4, 4), int), np.eye(4, dtype=int)
    assert metric(empty, empty) == both_empty
    assert metric(some, empty) == one_empty
    assert metric(empty, some) == one_empty


def test_one_big_object_against_many_small():
    assert m.object_f1(BIG, QUADRANTS) == 0.0  # each quadrant covers a quarter
    assert m.object_f1(QUADRANTS, BIG) == pytest.approx(0.4)  # 1 TP, 3 FN
    assert m.object_dice(BIG, QUADRANTS) == pytest.approx(2 * 9 / (36 + 9))
    assert m.mean_average_precision(BIG, QUADRANTS) == 0.0
    split = m.match_objects(BIG, QUADRANTS)
    assert (split.matched, split.missed, split.false, split.split, split.merged) == (0, 1, 4, 1, 0)
    merged = m.match_objects(QUADRANTS, BIG)
    assert (merged.matched, merged.missed, merged.false, merged.split, merged.merged) == (
        0,
        4,
        1,
        0,
        1,
    )


# ----------------------------------------------------------------------------- DSB 2018


@ndims
def test_dsb_average_precision(ndim):
    truth = nd([[1, 1, 1, 1, 0, 2, 2, 0, 0, 0]], ndim)
    pred = nd([[3, 3, 3, 0, 0, 0, 0, 0, 4, 4]], ndim)  # IoU(1, 3) = 0.75; 2 missed; 4 false
    assert m.average_precision(truth, pred, 0.5) == pytest.approx(1 / 3)
    assert m.average_precision(truth, pred, 0.75) == 0.0  # IoU must exceed the threshold
    assert m.mean_average_precision(truth, pred) == pytest.approx(5 / 3 / 10)


def test_dsb_thresholds_and_edge_cases():
    assert m.DSB_IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    empty, some = np.zeros((3, 3), int), np.eye(3, dtype=int)
    assert m.mean_average_precision(empty, empty) == 1.0
    assert m.mean_average_precision(some, empty) == 0.0
    assert m.mean_average_precision(empty, some) == 0.0
    assert m.mean_average_precision(some, some) == 1.0


def test_low_iou_thresholds_match_one_to_one():
    truth = np.array([[1, 1, 1, 2, 2, 2]])
    pred = np.array([[3, 3, 4, 4, 4, 4]])  # 4 overlaps both: IoU 1/6 with 1, 3/4 with 2
    assert m.average_precision(truth, pred, 0.1) == 1.0  # 3-1 (IoU 2/3) and 4-2 both match
    assert m.average_precision(truth, pred, 0.7) == pytest.approx(1 / 3)
    matches = m.match_objects(truth, pred, iou_threshold=0.1)
    assert matches.matched == 2


# ----------------------------------------------------------------------------- ISBI


@pytest.mark.parametrize("shape", [(12, 14), (3, 8, 9)])
def test_rand_and_vi_match_scikit_image_where_every_true_pixel_is_labelled(shape):
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 4, shape)
    pred = np.where(truth > 0, rng.integers(1, 4, shape), rng.integers(0, 3, shape))
    expected = skm.adapted_rand_error(truth, pred, ignore_labels=(0,))[0]
    assert m.adapted_rand_error(truth, pred) == pytest.approx(expected)
    split, merge = skm.variation_of_information(truth, pred, ignore_labels=(0,))
    assert m.variation_of_information(truth, pred) == pytest.approx((split, merge))


@ndims
def test_vi_splits_and_merges(ndim):
    whole = nd([[1, 1, 1, 1]], ndim)
    halves = nd([[1, 1, 2, 2]], ndim)
    assert m.variation_of_information(whole, halves) == pytest.approx((1.0, 0.0))
    assert m.variation_of_information(halves, whole) == pytest.approx((0.0, 1.0))
    assert m.adapted_rand_error(whole, whole) == 0.0


def test_rand_error_when_empty():
    empty, square = np.zeros((4, 4), int), np.pad(np.ones((2, 2), int), 1)
    assert m.adapted_rand_error(empty, empty) == 0.0
    assert m.variation_of_information(empty, empty) == (0.0, 0.0)
    assert m.adapted_rand_error(square, empty) == 1.0  # a missed object is fully split
    assert 0.0 < m.adapted_rand_error(empty, square) < 1.0


def membrane_mask() -> np.ndarray:
    """An ISBI-style 0/255 truth: membranes (0) on row 2 and column 2 around four 2x2 cells."""
    mask = np.full((5, 5), 255, np.uint8)
    mask[2, :] = mask[:, 2] = 0
    return mask


def test_rand_and_vi_take_the_cells_of_a_0_255_mask_as_segments():
    truth = membrane_mask()
    cells = m.as_instances(truth)  # ids 1..4, one per cell
    assert m.adapted_rand_error(truth, cells) == 0.0  # not 2/3: the mask is four cells
    assert m.variation_of_information(truth, cells) == (0.0, 0.0)
    assert m.adapted_rand_error(truth, truth) == 0.0
    # One predicted segment over the four cells, n = 16 scored pixels: pairs joined in both
    # 4 * 4^2 - n = 48, in the prediction 16^2 - n = 240, in the truth 48; so precision 1/5,
    # recall 1, Rand F-score 1/3 and error 2/3.
    merged = np.ones((5, 5), np.uint16)
    assert m.adapted_rand_error(truth, merged) == pytest.approx(2 / 3)
    assert m.variation_of_information(truth, merged) == pytest.approx((0.0, 2.0))
    row = evaluate_images(truth, merged, metrics=["rand"])
    assert row["adapted_rand_error"] == pytest.approx(2 / 3)
    assert (row["vi_split"], row["vi_merge"]) == pytest.approx((0.0, 2.0))
    assert row["n_true"] == 4 and row["n_pred"] == 1


def test_rand_of_a_mask_row_with_two_cells_of_3_and_4_pixels():
    truth = np.array([[255, 255, 255, 0, 255, 255, 255, 255]], np.uint8)
    one = np.ones_like(truth)  # a mask too: one component over both cells
    # n = 7: pairs 3^2 + 4^2 - 7 = 18 in both, 49 - 7 = 42 in the prediction, 18 in the
    # truth: precision 3/7, recall 1, F 3/5, error 2/5 (0 when the mask was one object).
    assert m.adapted_rand_error(truth, one) == pytest.approx(0.4)
    h = -(3 / 7 * np.log2(3 / 7) + 4 / 7 * np.log2(4 / 7))
    assert m.variation_of_information(truth, one) == pytest.approx((0.0, h))
    labelled = np.array([[1, 1, 1, 0, 2, 2, 2, 2]])
    assert m.adapted_rand_error(truth, labelled) == 0.0


# ----------------------------------------------------------------------------- matching


@ndims
def test_match_table_counts_what_was_found(ndim):
    truth = nd([[1, 1, 0, 2, 2, 0, 3, 3, 3, 3, 0, 4, 4]], ndim)
    pred = nd([[5, 5, 0, 6, 0, 0, 7, 7, 8, 8, 0, 0, 0]], ndim)
    matches = m.match_objects(truth, pred)
    assert (matches.n_true, matches.n_pred, matches.matched) == (4, 4, 1)
    assert (matches.missed, matches.false, matches.split, matches.merged) == (3, 3, 1, 0)
    assert matches.summary("mitochondria").startswith("1/4 mitochondria found (IoU > 0.5)")
    status = dict(
        zip(zip(matches.table["kind"], matches.table["id"].tolist()), matches.table["status"])
    )
    assert status["true", 1] == "matched" and status["true", 3] == "split"
    assert status["true", 4] == "missed" and status["pred", 6] == "false"
    assert matches.table["match_id"][0] == 5


# ----------------------------------------------------------------------------- one row


def test_evaluate_images_fills_the_fixed_columns():
    truth = np.array([[1, 1, 0, 2]])
    row = evaluate_images(truth, truth)
    assert set(row) == set(COLUMNS[1:])
    assert row["object_hausdorff"] == 0.0 and row["ap_50_95"] == 1.0
    assert (row["n_true"], row["n_pred"], row["n_matched"]) == (2, 2, 2)
    assert set(evaluate_images(truth, truth, metrics=["pixel"])) == set(select_metrics(["pixel"]))
    with pytest.raises(ValueError, match="Unknown metric"):
        select_metrics(["pixle"])
