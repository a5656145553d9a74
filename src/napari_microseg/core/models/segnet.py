"""SegNet (Badrinarayanan, Kendall and Cipolla, 2015/2017).

The encoder is VGG-16-like: stages of 3x3 convolutions with batch norm and
ReLU, each followed by 2x2 max pooling whose *indices* are kept. The decoder
mirrors it: each stage up-samples with ``max_unpool2d`` at the remembered
indices (so boundaries come back where the encoder found them, without
learning an up-sampling and without U-Net's memory-hungry skip features),
then convolves. A 1x1 convolution is the per-pixel classifier.

The paper configuration, 5 stages of (2, 2, 3, 3, 3) convolutions with
64-512 channels, is ``base_width=64`` (about 29 M parameters); the default of
32 base channels has about 7.4 M.

References
----------
.. [1] V. Badrinarayanan, A. Kendall, R. Cipolla, "SegNet: A Deep Convolutional
   Encoder-Decoder Architecture for Image Segmentation", IEEE TPAMI 39(12), 2017.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_sizes, conv_block, crop_to, pad_to_multiple

#: Convolutions per stage in VGG-16's 13-layer encoder.
VGG16_CONVS = (2, 2, 3, 3, 3)

#: Hyper-parameters of the network in the paper.
PAPER_CONFIG = {"depth": 5, "base_width": 64, "batch_norm": True}


class SegNet(nn.Module):
    """SegNet mapping ``(N, in_channels, H, W)`` to logits ``(N, n_classes, H, W)``.

    Parameters
    ----------
    in_channels : int
        1 for EM and fluorescence, 3 for RGB (H&E).
    n_classes : int
        Output channels K.
    depth : int
        Number of encoder (and decoder) stages, at most 5.
    base_width : int
        Channels of the first stage; they double per stage up to ``8 * base_width``,
        as in VGG-16.
    batch_norm : bool
        Batch normalization after each convolution, as in the paper.

    Notes
    -----
    Any H and W are accepted: the input is padded inside to a multiple of
    ``2**depth`` and the output cropped back.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        *,
        depth: int = 5,
        base_width: int = 32,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        check_sizes(
            "SegNet",
            in_channels=in_channels,
            n_classes=n_classes,
            depth=depth,
            base_width=base_width,
        )
        if depth > len(VGG16_CONVS):
            raise ValueError(f"SegNet: depth must be at most {len(VGG16_CONVS)}, got {depth}.")
        widths = [base_width * 2 ** min(stage, 3) for stage in range(depth)]
        self.multiple = 2**depth
        self.encoders = nn.ModuleList()
        channels = in_channels
        for width, n_convs in zip(widths, VGG16_CONVS):
            self.encoders.append(
                conv_block(channels, width, n_convs=n_convs, batch_norm=batch_norm)
            )
            channels = width
        # Decoder stage i mirrors encoder stage i: its convolutions keep the stage's
        # width, except the last, which narrows to the width of the stage above.
        self.decoders = nn.ModuleList()
        for stage in reversed(range(depth)):
            width, n_convs = widths[stage], VGG16_CONVS[stage]
            narrower = widths[stage - 1] if stage > 0 else widths[0]
            layers = [conv_block(width, width, n_convs=n_convs - 1, batch_norm=batch_norm)]
            layers.append(conv_block(width, narrower, n_convs=1, batch_norm=batch_norm))
            self.decoders.append(nn.Sequential(*layers))
        self.classifier = nn.Conv2d(widths[0], n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K, H, W)`` for a batch ``(N, C, H, W)``."""
        size = (x.shape[-2], x.shape[-1])
        x, offset = pad_to_multiple(x, self.multiple)
        pooled: list[tuple[torch.Tensor, torch.Size]] = []
        for encoder in self.encoders:
            x = encoder(x)
            unpooled_size = x.shape
            x, indices = F.max_pool2d(x, kernel_size=2, stride=2, return_indices=True)
            pooled.append((indices, unpooled_size))
        for decoder in self.decoders:
            indices, unpooled_size = pooled.pop()
            x = F.max_unpool2d(x, indices, kernel_size=2, stride=2, output_size=unpooled_size)
            x = decoder(x)
        return crop_to(self.classifier(x), offset, size)
