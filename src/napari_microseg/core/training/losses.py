"""Training losses that honour sparse annotation: unannotated pixels contribute nothing.

Every loss takes ``annotated``, a boolean map that is True where the label is
known; elsewhere the network's output and the target may be anything (even
infinite): the loss and its gradient do not change.

* :func:`cross_entropy`: binary cross-entropy for 1-class (sigmoid) models,
  cross-entropy otherwise; per-pixel ``weight`` (the U-Net weight map, see
  :func:`~.targets.unet_weight_map`) optional.
* :func:`dice_loss`: ``1 - soft Dice`` over the foreground classes, or
  ``-log(soft Dice)`` (``log=True``), which the mitochondria report found to
  converge better.
* :func:`segmentation_loss`: any of these, or cross-entropy + Dice, by name.
* :func:`deep_supervision_loss`: Micro-Net's ``l = l_o + (l_a1 + l_a2 + l_a3) / epoch``.
* :func:`maskrcnn_loss`: the sum of the losses torchvision's Mask R-CNN
  returns in train mode; its targets come from
  :func:`~.targets.maskrcnn_targets`.

Shapes: ``logits (N, K, H, W)``, ``target (N, H, W)`` class indices,
``annotated (N, H, W)`` bool, ``weight (N, H, W)`` float.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .targets import maskrcnn_targets, unet_weight_map

__all__ = [
    "LOSSES",
    "cross_entropy",
    "deep_supervision_loss",
    "dice_loss",
    "maskrcnn_loss",
    "maskrcnn_targets",
    "segmentation_loss",
    "soft_dice",
    "unet_weight_map",
]

#: Loss names :func:`segmentation_loss` accepts ("bce" and "ce" are the same function:
#: binary for a 1-class model, categorical otherwise).
LOSSES = ("ce", "bce", "dice", "log_dice", "ce+dice", "bce+dice", "ce+log_dice")


def _check(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor | None) -> None:
    if logits.ndim != 4:
        raise ValueError(f"logits must be (N, K, H, W), got shape {tuple(logits.shape)}.")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must be {expected} for logits {tuple(logits.shape)}, got "
            f"{tuple(target.shape)}."
        )
    if annotated is not None and tuple(annotated.shape) != expected:
        raise ValueError(f"annotated must be {expected}, got {tuple(annotated.shape)}.")


def _masked(logits: torch.Tensor, annotated: torch.Tensor | None) -> torch.Tensor:
    """Float logits with unannotated pixels set to 0 before any arithmetic.

    A product with 0 afterwards is not enough: an infinite logit gives NaN in
    the softmax, and the NaN would come back through the gradient.
    """
    logits = logits.float()
    if annotated is None:
        return logits
    return torch.where(annotated[:, None], logits, torch.zeros_like(logits))


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    annotated: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean (binary) cross-entropy over the annotated pixels, optionally weighted per pixel.

    Parameters
    ----------
    logits : (N, K, H, W) tensor
        K = 1: binary cross-entropy on the sigmoid; K >= 2: cross-entropy on the softmax.
    target : (N, H, W) tensor of int
        Class indices (0/1 for K = 1).
    annotated : (N, H, W) tensor of bool, optional
        Pixels that count; all when omitted.
    weight : (N, H, W) tensor of float, optional
        Per-pixel weights (the U-Net weight map).

    Returns
    -------
    scalar tensor
        ``sum(w l) / sum(w)`` over annotated pixels; 0 (with a gradient) when
        nothing is annotated.
    """
    _check(logits, target, annotated)
    logits = _masked(logits, annotated)
    if logits.shape[1] == 1:
        per_pixel = F.binary_cross_entropy_with_logits(
            logits[:, 0], target.float(), reduction="none"
        )
    else:
        per_pixel = F.cross_entropy(logits, target.long(), reduction="none")
    w = torch.ones_like(per_pixel) if weight is None else weight.float()
    if annotated is not None:
        per_pixel = torch.where(annotated, per_pixel, torch.zeros_like(per_pixel))
        w = torch.where(annotated, w, torch.zeros_like(w))
    total = w.sum()
    if total <= 0:
        return logits.sum() * 0.0
    return (per_pixel * w).sum() / total


