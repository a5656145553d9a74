"""Micro-Net (Raza et al., 2019) at a trainable size, with "same" padding.

Topology, as in the paper:

- **Down path** (group 1): each block applies two 3x3 convolutions and 2x2 max
  pooling; the *input image*, bicubically resized to the pooled size, goes
  through two convolutions of its own and is concatenated past the pooling.
  The network thus sees the image at every resolution and keeps the detail
  that pooling would drop.
- **Bridge** (group 2): convolutions, one more pooling, convolutions, and a
  transposed convolution back up.
- **Up path** (group 3): each block up-samples the previous block with a
  transposed convolution and convolves it, up-samples the skip connection
  from the matching down block, concatenates both and convolves.
- **Auxiliary outputs** (group 4): the last three up blocks, at 1/4, 1/2 and
  full resolution, are brought to full resolution and each gives a feature
  map and, through dropout and a convolution, auxiliary class logits (deep
  supervision; see :meth:`MicroNet.forward_with_aux`).
- **Main output** (group 5): the three auxiliary feature maps are
  concatenated, dropped out and convolved into the class logits.

Activations are tanh, as in the paper, except on the logits themselves: a tanh
there would cap the softmax of two classes at 0.88 and break thresholding.
Weights start at a variance-preserving scale for tanh (:func:`init_tanh_weights`):
with PyTorch's default scale the signal faded through the 20-odd layers and
the fresh network's output did not depend on its input (issue #20).

Why this is small: the paper's valid-padding network needs a second
transposed convolution per up block just to recover the size lost by the
convolutions, and a published re-implementation, guessing the unstated layer
widths, reached 1.86 billion parameters and could not train. With "same"
padding one transposed convolution per up block suffices, and the bridge
stays at the deepest block's width instead of doubling again. At the default
``base_width=32`` the network has 9.9 M parameters and a training step on 4
RGB tiles of 508x508 with Adam needs an estimated 3.8 GiB (see
:func:`.footprint.estimate_training_memory`);
``base_width=64``, the paper's widths, has 39.7 M and needs 7.8 GiB.

References
----------
.. [1] S. E. A. Raza et al., "Micro-Net: A unified model for segmentation of
   various objects in microscopy images", Medical Image Analysis 52, 2019.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_sizes, conv_block, crop_to, pad_to_multiple

#: Resolutions (as powers of 1/2) of the up blocks that feed the auxiliary outputs.
AUX_LEVELS = (2, 1, 0)
#: Initial weight scale of the classifiers: small, so every output starts near the uniform
#: ``ln K`` while the features under them already depend on the input.
LOGITS_GAIN = 0.1


def init_tanh_weights(module: nn.Module) -> None:
    """Variance-preserving initial weights for a tanh network; the logits layers get gain 1.

    PyTorch's default initialisation (uniform with bound ``1 / sqrt(fan_in)``, a
    variance of ``1 / (3 fan_in)``) shrinks the signal about threefold per tanh
    layer. Through Micro-Net's 20-odd layers the logits then hardly depend on the
    input (their spread over an image is about 0.004), every output starts at
    the uniform ``ln K`` and training sits on that plateau for hundreds of steps.
    Here each weight is drawn with standard deviation ``gain / sqrt(fan_in)``,
    with tanh's gain 5/3 (LeCun / Glorot scaling, the initialisation of the
    paper's Keras-era implementation), where ``fan_in`` counts the inputs that
    reach one output pixel: ``C k k`` for a convolution but only ``C k k / s**2``
    for a transposed convolution of stride ``s``. Biases start at 0.
    """
    tanh_gain = nn.init.calculate_gain("tanh")
    logits = {id(m[-1]) for m in module.modules() if _is_classifier(m)}
    for layer in module.modules():
        if isinstance(layer, nn.ConvTranspose2d):
            stride = layer.stride[0] * layer.stride[1]
            fan_in = layer.in_channels * layer.weight[0, 0].numel() / stride
        elif isinstance(layer, nn.Conv2d):
            fan_in = layer.weight[0].numel()
        else:
            continue
        gain = LOGITS_GAIN if id(layer) in logits else tanh_gain
        nn.init.normal_(layer.weight, std=gain / fan_in**0.5)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def _is_classifier(module: nn.Module) -> bool:
    # The classifiers are Sequential(Dropout2d, Conv2d): the auxiliary ones and the head.
    return (
        isinstance(module, nn.Sequential)
        and len(module) == 2
        and isinstance(module[0], nn.Dropout2d)
        and isinstance(module[1], nn.Conv2d)
    )


def _tanh_block(in_channels: int, out_channels: int, n_convs: int = 2) -> nn.Sequential:
    return conv_block(in_channels, out_channels, n_convs=n_convs, activation=nn.Tanh)


class _DownBlock(nn.Module):
    """Convolve, pool, and concatenate the image resized to the pooled size."""

    def __init__(self, in_channels: int, image_channels: int, width: int) -> None:
        super().__init__()
        self.features = _tanh_block(in_channels, width)
        self.image_features = _tanh_block(image_channels, width)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        pooled = F.max_pool2d(self.features(x), kernel_size=2)
        resized = F.interpolate(image, size=pooled.shape[-2:], mode="bicubic", align_corners=False)
        return torch.cat([pooled, self.image_features(resized)], dim=1)


class _UpBlock(nn.Module):
    """Up-sample the previous block and the skip connection, concatenate, convolve."""

    def __init__(self, in_channels: int, skip_channels: int, width: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, width, kernel_size=2, stride=2)
        self.features = _tanh_block(width, width)
        self.skip_up = nn.ConvTranspose2d(skip_channels, width, kernel_size=2, stride=2)
        self.merge = _tanh_block(2 * width, width, n_convs=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.features(torch.tanh(self.up(x)))
        skip = torch.tanh(self.skip_up(skip))
        return self.merge(torch.cat([x, skip], dim=1))


class _AuxBranch(nn.Module):
    """Bring one up block to full resolution: feature map and auxiliary logits."""

    def __init__(self, in_channels: int, width: int, n_classes: int, scale: int, dropout: float):
        super().__init__()
        if scale > 1:
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, width, scale, stride=scale)
        else:
            self.up = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.features = _tanh_block(width, width, n_convs=1)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(width, n_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(torch.tanh(self.up(x)))


class MicroNet(nn.Module):
    """Micro-Net mapping ``(N, in_channels, H, W)`` to logits ``(N, n_classes, H, W)``.

    Parameters
    ----------
    in_channels : int
        1 for EM and fluorescence, 3 for RGB (H&E; the paper's gland model).
    n_classes : int
        Output channels K.
    depth : int
        Down blocks (the paper has 4); at least 3, since three up blocks feed the
        auxiliary outputs.
    base_width : int
        Channels per branch of the first down block; they double per block. The
        paper's widths correspond to 64.
    dropout : float
        Dropout rate before the auxiliary and main classifiers (0.5 in the paper).

    Notes
    -----
    Any H and W are accepted: the input is padded inside to a multiple of
    ``2**(depth + 1)`` and the output cropped back.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        *,
        depth: int = 4,
        base_width: int = 32,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        check_sizes(
            "Micro-Net",
            in_channels=in_channels,
            n_classes=n_classes,
            depth=depth,
            base_width=base_width,
        )
        if depth < len(AUX_LEVELS):
            raise ValueError(f"Micro-Net: depth must be at least {len(AUX_LEVELS)}, got {depth}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Micro-Net: dropout must be in [0, 1), got {dropout!r}.")
        widths = [base_width * 2**block for block in range(depth)]
        self.multiple = 2 ** (depth + 1)
        self.down = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.down.append(_DownBlock(channels, in_channels, width))
            channels = 2 * width
        bridge = widths[-1]
        self.bridge_in = _tanh_block(channels, bridge)
        self.bridge_deep = _tanh_block(bridge, bridge)
        self.bridge_up = nn.ConvTranspose2d(bridge, bridge, kernel_size=2, stride=2)
        self.up = nn.ModuleList()
        channels = bridge
        for width in reversed(widths):
            self.up.append(_UpBlock(channels, 2 * width, width))
            channels = width
        self.aux = nn.ModuleList(
            _AuxBranch(widths[level], base_width, n_classes, 2**level, dropout)
            for level in AUX_LEVELS
        )
        self.head = nn.Sequential(
            nn.Dropout2d(dropout),
            nn.Conv2d(len(AUX_LEVELS) * base_width, n_classes, kernel_size=3, padding=1),
        )
        init_tanh_weights(self)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three full-resolution auxiliary feature maps of a padded batch."""
        image = x
        skips = []
        for block in self.down:
            x = block(x, image)
            skips.append(x)
        x = self.bridge_deep(F.max_pool2d(self.bridge_in(x), kernel_size=2))
        x = torch.tanh(self.bridge_up(x))
        by_level: dict[int, torch.Tensor] = {}
        for level, block in zip(reversed(range(len(self.up))), self.up):
            x = block(x, skips.pop())
            by_level[level] = x
        return [branch(by_level[level]) for level, branch in zip(AUX_LEVELS, self.aux)]

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Main logits and the auxiliary logits, all ``(N, K, H, W)``.

        Returns
        -------
        main : (N, K, H, W) tensor
            The network's output.
        aux : list of three (N, K, H, W) tensors
            Logits from the 1/4, 1/2 and full-resolution up blocks, for the
            deep-supervision loss of the paper.
        """
        size = (x.shape[-2], x.shape[-1])
        padded, offset = pad_to_multiple(x, self.multiple)
        features = self._features(padded)
        main = self.head(torch.cat(features, dim=1))
        aux = [branch.classifier(f) for branch, f in zip(self.aux, features)]
        return crop_to(main, offset, size), [crop_to(a, offset, size) for a in aux]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K, H, W)`` for a batch ``(N, C, H, W)``."""
        size = (x.shape[-2], x.shape[-1])
        padded, offset = pad_to_multiple(x, self.multiple)
        main = self.head(torch.cat(self._features(padded), dim=1))
        return crop_to(main, offset, size)
