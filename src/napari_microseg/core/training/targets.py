"""From label images to what a network is trained on: class maps, weight maps, instance targets.

* :func:`instance_ids` makes sure labels hold one id per object (a binary
  mask becomes its connected components).
* :func:`class_targets` maps labels to the class indices of a model card:
  background / foreground, or background / foreground / boundary for the
  3-class nuclei models, whose boundary class is derived from the instances.
* :func:`unet_weight_map` is the weight map of the U-Net paper,
  ``w(x) = w_c(x) + w0 exp(-(d1(x) + d2(x))**2 / (2 sigma**2))``, which makes
  the thin background gaps between touching objects count.
* :func:`maskrcnn_targets` turns an instance label image into the boxes,
  masks and labels that torchvision's Mask R-CNN trains on.

NumPy only, except :func:`maskrcnn_targets`, which returns torch tensors.

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
   Biomedical Image Segmentation", MICCAI 2015, eq. (2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi

if TYPE_CHECKING:
    import torch

#: Class names that mean "the border of an object" in a model card.
BOUNDARY_NAMES = ("boundary", "boundaries", "border", "borders", "contour", "contours", "edge")


class TargetError(ValueError):
    """Labels cannot be turned into training targets; the message says why and what to do."""


def boundary_class(classes: Sequence[str]) -> int | None:
    """Index of the boundary class in ``classes``, or None when the model has none."""
    for index, name in enumerate(classes):
        if str(name).strip().lower() in BOUNDARY_NAMES:
            return index
    return None


def instance_ids(labels: np.ndarray) -> np.ndarray:
    """One id per object: instance labels as they are, a binary mask as connected components.

    Parameters
    ----------
    labels : (H, W) or (Z, Y, X) ndarray of int or bool
        0 is background.

    Returns
    -------
    ndarray of int32
        Same shape; a mask with a single non-zero value (a semantic mask such as
        Lucchi's 0/255) becomes its connected components.
    """
    labels = np.asarray(labels)
    values = np.unique(labels)
    values = values[values != 0]
    if values.size <= 1:
        from skimage.measure import label

        return label(labels != 0, connectivity=1).astype(np.int32)
    if values.max() > np.iinfo(np.int32).max:
        _, inverse = np.unique(labels, return_inverse=True)
        return inverse.reshape(labels.shape).astype(np.int32)
    return labels.astype(np.int32, copy=False)


def class_targets(
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    instances: np.ndarray | None = None,
    boundary_width: int = 1,
) -> np.ndarray:
    """Per-pixel class indices for a semantic model with the given classes.

    Parameters
    ----------
    labels : (H, W) ndarray of int
        The user's labels: object ids, or class ids for a model with more than
        two classes and no boundary class.
    classes : sequence of str
        The model card's classes, background first.
    instances : (H, W) ndarray of int, optional
        One id per object (from :func:`instance_ids`); computed when needed.
    boundary_width : int
        Width in pixels of the boundary class, drawn inside each object.

    Returns
    -------
    (H, W) ndarray of uint8
        - 1 class (sigmoid): 1 on objects, 0 elsewhere;
        - background / foreground: 1 on objects;
        - with a boundary class: the object's border pixels get that class, the
          other object pixels the first non-background, non-boundary class;
        - otherwise (several classes): the label values are the class indices.

    Raises
    ------
    TargetError
        If labels hold class ids beyond the model's classes.
    """
    labels = np.asarray(labels)
    n_classes = len(classes)
    border = boundary_class(classes)
    if n_classes <= 2:
        return (labels != 0).astype(np.uint8)
    if border is not None:
        from skimage.segmentation import find_boundaries

        ids = instance_ids(labels) if instances is None else instances
        objects = ids != 0
        edge = find_boundaries(ids, mode="inner") & objects
        if boundary_width > 1:
            edge = ndi.binary_dilation(edge, iterations=boundary_width - 1) & objects
        inside = next(i for i in range(1, n_classes) if i != border)
        target = np.where(objects, inside, 0).astype(np.uint8)
        target[edge] = border
        return target
    top = int(labels.max(initial=0))
    if top >= n_classes or labels.min(initial=0) < 0:
        raise TargetError(
            f"The labels hold values up to {top}, but the model has {n_classes} classes "
            f"({', '.join(classes)}): for this model every label value must be a class index "
            f"from 0 to {n_classes - 1}. Paint with class values, not object ids."
        )
    return labels.astype(np.uint8)


def class_balance(
    target: np.ndarray,
    n_classes: int,
    *,
    annotated: np.ndarray | None = None,
    power: float = 1.0,
) -> np.ndarray:
    """Per-class weights that balance class frequencies: the ``w_c`` of the U-Net paper.

    Parameters
    ----------
    target : ndarray of int
        Class indices.
    n_classes : int
        K (at least 2 entries are returned, for a 1-class sigmoid model).
    annotated : ndarray of bool, optional
        Only these pixels are counted.
    power : float
        1 weighs each class by its inverse frequency; 0.5 by its inverse square
        root (gentler); 0 gives all ones.

    Returns
    -------
    (max(K, 2),) ndarray of float32
        Weights with a pixel-weighted mean of 1 over the counted pixels; a class
        that does not occur gets weight 1.
    """
    values = target[annotated] if annotated is not None else target.ravel()
    size = max(n_classes, 2)
    counts = np.bincount(values.astype(np.int64), minlength=size)[:size].astype(np.float64)
    weights = np.ones(size)
    present = counts > 0
    if power == 0 or present.sum() < 2:
        return weights.astype(np.float32)
    freq = counts[present] / counts.sum()
    weights[present] = freq ** (-power)
    mean = (weights[present] * freq).sum()
    weights[present] /= mean
    return weights.astype(np.float32)


def unet_weight_map(
    instances: np.ndarray,
    target: np.ndarray | None = None,
    *,
    n_classes: int = 2,
    annotated: np.ndarray | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
    balance: float = 1.0,
) -> np.ndarray:
    """The U-Net weight map ``w(x) = w_c(x) + w0 exp(-(d1 + d2)**2 / (2 sigma**2))``.

    Parameters
    ----------
    instances : (H, W) ndarray of int
        One id per object, 0 for background.
    target : (H, W) ndarray of int, optional
        Class indices for the class-balancing term ``w_c``; ``instances > 0`` if omitted.
    n_classes : int
        K of the model.
    annotated : (H, W) ndarray of bool, optional
        Class frequencies are counted on these pixels only.
    w0 : float
        Height of the border term (10 in the paper).
    sigma : float
        Its width in pixels (5 in the paper).
    balance : float
        Exponent of the class balancing, see :func:`class_balance`.

    Returns
    -------
    (H, W) ndarray of float32
        ``d1`` and ``d2`` are the distances to the nearest and second nearest
        object; the border term is added on background pixels only, where it
        peaks in the narrow gaps between touching objects.

    Notes
    -----
    The border term is below ``w0 / 1000`` once ``d1 + d2 > 3.72 sigma``, so each
    object's distance map is only computed in its bounding box grown by that
    much: the cost grows with the objects' area, not with their number times
    the image size.
    """
    instances = np.asarray(instances)
    target = (instances > 0).astype(np.uint8) if target is None else np.asarray(target)
    weights = class_balance(target, n_classes, annotated=annotated, power=balance)
    w = weights[np.clip(target.astype(np.int64), 0, len(weights) - 1)].astype(np.float32)
    if w0 <= 0 or sigma <= 0:
        return w
    reach = math.ceil(sigma * math.sqrt(2 * math.log(1000)))
    d1 = np.full(instances.shape, np.inf, np.float32)
    d2 = np.full(instances.shape, np.inf, np.float32)
    boxes = ndi.find_objects(instances)
    for index, box in enumerate(boxes, start=1):
        if box is None:
            continue
        window = tuple(
            slice(max(s.start - reach, 0), min(s.stop + reach, n))
            for s, n in zip(box, instances.shape)
        )
        dist = ndi.distance_transform_edt(instances[window] != index).astype(np.float32)
        near1, near2 = d1[window], d2[window]
        closer = dist < near1
        near2[:] = np.where(closer, near1, np.minimum(near2, dist))
        near1[:] = np.where(closer, dist, near1)
    both = np.isfinite(d2) & (instances == 0)
    w[both] += w0 * np.exp(-((d1[both] + d2[both]) ** 2) / (2 * sigma**2))
    return w


def maskrcnn_targets(
    instances: np.ndarray,
    *,
    annotated: np.ndarray | None = None,
    min_area: int = 4,
    min_annotated: float = 0.5,
) -> dict[str, torch.Tensor]:
    """The training target of torchvision's Mask R-CNN for one instance label image.

    Parameters
    ----------
    instances : (H, W) ndarray of int
        One id per object.
    annotated : (H, W) ndarray of bool, optional
        Objects mostly outside it (less than ``min_annotated`` of their pixels
        annotated) are left out, since their extent is unknown. Mask R-CNN has
        no per-pixel loss to mask, so sparse annotation is honoured per object;
        the trainer draws its patches from annotated regions.
    min_area : int
        Objects with fewer pixels (slivers cut off by a patch border) are left out.
    min_annotated : float
        See ``annotated``.

    Returns
    -------
    dict
        ``boxes`` ``(M, 4)`` float32 ``(x0, y0, x1, y1)`` with exclusive ends, so a
        one-pixel object has a box of size 1; ``labels`` ``(M,)`` int64, all 1
        (one object class); ``masks`` ``(M, H, W)`` uint8.
    """
    import torch

    instances = np.asarray(instances)
    boxes, masks = [], []
    for index, box in enumerate(ndi.find_objects(instances.astype(np.int64)), start=1):
        if box is None:
            continue
        mask = instances == index
        area = int(mask.sum())
        if area < min_area:
            continue
        if annotated is not None and (annotated & mask).sum() < min_annotated * area:
            continue
        rows, cols = box
        boxes.append([cols.start, rows.start, cols.stop, rows.stop])
        masks.append(mask)
    height, width = instances.shape
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(boxes), dtype=torch.int64),
        "masks": torch.from_numpy(
            np.stack(masks).astype(np.uint8) if masks else np.zeros((0, height, width), np.uint8)
        ),
    }


def describe_targets(target: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Pixel count per class name (for logs and lineage)."""
    counts = np.bincount(target.ravel().astype(np.int64), minlength=len(classes))
    names = list(classes) if len(classes) > 1 else ["background", *classes]
    return {str(name): int(count) for name, count in zip(names, counts)}
