"""U-Net (Ronneberger, Fischer and Brox, 2015) with "same" padding.

Contracting path: per level two 3x3 convolutions with ReLU, then 2x2 max
pooling; the number of channels doubles at each level. Expanding path: a 2x2
transposed convolution halves the channels and doubles the size, the result
is concatenated with the contracting path's features of the same level, and
two 3x3 convolutions follow. A 1x1 convolution gives the class logits.

The paper uses 5 levels and 64 base channels (:data:`PAPER_CONFIG`, about
31 M parameters); the default here, 4 levels of 32 base channels (about
1.9 M), segments microscopy well and runs on a laptop CPU. With ``downsample``
the network works at a fraction of its input's resolution (average pooling
in, bilinear upsampling of the logits out): it sees ``downsample`` times
further for the same cost, for large objects such as glands, while its card
keeps the pixel size of the images it takes.

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
   Biomedical Image Segmentation", MICCAI 2015.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_sizes, conv_block, crop_to, pad_to_multiple

#: Hyper-parameters of the network in the paper.
PAPER_CONFIG = {"depth": 5, "base_width": 64, "batch_norm": False}


class UNet(nn.Module):
    """U-Net mapping ``(N, in_channels, H, W)`` to logits ``(N, n_classes, H, W)``.

    Parameters
    ----------
    in_channels : int
        1 for EM and fluorescence, 3 for RGB (H&E).
    n_classes : int
        Output channels K.
    depth : int
        Number of levels, counting the bottom one (the paper has 5).
    base_width : int
        Channels of the first level; level i has ``base_width * 2**i``.
    batch_norm : bool
        Batch normalization after each convolution (not in the paper; it speeds
        up training from scratch).
    downsample : int
        Work at 1 / ``downsample`` of the input's resolution: the input is
        averaged over ``downsample`` x ``downsample`` blocks and the logits are
        upsampled bilinearly back to the input's size. 1 (the default) is the
        plain U-Net; the weights do not depend on it.

    Notes
    -----
    Any H and W are accepted: the input is padded inside to a multiple of
    ``downsample * 2**(depth - 1)`` and the output cropped back.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        *,
        depth: int = 4,
        base_width: int = 32,
        batch_norm: bool = False,
        downsample: int = 1,
    ) -> None:
        super().__init__()
        check_sizes(
            "U-Net",
            in_channels=in_channels,
            n_classes=n_classes,
            depth=depth,
            base_width=base_width,
            downsample=downsample,
        )
        widths = [base_width * 2**level for level in range(depth)]
        self.downsample = downsample
        self.multiple = downsample * 2 ** (depth - 1)
        self.encoders = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoders.append(conv_block(channels, width, batch_norm=batch_norm))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsamplers.append(nn.ConvTranspose2d(width * 2, width, kernel_size=2, stride=2))
            self.decoders.append(conv_block(width * 2, width, batch_norm=batch_norm))
        self.head = nn.Conv2d(widths[0], n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K, H, W)`` for a batch ``(N, C, H, W)``."""
        size = (x.shape[-2], x.shape[-1])
        x, offset = pad_to_multiple(x, self.multiple)
        padded = (x.shape[-2], x.shape[-1])
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample)
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        skips.pop()  # the bottom level feeds the decoder directly
        for upsample, decoder in zip(self.upsamplers, self.decoders):
            x = decoder(torch.cat([skips.pop(), upsample(x)], dim=1))
        logits = self.head(x)
        if self.downsample > 1:
            logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
        return crop_to(logits, offset, size)
