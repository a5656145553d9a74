"""The 8 flips and rotations of a tile (the dihedral group), for test-time augmentation.

Examples
--------
>>> import torch
>>> x = torch.arange(6.0).reshape(1, 1, 2, 3)
>>> all(torch.equal(dihedral(dihedral(x, i), i, inverse=True), x) for i in range(8))
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def dihedral(x: torch.Tensor, index: int, *, inverse: bool = False) -> torch.Tensor:
    """Apply (or undo) the ``index``-th of the 8 flips/rotations to the last two axes."""
    import torch

    flip, turns = divmod(index, 4)
    if not inverse:
        if flip:
            x = torch.flip(x, dims=(-1,))
        return torch.rot90(x, turns, dims=(-2, -1))
    x = torch.rot90(x, -turns, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x
