"""The few-shot recipe's training parts: per-part learning rates and intensity matching.

:class:`FewShotTrainer` trains the encoder at ``encoder_lr_factor`` times the
decoder's rate (:func:`parameter_groups`, :func:`scaled_adam`), so a few slices
bend the decoder without wiping the encoder's general features.
:func:`match_intensities` maps a raw image's histogram onto reference quantiles
(:func:`~..inference.normalize.intensity_quantiles`); models do it themselves
when their normalization asks (``"match"``, see :mod:`..inference.normalize`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..inference.normalize import intensity_quantiles
from .loop import Trainer, encoder_modules

__all__ = [
    "FewShotTrainer",
    "intensity_quantiles",
    "match_intensities",
    "parameter_groups",
    "scaled_adam",
]


# ----------------------------------------------------------------------------- few-shot training


def scaled_adam(groups: list[dict[str, Any]], *, anchor_decay: float = 0.0, **kwargs: Any) -> Any:
    """Adam whose parameter groups learn at ``lr_scale`` times the scheduled rate.

    The training loop sets one scheduled rate on every group; this optimizer
    multiplies it by each group's ``lr_scale`` for the step only, so the
    schedule and the per-part rates combine without the loop knowing.

    With ``anchor_decay`` > 0 every step also pulls each weight back towards its
    value when the optimizer was made (the starting model): by ``anchor_decay``
    of the distance at the full rate, less as the schedule lowers the rate (and
    as ``lr_scale`` lowers it for a part). An L2 penalty towards the start
    (L2-SP, Li et al. 2018), decoupled from Adam's scaling as AdamW decouples
    weight decay; since Adam moves a weight by about its rate per step, a weight
    settles at most about ``rate x (1 - pull) / pull`` from its start, so a few
    annotated images bend the model without carrying it far from what it knew.

    Parameters
    ----------
    groups : list of dict
        Parameter groups with ``params`` and ``lr_scale`` (see :func:`parameter_groups`).
    anchor_decay : float
        Share of the distance to the starting weights taken back per step at
        the full rate, in [0, 1] (0: none).
    **kwargs
        ``torch.optim.Adam``'s (``lr``, ``weight_decay``...).

    Returns
    -------
    torch.optim.Adam
    """
    import torch

    class ScaledAdam(torch.optim.Adam):
        def step(self, closure: Any = None) -> Any:
            rates = [group["lr"] for group in self.param_groups]
            for group in self.param_groups:
                group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
            try:
                result = super().step(closure)
                if anchor_decay > 0:
                    with torch.no_grad():
                        for group in self.param_groups:
                            pull = min(anchor_decay * group["lr"] / full_rate, 1.0)
                            for weight in group["params"]:
                                weight.sub_(weight - anchors[id(weight)], alpha=pull)
                return result
            finally:
                for group, rate in zip(self.param_groups, rates):
                    group["lr"] = rate

    full_rate = float(kwargs.get("lr", 1e-3))
    # Kept outside the parameter groups so that checkpoints do not carry them: a resumed run
    # makes its optimizer from the same starting model before loading the checkpoint.
    anchors = (
        {id(p): p.detach().clone() for group in groups for p in group["params"]}
        if anchor_decay > 0
        else {}
    )
    return ScaledAdam(groups, **kwargs)


def parameter_groups(module: Any, encoder_lr_factor: float) -> list[dict[str, Any]]:
    """Trainable parameters split into encoder (scaled rate) and the rest.

    Parameters
    ----------
    module : torch.nn.Module
    encoder_lr_factor : float
        The encoder's rate relative to the decoder's; 0 leaves it out.

    Returns
    -------
    list of dict
        Parameter groups with ``params`` and ``lr_scale`` (no empty group).
    """
    encoder_ids = {
        id(p) for part in encoder_modules(module) for p in part.parameters() if p.requires_grad
    }
    encoder = [p for p in module.parameters() if p.requires_grad and id(p) in encoder_ids]
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in encoder_ids]
    groups = [{"params": rest, "lr_scale": 1.0, "part": "decoder"}]
    if encoder and encoder_lr_factor > 0:
        groups.append({"params": encoder, "lr_scale": encoder_lr_factor, "part": "encoder"})
    elif encoder:
        for p in encoder:
            p.requires_grad_(False)
    return [g for g in groups if g["params"]]


class FewShotTrainer(Trainer):
    """The training loop with the few-shot recipe's per-part learning rates.

    Everything else (schedule, validation, early stop, best weights, Cancel) is
    :class:`~.loop.Trainer`'s. The encoder learns at
    ``settings.encoder_lr_factor`` times the scheduled rate, and
    ``settings.anchor_decay`` pulls every weight back towards its start.
    """

    def make_optimizer(self) -> Any:
        s = self.settings
        factor = float(getattr(s, "encoder_lr_factor", 1.0))
        anchor_decay = float(getattr(s, "anchor_decay", 0.0))
        if factor == 1.0 and anchor_decay == 0:
            return super().make_optimizer()
        groups = parameter_groups(self.model.module, factor)
        return scaled_adam(
            groups, anchor_decay=anchor_decay, lr=s.learning_rate, weight_decay=s.weight_decay
        )


# ----------------------------------------------------------------------------- intensities


def match_intensities(image: Any, reference: np.ndarray) -> np.ndarray:
    """Map an image's intensities so that its quantiles become ``reference`` (histogram matching).

    Percentile normalisation already undoes a linear change of brightness and
    contrast; matching the whole histogram also undoes a gamma or any other
    monotonic change of the detector's response.

    Parameters
    ----------
    image : (..., ) array-like
        Grey image or stack.
    reference : (101,) ndarray
        :func:`intensity_quantiles` of the data the model was trained on.

    Returns
    -------
    ndarray of float32
        The image's shape.
    """
    data = np.asarray(image)
    own = intensity_quantiles(data)
    # Flat stretches of the quantile curve (many equal pixels) must still map monotonically.
    own = own + np.arange(own.size) * 1e-9 * max(float(own[-1] - own[0]), 1.0)
    return np.interp(data.astype(np.float64), own, np.asarray(reference, np.float64)).astype(
        np.float32
    )
