"""The one inference interface every model family is used through.

A :class:`SegmentationModel` bundles a ``torch.nn.Module`` with its
:class:`ModelCard`: what the tiler, the widgets and the trainer need to know
about it (task, input channels, normalization, classes, pixel size, the
recommended tile size and post-processing). Nothing else about a model is
needed to run it.

Contract for semantic models: ``module`` maps a normalized float32 tensor
``(N, C, H, W)`` to logits ``(N, K, H, W)`` for any H and W (the network pads
inside if it needs multiples of 2**depth); ``activation`` turns logits into
probabilities.

Contract for instance models (``task == "instance"``):
``predict_instances(batch)`` returns one dict per image with ``masks``
``(M, H, W)`` float probabilities, ``scores`` ``(M,)`` and ``boxes`` ``(M, 4)``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from ..._version import __version__

if TYPE_CHECKING:  # torch is imported lazily so napari starts fast
    import torch

Task = Literal["semantic", "instance"]
Activation = Literal["softmax", "sigmoid", "none"]

#: Default normalization: percentiles over the whole image or volume.
DEFAULT_NORMALIZATION: dict[str, Any] = {"kind": "percentile", "low": 1.0, "high": 99.8}
#: How an RGB image becomes one grey channel (:attr:`ModelCard.colour_to_grey`): the mean of
#: R, G and B, or the ITU-R BT.601 luminance 0.299 R + 0.587 G + 0.114 B (Pillow's "L").
COLOUR_TO_GREY = ("mean", "luminance")
#: How messages name an input of 1 or 3 channels.
CHANNEL_KINDS = {1: "greyscale (1 channel)", 3: "RGB (3 channels)"}
#: Lineage keys of the conversions in :mod:`napari_microseg.bundling` (a U-Net made wider;
#: weights moved into a U-Net that resamples its input itself). Here because ``microseg train``
#: carries the first into a warm start's record, and the cli does not import bundling.
LINEAGE_WIDENED = "widened"
LINEAGE_DOWNSAMPLED = "downsampled"


class ModelError(ValueError):
    """A model cannot be built, loaded or used as asked; the message names it and what to do."""


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass
class ModelCard:
    """Everything known about a model except its weights (stored as JSON).

    Parameters
    ----------
    name : str
        Unique name in the registry, for example ``"mito-em"``.
    architecture : str
        Family key: ``"unet"``, ``"segnet"``, ``"micronet"``, ``"maskrcnn"`` or ``"custom"``.
    hyperparameters : dict
        Keyword arguments that rebuild the architecture (depth, width, ...).
    in_channels : int
        Channels the network takes: 1 for EM and fluorescence, 3 for RGB.
    classes : list of str
        Output class names, background first (``["background", "foreground"]``).
    task : {"semantic", "instance"}
        Per-pixel class probabilities, or object instances.
    normalization : dict
        How to normalize inputs: ``{"kind": "percentile", "low": 1.0, "high": 99.8}``,
        ``{"kind": "none"}`` or ``{"kind": "range", "min": 0, "max": 255}``.
    pixel_size_um : float or None
        Pixel size of the training data in µm, when known.
    context_slices : int
        0 for 2D models; n > 0 for 2.5D models that take 2n + 1 neighbouring slices
        as channels.
    trained_on : str
        Description of the training data.
    metrics : dict
        Metric name -> value, with ``"data"`` naming where they were measured.
    recommended : dict
        Defaults for inference: ``tile_size``, ``overlap``, ``postprocess`` (a
        post-processing pipeline description), ``mpx_per_s_cpu``...
    parent : str or None
        Name of the model this one was fine-tuned from (lineage).
    lineage : dict
        Data hash, settings, metrics before/after for fine-tuned models.
    created : str
        ISO time of creation.
    version : str
        napari-microseg version that wrote the card.
    description : str
        Free text for the model picker.
    modality : str
        Imaging modality, e.g. ``"EM"``, ``"fluorescence"``, ``"H&E"``; empty when
        unknown (the registry then describes the input channels).
    colour_to_grey : {"mean", "luminance"}
        How an RGB (or RGBA, alpha dropped) image is made grey for a 1-channel model,
        the way its training data were (see :data:`COLOUR_TO_GREY`). ``"mean"`` by
        default, which is right for every bundled model: the DSB nuclei models were
        trained on the channel mean (``grey: true`` in their configs), the EM models on
        grey images, which RGB copies hold as R = G = B. Cards written before this field
        existed load with the default.
    """

    name: str
    architecture: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 1
    classes: list[str] = field(default_factory=lambda: ["background", "foreground"])
    task: Task = "semantic"
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    pixel_size_um: float | None = None
    context_slices: int = 0
    trained_on: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    recommended: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    version: str = __version__
    description: str = ""
    modality: str = ""
    colour_to_grey: str = "mean"

    #: Fields a card file must hold; the others have defaults.
    REQUIRED = ("name", "architecture", "in_channels", "classes", "task")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the card."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "the model card") -> ModelCard:
        """Build a card from a dict, with a clear error naming missing or unknown fields."""
        missing = [key for key in cls.REQUIRED if key not in data]
        if missing:
            raise ModelError(
                f"{source} lacks the field(s) {', '.join(missing)}. Re-save the model with "
                "napari-microseg, or add them to its .json card."
            )
        known = {f.name for f in fields(cls)}
        card = cls(**{k: v for k, v in data.items() if k in known})
        card.validate(source=source)
        return card

    def validate(self, *, source: str | None = None) -> None:
        """Raise :class:`ModelError` naming the model and the bad field when the card is unusable.

        Parameters
        ----------
        source : str, optional
            How to name the card in messages (a file name); defaults to the model name.
        """
        where = source or f"The model card of {self.name!r}"
        problems = []
        if not isinstance(self.name, str) or not self.name.strip():
            problems.append("name must be a non-empty text")
        if not isinstance(self.architecture, str) or not self.architecture:
            problems.append("architecture must be a non-empty text such as 'unet'")
        if not _is_positive_int(self.in_channels):
            problems.append(f"in_channels must be a positive integer, not {self.in_channels!r}")
        if (
            not isinstance(self.classes, list | tuple)
            or not self.classes
            or not all(isinstance(c, str) for c in self.classes)
        ):
            problems.append(f"classes must be a non-empty list of names, not {self.classes!r}")
        if self.task not in ("semantic", "instance"):
            problems.append(f"task must be 'semantic' or 'instance', not {self.task!r}")
        if not isinstance(self.hyperparameters, dict):
            problems.append("hyperparameters must be a mapping of names to values")
        if not isinstance(self.normalization, dict) or "kind" not in self.normalization:
            problems.append("normalization must be a mapping with a 'kind'")
        if self.colour_to_grey not in COLOUR_TO_GREY:
            problems.append(
                f"colour_to_grey must be one of {', '.join(COLOUR_TO_GREY)}, "
                f"not {self.colour_to_grey!r}"
            )
        if problems:
            raise ModelError(
                f"{where} is invalid: {'; '.join(problems)}. Fix its .json card or re-save the "
                "model with napari-microseg."
            )

    @property
    def n_classes(self) -> int:
        """Number of output channels K."""
        return len(self.classes)


class SegmentationModel:
    """A network plus its card: the one object inference and training use.

    Parameters
    ----------
    module : torch.nn.Module
        The network. For semantic models it maps ``(N, C, H, W)`` to ``(N, K, H, W)`` logits.
    card : ModelCard
        What the network expects and produces.
    activation : {"softmax", "sigmoid", "none"}, optional
        Turns logits into probabilities; by default softmax over K, or sigmoid when K == 1.
    """

    def __init__(
        self, module: torch.nn.Module, card: ModelCard, activation: Activation | None = None
    ) -> None:
        self.module = module
        self.card = card
        if activation is None:
            activation = "sigmoid" if card.n_classes == 1 else "softmax"
        self.activation: Activation = activation

    # The attributes the tiler and the widgets read.
    @property
    def name(self) -> str:
        return self.card.name

    @property
    def task(self) -> Task:
        return self.card.task

    @property
    def in_channels(self) -> int:
        return self.card.in_channels

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def n_classes(self) -> int:
        return self.card.n_classes

    @property
    def normalization(self) -> dict[str, Any]:
        return dict(self.card.normalization)

    @property
    def pixel_size_um(self) -> float | None:
        return self.card.pixel_size_um

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Apply the model's activation over the class axis (axis 1)."""
        if self.activation == "softmax":
            return logits.softmax(dim=1)
        if self.activation == "sigmoid":
            return logits.sigmoid()
        return logits

    @property
    def device(self) -> torch.device:
        """The device holding the module's parameters (CPU for a parameter-free module)."""
        import torch

        for tensor in self.module.parameters():
            return tensor.device
        for tensor in self.module.buffers():
            return tensor.device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> SegmentationModel:
        """Move the module to ``device`` and return self."""
        self.module.to(device)
        return self

    def eval(self) -> SegmentationModel:
        """Put the module in inference mode (dropout off, batch-norm statistics fixed)."""
        self.module.eval()
        return self

    def check_batch(self, batch: torch.Tensor) -> None:
        """Raise :class:`ModelError` unless ``batch`` is ``(N, C, H, W)``, C = ``in_channels``."""
        if batch.ndim != 4:
            raise ModelError(
                f"Model {self.name!r} takes a batch shaped (N, C, H, W), got shape "
                f"{tuple(batch.shape)}. Add the batch and channel axes first."
            )
        self.check_channels(int(batch.shape[1]))

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(N, K, H, W)`` for a normalized float32 batch ``(N, C, H, W)``.

        The module is put in eval mode and run without gradients; the batch is
        moved to the module's device. Tilers may call ``module`` directly; this
        is the checked convenience for whole images and scripts.
        """
        import torch

        if self.task != "semantic":
            raise ModelError(
                f"Model {self.name!r} detects instances; call predict_instances() instead."
            )
        self.check_batch(batch)
        self.module.eval()
        with torch.no_grad():
            return self.probabilities(self.module(batch.to(self.device, torch.float32)))

    def predict_instances(self, batch: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Detect instances in a normalized batch ``(N, C, H, W)``; instance models override."""
        raise ModelError(f"Model {self.name!r} predicts {self.task} probabilities, not instances.")

    def check_channels(self, channels: int, *, image_name: str = "the image") -> None:
        """Raise a clear error when ``channels`` does not match the model's input."""
        if channels == self.in_channels:
            return
        wanted = CHANNEL_KINDS.get(self.in_channels, f"{self.in_channels} channels")
        raise ModelError(
            f"Model {self.name!r} takes {wanted} input but {image_name} has "
            f"{CHANNEL_KINDS.get(channels, f'{channels} channels')}. "
            "Pick a model trained for this kind of image, or convert the image first."
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, {self.card.architecture}, task={self.task}, "
            f"in_channels={self.in_channels}, classes={self.classes})"
        )


