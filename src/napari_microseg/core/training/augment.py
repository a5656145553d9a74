"""Data augmentation for training and fine-tuning: one geometry for an image and its masks.

The augmentations are those of the source reports:

* random crop (to 75 % by default) resized back, horizontal and vertical
  flips, rotation by a random angle in [-90, 90] and elastic deformation
  (Sawicki et al.: crop p=0.5, flips p=0.5, rotation p=0.5, elastic p=1,
  Gaussian noise of sigma 0.01-0.03 p=0.2, median blur and sharpening p=0.2);
* rotations by multiples of 90 degrees and radial (barrel, pincushion,
  moustache) distortion (Micro-Net reproduction);
* zoom, shear and shift (the Keras ``ImageDataGenerator`` of the ISBI report);
* piecewise-affine distortion (the DSB 2018 report, imgaug's
  ``PiecewiseAffine`` with point scale 0.01-0.04).

torchvision.transforms.v2 does the resampling: ``functional.affine`` for the
crop, rotation, zoom, shear and shift (composed into one transform) and
``functional.elastic`` for the elastic field of ``ElasticTransform`` plus
the radial or piecewise distortion (summed into one displacement field), so
an image is resampled at most twice however many augmentations fire, and
``tv_tensors.Mask`` inputs are resampled with nearest neighbour and keep
their integer values. This module adds what v2 lacks: exact rotations by 90
degrees, radial and piecewise distortion fields, noise scaled to the image's
range, median blur and alpha-blended sharpening.

Masks (labels, class targets, the annotated-region mask, weight maps) are
never interpolated into new values. Pixels that a geometric transform brings
in from outside the input are 0 in every mask, so the annotated-region mask
marks them as not annotated and no loss counts them.

Examples
--------
>>> image = np.random.default_rng(0).random((64, 64), dtype=np.float32)
>>> labels = (image > 0.5).astype(np.uint16)
>>> augment = Augmenter(seed=1)
>>> out_image, out_labels = augment(image, labels)
>>> out_image.shape, out_labels.dtype, set(np.unique(out_labels)) <= {0, 1}
((64, 64), dtype('uint16'), True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from .augment_ops import median_blur, piecewise_field, radial_field, sharpen

#: Largest label value that survives the float32 resampling in torchvision exactly.
_EXACT_FLOAT32 = 2**24


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply, how strongly, and with what probability.

    Every ``*_p`` is the probability of that augmentation per call (0 turns it off).

    Parameters
    ----------
    crop_p, crop_fraction : float
        Crop a random window of ``crop_fraction`` of each side and resize it back
        (a zoom in by ``1 / crop_fraction``).
    hflip_p, vflip_p : float
        Mirror left-right, top-bottom.
    rot90_p : float
        Rotate by 90, 180 or 270 degrees (exact, no interpolation; 180 only for
        non-square inputs, so the shape is kept).
    rotate_p, rotate_degrees : float
        Rotate by a uniform random angle in ``[-rotate_degrees, rotate_degrees]``.
    affine_p : float
        Random zoom, shear and shift together.
    zoom : (float, float)
        Scale factor range of the affine transform.
    shear : float
        Shear angle range in degrees, ``[-shear, shear]``.
    shift : float
        Translation range as a fraction of the size.
    elastic_p : float
        Elastic deformation (torchvision's ``ElasticTransform``).
    elastic_alpha : (float, float)
        Range of the field strength, in torchvision's units: the pixel displacement
        is ``alpha / 2`` times Gaussian-smoothed uniform noise. With ``sigma = 5``,
        ``alpha = 50`` moves pixels by 0.8 px RMS and up to about 3 px.
    elastic_sigma : float
        Smoothness of the field (standard deviation of the smoothing, pixels).
    distort_p : float
        Radial or piecewise distortion (one of ``distort_kinds`` at random).
    distort_kinds : tuple of str
        From ``"radial"`` (barrel / pincushion / moustache) and ``"piecewise"``.
    radial_k : float
        Largest radial coefficient magnitude: a point at normalized radius r is
        sampled from radius ``r (1 + k1 r**2 + k2 r**4)``, ``k1, k2`` in
        ``[-radial_k, radial_k]``.
    piecewise_grid : int
        Control points per side of the piecewise distortion.
    piecewise_scale : (float, float)
        Range of the standard deviation of the control points' displacement, as a
        fraction of the size (imgaug's ``scale``).
    noise_p, noise_sigma : float, (float, float)
        Add Gaussian noise whose standard deviation is a random fraction in
        ``noise_sigma`` of the patch's intensity range.
    blur_p, median_size : float, int
        Median filter of ``median_size`` x ``median_size`` pixels.
    sharpen_p, sharpen_alpha : float, (float, float)
        Sharpen with a Laplacian kernel and alpha-blend the result with the
        original, alpha in ``sharpen_alpha``.
    """

    crop_p: float = 0.5
    crop_fraction: float = 0.75
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    rot90_p: float = 0.5
    rotate_p: float = 0.5
    rotate_degrees: float = 90.0
    affine_p: float = 0.3
    zoom: tuple[float, float] = (0.85, 1.2)
    shear: float = 8.0
    shift: float = 0.05
    elastic_p: float = 0.5
    elastic_alpha: tuple[float, float] = (30.0, 90.0)
    elastic_sigma: float = 5.0
    distort_p: float = 0.2
    distort_kinds: tuple[str, ...] = ("radial", "piecewise")
    radial_k: float = 0.15
    piecewise_grid: int = 4
    piecewise_scale: tuple[float, float] = (0.01, 0.04)
    noise_p: float = 0.2
    noise_sigma: tuple[float, float] = (0.01, 0.03)
    blur_p: float = 0.2
    median_size: int = 3
    sharpen_p: float = 0.2
    sharpen_alpha: tuple[float, float] = (0.2, 0.5)

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_p") and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"Augmentation {item.name} must be in [0, 1], got {value!r}.")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}.")
        unknown = set(self.distort_kinds) - {"radial", "piecewise"}
        if unknown:
            raise ValueError(f"Unknown distortion(s) {sorted(unknown)}; use radial, piecewise.")
        if self.median_size < 1 or self.median_size % 2 == 0:
            raise ValueError(f"median_size must be odd and positive, got {self.median_size!r}.")
        if self.piecewise_grid < 2:
            raise ValueError(f"piecewise_grid must be at least 2, got {self.piecewise_grid!r}.")

    @property
    def geometric(self) -> bool:
        """True when a transform may bring in pixels from outside the input (rotation...)."""
        return any(
            getattr(self, name) > 0 for name in ("rotate_p", "affine_p", "elastic_p", "distort_p")
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable settings (for model lineage)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def preset(cls, name: str) -> AugmentConfig:
        """A named configuration.

        Parameters
        ----------
        name : {"default", "light", "none"}
            ``"default"``: everything above. ``"light"``: flips, 90-degree
            rotations and intensity changes only (nothing is resampled, so it is
            fast and exact). ``"none"``: no augmentation.
        """
        if name == "default":
            return cls()
        off = {item.name: 0.0 for item in fields(cls) if item.name.endswith("_p")}
        if name == "none":
            return cls(**off)
        if name == "light":
            keep = ("hflip_p", "vflip_p", "rot90_p", "noise_p", "blur_p", "sharpen_p")
            return replace(cls(**off), **{k: getattr(cls(), k) for k in keep})
        raise ValueError(f"Unknown augmentation preset {name!r}; use default, light or none.")

    @classmethod
    def from_value(cls, value: AugmentConfig | str | dict[str, Any] | None) -> AugmentConfig:
        """A config from a preset name, a dict of fields (over the defaults) or None (none)."""
        if isinstance(value, AugmentConfig):
            return value
        if value is None:
            return cls.preset("none")
        if isinstance(value, str):
            return cls.preset(value)
        if isinstance(value, dict):
            data = dict(value)
            base = cls.preset(str(data.pop("preset", "default")))
            known = {item.name for item in fields(cls)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ValueError(
                    f"Unknown augmentation setting(s) {', '.join(unknown)}; known: "
                    f"{', '.join(sorted(known))}."
                )
            data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
            return replace(base, **data)
        raise TypeError(f"Cannot make an augmentation config from {type(value).__name__}.")


class Augmenter:
    """Apply random augmentations identically to an image and any number of masks.

    Parameters
    ----------
    config : AugmentConfig, str or dict, optional
        What to apply (see :meth:`AugmentConfig.from_value`); the default set if omitted.
    seed : int, optional
        Seed of the augmenter's own random stream: the same seed gives the same
        sequence of augmentations, whatever else uses torch's random generator.

    Notes
    -----
    Images are resampled bilinearly, masks with nearest neighbour. Label ids
    of any size come back unchanged (ids of 2**24 and above are renumbered
    internally, since torchvision resamples masks in float32).
    """

    def __init__(self, config: AugmentConfig | str | dict | None = "default", *, seed: int = 0):
        self.config = AugmentConfig.from_value(config)
        self._state = torch.Generator().manual_seed(int(seed)).get_state()

    # The state travels with training checkpoints, so a resumed run continues the same stream.
    def get_state(self) -> torch.Tensor:
        """The random state (a uint8 tensor), for checkpoints."""
        return self._state.clone()

    def set_state(self, state: torch.Tensor) -> None:
        """Restore a state from :meth:`get_state`."""
        self._state = state.clone()

    def __call__(
        self, image: Any, *masks: Any, out_size: tuple[int, int] | None = None
    ) -> tuple[Any, ...]:
        """Augment ``image`` and ``masks`` with one random geometry.

        Parameters
        ----------
        image : (H, W) or (C, H, W) ndarray or tensor
            Intensities, any float or integer type (computed in float32).
        *masks : (H, W) ndarray or tensor
            Label images, class maps, boolean masks or float weight maps; each is
            resampled with nearest neighbour and keeps its dtype.
        out_size : (int, int), optional
            Centre-crop everything to this size after the geometric transforms
            (pass a larger input than needed so rotations bring in no empty
            corners).

        Returns
        -------
        tuple
            The image and the masks, in order, of the input kinds (NumPy or torch)
            and dtypes; the image is float32.
        """
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._state)
            result = self._apply(image, masks, out_size)
            self._state = torch.get_rng_state()
        return result

    # ------------------------------------------------------------------ internals

    def _apply(self, image: Any, masks: tuple[Any, ...], out_size: tuple[int, int] | None):
        cfg = self.config
        img, squeeze, img_numpy = _image_tensor(image)
        mask_tensors, restore = zip(*(_mask_tensor(m) for m in masks)) if masks else ((), ())
        items: tuple[Any, ...] = (tv_tensors.Image(img), *mask_tensors)
        height, width = img.shape[-2:]

        if _chance(cfg.hflip_p):
            items = tuple(TF.horizontal_flip(t) for t in items)
        if _chance(cfg.vflip_p):
            items = tuple(TF.vertical_flip(t) for t in items)
        if _chance(cfg.rot90_p):
            # Exact: a quarter turn needs no interpolation, and keeps a square's shape.
            k = int(torch.randint(1, 4, ()).item()) if height == width else 2
            items = tuple(_rewrap(t, torch.rot90(t, k, dims=(-2, -1))) for t in items)
        # Every resampling blurs the image and may move a mask edge by half a pixel, so the
        # crop, rotation, zoom, shear and shift become one affine transform, and the elastic
        # and distortion fields one displacement field: at most two resamplings in all.
        affine = self._affine_params(height, width)
        if affine is not None:
            items = tuple(
                TF.affine(t, **affine, interpolation=InterpolationMode.BILINEAR, fill=0)
                for t in items
            )
        displacement = self._displacement(items, height, width)
        if displacement is not None:
            items = tuple(
                TF.elastic(t, displacement, interpolation=InterpolationMode.BILINEAR, fill=0)
                for t in items
            )
        if out_size is not None:
            items = tuple(TF.center_crop(t, list(out_size)) for t in items)

        img = items[0].as_subclass(torch.Tensor)
        if _chance(cfg.noise_p):
            low, high = img.amin(), img.amax()
            sigma = _uniform(*cfg.noise_sigma) * float(high - low)
            img = img + sigma * torch.randn_like(img)
        if _chance(cfg.blur_p) and cfg.median_size > 1:
            img = median_blur(img, cfg.median_size)
        if _chance(cfg.sharpen_p):
            img = sharpen(img, _uniform(*cfg.sharpen_alpha))

        out_image = img[0] if squeeze else img
        out_image = out_image.numpy() if img_numpy else out_image
        out_masks = [fn(t.as_subclass(torch.Tensor)) for fn, t in zip(restore, items[1:])]
        return (out_image, *out_masks)

    def _affine_params(self, height: int, width: int) -> dict[str, Any] | None:
        """Parameters of ``TF.affine`` for the crop, rotation and zoom/shear/shift drawn."""
        cfg = self.config
        crop = _chance(cfg.crop_p) and cfg.crop_fraction < 1
        rotate = _chance(cfg.rotate_p) and cfg.rotate_degrees > 0
        affine = _chance(cfg.affine_p)
        if not (crop or rotate or affine):
            return None
        angle, scale, shift_x, shift_y, shear = 0.0, 1.0, 0.0, 0.0, [0.0, 0.0]
        if crop:
            # A random window of crop_fraction of the image, resized back to full size.
            fraction = cfg.crop_fraction
            scale /= fraction
            reach = (1 - fraction) / (2 * fraction)
            shift_x += _uniform(-reach, reach) * width
            shift_y += _uniform(-reach, reach) * height
        if rotate:
            angle = _uniform(-cfg.rotate_degrees, cfg.rotate_degrees)
        if affine:
            scale *= _uniform(*cfg.zoom)
            shift_x += _uniform(-cfg.shift, cfg.shift) * width
            shift_y += _uniform(-cfg.shift, cfg.shift) * height
            shear = [_uniform(-cfg.shear, cfg.shear), _uniform(-cfg.shear, cfg.shear)]
        return {
            "angle": angle,
            "translate": [round(shift_x), round(shift_y)],
            "scale": scale,
            "shear": shear,
        }

    def _displacement(self, items: tuple[Any, ...], height: int, width: int):
        """The elastic field (torchvision's) plus a radial or piecewise distortion, or None."""
        cfg = self.config
        field = None
        if _chance(cfg.elastic_p):
            alpha = _uniform(*cfg.elastic_alpha)
            elastic = v2.ElasticTransform(alpha=alpha, sigma=cfg.elastic_sigma)
            field = elastic.make_params(list(items))["displacement"]
        if _chance(cfg.distort_p) and cfg.distort_kinds:
            kind = cfg.distort_kinds[int(torch.randint(len(cfg.distort_kinds), ()).item())]
            if kind == "radial":
                k1, k2 = (_uniform(-cfg.radial_k, cfg.radial_k) for _ in range(2))
                extra = radial_field(height, width, k1, k2)
            else:
                sigma = _uniform(*cfg.piecewise_scale)
                # Normalized coordinates span 2: a shift of sigma * size is 2 * sigma.
                points = cfg.piecewise_grid
                extra = piecewise_field(height, width, torch.randn(2, points, points) * 2 * sigma)
            field = extra if field is None else field + extra
        return field


# ----------------------------------------------------------------------------- helpers


def _chance(p: float) -> bool:
    # Always draw, so a config change of one probability does not shift the others' stream.
    draw = float(torch.rand(()).item())
    return draw < p


def _uniform(low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand(()).item())


def _rewrap(like: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    return tv_tensors.wrap(data.contiguous(), like=like)


def _image_tensor(image: Any) -> tuple[torch.Tensor, bool, bool]:
    is_numpy = not isinstance(image, torch.Tensor)
    tensor = torch.as_tensor(np.asarray(image) if is_numpy else image)
    if tensor.ndim not in (2, 3):
        raise ValueError(f"The image must be (H, W) or (C, H, W), got shape {tuple(tensor.shape)}.")
    squeeze = tensor.ndim == 2
    tensor = tensor[None] if squeeze else tensor
    return tensor.to(torch.float32), squeeze, is_numpy


def _mask_tensor(mask: Any):
    """The mask as a ``tv_tensors.Mask`` and a function restoring the caller's kind and dtype."""
    is_numpy = not isinstance(mask, torch.Tensor)
    array = np.asarray(mask) if is_numpy else mask.detach().cpu().numpy()
    if array.ndim != 2:
        raise ValueError(f"Masks must be (H, W), got shape {array.shape}.")
    dtype = array.dtype
    lookup = None
    if array.dtype.kind == "f":
        data = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    else:
        values = array.astype(np.int64)
        if values.size and (values.max() >= _EXACT_FLOAT32 or values.min() < 0):
            # Renumber so float32 resampling is exact; the lookup table restores the ids.
            lookup, values = np.unique(values, return_inverse=True)
            values = values.reshape(array.shape)
        data = torch.from_numpy(np.ascontiguousarray(values))
    device = mask.device if not is_numpy else None

    def restore(out: torch.Tensor) -> Any:
        result = out.cpu().numpy()
        if lookup is not None:
            result = lookup[result]
        result = result.astype(dtype, copy=False)
        if is_numpy:
            return result
        return torch.from_numpy(result).to(device)

    return tv_tensors.Mask(data), restore


def window_margin(config: AugmentConfig, patch: int) -> int:
    """Extra pixels per side to read around a patch so geometric transforms bring in no void.

    A rotation by 45 degrees needs a window ``sqrt(2)`` times the patch side;
    zoom-out, shift and distortions are covered by the same margin.
    """
    if not config.geometric:
        return 0
    return math.ceil((math.sqrt(2) - 1) / 2 * patch)
