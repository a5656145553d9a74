"""Tiled inference of any size, 2D or 3D, on any device: :func:`predict` and :func:`iter_predict`.

The image is normalized once (as the model card says), cut into 2D planes
(:mod:`.planes`), each plane into overlapping tiles (:mod:`.tiling`); tiles
are batched through the network (:mod:`.forward`) and blended back, band by
band, into the result: a NumPy array, a memmap or a zarr array. Each band of
input travels to the device once, and each finished band of probabilities
back once: normalising, blending and the activation happen on the device
(:mod:`.device_tiles`). Peak memory
is one batch of tiles plus one band of a group of planes, whatever the size
of the image, and a lazy (dask, zarr) input is read slab by slab.

:func:`iter_predict` is the generator the widgets run: it yields a
:class:`~.progress.Progress` after every batch and returns the result;
closing it stops within one batch and leaves no partial result behind.
:func:`predict` drains it.

Examples
--------
>>> import torch
>>> class PlusOne(torch.nn.Module):
...     def forward(self, x):
...         return x + 1
>>> image = np.arange(35, dtype=np.float32).reshape(5, 7)
>>> result = predict(PlusOne(), image, tile_size=4, activation=None)
>>> result.shape, bool(np.array_equal(result[0], image + 1))
((1, 5, 7), True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..models.base import SegmentationModel
from ..progress import Job, Progress, drain
from .denoise import smooth_planes, smooth_sigma
from .illumination import correct_illumination, flat_field_fraction
from .job import PredictionJob, as_model, prepare_job, resolve_image
from .normalize import fit_normalizer
from .options import DEFAULTS, PredictOptions
from .planes import make_views
from .stitching import Instances
from .tile_loop import predict_instances, predict_semantic

if TYPE_CHECKING:
    import torch

__all__ = ["Instances", "PredictOptions", "iter_predict", "predict", "run_prediction"]


def predict(
    model: SegmentationModel | torch.nn.Module,
    image: Any,
    *,
    axes: str | None = None,
    tile_size: int | tuple[int, int] | None = DEFAULTS.tile_size,
    overlap: float = DEFAULTS.overlap,
    blend: str = DEFAULTS.blend,
    batch_size: int | None = DEFAULTS.batch_size,
    device: Any = DEFAULTS.device,
    tta: bool = DEFAULTS.tta,
    out: Any = None,
    activation: str | None = DEFAULTS.activation,
    normalization: dict[str, Any] | str | None = DEFAULTS.normalization,
    slice_axis: str | None = DEFAULTS.slice_axis,
    ortho: bool = DEFAULTS.ortho,
    amp: bool | None = DEFAULTS.amp,
) -> np.ndarray | Instances:
    """Predict a whole image or volume tile by tile.

    Parameters
    ----------
    model : SegmentationModel or torch.nn.Module
        A loaded model (:func:`load_model`), or any module mapping
        ``(N, C, H, W)`` to logits ``(N, K, H, W)``.
    image : ndarray, dask array, zarr array or ImageData
        2D (``YX``, ``YXC``) or 3D and beyond (``ZYX``, ``TZCYX``...).
    axes : str, optional
        Letters from ``"TZCYX"``, one per axis. Needed for 4D and 5D arrays;
        2D and 3D ones are guessed (``YX``; ``YXC`` when the last axis is 3 or
        4 long; ``CYX`` for a 3-channel model; ``ZYX`` otherwise).
    tile_size : int or (int, int), optional
        Tile side; the model card's recommendation, else 256. Images smaller
        than a tile use a smaller tile (or are mirrored up to the network's minimum).
    overlap : float
        Fraction of a tile shared with its neighbour, in [0, 1).
    blend : {"gaussian", "average"}
        Gaussian importance weights (sigma = tile/8), or plain averaging.
    batch_size : int, optional
        Tiles per forward pass; halved automatically on out-of-memory errors.
        Default: on CUDA, what fills half the free memory (measured with two
        probe passes, at most 64); one tile at a time on the CPU.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``,
        ``"mps"``; an unavailable device falls back to the CPU with a warning.
    tta : bool
        Average the 8 flips and rotations of every tile (8x slower).
    out : ndarray, memmap or zarr array, optional
        Where to write the result, shaped like it; streams results larger than
        memory to disk. A zarr result has ``attrs["complete"]`` True only when
        finished; a cancelled memmap's file is removed.
    activation : {"auto", "softmax", "sigmoid", None}
        ``"auto"``: the model's; for a plain module softmax over K, sigmoid when
        K == 1. None returns logits.
    normalization : dict, str or None
        ``"auto"``: as the model card says (a plain module gets none); or a
        specification for :func:`~.normalize.fit_normalizer`; None for none.
    slice_axis : str, optional
        For 3D: the axis to cut 2D planes along (default Z).
    ortho : bool
        For isotropic volumes: predict along Z, Y and X planes and average.
    amp : bool, optional
        Mixed precision. Default: on with CUDA (bfloat16, else float16), and
        bfloat16 on CPUs that have it natively (AVX512-BF16 or AMX: 2-3x faster,
        labels agree with float32 to Dice > 0.99) for semantic models; float32
        elsewhere. ``amp=False`` forces float32.

    Returns
    -------
    ndarray of float32 or Instances
        Semantic models: probabilities ``(K, *spatial)`` (``out`` if given).
        Instance models: :class:`Instances` (labels, scores).
    """
    return drain(
        iter_predict(
            model,
            image,
            axes=axes,
            tile_size=tile_size,
            overlap=overlap,
            blend=blend,
            batch_size=batch_size,
            device=device,
            tta=tta,
            out=out,
            activation=activation,
            normalization=normalization,
            slice_axis=slice_axis,
            ortho=ortho,
            amp=amp,
        ),
        show=False,
    )


def iter_predict(
    model: SegmentationModel | torch.nn.Module,
    image: Any,
    *,
    axes: str | None = None,
    tile_size: int | tuple[int, int] | None = DEFAULTS.tile_size,
    overlap: float = DEFAULTS.overlap,
    blend: str = DEFAULTS.blend,
    batch_size: int | None = DEFAULTS.batch_size,
    device: Any = DEFAULTS.device,
    tta: bool = DEFAULTS.tta,
    out: Any = None,
    activation: str | None = DEFAULTS.activation,
    normalization: dict[str, Any] | str | None = DEFAULTS.normalization,
    slice_axis: str | None = DEFAULTS.slice_axis,
    ortho: bool = DEFAULTS.ortho,
    amp: bool | None = DEFAULTS.amp,
) -> Job[np.ndarray | Instances]:
    """The generator twin of :func:`predict`: yields :class:`Progress`, returns the result.

    Takes the same parameters as :func:`predict`. At least one event comes
    per batch of tiles, with tiles done, total and an ETA. Closing the
    generator stops it within one batch and leaves no partial result.
    """
    options = PredictOptions(
        tile_size=tile_size,
        overlap=overlap,
        blend=blend,
        batch_size=batch_size,
        device=device,
        tta=tta,
        activation=activation,
        normalization=normalization,
        slice_axis=slice_axis,
        ortho=ortho,
        amp=amp,
    )
    return run_prediction(model, image, axes=axes, out=out, options=options)


def run_prediction(
    model: SegmentationModel | torch.nn.Module,
    image: Any,
    *,
    axes: str | None = None,
    out: Any = None,
    options: PredictOptions | None = None,
) -> Job[np.ndarray | Instances]:
    """:func:`iter_predict` with its settings in one :class:`PredictOptions` (for widgets)."""
    options = options or PredictOptions()
    model = as_model(model)
    data, axes = resolve_image(image, axes, model)
    # Bad input fails here, at the call; the slow parts run in the generator.
    job = prepare_job(model, data, axes, out, options)
    return _execute(job, data, axes, options)


def _execute(
    job: PredictionJob, data: Any, axes: str, options: PredictOptions
) -> Job[np.ndarray | Instances]:
    fraction = flat_field_fraction(job.spec)
    if fraction is not None:
        # The model was adapted to flat-field corrected images; the planes are the same
        # shape, so only the views change (dask input stays lazy).
        yield Progress(0, job.total, "Correcting uneven illumination")
        data = correct_illumination(data, axes, fraction)
    sigma = smooth_sigma(job.spec)
    if sigma is not None:
        # The model was adapted to a noisy session through smoothed inputs (dask stays lazy).
        yield Progress(0, job.total, "Smoothing the noisy image")
        data = smooth_planes(data, axes, sigma)
    if fraction is not None or sigma is not None:
        job.views = make_views(data, axes, slice_axis=options.slice_axis, ortho=options.ortho)
    yield Progress(0, job.total, "Computing the normalization")
    channel_axis = axes.index("C") if "C" in axes else None
    job.normalizer = fit_normalizer(data, job.spec, channel_axis=channel_axis)
    yield Progress(0, job.total, f"Predicting on {job.device_name}")
    model = job.model
    try:
        with job.runner:
            if model.task == "instance":
                result = yield from predict_instances(job)
            else:
                result = yield from predict_semantic(job)
    except BaseException:
        job.sink.abort()
        raise
    return result
