from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_microseg.core.models.base import ModelError
from napari_microseg.core.models.build import create_model
from napari_microseg.core.models.footprint import count_parameters
from napari_microseg.core.models.maskrcnn import MaskRCNNModel, TileTransform, build_maskrcnn

TINY = {"fpn_channels": 16, "box_head_size": 32, "mask_head_channels": 16, "min_size": 32}


def tiny_model(in_channels: int = 1) -> MaskRCNNModel:
    torch.manual_seed(0)
    model = create_model("maskrcnn", name="tiny-mrcnn", in_channels=in_channels, **TINY)
    assert isinstance(model, MaskRCNNModel)
    return model


@pytest.mark.parametrize("shape", [(1, 1, 37, 53), (2, 3, 64, 80)])
def test_predict_instances_on_odd_sizes(shape):
    model = tiny_model(shape[1])
    assert model.task == "instance"
    detections = model.predict_instances(torch.rand(shape))
    assert len(detections) == shape[0]
    for found in detections:
        m = len(found["scores"])
        assert found["masks"].shape == (m, *shape[2:])
        assert found["masks"].dtype == torch.float32
        assert found["boxes"].shape == (m, 4)
        labels = model.to_labels(found)
        assert labels.shape == shape[2:] and labels.dtype == np.int32


def test_channel_mismatch_is_a_clear_error():
    model = tiny_model(3)
    with pytest.raises(ModelError, match=r"'tiny-mrcnn' takes RGB .* greyscale"):
        model.predict_instances(torch.rand(1, 1, 32, 32))


def test_tiles_keep_their_pixel_size_within_min_and_max():
    transform = TileTransform(64, 256, image_mean=[0.0], image_std=[1.0])
    for size, expected in [
        ((100, 200), (100, 200)),
        ((32, 48), (64, 96)),
        ((512, 300), (256, 150)),
    ]:
        image, _ = transform.resize(torch.rand(1, *size))
        assert tuple(image.shape[-2:]) == expected
    masks = torch.zeros(1, 32, 48, dtype=torch.uint8)
    target = {"boxes": torch.tensor([[4.0, 2.0, 10.0, 8.0]]), "masks": masks}
    _, resized = transform.resize(torch.rand(1, 32, 48), target)
    assert resized["boxes"].tolist() == [[8.0, 4.0, 20.0, 16.0]]
    assert resized["masks"].shape == (1, 64, 96)


def test_overfits_a_tiny_batch_with_the_torchvision_loss_dict():
    torch.manual_seed(0)
    net = build_maskrcnn(1, 2, **TINY)
    masks = torch.zeros(2, 48, 48, dtype=torch.uint8)
    masks[0, 5:17, 6:20] = 1
    masks[1, 28:42, 25:37] = 1
    image = masks.sum(0, keepdim=True).float() * 0.8 + 0.1
    target = {
        "boxes": torch.tensor([[6.0, 5.0, 20.0, 17.0], [25.0, 28.0, 37.0, 42.0]]),
        "labels": torch.tensor([1, 1]),
        "masks": masks,
    }
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    losses = []
    for _ in range(8):
        loss_dict = net([image], [target])
        assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness"} <= set(loss_dict)
        loss = sum(loss_dict.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_parameter_counts():
    assert count_parameters(build_maskrcnn(1, 2)) == 16_169_307
    # backbone="resnet50" with torchvision's head sizes is maskrcnn_resnet50_fpn.
    r50 = build_maskrcnn(
        3, 91, backbone="resnet50", fpn_channels=256, box_head_size=1024, mask_head_channels=256
    )
    assert count_parameters(r50) == 44_454_513


def test_to_labels_uses_the_card_thresholds():
    model = tiny_model()
    masks = np.zeros((1, 8, 8), np.float32)
    masks[0, 2:6, 2:6] = 0.95
    found = {"masks": masks, "scores": np.array([0.5]), "boxes": np.array([[2, 2, 6, 6]])}
    assert model.to_labels(found).max() == 1
    model.card.recommended["postprocess"] = {"score_threshold": 0.6}
    assert model.to_labels(found).max() == 0
    assert model.to_labels(found, score_threshold=0.1).max() == 1


@pytest.mark.parametrize("bad", [{"backbone": "vgg"}, {"norm": "layer"}, {"anchor_sizes": [8]}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ModelError, match="Mask R-CNN"):
        create_model("maskrcnn", name="bad", **bad)
