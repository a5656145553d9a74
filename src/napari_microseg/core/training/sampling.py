"""Training patches drawn from annotated regions, biased towards objects, augmented.

A patch is centred, with probability ``object_bias``, on a pixel of a random
annotated object (each object equally likely, so small objects are not
drowned by large ones), and otherwise on a random annotated pixel. Regions
are chosen in proportion to their annotated area. The patch is resampled
once, at patch size, straight from the whole plane (:func:`~.augment.sample_patch`),
so a rotation brings image content, not void, into its corners wherever the
plane has some.

Batch ``i`` is made from its own generator, seeded with ``(seed, i)``
(:meth:`PatchSampler.batch`): it is the same whichever process makes it and
whatever was made before, so worker processes (:mod:`.loader`), a resumed
run and an in-process run all see the same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .augment import AugmentConfig, apply_intensity, draw_geometry, draw_intensity, sample_patch
from .data import Plane, Region
from .settings import TrainingError

if TYPE_CHECKING:
    import torch


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
    augment : AugmentConfig, str or dict
        Applied to every patch (``"none"`` for none).
    seed : int
        Seeds every batch's generator (with the batch's index).
    object_bias : float
        Probability that a patch is centred on an object.
    margin : int
        Extra pixels each side of the patch that the augmentations' strengths
        refer to (see :func:`~.augment.window_margin`); the patch's position is
        kept this far inside the plane, as when a window of this size was read.
    weight_fn : callable, optional
        ``weight_fn(plane) -> (H, W) float32`` per-pixel loss weights (the U-Net
        weight map); computed once per plane (:meth:`prepare`) and cropped with
        each patch.
    with_instances : bool
        Also return the patches' object ids (for Mask R-CNN targets).
    """

    def __init__(
        self,
        regions: Sequence[Region],
        *,
        patch_size: int,
        augment: AugmentConfig | str | dict[str, Any] | None = "default",
        seed: int = 0,
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
        self.config = AugmentConfig.from_value(augment)
        self.seed = int(seed)
        self.object_bias = float(object_bias)
        self.weight_fn = weight_fn
        self.with_instances = with_instances
        sizes = np.array([r.pixels for r in self.regions], np.float64)
        self._region_p = sizes / sizes.sum()
        self._objects = [_ObjectIndex(r) for r in self.regions]
        self._boxes = [r.bbox() for r in self.regions]

    def prepare(self, on_plane: Callable[[int, int], None] | None = None) -> None:
        """Compute each plane's weight map once, before any patch (and any worker) needs it.

        ``on_plane(done, total)`` is called after each plane, for progress.
        """
        if self.weight_fn is None:
            return
        planes = list({id(r.plane): r.plane for r in self.regions}.values())
        for done, plane in enumerate(planes, start=1):
            if "weight" not in plane.cache:
                plane.cache["weight"] = np.ascontiguousarray(self.weight_fn(plane), np.float32)
            if on_plane is not None:
                on_plane(done, len(planes))

    # ------------------------------------------------------------------ one patch

    def _center(self, index: int, rng: np.random.Generator) -> tuple[int, int]:
        region, objects = self.regions[index], self._objects[index]
        width = region.mask.shape[1]
        if len(objects) and rng.random() < self.object_bias:
            flat = objects.draw(rng)
            return flat // width, flat % width
        rows, cols = self._boxes[index]
        # Rejection sampling in the bounding box: cheap, and exact for any mask shape.
        for _ in range(64):
            y = int(rng.integers(rows.start, rows.stop))
            x = int(rng.integers(cols.start, cols.stop))
            if region.mask[y, x]:
                return y, x
        ys, xs = np.nonzero(region.mask)
        k = int(rng.integers(len(ys)))
        return int(ys[k]), int(xs[k])

    def _origin(self, center: int, size: int, rng: np.random.Generator) -> int:
        # Jitter, so objects do not always sit in the middle of the patch.
        jitter = int(rng.integers(-(self.patch // 4), self.patch // 4 + 1))
        start = center - self.window // 2 + jitter
        if size >= self.window:
            return min(max(start, 0), size - self.window)
        return (size - self.window) // 2  # the window is larger than the plane: centre it

    def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One augmented patch, drawn with ``rng``.

        Returns
        -------
        dict
            ``image`` (C, P, P) float32, ``target`` (P, P) uint8, ``annotated``
            (P, P) bool, and ``weight`` (P, P) float32 / ``instances`` (P, P)
            when asked for. Pixels outside the plane are not annotated.
        """
        index = int(rng.choice(len(self.regions), p=self._region_p))
        region = self.regions[index]
        plane = region.plane
        cy, cx = self._center(index, rng)
        height, width = plane.shape
        top, left = self._origin(cy, height, rng), self._origin(cx, width, rng)
        # The centre of the window the old pipeline read; the patch is its central part.
        centre = (top + (self.window - 1) / 2, left + (self.window - 1) / 2)
        arrays: dict[str, np.ndarray] = {"target": plane.target, "annotated": region.mask}
        if self.weight_fn is not None:
            if "weight" not in plane.cache:
                plane.cache["weight"] = np.ascontiguousarray(self.weight_fn(plane), np.float32)
            arrays["weight"] = plane.cache["weight"]
        if self.with_instances:
            arrays["instances"] = plane.instances
        shape = (self.patch, self.patch)
        geometry = draw_geometry(self.config, rng, shape, reference=(self.window, self.window))
        image, masks = sample_patch(plane.image, list(arrays.values()), geometry, centre, shape)
        image = apply_intensity(image, draw_intensity(self.config, rng), self.config, rng)
        patch = {"image": image.numpy()}
        patch.update(zip(arrays, masks))
        return patch

    def batch(self, index: int, size: int) -> dict[str, torch.Tensor]:
        """Batch number ``index``: ``size`` patches stacked into tensors.

        Returns
        -------
        dict
            ``image`` (N, C, P, P) float32, ``target`` (N, P, P) int64,
            ``annotated`` (N, P, P) bool, and ``weight`` (N, P, P) float32 /
            ``instances`` (N, P, P) int64 when asked for.
        """
        import torch

        rng = np.random.default_rng([self.seed, int(index)])
        patches = [self.sample(rng) for _ in range(size)]
        out: dict[str, Any] = {}
        for key in patches[0]:
            stacked = np.stack([p[key] for p in patches])
            if key in ("target", "instances"):
                stacked = stacked.astype(np.int64)
            out[key] = torch.from_numpy(np.ascontiguousarray(stacked))
        return out


def training_sampler(
    model: Any, settings: Any, regions: Sequence[Region], *, instance: bool = False
) -> PatchSampler:
    """The patch sampler a training run of ``model`` with ``settings`` draws from.

    Parameters
    ----------
    model : SegmentationModel
        Its classes decide the weight map's classes.
    settings : TrainSettings
        Patch size, augmentation, object bias, seed and the weight map's settings.
    regions : sequence of Region
        The training regions.
    instance : bool
        Patches also carry the instance labels (detection models); no weight map.

    Returns
    -------
    PatchSampler
        Not yet prepared (see :meth:`PatchSampler.prepare`).
    """
    from .augment import window_margin
    from .targets import unet_weight_map

    s = settings
    k = max(model.n_classes, 2)

    def weight_fn(plane: Plane) -> np.ndarray:
        return unet_weight_map(
            plane.instances,
            plane.target,
            n_classes=k,
            annotated=plane.annotated,
            w0=s.w0,
            sigma=s.sigma,
            balance=s.class_balance,
        )

    config = AugmentConfig.from_value(s.augment)
    if config.stain_p > 0 and model.in_channels != 3:
        raise TrainingError(
            f"augment: stain_p {config.stain_p} changes H&E stains, which needs an RGB model "
            f"(3 input channels); {model.name!r} has {model.in_channels}. Set stain_p to 0."
        )
    weights = s.use_edge_weights(model) and not instance
    return PatchSampler(
        regions,
        patch_size=s.patch_size,
        augment=config,
        seed=s.seed,
        object_bias=s.object_bias,
        margin=window_margin(config, s.patch_size),
        weight_fn=weight_fn if weights else None,
        with_instances=instance,
    )