def soft_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    annotated: torch.Tensor | None = None,
    *,
    smooth: float = 1.0,
    classes: Sequence[int] | None = None,
) -> torch.Tensor:
    """Soft Dice coefficient of the foreground classes, over the annotated pixels.

    Parameters
    ----------
    logits : (N, K, H, W) tensor
        Sigmoid for K = 1, softmax otherwise.
    target : (N, H, W) tensor of int
        Class indices.
    annotated : (N, H, W) tensor of bool, optional
        Pixels that count.
    smooth : float
        Added to numerator and denominator, so an absent class scores 1 when
        none of it is predicted.
    classes : sequence of int, optional
        Classes to average over; all but the background (class 0) by default.

    Returns
    -------
    scalar tensor
        Mean over the classes of ``(2 sum(p t) + s) / (sum(p) + sum(t) + s)``,
        pooled over the batch.
    """
    _check(logits, target, annotated)
    logits = _masked(logits, annotated)
    n_classes = logits.shape[1]
    if n_classes == 1:
        probs = torch.sigmoid(logits)
        onehot = (target == 1).float()[:, None]
        classes = [0]
    else:
        probs = torch.softmax(logits, dim=1)
        onehot = F.one_hot(target.long().clamp(0, n_classes - 1), n_classes).permute(0, 3, 1, 2)
        onehot = onehot.float()
        classes = list(range(1, n_classes)) if classes is None else list(classes)
    if annotated is not None:
        keep = annotated[:, None]
        probs = torch.where(keep, probs, torch.zeros_like(probs))
        onehot = torch.where(keep, onehot, torch.zeros_like(onehot))
    probs, onehot = probs[:, classes], onehot[:, classes]
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    return ((2 * intersection + smooth) / (denominator + smooth)).mean()


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    annotated: torch.Tensor | None = None,
    *,
    log: bool = False,
    smooth: float = 1.0,
) -> torch.Tensor:
    """``1 - soft Dice``, or ``-log(soft Dice)`` when ``log`` (see :func:`soft_dice`)."""
    dice = soft_dice(logits, target, annotated, smooth=smooth)
    return -torch.log(dice.clamp_min(1e-6)) if log else 1 - dice


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    annotated: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    *,
    kind: str = "ce+dice",
) -> torch.Tensor:
    """A loss by name, for the trainer and the CLI.

    Parameters
    ----------
    logits, target, annotated, weight
        As in :func:`cross_entropy`; ``weight`` only affects the cross-entropy term.
    kind : str
        One of :data:`LOSSES`: ``"ce"``/``"bce"`` cross-entropy, ``"dice"``,
        ``"log_dice"``, ``"ce+dice"``/``"bce+dice"`` (their sum), ``"ce+log_dice"``.

    Returns
    -------
    scalar tensor
    """
    kind = kind.lower().replace("-", "_").replace("logdice", "log_dice")
    if kind not in LOSSES:
        raise ValueError(f"Unknown loss {kind!r}; choose one of {', '.join(LOSSES)}.")
    total = logits.new_zeros((), dtype=torch.float32)
    parts = kind.split("+")
    if "ce" in parts or "bce" in parts:
        total = total + cross_entropy(logits, target, annotated, weight)
    if "dice" in parts:
        total = total + dice_loss(logits, target, annotated)
    if "log_dice" in parts:
        total = total + dice_loss(logits, target, annotated, log=True)
    return total


def deep_supervision_loss(
    main: torch.Tensor,
    aux: Sequence[torch.Tensor],
    target: torch.Tensor,
    annotated: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    *,
    epoch: int = 1,
    kind: str = "ce",
) -> torch.Tensor:
    """Micro-Net's deep supervision: ``l = l_o + (l_a1 + l_a2 + l_a3) / epoch``.

    Parameters
    ----------
    main : (N, K, H, W) tensor
        Logits of the main output.
    aux : sequence of (N, K, H, W) tensors
        Logits of the auxiliary outputs.
    target, annotated, weight
        As in :func:`segmentation_loss`; the paper weights every term with the
        U-Net weight map.
    epoch : int
        1 for the first epoch: the auxiliary terms fade as training goes on.
    kind : str
        The loss of each output (weighted cross-entropy in the paper).

    Returns
    -------
    scalar tensor
    """
    if epoch < 1:
        raise ValueError(f"epoch counts from 1, got {epoch}.")
    loss = segmentation_loss(main, target, annotated, weight, kind=kind)
    if aux:
        extra = sum(segmentation_loss(a, target, annotated, weight, kind=kind) for a in aux)
        loss = loss + extra / epoch
    return loss


def maskrcnn_loss(losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mask R-CNN's multi-task loss: the sum of what torchvision returns in train mode.

    ``loss_classifier + loss_box_reg + loss_mask + loss_objectness + loss_rpn_box_reg``;
    the targets honour sparse annotation per object (see
    :func:`~.targets.maskrcnn_targets`).
    """
    if not losses:
        raise ValueError("Mask R-CNN returned no losses; was the module in train mode?")
    return sum(value.float() for value in losses.values())  # type: ignore[return-value]
