"""Architecture name -> network constructor, and fresh models with complete cards.

The table :data:`ARCHITECTURES` is plain data: reading it (for example to list
the families in a widget or to check a card in the registry) imports neither
torch nor any network module. A constructor is imported only when a network is
built.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

from .base import DEFAULT_NORMALIZATION, ModelCard, ModelError, SegmentationModel

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from torch import nn


@dataclass(frozen=True)
class Architecture:
    """One model family.

    Attributes
    ----------
    key : str
        The name model cards use (``"unet"``).
    label : str
        Display name (``"U-Net"``).
    constructor : str
        ``"module:attribute"`` of a callable ``(in_channels, n_classes, **hyperparameters)``
        returning the ``torch.nn.Module``.
    model_class : str
        ``"module:attribute"`` of the :class:`SegmentationModel` (sub)class wrapping it.
    task : {"semantic", "instance"}
        What the family predicts.
    """

    key: str
    label: str
    constructor: str
    model_class: str = "napari_microseg.core.models.base:SegmentationModel"
    task: str = "semantic"


_PKG = "napari_microseg.core.models"

#: The families napari-microseg can build from a model card.
ARCHITECTURES: dict[str, Architecture] = {
    arch.key: arch
    for arch in (
        Architecture("unet", "U-Net", f"{_PKG}.unet:UNet"),
        Architecture("segnet", "SegNet", f"{_PKG}.segnet:SegNet"),
        Architecture("micronet", "Micro-Net", f"{_PKG}.micronet:MicroNet"),
        Architecture(
            "maskrcnn",
            "Mask R-CNN",
            f"{_PKG}.maskrcnn:build_maskrcnn",
            model_class=f"{_PKG}.maskrcnn:MaskRCNNModel",
            task="instance",
        ),
    )
}


def get_architecture(key: str, *, model_name: str | None = None) -> Architecture:
    """The :class:`Architecture` called ``key``; a clear :class:`ModelError` if unknown."""
    arch = ARCHITECTURES.get(str(key).lower())
    if arch is None:
        whose = f"Model {model_name!r} uses" if model_name else "Asked for"
        hint = (
            " A 'custom' model wraps your own torch.nn.Module: load its weights with "
            "load_checkpoint(path, module=your_module)."
            if key == "custom"
            else " The model may need a newer napari-microseg, or its card has a typo."
        )
        raise ModelError(
            f"{whose} the unknown architecture {key!r}; known architectures are "
            f"{', '.join(sorted(ARCHITECTURES))}.{hint}"
        )
    return arch


def _resolve(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    return getattr(import_module(module_name), attribute)


def _constructor(arch: Architecture) -> Callable[..., nn.Module]:
    return _resolve(arch.constructor)


def default_hyperparameters(architecture: str) -> dict[str, Any]:
    """The keyword hyper-parameters of ``architecture`` with their default values.

    ``in_channels`` and ``n_classes`` are not included: cards hold them as
    ``in_channels`` and ``classes``.
    """
    signature = inspect.signature(_constructor(get_architecture(architecture)))
    return {
        name: _jsonable(param.default)
        for name, param in signature.parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
        and param.default is not inspect.Parameter.empty
    }


def _jsonable(value: Any) -> Any:
    # Cards are JSON: tuples come back as lists, so store them as lists from the start.
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def build_module(
    architecture: str,
    *,
    in_channels: int,
    n_classes: int,
    hyperparameters: dict[str, Any] | None = None,
    model_name: str | None = None,
) -> nn.Module:
    """Build an untrained network of a known family.

    Parameters
    ----------
    architecture : str
        A key of :data:`ARCHITECTURES`.
    in_channels, n_classes : int
        Input channels C and output classes K (for Mask R-CNN, K counts the background).
    hyperparameters : dict, optional
        Keyword arguments of the family's constructor (depth, base_width, ...).
    model_name : str, optional
        Named in error messages.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    ModelError
        For an unknown architecture, unknown hyper-parameters or invalid values.
    """
    arch = get_architecture(architecture, model_name=model_name)
    constructor = _constructor(arch)
    hyperparameters = dict(hyperparameters or {})
    accepted = set(default_hyperparameters(arch.key))
    unknown = sorted(set(hyperparameters) - accepted)
    who = f"Model {model_name!r}" if model_name else arch.label
    if unknown:
        raise ModelError(
            f"{who}: {arch.label} has no hyper-parameter(s) {', '.join(unknown)}; it accepts "
            f"{', '.join(sorted(accepted))}. Fix the card's 'hyperparameters'."
        )
    try:
        return constructor(in_channels, n_classes, **hyperparameters)
    except (TypeError, ValueError) as error:
        raise ModelError(f"{who}: cannot build {arch.label}: {error}") from error


def build_model(card: ModelCard) -> SegmentationModel:
    """An untrained :class:`SegmentationModel` (or subclass) matching ``card``."""
    arch = get_architecture(card.architecture, model_name=card.name)
    module = build_module(
        arch.key,
        in_channels=card.in_channels,
        n_classes=card.n_classes,
        hyperparameters=card.hyperparameters,
        model_name=card.name,
    )
    return _resolve(arch.model_class)(module, card)


def create_model(
    architecture: str,
    *,
    name: str,
    in_channels: int = 1,
    classes: Sequence[str] = ("background", "foreground"),
    normalization: dict[str, Any] | None = None,
    pixel_size_um: float | None = None,
    modality: str = "",
    description: str = "",
    **hyperparameters: Any,
) -> SegmentationModel:
    """A fresh, untrained model whose card records every hyper-parameter.

    Parameters
    ----------
    architecture : str
        ``"unet"``, ``"segnet"``, ``"micronet"`` or ``"maskrcnn"``.
    name : str
        Registry name of the new model.
    in_channels : int
        1 for EM and fluorescence, 3 for RGB (H&E).
    classes : sequence of str
        Class names, background first.
    normalization : dict, optional
        Input normalization; percentiles 1-99.8 by default.
    pixel_size_um : float, optional
        Pixel size of the training data.
    modality : str
        ``"EM"``, ``"fluorescence"``, ``"H&E"``...
    description : str
        Free text for the model picker.
    **hyperparameters
        Architecture options (depth, base_width, ...); the rest keep their defaults,
        which are written into the card so a later change of defaults cannot
        silently change a saved model.

    Returns
    -------
    SegmentationModel

    Examples
    --------
    >>> model = create_model("unet", name="demo", depth=3, base_width=8)  # doctest: +SKIP
    >>> model.card.hyperparameters  # doctest: +SKIP
    {'depth': 3, 'base_width': 8, 'batch_norm': False, 'downsample': 1}
    """
    arch = get_architecture(architecture, model_name=name)
    full = default_hyperparameters(arch.key)
    full.update({key: _jsonable(value) for key, value in hyperparameters.items()})
    card = ModelCard(
        name=name,
        architecture=arch.key,
        hyperparameters=full,
        in_channels=in_channels,
        classes=list(classes),
        task=arch.task,  # type: ignore[arg-type]
        normalization=dict(normalization or DEFAULT_NORMALIZATION),
        pixel_size_um=pixel_size_um,
        modality=modality,
        description=description,
    )
    card.validate()
    return build_model(card)
