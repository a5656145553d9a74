"""Score a model on the held-out regions of its training data: loss, Dice, IoU, object F1.

Each held-out region is predicted in one piece (cut into windows with a
margin of context when it is large), with some image context around it, on
the training device, crops of one shape in batches; only its annotated pixels
are scored. The metrics are those of
:mod:`napari_microseg.core.evaluation.metrics`, on the foreground (every class but the
background): pixel Dice and IoU, and the GlaS object F1 on the objects found
by connected components (for boundary models: the interior class, grown back
over the predicted boundary), or, for a model whose card recommends a
watershed along its boundary class, on the objects that watershed finds, as
the Segment widget would: the components of the argmax split glands into many
small pieces (the shipped gland U-Net: object F1 0.335 from components, 0.760
from its watershed, on six validation images), so the score a run is selected
on would not be the one a user sees.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..evaluation.objects import object_f1
from ..inference.segment import recommended_pipeline
from .data import Region
from .targets import boundary_class

if TYPE_CHECKING:
    import torch

    from ..models.base import SegmentationModel
    from ..postprocess import PostprocessPipeline

#: Image context read around a held-out region, in pixels.
CONTEXT = 32
#: Most pixels of held-out crops predicted in one batch.
BATCH_PIXELS = 2**21


def forward_tiled(
    module: Any, x: torch.Tensor, *, tile: int = 512, margin: int = 32
) -> torch.Tensor:
    """Logits of ``module`` for a batch ``x (N, C, H, W)``, window by window when large.

    Windows of ``tile`` pixels are read with ``margin`` pixels of context on each
    side, and only their centres are kept, so no window edge shows in the result.
    """
    height, width = x.shape[-2:]
    if height <= tile + 2 * margin and width <= tile + 2 * margin:
        return module(x)
    out = None
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            ya, xa = max(y0 - margin, 0), max(x0 - margin, 0)
            yb, xb = min(y1 + margin, height), min(x1 + margin, width)
            part = module(x[..., ya:yb, xa:xb])
            if out is None:
                out = part.new_zeros((x.shape[0], part.shape[1], height, width))
            out[..., y0:y1, x0:x1] = part[..., y0 - ya : y1 - ya, x0 - xa : x1 - xa]
    return out


def predicted_objects(pred: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Object ids from a class map: connected components of the foreground.

    For a background / foreground / boundary model the components of the
    interior class are the objects (the boundary separates touching ones),
    grown back over the predicted boundary pixels.
    """
    from skimage.measure import label
    from skimage.segmentation import expand_labels

    border = boundary_class(classes)
    if border is None or len(classes) < 3:
        return label(pred != 0, connectivity=1)
    inside = next(i for i in range(1, len(classes)) if i != border)
    seeds = label(pred == inside, connectivity=1)
    grown = expand_labels(seeds, distance=3)
    return np.where(pred != 0, grown, 0)


def object_pipeline(model: SegmentationModel) -> PostprocessPipeline | None:
    """The post-processing validation finds objects with; None for connected components.

    A semantic model with a boundary class whose card recommends a watershed
    is scored on that watershed's objects; every other model on the
    components of its class map (:func:`predicted_objects`).
    """
    stored = model.card.recommended.get("postprocess")
    if model.task == "instance" or not isinstance(stored, dict):
        return None
    if stored.get("method") != "watershed" or stored.get("boundary_class") is None:
        return None
    if boundary_class(model.classes) is None or len(model.classes) < 3:
        return None
    return recommended_pipeline(model.card, len(model.classes))


def evaluate_regions(
    model: SegmentationModel,
    regions: Sequence[Region],
    *,
    device: Any,
    loss_kind: str = "ce+dice",
    amp: bool = False,
) -> dict[str, float]:
    """Validation metrics of ``model`` on ``regions``.

    Parameters
    ----------
    model : SegmentationModel
        Semantic or instance (Mask R-CNN) model; its module is left in eval mode.
    regions : sequence of Region
        Held-out regions.
    device : torch.device
        Where the module is.
    loss_kind : str
        Loss for ``val_loss`` (semantic models); see :func:`~.losses.segmentation_loss`.
    amp : bool
        Mixed precision (CUDA only).

    Returns
    -------
    dict
        ``val_loss``, ``dice``, ``iou``, ``object_f1``, and ``pixels`` scored.
        For instance models ``val_loss`` is ``1 - dice``. Dice and IoU are
        those of the class map; object F1 that of the objects
        :func:`object_pipeline` names.
    """
    import torch

    module = model.module
    module.eval()
    pipeline = object_pipeline(model)
    tp = fp = fn = 0
    loss_sum = 0.0
    pixels = 0
    f1_sum = 0.0
    f1_weight = 0
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        if model.task == "instance":
            scored = _instance_predictions(model, regions)
        else:
            scored = _semantic_predictions(
                module, regions, device, loss_kind, probabilities=pipeline is not None
            )
        for region, mask, target, truth_ids, pred, loss, prob in scored:
            count = int(mask.sum())
            if model.task == "instance":
                pred_ids = pred
                pred_fg = pred_ids != 0
            else:
                loss_sum += loss * count
                pred_fg = pred != 0
                if pipeline is not None:
                    # The card's sizes are in the image's pixels; a resampled plane has others.
                    zoom = region.plane.zoom
                    here = pipeline if zoom is None else pipeline.resampled(zoom)
                    pred_ids = here.run(prob, class_axis=0)
                else:
                    pred_ids = predicted_objects(pred, model.classes)
            truth_fg = target != 0
            tp += int(np.count_nonzero(pred_fg & truth_fg & mask))
            fp += int(np.count_nonzero(pred_fg & ~truth_fg & mask))
            fn += int(np.count_nonzero(~pred_fg & truth_fg & mask))
            pixels += count
            n_truth = int(np.count_nonzero(np.unique(truth_ids)))
            f1_sum += object_f1(truth_ids, np.where(mask, pred_ids, 0)) * max(n_truth, 1)
            f1_weight += max(n_truth, 1)
    dice = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    iou = 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)
    val_loss = loss_sum / pixels if pixels and model.task != "instance" else 1.0 - dice
    return {
        "val_loss": float(val_loss),
        "dice": float(dice),
        "iou": float(iou),
        "object_f1": float(f1_sum / f1_weight) if f1_weight else 0.0,
        "pixels": int(pixels),
    }