def wrap_module(
    module: torch.nn.Module,
    *,
    in_channels: int,
    classes: list[str] | int,
    name: str = "custom",
    normalization: dict[str, Any] | None = None,
    activation: Activation | None = None,
    pixel_size_um: float | None = None,
) -> SegmentationModel:
    """Wrap any ``(N, C, H, W) -> (N, K, H, W)`` logits module as a :class:`SegmentationModel`.

    Parameters
    ----------
    module : torch.nn.Module
        The user's network.
    in_channels : int
        C, the channels it takes.
    classes : list of str or int
        Class names, or K (names are then ``class_0 ... class_{K-1}``).
    name : str
        Display name.
    normalization : dict, optional
        Input normalization; none by default (a user module gets what it is given).
    activation : {"softmax", "sigmoid", "none"}, optional
        Default: softmax over K, sigmoid when K == 1.
    pixel_size_um : float, optional
        Pixel size of its training data.

    Returns
    -------
    SegmentationModel
    """
    if isinstance(classes, int):
        classes = [f"class_{k}" for k in range(classes)]
    card = ModelCard(
        name=name,
        architecture="custom",
        in_channels=in_channels,
        classes=list(classes),
        normalization=normalization or {"kind": "none"},
        pixel_size_um=pixel_size_um,
        description="A user-supplied torch.nn.Module.",
    )
    return SegmentationModel(module, card, activation)
