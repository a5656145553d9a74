"""Building blocks shared by the semantic architectures (U-Net, SegNet, Micro-Net).

The networks down-sample by 2 a fixed number of times, so they only accept
sizes that are multiples of ``2**levels``. Rather than burden the tiler with
that, :func:`pad_to_multiple` pads inside ``forward`` and :func:`crop_to`
restores the caller's H and W: every network maps ``(N, C, H, W)`` to
``(N, K, H, W)`` for any H and W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the last two axes of ``x`` up to multiples of ``multiple``.

    Parameters
    ----------
    x : (N, C, H, W) tensor
        The batch.
    multiple : int
        The required divisor of H and W (``2**levels``).

    Returns
    -------
    padded : (N, C, H', W') tensor
        H' and W' are the next multiples of ``multiple``.
    offset : tuple of int
        Rows and columns added before the image; :func:`crop_to` needs them.

    Notes
    -----
    The padding is split between both sides, so the image stays centred in the
    network's receptive fields. Reflection avoids the artificial edge that zero
    padding would show the network; it needs the pad to be smaller than the
    axis, so tiny inputs fall back to replicating the border.
    """
    height, width = x.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (0, 0)
    top, left = pad_h // 2, pad_w // 2
    pads = (left, pad_w - left, top, pad_h - top)
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, pads, mode=mode), (top, left)


def crop_to(x: torch.Tensor, offset: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: cut ``size`` = (H, W) starting at ``offset``."""
    top, left = offset
    return x[..., top : top + size[0], left : left + size[1]]


def conv_block(
    in_channels: int,
    out_channels: int,
    *,
    n_convs: int = 2,
    batch_norm: bool = False,
    activation: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """``n_convs`` times: 3x3 convolution with "same" padding, [batch norm], activation.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels into the first and out of every convolution.
    n_convs : int
        Number of convolutions.
    batch_norm : bool
        Insert ``BatchNorm2d`` after each convolution (its bias is then redundant).
    activation : nn.Module class
        ``nn.ReLU`` (U-Net, SegNet) or ``nn.Tanh`` (Micro-Net).

    Returns
    -------
    nn.Sequential
        Maps ``(N, in_channels, H, W)`` to ``(N, out_channels, H, W)``.
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for _ in range(n_convs):
        layers.append(nn.Conv2d(channels, out_channels, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(activation())
        channels = out_channels
    return nn.Sequential(*layers)


def check_sizes(name: str, *, in_channels: int, n_classes: int, **positive: int) -> None:
    """Raise ``ValueError`` with a clear message for non-positive sizes.

    Parameters
    ----------
    name : str
        The architecture, for the message.
    in_channels, n_classes : int
        Must be at least 1.
    **positive : int
        Further hyper-parameters that must be at least 1 (depth, width...).
    """
    for key, value in {"in_channels": in_channels, "n_classes": n_classes, **positive}.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: {key} must be a positive integer, got {value!r}.")
