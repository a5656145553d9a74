"""Clean masks and label images: components, small objects, holes, opening, closing.

Functions take a boolean mask or a label image (0 is background) in 2D or 3D
and return the same kind. Sizes are in pixels (voxels in 3D), or in physical
units (µm² or µm³) when ``spacing`` gives the voxel size in µm.

Holes are background regions (face-connected) that touch no image border
and are enclosed by a single object. In a label image the hole of an object is
filled with that object's id; a gap enclosed by several touching objects is
not a hole of any of them and stays background.

Label images keep their ids (uint32 or wider, never wrapped at 65535);
:func:`label_components` and :func:`relabel_sequential` make ids 1..n.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy import ndimage as ndi

from .thresholds import iter_slabs


def neighbourhood(ndim: int, connectivity: int) -> np.ndarray:
    """The ``ndim``-D structuring element of neighbours up to ``connectivity`` steps away."""
    if not 1 <= connectivity <= ndim:
        raise ValueError(f"connectivity must be between 1 and {ndim} for {ndim}D data.")
    return ndi.generate_binary_structure(ndim, connectivity)


def _check_image(image: np.ndarray, what: str = "The image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"{what} has shape {image.shape}; expected a 2D or 3D array.")
    if image.dtype != bool and not np.issubdtype(image.dtype, np.integer):
        raise ValueError(
            f"{what} holds {image.dtype} values; expected a boolean mask or integer labels. "
            "Threshold probability maps first."
        )
    return image


def pixels_for(size: float, spacing: Sequence[float] | None, ndim: int) -> float:
    """Convert a size in µm² / µm³ to pixels / voxels; ``spacing=None`` means pixels already.

    Parameters
    ----------
    size : float
        An area (2D) or volume (3D).
    spacing : sequence of float or None
        Voxel size in µm per axis.
    ndim : int
        Number of spatial axes.

    Returns
    -------
    float
        The size in pixels.

    Examples
    --------
    >>> pixels_for(1.0, (0.5, 0.5), 2)
    4.0
    """
    if spacing is None:
        return float(size)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim or min(spacing) <= 0:
        raise ValueError(f"spacing {spacing} must give one positive size per axis ({ndim}).")
    return float(size) / float(np.prod(spacing))


def label_components(mask: np.ndarray, *, connectivity: int = 1) -> np.ndarray:
    """Connected components of a mask as a uint32 label image with ids 1..n.

    Parameters
    ----------
    mask : (M, N[, P]) ndarray of bool
        Foreground.
    connectivity : int
        1 (faces) to ``mask.ndim`` (corners).

    Returns
    -------
    labels : (M, N[, P]) ndarray of uint32
        0 for background, sequential ids in raster order.

    Examples
    --------
    >>> label_components(np.array([[1, 0, 1], [1, 0, 0]], bool))
    array([[1, 0, 2],
           [1, 0, 0]], dtype=uint32)
    """
    mask = np.asarray(mask)
    labels = np.empty(mask.shape, dtype=np.uint32)
    ndi.label(mask, structure=neighbourhood(mask.ndim, connectivity), output=labels)
    return labels


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Renumber a label image to ids 1..n in the order of the old ids, as uint32.

    Like :func:`skimage.segmentation.relabel_sequential` but returns only the
    image, works in place on uint32 input, and goes slab by slab.

    Parameters
    ----------
    labels : (M, N[, P]) ndarray of int
        Object ids; 0 stays background.

    Returns
    -------
    labels : (M, N[, P]) ndarray of uint32
        Sequential ids (uint64 if there are more than 2**32 - 1 objects).
    """
    labels = np.asarray(labels)
    top = int(labels.max()) if labels.size else 0
    if top <= 4 * labels.size + 1024:
        present = np.zeros(top + 1, dtype=bool)
        for index in iter_slabs(labels.shape):
            present[labels[index]] = True
        present[0] = False
        count = int(np.count_nonzero(present))
        dtype = np.uint32 if count < 2**32 else np.uint64
        lut = np.zeros(top + 1, dtype=dtype)
        lut[present] = np.arange(1, count + 1, dtype=dtype)
        out = labels if labels.dtype == dtype else np.empty(labels.shape, dtype=dtype)
        for index in iter_slabs(labels.shape):
            out[index] = lut[labels[index]]
        return out
    # Sparse huge ids (say 2**40): a lookup table would not fit; sort instead.
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    if ids[0] != 0:
        inverse += 1
    return inverse.astype(np.uint32 if ids.size < 2**32 else np.uint64)


