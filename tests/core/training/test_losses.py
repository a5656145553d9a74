"""Losses ignore unannotated pixels; the U-Net weight map and the targets are right."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_microseg.core.training.losses import (
    LOSSES,
    cross_entropy,
    deep_supervision_loss,
    dice_loss,
    maskrcnn_loss,
    segmentation_loss,
    soft_dice,
)
from napari_microseg.core.training.targets import (
    TargetError,
    boundary_class,
    class_balance,
    class_targets,
    instance_ids,
    maskrcnn_targets,
    unet_weight_map,
)


def batch(k: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, k, 12, 10, generator=gen)
    target = torch.randint(0, max(k, 2), (2, 12, 10), generator=gen)
    annotated = torch.zeros(2, 12, 10, dtype=torch.bool)
    annotated[0, :6] = True
    annotated[1, :, 4:] = True
    weight = torch.rand(2, 12, 10, generator=gen) + 0.5
    return logits, target, annotated, weight


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("kind", LOSSES)
def test_unannotated_pixels_change_nothing(k, kind):
    logits, target, annotated, weight = batch(k)
    logits.requires_grad_(True)
    loss = segmentation_loss(logits, target, annotated, weight, kind=kind)
    (grad,) = torch.autograd.grad(loss, logits)

    wild = logits.detach().clone()
    other_target = target.clone()
    outside = ~annotated
    noise = torch.randn_like(wild) * 50
    wild = torch.where(outside[:, None], noise, wild)
    wild[0, 0, 11, 0] = math.inf  # even an infinite logit outside must not matter
    other_target[outside] = (other_target[outside] + 1) % max(k, 2)
    other_weight = torch.where(outside, torch.full_like(weight, 99.0), weight)
    wild.requires_grad_(True)
    loss2 = segmentation_loss(wild, other_target, annotated, other_weight, kind=kind)
    (grad2,) = torch.autograd.grad(loss2, wild)
    assert torch.isclose(loss, loss2)
    keep = annotated[:, None].expand_as(grad)
    assert torch.allclose(grad[keep], grad2[keep])
    assert torch.all(grad2[~keep] == 0)


def test_nothing_annotated_gives_zero_with_a_gradient():
    logits, target, _, _ = batch(2)
    logits.requires_grad_(True)
    none = torch.zeros(2, 12, 10, dtype=torch.bool)
    loss = cross_entropy(logits, target, none)
    assert float(loss) == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_weighted_cross_entropy_is_the_weighted_mean():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    weight = torch.tensor([[[1.0, 3.0]]])
    per_pixel = [-math.log(math.exp(2) / (math.exp(2) + 1)), math.log(2)]
    expected = (per_pixel[0] * 1 + per_pixel[1] * 3) / 4
    assert float(cross_entropy(logits, target, None, weight)) == pytest.approx(expected)


def test_binary_cross_entropy_for_one_class():
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[0, 1], [1, 0]]])
    assert float(cross_entropy(logits, target)) == pytest.approx(math.log(2))


def test_dice_of_a_perfect_prediction_and_log_dice():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6] = 1
    perfect = torch.stack([(target == 0).float(), (target == 1).float()], dim=1) * 40 - 20
    assert float(soft_dice(perfect, target)) == pytest.approx(1.0, abs=1e-6)
    assert float(dice_loss(perfect, target, log=True)) == pytest.approx(0.0, abs=1e-6)
    wrong = -perfect
    assert float(dice_loss(wrong, target)) > 0.9
    assert float(dice_loss(wrong, target, log=True)) > float(dice_loss(wrong, target))


def test_deep_supervision_divides_the_auxiliary_losses_by_the_epoch():
    logits, target, annotated, _ = batch(2)
    aux = [logits * 0.5, logits * 2, -logits]
    main = segmentation_loss(logits, target, annotated, kind="ce")
    extra = sum(segmentation_loss(a, target, annotated, kind="ce") for a in aux)
    for epoch in (1, 4):
        value = deep_supervision_loss(logits, aux, target, annotated, epoch=epoch, kind="ce")
        assert float(value) == pytest.approx(float(main + extra / epoch), rel=1e-6)
    with pytest.raises(ValueError, match="epoch"):
        deep_supervision_loss(logits, aux, target, epoch=0)


def test_loss_names_and_shapes_are_checked():
    logits, target, _, _ = batch(2)
    assert float(segmentation_loss(logits, target, kind="BCE+Dice")) > 0
    with pytest.raises(ValueError, match="Unknown loss"):
        segmentation_loss(logits, target, kind="focal")
    with pytest.raises(ValueError, match="target must be"):
        cross_entropy(logits, target[:, :5])


def test_maskrcnn_loss_sums_the_torchvision_terms():
    parts = {"loss_classifier": torch.tensor(0.5), "loss_mask": torch.tensor(0.25)}
    assert float(maskrcnn_loss(parts)) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="train mode"):
        maskrcnn_loss({})


# ----------------------------------------------------------------------------- targets


def touching_pair():
    """Two squares with a one-pixel gap, and a far object."""
    labels = np.zeros((40, 40), np.uint16)
    labels[5:15, 5:15] = 1
    labels[5:15, 16:26] = 2
    labels[30:36, 30:36] = 3
    return labels


def test_weight_map_peaks_in_the_gap_between_touching_objects():
    labels = touching_pair()
    w = unet_weight_map(labels, w0=10, sigma=5, balance=0)
    gap, far = w[10, 15], w[0, 39]
    # d1 = d2 = 1 in the gap: 1 + 10 exp(-4 / 50)
    assert gap == pytest.approx(1 + 10 * math.exp(-4 / 50), rel=1e-5)
    assert far < 1.05
    assert np.all(w[labels > 0] == 1)  # the border term lies on background only


def test_class_balance_weights_rare_classes_up_with_unit_mean():
    target = np.zeros((10, 10), np.uint8)
    target[:2] = 1
    weights = class_balance(target, 2)
    assert weights[1] == pytest.approx(4 * weights[0])
    assert (weights[target]).mean() == pytest.approx(1.0)
    assert np.all(class_balance(target, 2, power=0) == 1)


def test_binary_masks_become_connected_components():
    mask = np.zeros((6, 6), np.uint8)
    mask[0:2, 0:2] = 255
    mask[4:6, 4:6] = 255
    ids = instance_ids(mask)
    assert ids.max() == 2 and ids.dtype == np.int32


def test_three_class_targets_draw_boundaries_inside_objects():
    labels = touching_pair()
    classes = ["background", "nucleus", "boundary"]
    target = class_targets(labels, classes)
    assert boundary_class(classes) == 2
    assert target[10, 14] == 2 and target[10, 16] == 2  # both sides of the touching border
    assert target[10, 10] == 1 and target[0, 0] == 0
    assert np.all((target > 0) == (labels > 0))
    thick = class_targets(labels, classes, boundary_width=2)
    assert (thick == 2).sum() > (target == 2).sum()


def test_two_class_and_multi_class_targets():
    labels = touching_pair()
    assert set(np.unique(class_targets(labels, ["background", "cell"]))) == {0, 1}
    assert set(np.unique(class_targets(labels, ["cell"]))) == {0, 1}
    classes = ["background", "a", "b", "c"]
    assert np.array_equal(class_targets(labels, classes), labels)
    with pytest.raises(TargetError, match="class index"):
        class_targets(labels * 5, classes)


def test_maskrcnn_targets_from_instances():
    labels = touching_pair()
    labels[0, 0] = 4  # a one-pixel sliver: left out
    annotated = np.ones(labels.shape, bool)
    annotated[28:, 28:] = False  # object 3 is not annotated: left out
    target = maskrcnn_targets(labels, annotated=annotated)
    assert target["boxes"].tolist() == [[5, 5, 15, 15], [16, 5, 26, 15]]
    assert target["labels"].tolist() == [1, 1]
    assert target["masks"].shape == (2, 40, 40) and int(target["masks"][0].sum()) == 100
    empty = maskrcnn_targets(np.zeros((8, 8), np.uint8))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 8, 8)
