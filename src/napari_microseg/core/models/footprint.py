"""Parameter counts and training-memory estimates, computed without running the network.

:func:`estimate_training_memory` runs the forward and backward pass on
PyTorch's ``meta`` device: shapes flow through, no arithmetic happens and no
memory is allocated, so a 508x508 batch of 4 is estimated in a fraction of a
second on a laptop without a GPU. It answers "does this configuration train on
an 8 GB GPU?" before anybody tries.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

#: Optimizer state per parameter, in multiples of the parameter's size.
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training step needs on the device.

    Attributes
    ----------
    parameters, gradients, optimizer, activations : int
        Bytes of each kind; activations are the tensors autograd keeps for the
        backward pass.
    """

    parameters: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        """Sum of all parts, in bytes."""
        return self.parameters + self.gradients + self.optimizer + self.activations

    @property
    def total_gib(self) -> float:
        """Sum of all parts, in GiB."""
        return self.total / 2**30

    def __str__(self) -> str:
        parts = ", ".join(
            f"{key} {getattr(self, key) / 2**30:.2f}"
            for key in ("parameters", "gradients", "optimizer", "activations")
        )
        return f"{self.total_gib:.2f} GiB ({parts})"


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def estimate_training_memory(
    module: nn.Module,
    input_shape: tuple[int, int, int, int],
    *,
    optimizer: str = "adam",
    bytes_per_value: int = 4,
) -> MemoryEstimate:
    """Estimate the device memory of one float32 training step of a semantic network.

    Parameters
    ----------
    module : nn.Module
        Maps ``(N, C, H, W)`` to ``(N, K, H, W)``; it is copied, not changed.
    input_shape : tuple of int
        ``(N, C, H, W)`` of the training batch, e.g. ``(4, 3, 508, 508)``.
    optimizer : {"adam", "adamw", "momentum", "sgd"}
        Decides how many state tensors per parameter the optimizer keeps.
    bytes_per_value : int
        4 for float32 training.

    Returns
    -------
    MemoryEstimate

    Notes
    -----
    The activation term counts every distinct tensor autograd saves for the
    backward pass, which dominates for segmentation networks. Allocator
    fragmentation, cuDNN workspaces and the CUDA context (together typically
    0.5-1 GB) come on top, so compare ``total`` with the GPU memory minus 1 GB.
    """
    import torch

    states = OPTIMIZER_STATES.get(optimizer.lower())
    if states is None:
        raise ValueError(
            f"Unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZER_STATES)}."
        )
    meta = copy.deepcopy(module).to("meta").train()
    # Keep every saved tensor alive (on meta they cost nothing) so ids stay unique,
    # and count each once: a tanh output that the next convolution also saves is one
    # buffer on the GPU.
    saved: dict[int, torch.Tensor] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.setdefault(id(tensor), tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        batch = torch.empty(input_shape, device="meta")
        output = meta(batch)
    output.float().mean().backward()
    params = [p for p in meta.parameters() if p.requires_grad]
    saved_ids = {id(p) for p in params}
    activations = sum(
        t.numel() * t.element_size() for key, t in saved.items() if key not in saved_ids
    )
    n_params = sum(p.numel() for p in params)
    return MemoryEstimate(
        parameters=n_params * bytes_per_value,
        gradients=n_params * bytes_per_value,
        optimizer=states * n_params * bytes_per_value,
        activations=int(activations),
    )
