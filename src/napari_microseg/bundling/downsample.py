"""A U-Net learnt on resampled images, turned into one that resamples its input itself.

A config's ``pixel_size_um`` trains a network on images resampled to a coarser
pixel size (``configs/glas-unet-half.yaml``: GlaS at 1.24 µm instead of its
scanner's 0.62). Its card then says 1.24 µm, and prediction resamples every
image whose pixel size it knows; an image without one (a PNG, a TIFF without
resolution tags: most H&E files) is taken to be at the model's pixel size and
would be predicted at twice the scale the network learnt.

:func:`downsampled` keeps the weights and moves the resampling into the
network (a U-Net's ``downsample``), so the card says the images' own pixel
size. Its lineage keeps the pixel size training saw, from which
:func:`as_trained` rebuilds the model training prepared the data for (the
data hash and the validation split of bundling).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..core.models.base import LINEAGE_DOWNSAMPLED

if TYPE_CHECKING:
    from ..core.models.base import SegmentationModel


def downsampled(model: SegmentationModel, factor: int) -> SegmentationModel:
    """The same weights in a U-Net that averages ``factor`` x ``factor`` pixel blocks itself.

    Parameters
    ----------
    model : SegmentationModel
        A U-Net whose card gives the pixel size it was trained at.
    factor : int
        At least 2: the card's pixel size is divided by it, the U-Net's
        ``downsample`` and the recommended tile size multiplied by it (so a
        tile shows the network the same context as before).

    Returns
    -------
    SegmentationModel
        The converted model, in eval mode; its lineage records the conversion.

    Raises
    ------
    ValueError
        For another architecture, a card without a pixel size, or a factor
        below 2.
    """
    from ..core.models.build import build_model

    card = model.card
    if card.architecture != "unet":
        raise ValueError(f"{card.name!r} is a {card.architecture}, not a U-Net.")
    if card.pixel_size_um is None:
        raise ValueError(f"{card.name!r} has no pixel size to divide.")
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise ValueError(f"The factor must be an integer of 2 or more, not {factor!r}.")
    recommended = dict(card.recommended)
    if "tile_size" in recommended:
        recommended["tile_size"] = int(recommended["tile_size"]) * factor
    learnt = float(card.pixel_size_um)
    lineage: dict[str, Any] = dict(card.lineage)
    lineage[LINEAGE_DOWNSAMPLED] = {
        "factor": factor,
        "pixel_size_um_learnt": learnt,
        "note": (
            f"trained on images resampled to {learnt:g} µm; the network averages {factor} x "
            f"{factor} pixel blocks itself and takes images at {learnt / factor:g} µm"
        ),
    }
    new_card = replace(
        card,
        hyperparameters={
            **card.hyperparameters,
            "downsample": int(card.hyperparameters.get("downsample", 1)) * factor,
        },
        pixel_size_um=learnt / factor,
        recommended=recommended,
        lineage=lineage,
    )
    new = build_model(new_card)
    new.module.load_state_dict(model.module.state_dict())
    return new.eval()


def as_trained(model: SegmentationModel) -> SegmentationModel:
    """``model`` with the card training saw: the pixel size before :func:`downsampled`."""
    from ..core.models.base import SegmentationModel

    lineage = model.card.lineage
    record = lineage.get(LINEAGE_DOWNSAMPLED) if isinstance(lineage, dict) else None
    if not record:
        return model
    card = replace(model.card, pixel_size_um=float(record["pixel_size_um_learnt"]))
    return SegmentationModel(model.module, card, model.activation)
