"""Prediction settings and their defaults, in one place.

Every caller that predicts (the Python API, the CLI, the widgets, the block jobs)
reads its defaults from :class:`PredictOptions`; nothing else writes them down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .tiling import check_blend, check_overlap

if TYPE_CHECKING:
    from ..models.base import ModelCard

__all__ = ["DEFAULTS", "DEFAULT_TILE", "PredictOptions"]

#: Tile side when neither the caller nor the model card gives one.
DEFAULT_TILE = 256


@dataclass
class PredictOptions:
    """Settings of a tiled prediction: the one home of their defaults.

    :func:`~.predict.predict`, :func:`~.predict.iter_predict`, ``microseg predict``,
    the block-by-block jobs and the Segment widget all take their defaults from
    here (:data:`DEFAULTS`). The fields are the keyword arguments of
    :func:`~.predict.predict` (see there), plus:

    Attributes
    ----------
    channels_last : bool, optional
        Run convolutions on NHWC memory; by default on CPU and CUDA, not on MPS.
    memory_budget_mb : float
        Bounds the planes blended together (input band plus blending band);
        a batch of tiles and the network's activations come on top.
    iou_threshold : float
        Instance models: two pieces of an object seen by neighbouring tiles
        are merged when their IoU inside the tiles' shared area reaches this.
    compile : bool
        Run the network through ``torch.compile`` (off by default: compiling
        takes tens of seconds and needs a compiler; when it fails the run goes
        on without it, with a notice).
    """

    tile_size: int | tuple[int, int] | None = None
    overlap: float = 0.25
    blend: str = "gaussian"
    batch_size: int | None = None
    device: Any = "auto"
    tta: bool = False
    activation: str | None = "auto"
    normalization: dict[str, Any] | str | None = "auto"
    slice_axis: str | None = None
    ortho: bool = False
    amp: bool | None = None
    channels_last: bool | None = None
    memory_budget_mb: float = 512.0
    iou_threshold: float = 0.5
    compile: bool = False

    def __post_init__(self) -> None:
        # Checked when made, so a bad value is refused before any model or image is loaded.
        self.blend = check_blend(self.blend)
        self.overlap = check_overlap(self.overlap)
        if self.batch_size is not None and (int(self.batch_size) < 1):
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.activation not in ("auto", None, "none", "softmax", "sigmoid"):
            raise ValueError(
                f"activation={self.activation!r}; use 'auto', 'softmax', 'sigmoid' or None."
            )

    @classmethod
    def for_card(cls, card: ModelCard, **overrides: Any) -> PredictOptions:
        """The options a model card recommends (tile size, overlap, TTA), then ``overrides``.

        Parameters
        ----------
        card : ModelCard
            ``card.recommended`` may hold ``tile_size``, ``overlap`` and ``tta``
            (a semantic model whose test-time augmentation was found worth its
            cost on training images: ``scripts/tune_postprocess.py``; ignored
            for instance models).
        **overrides
            Fields to set; a value of None keeps the recommended (or default) one.

        Examples
        --------
        >>> from napari_microseg.core.models.base import ModelCard
        >>> card = ModelCard(name="m", architecture="unet", recommended={"tile_size": 512})
        >>> options = PredictOptions.for_card(card, overlap=None, device="cpu")
        >>> options.tile_size, options.overlap, options.device, options.tta
        (512, 0.25, 'cpu', False)
        >>> card.recommended["tta"] = True
        >>> PredictOptions.for_card(card).tta, PredictOptions.for_card(card, tta=False).tta
        (True, False)
        """
        recommended = card.recommended or {}
        settings = {
            "tile_size": int(recommended.get("tile_size", DEFAULT_TILE)),
            "overlap": float(recommended.get("overlap", DEFAULTS.overlap)),
            # Instance models cannot average flipped detections: their cards never turn it on.
            "tta": recommended.get("tta") is True and card.task != "instance",
        }
        settings.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**settings)


#: The defaults, for signatures and option parsers (``DEFAULTS.overlap``...).
DEFAULTS = PredictOptions()
