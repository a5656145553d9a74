from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_microseg.core.models.detections import detections_to_labels, nms


def square(shape, y0, x0, size, value):
    mask = np.zeros(shape, np.float32)
    mask[y0 : y0 + size, x0 : x0 + size] = value
    return mask


def dets(masks, scores, boxes=None):
    out = {"masks": np.stack(masks), "scores": np.asarray(scores, np.float32)}
    if boxes is not None:
        out["boxes"] = np.asarray(boxes, np.float32)
    return out


def test_source_report_defaults_score_pixel_and_summed_thresholds():
    shape = (10, 10)
    found = dets(
        [square(shape, 0, 0, 3, 0.95), square(shape, 5, 5, 3, 0.95), square(shape, 0, 6, 3, 0.8)],
        scores=[0.9, 0.39, 0.8],  # the second scores under 0.4
        boxes=[[0, 0, 3, 3], [5, 5, 8, 8], [6, 0, 9, 3]],
    )
    labels = detections_to_labels(found)
    assert labels[:3, :3].tolist() == [[1] * 3] * 3
    assert labels[5:8, 5:8].max() == 0  # dropped by score
    # 0.8 passes the pixel threshold (0.3) but alone does not sum to 0.9.
    assert labels[:3, 6:9].max() == 0
    assert labels.dtype == np.int32


def test_pixels_under_the_pixel_threshold_do_not_count_towards_the_sum():
    shape = (6, 6)
    # Two 0.5 masks sum to 1.0 >= 0.9; two 0.29 masks are zeroed first.
    a, b = square(shape, 0, 0, 3, 0.5), square(shape, 0, 0, 3, 0.5)
    a[3:, 3:] = 0.29
    b[3:, 3:] = 0.29
    found = dets([a, b], [0.9, 0.8], [[0, 0, 3, 3], [3, 3, 6, 6]])  # boxes disjoint: no NMS
    labels = detections_to_labels(found)
    assert labels[:3, :3].min() == 1 and labels[3:, 3:].max() == 0


def test_overlaps_go_to_the_most_confident_mask_and_labels_follow_scores():
    shape = (4, 8)
    left = np.zeros(shape, np.float32)
    left[:, :5] = 0.95
    right = np.zeros(shape, np.float32)
    right[:, 3:] = 0.9
    right[:, 3] = 0.99  # column 3: right is surer; column 4: left is surer
    found = dets([left, right], [0.7, 0.8], [[0, 0, 5, 4], [3, 0, 8, 4]])
    labels = detections_to_labels(found, nms_iou=0.9)
    assert labels[0].tolist() == [2, 2, 2, 1, 2, 1, 1, 1]


def test_nms_drops_the_weaker_of_two_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], float)
    assert nms(boxes, np.array([0.5, 0.9, 0.6]), 0.5).tolist() == [1, 2]
    shape = (12, 12)
    found = dets([square(shape, 0, 0, 10, 0.95), square(shape, 1, 1, 9, 0.95)], [0.5, 0.9],
                 boxes[:2])  # fmt: skip
    labels = detections_to_labels(found)
    assert set(np.unique(labels)) == {0, 1}
    assert labels[0, 0] == 0  # only the second (smaller, better) mask survived


def test_torch_inputs_channel_axis_missing_boxes_and_min_area():
    shape = (8, 8)
    masks = torch.from_numpy(np.stack([square(shape, 0, 0, 4, 0.95), square(shape, 6, 6, 1, 0.95)]))
    found = {"masks": masks[:, None], "scores": torch.tensor([0.9, 0.8])}
    assert detections_to_labels(found).max() == 2
    assert detections_to_labels(found, min_area=2).max() == 1


def test_no_detections():
    empty = {"masks": np.zeros((0, 5, 7)), "scores": np.zeros(0), "boxes": np.zeros((0, 4))}
    labels = detections_to_labels(empty)
    assert labels.shape == (5, 7) and labels.max() == 0


def test_inconsistent_lengths_are_refused():
    with pytest.raises(ValueError, match="same detections"):
        detections_to_labels({"masks": np.zeros((2, 4, 4)), "scores": np.ones(1)})
