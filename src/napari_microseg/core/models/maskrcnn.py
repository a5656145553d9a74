"""Mask R-CNN (He et al., 2017) from torchvision, set up for microscopy tiles.

Differences from torchvision's ``maskrcnn_resnet50_fpn`` and why:

- **Nothing is downloaded**: the ResNet is built with ``weights=None`` and all
  its layers train. Without ImageNet statistics to preserve, the frozen batch
  norm torchvision uses is an identity, so the backbone uses group norm by
  default, which also behaves with the batches of 1-4 tiles that fine-tuning
  on hand-corrected labels uses.
- **Light by default**: a ResNet-18 FPN with 128 feature channels (about
  16 M parameters) instead of ResNet-50 with 256 (44 M); ``backbone="resnet50"``,
  ``fpn_channels=256`` and the other head sizes give the paper's network.
- **Any number of input channels**: the first convolution takes
  ``in_channels`` (1 for EM and fluorescence, 3 for H&E), and inputs are
  expected already normalized (``image_mean`` 0, ``image_std`` 1).
- **Microscopy scale**: torchvision resizes every image so its short side is
  800 px, which would rescale nuclei differently in every tile. Here tiles
  whose sides lie in ``[min_size, max_size]`` keep their pixel size; only
  smaller or larger ones are resized into that range. Anchors (8-128 px) fit
  cells and nuclei rather than objects in photos, and up to 300 detections per
  tile are kept for dense nuclei.

In train mode the torchvision module takes ``(images, targets)`` and returns
its multi-task loss dict (``loss_classifier``, ``loss_box_reg``,
``loss_mask``, ``loss_objectness``, ``loss_rpn_box_reg``); their sum is the
training loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .base import ModelCard, SegmentationModel
from .detections import (
    NMS_IOU,
    PIXEL_THRESHOLD,
    SCORE_THRESHOLD,
    SUMMED_THRESHOLD,
    detections_to_labels,
)

__all__ = ["MaskRCNNModel", "build_maskrcnn", "detections_to_labels"]

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
NORMS = ("group", "batch")


class TileTransform(GeneralizedRCNNTransform):
    """Keep a tile's pixel size when its sides lie within ``[min_size, max_size]``.

    Smaller tiles are enlarged so the short side reaches ``min_size``, larger
    ones shrunk so the long side fits ``max_size``; masks and boxes of training
    targets follow.
    """

    def resize(
        self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        height, width = image.shape[-2:]
        short, long = min(height, width), max(height, width)
        min_size, max_size = float(self.min_size[-1]), float(self.max_size)
        if short >= min_size and long <= max_size:
            return image, target
        scale = min(max(min_size / short, 1.0), max_size / long)
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        if target is None:
            return image, target
        target = dict(target)
        target["boxes"] = resize_boxes(target["boxes"], [height, width], size)
        if "masks" in target:
            masks = target["masks"][:, None].float()
            target["masks"] = F.interpolate(masks, size=size)[:, 0].to(torch.uint8)
        return image, target


def _norm_layer(norm: str) -> Any:
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        # 32 groups divide every ResNet width (64 ... 2048).
        return lambda channels: nn.GroupNorm(32, channels)
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}.")


def _backbone(in_channels: int, name: str, norm: str, fpn_channels: int) -> BackboneWithFPN:
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {name!r}.")
    resnet = getattr(torchvision.models, name)(weights=None, norm_layer=_norm_layer(norm))
    if in_channels != 3:
        resnet.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(resnet.conv1.weight, mode="fan_out", nonlinearity="relu")
    stage2 = resnet.inplanes // 8  # 64 for ResNet-18/34, 256 for ResNet-50/101
    return BackboneWithFPN(
        resnet,
        return_layers={f"layer{i}": str(i - 1) for i in range(1, 5)},
        in_channels_list=[stage2 * 2**i for i in range(4)],
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def build_maskrcnn(
    in_channels: int = 1,
    n_classes: int = 2,
    *,
    backbone: str = "resnet18",
    norm: str = "group",
    fpn_channels: int = 128,
    box_head_size: int = 512,
    mask_head_channels: int = 128,
    anchor_sizes: Sequence[int] = (8, 16, 32, 64, 128),
    min_size: int = 128,
    max_size: int = 1024,
    detections_per_image: int = 300,
) -> MaskRCNN:
    """A torchvision Mask R-CNN for microscopy, untrained and without downloads.

    Parameters
    ----------
    in_channels : int
        1 for EM and fluorescence, 3 for RGB (H&E).
    n_classes : int
        Classes including the background (2 for "background" + "cell").
    backbone : {"resnet18", "resnet34", "resnet50", "resnet101"}
        ResNet depth; ``"resnet50"`` with ``fpn_channels=256``, ``box_head_size=1024``
        and ``mask_head_channels=256`` is ``maskrcnn_resnet50_fpn``.
    norm : {"group", "batch"}
        Normalization layers of the backbone.
    fpn_channels : int
        Channels of the feature pyramid.
    box_head_size : int
        Width of the two fully connected layers of the box head.
    mask_head_channels : int
        Channels of the four convolutions of the mask head.
    anchor_sizes : sequence of five int
        Anchor side in pixels per pyramid level.
    min_size, max_size : int
        Tiles with sides in this range are processed at their own pixel size.
    detections_per_image : int
        Most detections kept per tile.

    Returns
    -------
    torchvision.models.detection.MaskRCNN
    """
    anchor_sizes = tuple(int(size) for size in anchor_sizes)
    if len(anchor_sizes) != 5:
        raise ValueError(f"anchor_sizes needs one size per pyramid level (5), got {anchor_sizes}.")
    if not 0 < min_size <= max_size:
        raise ValueError(f"need 0 < min_size <= max_size, got {min_size} and {max_size}.")
    for key, value in {
        "in_channels": in_channels,
        "n_classes": n_classes,
        "fpn_channels": fpn_channels,
        "box_head_size": box_head_size,
        "mask_head_channels": mask_head_channels,
    }.items():
        if value < 1:
            raise ValueError(f"Mask R-CNN: {key} must be positive, got {value}.")
    features = _backbone(in_channels, backbone, norm, fpn_channels)
    anchors = AnchorGenerator(
        sizes=tuple((size,) for size in anchor_sizes), aspect_ratios=((0.5, 1.0, 2.0),) * 5
    )
    model = MaskRCNN(
        features,
        num_classes=None,
        rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(fpn_channels * 7 * 7, box_head_size),
        box_predictor=FastRCNNPredictor(box_head_size, n_classes),
        box_detections_per_img=detections_per_image,
        mask_head=MaskRCNNHeads(fpn_channels, (mask_head_channels,) * 4, 1),
        mask_predictor=MaskRCNNPredictor(mask_head_channels, mask_head_channels, n_classes),
    )
    model.transform = TileTransform(
        min_size, max_size, image_mean=[0.0] * in_channels, image_std=[1.0] * in_channels
    )
    return model


class MaskRCNNModel(SegmentationModel):
    """A Mask R-CNN behind the common interface: ``predict_instances`` and ``to_labels``.

    Parameters
    ----------
    module : MaskRCNN
        From :func:`build_maskrcnn`.
    card : ModelCard
        ``task`` is ``"instance"``; ``card.recommended["postprocess"]`` may override
        the thresholds of :meth:`to_labels`.
    """

    def __init__(self, module: nn.Module, card: ModelCard, activation: Any = None) -> None:
        super().__init__(module, card, activation="none")

    def predict_instances(self, batch: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Detect instances in a normalized float32 batch.

        Parameters
        ----------
        batch : (N, C, H, W) tensor

        Returns
        -------
        list of dict
            Per image: ``masks`` ``(M, H, W)`` float probabilities, ``scores``
            ``(M,)``, ``boxes`` ``(M, 4)`` (x0, y0, x1, y1) and ``labels`` ``(M,)``
            class indices, on the CPU.
        """
        self.check_batch(batch)
        self.module.eval()
        with torch.no_grad():
            images = list(batch.to(self.device, torch.float32))
            outputs = self.module(images)
        return [
            {
                "masks": out["masks"][:, 0].float().cpu(),
                "scores": out["scores"].cpu(),
                "boxes": out["boxes"].cpu(),
                "labels": out["labels"].cpu(),
            }
            for out in outputs
        ]

    def to_labels(self, detections: dict[str, Any], **options: Any) -> np.ndarray:
        """A label image ``(H, W)`` from one image's detections.

        Options default to ``card.recommended["postprocess"]`` and then to the
        source report's thresholds (score 0.4, pixel 0.3, summed mask 0.9); see
        :func:`~.detections.detections_to_labels`.
        """
        settings: dict[str, Any] = {
            "score_threshold": SCORE_THRESHOLD,
            "pixel_threshold": PIXEL_THRESHOLD,
            "summed_threshold": SUMMED_THRESHOLD,
            "nms_iou": NMS_IOU,
        }
        recommended = self.card.recommended.get("postprocess")
        if isinstance(recommended, dict):
            settings.update({k: v for k, v in recommended.items() if k in settings})
        settings.update(options)
        return detections_to_labels(detections, **settings)