def _crops(regions: Sequence[Region]):
    """Each scored region's crop: (region, rows, cols, mask, target, truth ids)."""
    for region in regions:
        rows, cols = region.bbox(margin=CONTEXT)
        mask = region.mask[rows, cols]
        if not mask.any():
            continue
        target = region.plane.target[rows, cols]
        truth_ids = np.where(mask, region.plane.instances[rows, cols], 0)
        yield region, rows, cols, mask, target, truth_ids


def _instance_predictions(model: SegmentationModel, regions: Sequence[Region]):
    import torch

    for region, rows, cols, mask, target, truth_ids in _crops(regions):
        x = torch.from_numpy(np.ascontiguousarray(region.plane.image[:, rows, cols]))[None]
        detections = model.predict_instances(x)[0]
        pred_ids = np.asarray(model.to_labels(detections))  # type: ignore[attr-defined]
        yield region, mask, target, truth_ids, pred_ids, 0.0, None


def _semantic_predictions(
    module: Any,
    regions: Sequence[Region],
    device: Any,
    loss_kind: str,
    *,
    probabilities: bool = False,
):
    """Class maps and losses of the regions, predicted on ``device`` in batches.

    Crops of the same shape (held-out planes of one data set usually are) go
    through the network together, up to :data:`BATCH_PIXELS` pixels; the loss
    and the class map are computed on the device, so only the class map (one
    byte per pixel) comes back, with the class probabilities (K, H, W) as
    float32 when ``probabilities`` is set (else None). Crops too large for one
    window are predicted window by window (:func:`forward_tiled`).
    """
    import torch

    from .losses import segmentation_loss

    groups: dict[tuple[int, ...], list[tuple[Any, ...]]] = {}
    for item in _crops(regions):
        region, rows, cols = item[:3]
        groups.setdefault(region.plane.image[:, rows, cols].shape, []).append(item)
    for shape, items in groups.items():
        per_batch = max(1, BATCH_PIXELS // (shape[-1] * shape[-2]))
        for start in range(0, len(items), per_batch):
            chunk = items[start : start + per_batch]
            x = torch.from_numpy(
                np.stack([np.ascontiguousarray(it[0].plane.image[:, it[1], it[2]]) for it in chunk])
            ).to(device, non_blocking=True)
            logits = forward_tiled(module, x).float()
            for k, (region, _, _, mask, target, truth_ids) in enumerate(chunk):
                part = logits[k : k + 1]
                tensor_mask = torch.from_numpy(mask)[None].to(device)
                tensor_target = torch.from_numpy(target.astype(np.int64))[None].to(device)
                loss = float(segmentation_loss(part, tensor_target, tensor_mask, kind=loss_kind))
                if part.shape[1] == 1:
                    pred = (part[0, 0] > 0).to(torch.uint8)
                else:
                    pred = part[0].argmax(dim=0).to(torch.uint8)
                prob = None
                if probabilities:
                    prob = part[0].softmax(dim=0) if part.shape[1] > 1 else part[0].sigmoid()
                    prob = prob.cpu().numpy()
                yield region, mask, target, truth_ids, pred.cpu().numpy(), loss, prob


def region_probabilities(
    model: SegmentationModel, regions: Sequence[Region], *, device: Any
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each region's crop: its annotated mask, class targets and class probabilities.

    The crops are those :func:`evaluate_regions` scores (the region's box with
    :data:`CONTEXT` pixels of image around it), so a post-processing run on the
    probabilities sees the context the Segment widget would.

    Yields
    ------
    mask : (h, w) ndarray of bool
    target : (h, w) ndarray of uint8
    prob : (K, h, w) ndarray of float32
        Softmax (or, for one channel, sigmoid) of the logits.
    """
    import torch

    model.module.eval()
    with torch.no_grad():
        for _, mask, target, _, _, _, prob in _semantic_predictions(
            model.module, regions, device, "ce", probabilities=True
        ):
            yield mask, target, prob


def capped_regions(regions: Sequence[Region], max_pixels: int | None) -> list[Region]:
    """At most ``max_pixels`` of held-out pixels, from regions spread evenly over the list."""
    regions = list(regions)
    total = sum(r.pixels for r in regions)
    if not max_pixels or total <= max_pixels or len(regions) <= 1:
        return regions
    keep = max(1, int(len(regions) * max_pixels / total))
    picks = np.unique(np.linspace(0, len(regions) - 1, keep).round().astype(int))
    return [regions[i] for i in picks]


def prefixed(metrics: dict[str, float]) -> dict[str, float]:
    """Metric names as ``Progress.info`` keys: ``dice`` -> ``val_dice``."""
    return {(k if k.startswith("val_") else f"val_{k}"): v for k, v in metrics.items()}


def metrics_text(prefix: str, metrics: dict[str, float]) -> str:
    """One line for a progress message: ``"<prefix>: Dice 0.912, IoU ..."``."""
    if not metrics:
        return prefix
    return (
        f"{prefix}: Dice {metrics['dice']:.3f}, IoU {metrics['iou']:.3f}, "
        f"object F1 {metrics['object_f1']:.3f}, loss {metrics['val_loss']:.4f}"
    )
