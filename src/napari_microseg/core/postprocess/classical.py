"""A classical (no deep learning) segmentation of dark objects, the demo's baseline.

Used by ``microseg demo`` until a bundled model exists for the sample, and as
a reference any trained model must beat.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def segment_dark_objects(
    image: np.ndarray, *, sigma: float = 1.5, min_size: int = 200, opening: int = 2
) -> np.ndarray:
    """Label dark blobs (for example mitochondria in EM) by smoothed Otsu thresholding.

    Parameters
    ----------
    image : (M, N) or (P, M, N) ndarray
        Grey intensities; objects are darker than their surroundings.
    sigma : float
        Gaussian smoothing in pixels before thresholding (suppresses texture).
    min_size : int
        Objects smaller than this many pixels (voxels) are dropped.
    opening : int
        Radius of the binary opening that detaches thin dark membranes.

    Returns
    -------
    labels : ndarray of uint32
        Sequential object ids, 0 for background, the shape of ``image``.
    """
    from skimage.filters import threshold_otsu
    from skimage.morphology import ball, disk, remove_small_objects

    smooth = ndi.gaussian_filter(np.asarray(image, dtype=np.float32), sigma)
    mask = smooth < threshold_otsu(smooth)
    footprint = (ball if image.ndim == 3 else disk)(opening)
    mask = ndi.binary_opening(mask, structure=footprint)
    mask = ndi.binary_fill_holes(mask)
    mask = remove_small_objects(mask, max_size=min_size)
    labels, _ = ndi.label(mask)
    return labels.astype(np.uint32)
