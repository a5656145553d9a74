"""Label-image input checks and the sparse contingency table every metric builds on.

Label images: 0 is the background, every other id one object; ids may be any
non-negative integer (uint32, uint64: ids above 65535 are kept, never
wrapped). Masks (boolean, or integers with one non-zero value such as 0/255)
become their connected components where objects are needed
(:func:`as_instances`). Float images are refused with a message saying what
to do.

The overlap of two label images comes from one pass over the pixels: each
pixel's pair of ids becomes one integer key counted with ``bincount`` (or
``unique`` when the dense table would be large), never from per-object passes
over the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi


class LabelImageError(ValueError):
    """A label image cannot be scored; the message says why and what to do."""


def check_labels(image: Any, *, name: str = "The label image") -> np.ndarray:
    """Check that ``image`` is a 2D or 3D mask or label image and return it.

    Parameters
    ----------
    image : array-like
        Boolean mask or non-negative integer labels.
    name : str
        How to call the image in messages.

    Returns
    -------
    ndarray
        ``image`` as an ndarray (no copy when it already is one).

    Raises
    ------
    LabelImageError
        For float data, negative ids, or not 2 or 3 dimensions.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise LabelImageError(
            f"{name} has shape {image.shape}; metrics compare 2D or 3D label images."
        )
    if image.dtype != bool and not np.issubdtype(image.dtype, np.integer):
        raise LabelImageError(
            f"{name} holds {image.dtype} values; metrics compare label images (integer "
            "ids) or masks. Threshold or post-process probability maps first "
            "(microseg postprocess), or save the labels as integers."
        )
    if image.dtype != bool and image.size and image.min() < 0:
        raise LabelImageError(
            f"{name} has negative ids (min {int(image.min())}); ids must be >= 0 "
            "with 0 as background."
        )
    return image


def is_binary(image: np.ndarray) -> bool:
    """True for a mask: boolean, or integers with at most one non-zero value (0/1, 0/255)."""
    if image.dtype == bool:
        return True
    foreground = image[image != 0]
    return foreground.size == 0 or bool(np.all(foreground == foreground.flat[0]))


def as_instances(image: Any, *, name: str = "The label image", connectivity: int = 1) -> np.ndarray:
    """Return a label image; masks become their connected components.

    A boolean mask or an integer image with one non-zero value (0/1, 0/255
    masks) is read as "foreground = > 0" and its objects are its connected
    components. Any other integer image is a label image and kept as is.

    Parameters
    ----------
    image : (M, N[, P]) array-like
        Mask or label image.
    name : str
        How to call the image in messages.
    connectivity : int
        Neighbourhood of a mask's components, 1 (faces) to ``ndim`` (corners).

    Returns
    -------
    labels : (M, N[, P]) ndarray of int

    Examples
    --------
    >>> as_instances(np.array([[255, 0, 255]], np.uint8))
    array([[1, 0, 2]], dtype=uint32)
    """
    image = check_labels(image, name=name)
    if not is_binary(image):
        return image
    structure = ndi.generate_binary_structure(image.ndim, connectivity)
    labels = np.empty(image.shape, dtype=np.uint32)
    ndi.label(image != 0, structure=structure, output=labels)
    return labels


