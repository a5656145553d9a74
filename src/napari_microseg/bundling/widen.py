"""A trained U-Net made wider without forgetting what it learnt (Net2WiderNet).

A wider U-Net (base width 32 instead of 16) costs about four times a training step;
from scratch it needs hours on a GPU before it catches up with the narrow
network it is meant to beat. :func:`widened` starts it where the narrow one
is: every new channel copies a channel of the old network (its incoming
weights, bias and batch-norm statistics), and the layers that read the copies
share the old outgoing weight among them, so the wide network computes the
same function [1]_. A little noise on the copies' incoming weights lets them
learn different things (identical copies would get identical gradients for
ever).

References
----------
.. [1] T. Chen, I. Goodfellow, J. Shlens, "Net2Net: Accelerating Learning via
   Knowledge Transfer", ICLR 2016.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..core.models.base import LINEAGE_WIDENED

if TYPE_CHECKING:
    import torch

    from ..core.models.base import SegmentationModel


def channel_map(old: int, new: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which old channel each new channel copies, and how many copies each old one has.

    Parameters
    ----------
    old, new : int
        Channels before and after, ``new >= old``.

    Returns
    -------
    source : torch.Tensor
        ``(new,)`` int64: new channel ``j`` copies old channel ``j % old``.
    copies : torch.Tensor
        ``(new,)`` float32: the number of copies of ``source[j]``, by which a
        layer reading the new channels divides its weights.

    Examples
    --------
    >>> source, copies = channel_map(2, 5)
    >>> source.tolist(), copies.tolist()
    ([0, 1, 0, 1, 0], [3.0, 2.0, 3.0, 2.0, 3.0])
    """
    import torch

    source = torch.arange(new) % old
    copies = torch.bincount(source, minlength=old).float()[source]
    return source, copies


def widened(
    model: SegmentationModel, base_width: int, *, noise: float = 0.01, seed: int = 0
) -> SegmentationModel:
    """The same U-Net with ``base_width`` channels at its first level, computing the same.

    Parameters
    ----------
    model : SegmentationModel
        A trained U-Net.
    base_width : int
        More than the model's base width (every level widens in proportion).
    noise : float
        Standard deviation of the noise added to the copies' incoming
        weights, relative to each layer's weight standard deviation; 0 keeps
        the function exactly (up to rounding).
    seed : int
        Seed of that noise.

    Returns
    -------
    SegmentationModel
        The wide model, in eval mode; its lineage records the conversion.

    Raises
    ------
    ValueError
        For another architecture, a base width that is not wider, or a
        negative noise.
    """
    import torch

    from ..core.models.build import build_model

    card = model.card
    if card.architecture != "unet":
        raise ValueError(f"{card.name!r} is a {card.architecture}, not a U-Net.")
    old_width = int(card.hyperparameters.get("base_width", 32))
    if isinstance(base_width, bool) or not isinstance(base_width, int) or base_width <= old_width:
        raise ValueError(
            f"The new base width must be an integer above {card.name!r}'s {old_width}, "
            f"not {base_width!r}."
        )
    if not noise >= 0:
        raise ValueError(f"The noise must be 0 or more, not {noise!r}.")
    lineage: dict[str, Any] = dict(card.lineage)
    lineage[LINEAGE_WIDENED] = {
        "model": card.name,
        "base_width_from": old_width,
        "base_width_to": base_width,
        "noise": noise,
        "seed": seed,
        "note": "Net2WiderNet: every new channel copies an old one; the function is kept",
    }
    new_card = replace(
        card, hyperparameters={**card.hyperparameters, "base_width": base_width}, lineage=lineage
    )
    wide = build_model(new_card)
    old_state = model.module.state_dict()
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in wide.module.named_modules():
        if not isinstance(
            module, torch.nn.Conv2d | torch.nn.ConvTranspose2d | torch.nn.BatchNorm2d
        ):
            continue
        params = {key: value for key, value in old_state.items() if key.rsplit(".", 1)[0] == name}
        state.update(_widened_layer(name, module, params, noise, generator))
    wide.module.load_state_dict(state)
    return wide.eval()


def _widened_layer(
    name: str,
    module: Any,
    params: dict[str, torch.Tensor],
    noise: float,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """The widened tensors of one layer of a U-Net, keyed like its state dict."""
    import torch

    out_dim = 1 if isinstance(module, torch.nn.ConvTranspose2d) else 0
    new_width = module.weight.shape[out_dim] if name != "head" else None
    out = {}
    for key, old in params.items():
        old = old.float() if old.is_floating_point() else old
        if old.ndim == 0:  # num_batches_tracked
            out[key] = old.clone()
            continue
        tensor = old
        if new_width is not None:
            dim = out_dim if old.ndim == 4 else 0  # biases and batch norm: one axis
            source, _ = channel_map(old.shape[dim], new_width)
            tensor = tensor.index_select(dim, source)
        if key.endswith(".weight") and tensor.ndim == 4:
            tensor = _read_copies(name, tensor, 1 - out_dim, module.weight.shape[1 - out_dim])
            if noise and new_width is not None:
                fresh = torch.arange(new_width) >= old.shape[out_dim]
                shape = [1] * 4
                shape[out_dim] = new_width
                jitter = torch.randn(tensor.shape, generator=generator) * noise * float(old.std())
                tensor = tensor + jitter * fresh.view(shape)
        out[key] = tensor.contiguous()
    return out


def _read_copies(name: str, weight: torch.Tensor, in_dim: int, new_in: int) -> torch.Tensor:
    """``weight`` reading widened inputs: copies share their old channel's weight."""
    import torch

    old_in = weight.shape[in_dim]
    if old_in == new_in:  # the image's channels
        return weight
    if name.startswith("decoders.") and name.endswith(".0"):
        # The first convolution of a decoder reads [skip, upsampled], each widened alone.
        halves = torch.chunk(weight, 2, dim=in_dim)
        return torch.cat([_read_copies("", half, in_dim, new_in // 2) for half in halves], in_dim)
    source, copies = channel_map(old_in, new_in)
    shape = [1] * weight.ndim
    shape[in_dim] = new_in
    return weight.index_select(in_dim, source) / copies.view(shape)