def remove_small_objects(
    image: np.ndarray,
    min_size: float,
    *,
    spacing: Sequence[float] | None = None,
    connectivity: int = 1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Remove objects smaller than ``min_size``.

    Parameters
    ----------
    image : (M, N[, P]) ndarray of bool or int
        A mask (objects are its connected components) or a label image.
    min_size : float
        Objects with fewer pixels than this go; in µm² / µm³ when ``spacing`` is given.
    spacing : sequence of float, optional
        Voxel size in µm per axis.
    connectivity : int
        Neighbourhood of a mask's components.
    out : ndarray, optional
        Where to write the result, of ``image``'s shape and type; may be
        ``image`` itself to work in place.

    Returns
    -------
    out : ndarray
        Same type as ``image``: a mask, or labels with their ids kept.

    Notes
    -----
    scikit-image renamed this function's size argument between releases
    (``min_size`` removes ``<``, ``max_size`` removes ``<=``); this version
    removes ``< min_size`` on every release and counts sizes with one
    ``bincount``.

    Examples
    --------
    >>> labels = np.array([[1, 1, 0, 2], [1, 1, 0, 0]])
    >>> remove_small_objects(labels, 2)
    array([[1, 1, 0, 0],
           [1, 1, 0, 0]])
    """
    image = _check_image(image)
    out = _output(image, out)
    min_pixels = pixels_for(min_size, spacing, image.ndim)
    if min_pixels <= 1:
        if out is not image:
            out[...] = image
        return out
    labels = label_components(image, connectivity=connectivity) if image.dtype == bool else image
    if labels.size and labels.min() < 0:
        raise ValueError("Label ids must be >= 0 (0 is background); found negative ids.")
    top = int(labels.max()) if labels.size else 0
    if top > 4 * labels.size + 1024:
        # Sparse huge ids (say 2**40): a table indexed by id would not fit; sort instead.
        _, inverse, counts = np.unique(labels.ravel(), return_inverse=True, return_counts=True)
        keep = (counts[inverse].reshape(labels.shape) >= min_pixels) & (labels > 0)
        out[...] = keep if image.dtype == bool else np.where(keep, labels, 0)
        return out
    keep_id = count_ids(labels, top) >= min_pixels
    keep_id[0] = False
    # Slab by slab, so the temporaries stay small next to a 3D volume.
    for index in iter_slabs(labels.shape):
        keep = keep_id[labels[index]]
        out[index] = keep if image.dtype == bool else np.where(keep, labels[index], 0)
    return out


def count_ids(labels: np.ndarray, top: int) -> np.ndarray:
    """Pixels per id 0..``top``, counted slab by slab.

    ``np.bincount`` casts its input to 8-byte integers; on a whole 3D volume
    that copy alone would be twice the size of uint32 labels.
    """
    counts = np.zeros(top + 1, dtype=np.int64)
    for index in iter_slabs(labels.shape):
        counts += np.bincount(labels[index].ravel().astype(np.intp), minlength=top + 1)
    return counts


def _output(image: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return np.empty_like(image)
    if out.shape != image.shape or out.dtype != image.dtype:
        raise ValueError(f"out must be {image.shape} {image.dtype}; got {out.shape} {out.dtype}.")
    return out


def _hole_owners(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label background regions and find the single object enclosing each.

    Returns ``(holes, owner, sizes)``: the background regions as ids,
    ``owner[h]`` the id of the one object around region ``h`` (0 when it
    touches the image border or several objects), and the size of each region.
    """
    holes = np.empty(labels.shape, dtype=np.uint32)
    n = ndi.label(labels == 0, output=holes)
    sizes = count_ids(holes, n)
    if n == 0:
        return holes, np.zeros(1, dtype=labels.dtype), sizes
    # Lowest and highest object id next to each region; one owner when they agree.
    lowest = np.full(n + 1, np.iinfo(np.uint64).max, dtype=np.uint64)
    highest = np.zeros(n + 1, dtype=np.uint64)
    for h, o in _face_pairs(holes, labels):
        touch = (h > 0) & (o > 0)
        hole_ids, owner_ids = h[touch], o[touch].astype(np.uint64)
        np.minimum.at(lowest, hole_ids, owner_ids)
        np.maximum.at(highest, hole_ids, owner_ids)
    owner = np.where(lowest == highest, highest, 0)
    # Regions on the image border are outside, not holes.
    for axis in range(labels.ndim):
        for end in (0, -1):
            owner[np.take(holes, end, axis=axis)] = 0
    owner[0] = 0
    return holes, owner.astype(labels.dtype), sizes


def _face_pairs(first: np.ndarray, second: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Views of face-neighbouring pixels (``first`` at p, ``second`` at its neighbour q).

    Both directions across every axis, slab by slab along the first axis so
    the caller's temporaries stay small.
    """
    ndim, n0 = first.ndim, first.shape[0]
    for (rows,) in iter_slabs(first.shape):
        a, b = rows.start, rows.stop
        stop = min(b, n0 - 1)
        if stop > a:  # across the first axis, between this slab's rows and the next
            yield first[a:stop], second[a + 1 : stop + 1]
            yield first[a + 1 : stop + 1], second[a:stop]
        for axis in range(1, ndim):
            lo = [slice(a, b)] + [slice(None)] * (ndim - 1)
            hi = list(lo)
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            yield first[tuple(lo)], second[tuple(hi)]
            yield first[tuple(hi)], second[tuple(lo)]


def remove_small_holes(
    image: np.ndarray,
    max_size: float,
    *,
    spacing: Sequence[float] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Fill holes of at most ``max_size`` pixels inside objects.

    Parameters
    ----------
    image : (M, N[, P]) ndarray of bool or int
        A mask or a label image.
    max_size : float
        Holes of this many pixels or fewer are filled; in µm² / µm³ when
        ``spacing`` is given.
    spacing : sequence of float, optional
        Voxel size in µm per axis.
    out : ndarray, optional
        Where to write the result; may be ``image`` itself to work in place.

    Returns
    -------
    out : ndarray
        Same type as ``image``; holes take the id of the object around them.

    Notes
    -----
    Unlike :func:`skimage.morphology.remove_small_holes`, a small background
    region on the image border is not a hole, and in label images a gap
    between several touching objects is not filled.

    Examples
    --------
    >>> ring = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]])
    >>> remove_small_holes(ring, 1)
    array([[1, 1, 1],
           [1, 1, 1],
           [1, 1, 1]])
    """
    image = _check_image(image)
    out = _output(image, out)
    max_pixels = pixels_for(max_size, spacing, image.ndim)
    labels = image.view(np.uint8) if image.dtype == bool else image
    holes, owner, sizes = _hole_owners(labels)
    owner = np.where(sizes <= max_pixels, owner, 0).astype(labels.dtype)
    for index in iter_slabs(labels.shape):
        filled = np.where(holes[index] > 0, owner[holes[index]], labels[index])
        out[index] = filled.view(bool) if image.dtype == bool else filled
    return out


def fill_holes(image: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Fill every hole inside objects.

    Parameters
    ----------
    image : (M, N[, P]) ndarray of bool or int
        A mask or a label image.
    out : ndarray, optional
        Where to write the result; may be ``image`` itself to work in place.

    Returns
    -------
    out : ndarray
        Same type as ``image``; each hole takes the id of the object around it.

    Notes
    -----
    For masks this equals :func:`scipy.ndimage.binary_fill_holes`, computed with
    one connected-component pass instead of iterated dilations.

    Examples
    --------
    >>> two = np.array([[1, 1, 1, 2, 2, 2],
    ...                 [1, 0, 1, 2, 0, 2],
    ...                 [1, 1, 1, 2, 2, 2]])
    >>> fill_holes(two)[1]
    array([1, 1, 1, 2, 2, 2])
    """
    return remove_small_holes(image, np.inf, out=out)


def _footprint_mask(image: np.ndarray, what: str) -> np.ndarray:
    image = _check_image(image, what)
    if image.dtype != bool:
        raise ValueError(
            f"{what} is a label image; opening and closing work on masks. Apply them "
            "before labelling (the pipeline does), or pass labels > 0."
        )
    return image


def opening(
    mask: np.ndarray, radius: float = 1, *, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """Binary opening by a disk (2D) or ball (3D): removes specks and thin bridges.

    Parameters
    ----------
    mask : (M, N[, P]) ndarray of bool
        Foreground.
    radius : float
        Radius of the disk or ball, in pixels, or in µm when ``spacing`` is given.
    spacing : sequence of float, optional
        Voxel size in µm per axis; the ball is round in physical space.

    Returns
    -------
    mask : (M, N[, P]) ndarray of bool

    Notes
    -----
    Uses :func:`skimage.morphology.isotropic_opening`, whose cost does not grow
    with the radius.
    """
    from skimage.morphology import isotropic_opening

    mask = _footprint_mask(mask, "The mask to open")
    if radius <= 0:
        return mask.copy()
    return isotropic_opening(mask, radius, spacing=spacing)


def closing(
    mask: np.ndarray, radius: float = 1, *, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """Binary closing by a disk (2D) or ball (3D): bridges small gaps and notches.

    Parameters
    ----------
    mask : (M, N[, P]) ndarray of bool
        Foreground.
    radius : float
        Radius of the disk or ball, in pixels, or in µm when ``spacing`` is given.
    spacing : sequence of float, optional
        Voxel size in µm per axis.

    Returns
    -------
    mask : (M, N[, P]) ndarray of bool

    Notes
    -----
    Uses :func:`skimage.morphology.isotropic_closing`.
    """
    from skimage.morphology import isotropic_closing

    mask = _footprint_mask(mask, "The mask to close")
    if radius <= 0:
        return mask.copy()
    return isotropic_closing(mask, radius, spacing=spacing)