def check_pair(truth: Any, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check a (truth, pred) pair of label images: types, ids and equal shapes."""
    truth = check_labels(truth, name="The ground truth")
    pred = check_labels(pred, name="The prediction")
    if truth.shape != pred.shape:
        raise LabelImageError(
            f"The prediction has shape {pred.shape} but the ground truth has shape "
            f"{truth.shape}; they must cover the same pixels. Check that the right files "
            "are paired and that neither was cropped or resized."
        )
    return truth, pred


def compress_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map ids to 0..n (0 stays background), in increasing id order.

    Returns
    -------
    ids : (n + 1,) ndarray
        ``ids[k]`` is the original id of compressed id ``k``; ``ids[0] == 0``.
    compressed : ndarray of intp, same shape as ``labels``
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    top = int(labels.max()) if labels.size else 0
    if top <= 4 * labels.size + 1024:
        present = np.bincount(labels.ravel().astype(np.intp), minlength=top + 1) > 0
        present[0] = True
        ids = np.flatnonzero(present)
        lut = np.zeros(top + 1, dtype=np.intp)
        lut[ids] = np.arange(ids.size)
        return ids, lut[labels]
    # Huge sparse ids (say 2**40): sort instead of a table indexed by id.
    ids, inverse = np.unique(np.append(labels.ravel(), 0), return_inverse=True)
    return ids, inverse[:-1].reshape(labels.shape)


@dataclass
class Overlap:
    """The sparse contingency table of two label images.

    Attributes
    ----------
    true_ids, pred_ids : ndarray
        Original ids of the objects, background excluded; object ``i`` of the
        arrays below is ``true_ids[i]``.
    true_areas, pred_areas : ndarray of int64
        Pixels per object.
    pairs_true, pairs_pred : ndarray of intp
        Indices (into ``true_ids`` and ``pred_ids``) of every pair of objects
        that share at least one pixel.
    intersections : ndarray of int64
        Shared pixels of each pair.
    true_compressed, pred_compressed : ndarray of intp
        The images with ids 1..n (index + 1), for further per-object work.
    tn, fp, fn, tp : int
        Pixel counts of the foreground (``> 0``) confusion matrix.
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    true_areas: np.ndarray
    pred_areas: np.ndarray
    pairs_true: np.ndarray
    pairs_pred: np.ndarray
    intersections: np.ndarray
    true_compressed: np.ndarray
    pred_compressed: np.ndarray
    tn: int
    fp: int
    fn: int
    tp: int

    @property
    def n_true(self) -> int:
        return int(self.true_ids.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)

    @property
    def ious(self) -> np.ndarray:
        """IoU of each overlapping pair."""
        union = (
            self.true_areas[self.pairs_true] + self.pred_areas[self.pairs_pred] - self.intersections
        )
        return self.intersections / union

    def matrix(self) -> Any:
        """The table as a ``scipy.sparse.csr_array`` of shape ``(n_true, n_pred)``."""
        from scipy import sparse

        return sparse.csr_array(
            (self.intersections, (self.pairs_true, self.pairs_pred)),
            shape=(self.n_true, self.n_pred),
        )


def overlap(truth: Any, pred: Any) -> Overlap:
    """Compute the sparse overlap (contingency) table of two label images.

    One pass over the pixels: each pixel's pair of compressed ids becomes one
    integer key, counted with ``bincount`` (or ``unique`` when the dense table
    would be large).

    Parameters
    ----------
    truth, pred : (M, N[, P]) ndarray of int or bool
        Label images (masks are taken as given: one object per mask).

    Returns
    -------
    Overlap

    Examples
    --------
    >>> table = overlap(np.array([[1, 1, 0, 2]]), np.array([[5, 0, 0, 5]]))
    >>> table.pairs_true, table.pairs_pred, table.intersections
    (array([0, 1]), array([0, 0]), array([1, 1]))
    """
    truth, pred = check_pair(truth, pred)
    true_ids, t = compress_ids(truth)
    pred_ids, p = compress_ids(pred)
    n_t, n_p = true_ids.size, pred_ids.size  # background included
    keys = t.ravel().astype(np.int64) * n_p + p.ravel()
    if n_t * n_p <= max(4 * keys.size, 1 << 22):
        counts = np.bincount(keys, minlength=n_t * n_p).reshape(n_t, n_p)
        rows, cols = np.nonzero(counts)
        values = counts[rows, cols]
    else:
        unique, values = np.unique(keys, return_counts=True)
        rows, cols = np.divmod(unique, n_p)
    true_areas = np.bincount(rows, weights=values, minlength=n_t).astype(np.int64)
    pred_areas = np.bincount(cols, weights=values, minlength=n_p).astype(np.int64)
    both = (rows > 0) & (cols > 0)
    tp = int(values[both].sum())
    fn = int(true_areas[1:].sum()) - tp
    fp = int(pred_areas[1:].sum()) - tp
    tn = int(truth.size) - tp - fn - fp
    return Overlap(
        true_ids=true_ids[1:],
        pred_ids=pred_ids[1:],
        true_areas=true_areas[1:],
        pred_areas=pred_areas[1:],
        pairs_true=rows[both].astype(np.intp) - 1,
        pairs_pred=cols[both].astype(np.intp) - 1,
        intersections=values[both].astype(np.int64),
        true_compressed=t,
        pred_compressed=p,
        tn=tn,
        fp=fp,
        fn=fn,
        tp=tp,
    )


def instance_overlap(truth: Any, pred: Any) -> Overlap:
    """The overlap table of two label images, masks turned into connected components first."""
    truth, pred = check_pair(truth, pred)
    return overlap(
        as_instances(truth, name="The ground truth"), as_instances(pred, name="The prediction")
    )
