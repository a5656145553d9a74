"""Tiled inference with instance models: objects cut by tile borders become one label."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_microseg.core.inference.predict import predict
from napari_microseg.core.inference.stitching import Instances
from napari_microseg.core.inference.tiling import TilePlan
from napari_microseg.core.models.base import ModelCard, ModelError, SegmentationModel


class BlobDetector(SegmentationModel):
    """A fake instance model: each connected blob above 0.5 in a tile is one detection."""

    def __init__(self):
        card = ModelCard(
            name="blobs",
            architecture="custom",
            classes=["bg", "blob"],
            task="instance",
            normalization={"kind": "none"},
        )
        super().__init__(torch.nn.Identity(), card, activation="none")
        self.seen = 0

    def predict_instances(self, batch):
        found = []
        for image in batch[:, 0].cpu().numpy():
            self.seen += 1
            labels, n = ndi.label(image > 0.5)
            masks = (
                np.stack([labels == i for i in range(1, n + 1)])
                if n
                else np.zeros((0, *image.shape))
            )
            found.append(
                {
                    "masks": torch.from_numpy(masks.astype(np.float32)),
                    "scores": torch.linspace(0.9, 0.5, n) if n else torch.zeros(0),
                    "boxes": torch.zeros((n, 4)),
                }
            )
        return found


def blob_image():
    image = np.zeros((60, 90), np.float32)
    yy, xx = np.mgrid[:60, :90]
    centres = [(10, 10), (30, 24), (45, 50), (12, 70), (50, 80), (30, 60)]
    for cy, cx in centres:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 1.0  # radius 6: wider than the overlap
    image[20:40, 20:28] = 1.0  # an elongated object across a tile row border
    return image


def test_objects_on_tile_borders_are_one_label():
    image = blob_image()
    truth, n_truth = ndi.label(image > 0.5)
    model = BlobDetector()
    result = predict(model, image, tile_size=24, overlap=0.25)
    assert isinstance(result, Instances)
    labels, scores = result
    assert labels.shape == image.shape and labels.max() == n_truth
    assert len(scores) == n_truth + 1 and scores[0] == 0
    # Same partition as the untiled truth: every true object is exactly one label.
    for label in range(1, n_truth + 1):
        assert len(np.unique(labels[truth == label])) == 1
    assert np.array_equal(labels > 0, truth > 0)
    assert model.seen == len(TilePlan.create(image.shape, 24, 0.25))


def test_instance_stack_ids_are_unique_across_slices():
    stack = np.stack([blob_image(), blob_image()[::-1]])
    labels, scores = predict(BlobDetector(), stack, tile_size=32)
    assert len(np.intersect1d(np.unique(labels[0]), np.unique(labels[1]))) == 1  # only 0
    assert len(scores) == labels.max() + 1


def test_a_real_mask_rcnn_runs_tile_by_tile():
    from napari_microseg.core.models import build

    torch.manual_seed(0)
    model = build.create_model(
        "maskrcnn", name="mr", fpn_channels=16, box_head_size=32, mask_head_channels=16
    )
    image = np.random.default_rng(13).random((48, 80), dtype=np.float32)
    labels, scores = predict(model, image, tile_size=48, overlap=0.25)
    assert labels.shape == image.shape and labels.dtype == np.uint32
    assert len(scores) == labels.max() + 1 and np.all(scores[1:] > 0)


def test_instance_models_refuse_tta():
    with pytest.raises(ModelError, match="instance"):
        predict(BlobDetector(), blob_image(), tta=True)
