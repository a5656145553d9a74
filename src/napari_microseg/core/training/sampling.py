"""Training patches drawn from annotated regions, biased towards objects, augmented.

A patch is centred, with probability ``object_bias``, on a pixel of a random
annotated object (each object equally likely, so small objects are not
drowned by large ones), and otherwise on a random annotated pixel. Regions
are chosen in proportion to their annotated area. The window read around the
patch is larger than the patch when geometric augmentations are on, so a
rotation brings image content, not void, into the patch's corners.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import Plane, Region

if TYPE_CHECKING:
    import torch

    from .augment import Augmenter


class _ObjectIndex:
    """Annotated object pixels of a region, grouped by object id, for fast sampling."""

    def __init__(self, region: Region) -> None:
        instances = region.plane.instances
        flat = np.flatnonzero((instances != 0) & region.mask)
        ids = instances.ravel()[flat]
        order = np.argsort(ids, kind="stable")
        self.pixels = flat[order]
        _, self.starts, self.counts = np.unique(ids[order], return_index=True, return_counts=True)

    def __len__(self) -> int:
        return len(self.starts)

    def draw(self, rng: np.random.Generator) -> int:
        k = int(rng.integers(len(self.starts)))
        return int(self.pixels[self.starts[k] + int(rng.integers(self.counts[k]))])


class PatchSampler:
    """Draw augmented training patches from regions of annotated planes.

    Parameters
    ----------
    regions : sequence of Region
        Where the labels count (the training part of the split).
    patch_size : int
        Side P of the square patches.
    augmenter : Augmenter
        Applied to every patch (use the ``"none"`` preset for none).
    rng : numpy.random.Generator
        Drives the choice of regions and positions (seed it for reproducibility).
    object_bias : float
        Probability that a patch is centred on an object.
    margin : int
        Extra pixels read each side of the patch for the geometric augmentations
        (see :func:`~.augment.window_margin`).
    weight_fn : callable, optional
        ``weight_fn(plane) -> (H, W) float32`` per-pixel loss weights (the U-Net
        weight map); computed once per plane and cached on it.
    with_instances : bool
        Also return the patches' object ids (for Mask R-CNN targets).
    """

    def __init__(
        self,
        regions: Sequence[Region],
        *,
        patch_size: int,
        augmenter: Augmenter,
        rng: np.random.Generator,
        object_bias: float = 0.7,
        margin: int = 0,
        weight_fn: Callable[[Plane], np.ndarray] | None = None,
        with_instances: bool = False,
    ) -> None:
        self.regions = [r for r in regions if r.pixels > 0]
        if not self.regions:
            raise ValueError("No annotated pixels to train on.")
        self.patch = int(patch_size)
        self.window = self.patch + 2 * int(margin)
        self.augmenter = augmenter
        self.rng = rng
        self.object_bias = float(object_bias)
        self.weight_fn = weight_fn
        self.with_instances = with_instances
        sizes = np.array([r.pixels for r in self.regions], np.float64)
        self._region_p = sizes / sizes.sum()
        self._objects = [_ObjectIndex(r) for r in self.regions]
        self._boxes = [r.bbox() for r in self.regions]

    # ------------------------------------------------------------------ one patch

    def _center(self, index: int) -> tuple[int, int]:
        region, objects = self.regions[index], self._objects[index]
        width = region.mask.shape[1]
        if len(objects) and self.rng.random() < self.object_bias:
            flat = objects.draw(self.rng)
            return flat // width, flat % width
        rows, cols = self._boxes[index]
        # Rejection sampling in the bounding box: cheap, and exact for any mask shape.
        for _ in range(64):
            y = int(self.rng.integers(rows.start, rows.stop))
            x = int(self.rng.integers(cols.start, cols.stop))
            if region.mask[y, x]:
                return y, x
        ys, xs = np.nonzero(region.mask)
        k = int(self.rng.integers(len(ys)))
        return int(ys[k]), int(xs[k])

    def _origin(self, center: int, size: int) -> int:
        # Jitter, so objects do not always sit in the middle of the patch.
        jitter = int(self.rng.integers(-(self.patch // 4), self.patch // 4 + 1))
        start = center - self.window // 2 + jitter
        if size >= self.window:
            return min(max(start, 0), size - self.window)
        return (size - self.window) // 2  # the window is larger than the plane: centre it

    def sample(self) -> dict[str, np.ndarray]:
        """One augmented patch.

        Returns
        -------
        dict
            ``image`` (C, P, P) float32, ``target`` (P, P) uint8, ``annotated``
            (P, P) bool, and ``weight`` (P, P) float32 / ``instances`` (P, P)
            when asked for. Pixels outside the plane are not annotated.
        """
        index = int(self.rng.choice(len(self.regions), p=self._region_p))
        region = self.regions[index]
        plane = region.plane
        cy, cx = self._center(index)
        height, width = plane.shape
        top, left = self._origin(cy, height), self._origin(cx, width)
        arrays: dict[str, np.ndarray] = {
            "target": plane.target,
            "annotated": region.mask,
        }
        if self.weight_fn is not None:
            if "weight" not in plane.cache:
                plane.cache["weight"] = self.weight_fn(plane)
            arrays["weight"] = plane.cache["weight"]
        if self.with_instances:
            arrays["instances"] = plane.instances
        image = _window(plane.image, top, left, self.window)
        masks = {key: _window(value, top, left, self.window) for key, value in arrays.items()}
        out_size = (self.patch, self.patch) if self.window != self.patch else None
        results = self.augmenter(image, *masks.values(), out_size=out_size)
        patch = {"image": results[0]}
        patch.update(zip(masks, results[1:]))
        return patch

    def batch(self, size: int) -> dict[str, torch.Tensor]:
        """``size`` patches stacked into tensors (``image`` (N, C, P, P) ...)."""
        import torch

        patches = [self.sample() for _ in range(size)]
        out: dict[str, Any] = {}
        for key in patches[0]:
            stacked = np.stack([p[key] for p in patches])
            if key in ("target", "instances"):
                stacked = stacked.astype(np.int64)
            out[key] = torch.from_numpy(np.ascontiguousarray(stacked))
        return out


def _window(array: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """``array[..., top:top+size, left:left+size]``, zero-padded where it leaves the array."""
    height, width = array.shape[-2:]
    out = np.zeros((*array.shape[:-2], size, size), array.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size, height), min(left + size, width)
    if y1 > y0 and x1 > x0:
        out[..., y0 - top : y1 - top, x0 - left : x1 - left] = array[..., y0:y1, x0:x1]
    return out
