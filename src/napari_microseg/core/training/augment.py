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
  ``PiecewiseAffine`` with point scale 0.01-0.04);
* for H&E, a change of the amount of each stain (Tellez et al. 2018; off
  unless a config asks for it with ``stain_p``).

Every geometric augmentation that fires becomes part of one map from output
pixels to input coordinates (:class:`Geometry`): flips, quarter turns, the
crop, rotation, zoom, shear and shift as one 2x2 matrix and offset, the
elastic field plus the radial or piecewise distortion as one displacement
field. The patch is then resampled once, at patch size, straight from the
whole plane (:func:`sample_patch`): no window is resampled and cropped, no
void is brought in where the plane has content, and the image is blurred by
one bilinear interpolation only. The elastic field is torchvision's
``ElasticTransform`` (Gaussian-smoothed uniform noise, ``alpha / 2`` pixels
per unit), drawn on a grid of half its smoothness and upsampled
(:func:`~.augment_ops.smooth_field`), with the same strength and correlation
length. When only flips and quarter turns fire, nothing is interpolated.

Masks (labels, class targets, the annotated-region mask, weight maps) are
sampled with nearest neighbour by index, so they keep their dtype and never
get new values. Pixels that come from outside the input are 0 in every mask,
so the annotated-region mask marks them as not annotated and no loss counts
them.

All random draws come from a ``numpy.random.Generator`` the caller passes,
so a patch depends only on that generator's seed (the data pipeline seeds
one per batch, :mod:`.loader`).

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

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from .augment_ops import (
    coarse_shape,
    gather_nearest,
    linear_weights,
    median_blur,
    nearest_index,
    perturb_stains,
    resample_bilinear,
    sharpen,
    smooth_field,
)


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
        Elastic deformation (torchvision's ``ElasticTransform`` field, drawn
        coarse and upsampled).
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
    stain_p, stain_sigma : float
        H&E stain augmentation of RGB images normalized to [0, 1]
        (:func:`~.augment_ops.perturb_stains`): the density of haematoxylin,
        eosin and DAB each scaled by a factor in ``[1 - stain_sigma, 1 +
        stain_sigma]`` and shifted by ``[-stain_sigma, stain_sigma]`` (Tellez
        et al. 2018: 0.05 "light", 0.2 "strong"). Off (0) in every preset: it
        needs a 3-channel model; a config turns it on, e.g.
        ``augment: {preset: default, stain_p: 0.5}``.
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
    stain_p: float = 0.0
    stain_sigma: float = 0.05

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
        if not 0.0 <= self.stain_sigma < 1.0:
            raise ValueError(f"stain_sigma must be in [0, 1), got {self.stain_sigma!r}.")

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


@dataclass
class Geometry:
    """One draw of the geometric augmentations: output pixel -> input coordinates.

    An output pixel at offset ``u`` (x, y) from the output's centre samples the
    input at ``centre + linear @ (u + field(u)) + offset``.

    Attributes
    ----------
    linear : (2, 2) ndarray of float64
        Flips, quarter turns, and the inverse of the crop, rotation, zoom and shear.
    offset : (2,) ndarray of float64
        Shift in input pixels (x, y).
    field : (2, h, w) ndarray of float32 or None
        Elastic plus radial or piecewise displacement in output pixels (x, y).
    exact : bool
        Only flips and quarter turns: the patch is cut and turned, not interpolated.
    """

    linear: np.ndarray
    offset: np.ndarray
    field: np.ndarray | None
    exact: bool


@dataclass
class Intensity:
    """One draw of the intensity augmentations: noise fraction, median blur, sharpening, stains.

    ``stains`` is ``(scale, shift)``, each (3,) for haematoxylin, eosin and DAB.
    """

    noise: float | None = None
    blur: bool = False
    sharpen: float | None = None
    stains: tuple[np.ndarray, np.ndarray] | None = None


def _chance(rng: np.random.Generator, p: float) -> bool:
    # Always draw, so a config change of one probability does not shift the others' stream.
    return float(rng.random()) < p


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(low + (high - low) * rng.random())


def draw_geometry(
    config: AugmentConfig,
    rng: np.random.Generator,
    shape: tuple[int, int],
    reference: tuple[int, int] | None = None,
) -> Geometry:
    """Draw the geometric augmentations of one patch.

    Parameters
    ----------
    config : AugmentConfig
    rng : numpy.random.Generator
    shape : (int, int)
        Output size (h, w).
    reference : (int, int), optional
        The size the strengths refer to (shift and crop fractions, radial
        radius, piecewise grid): the window the augmentation used to transform
        (``patch + 2 window_margin``), so their pixel sizes stay those of
        earlier versions; ``shape`` by default.

    Returns
    -------
    Geometry
    """
    cfg = config
    ref_h, ref_w = reference or shape
    linear = np.eye(2)
    # Flips and quarter turns act on the output's offsets: exact permutations.
    if _chance(rng, cfg.hflip_p):
        linear = linear @ np.diag([-1.0, 1.0])
    if _chance(rng, cfg.vflip_p):
        linear = linear @ np.diag([1.0, -1.0])
    if _chance(rng, cfg.rot90_p):
        k = int(rng.integers(1, 4)) if shape[0] == shape[1] else 2
        quarter = np.array([[0.0, -1.0], [1.0, 0.0]])
        linear = linear @ np.linalg.matrix_power(quarter, k)
    resampled = False
    offset = np.zeros(2)
    crop = _chance(rng, cfg.crop_p) and cfg.crop_fraction < 1
    rotate = _chance(rng, cfg.rotate_p) and cfg.rotate_degrees > 0
    affine = _chance(rng, cfg.affine_p)
    if crop or rotate or affine:
        resampled = True
        angle, scale, shift, shear = 0.0, 1.0, np.zeros(2), (0.0, 0.0)
        if crop:
            # A random window of crop_fraction of the reference, resized back to full size.
            fraction = cfg.crop_fraction
            scale /= fraction
            reach = (1 - fraction) / (2 * fraction)
            shift += [_uniform(rng, -reach, reach) * ref_w, _uniform(rng, -reach, reach) * ref_h]
        if rotate:
            angle = _uniform(rng, -cfg.rotate_degrees, cfg.rotate_degrees)
        if affine:
            scale *= _uniform(rng, *cfg.zoom)
            shift += [
                _uniform(rng, -cfg.shift, cfg.shift) * ref_w,
                _uniform(rng, -cfg.shift, cfg.shift) * ref_h,
            ]
            shear = (_uniform(rng, -cfg.shear, cfg.shear), _uniform(rng, -cfg.shear, cfg.shear))
        theta = math.radians(angle)
        rotation = np.array(
            [[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]
        )
        shearing = np.array(
            [[1.0, math.tan(math.radians(shear[0]))], [math.tan(math.radians(shear[1])), 1.0]]
        )
        forward = scale * rotation @ shearing
        inverse = np.linalg.inv(forward)
        # The forward map moves content by ``shift`` (whole pixels, as before); the output
        # samples the input at inverse @ (u - shift).
        shift = np.round(shift)
        linear = linear @ inverse
        offset = -(linear @ shift)
    field = _displacement(cfg, rng, shape, (ref_h, ref_w))
    return Geometry(linear, offset, field, exact=not resampled and field is None)


def _displacement(
    cfg: AugmentConfig, rng: np.random.Generator, shape: tuple[int, int], reference
) -> np.ndarray | None:
    """The elastic field plus a radial or piecewise distortion, in output pixels, or None."""
    height, width = shape
    field = None
    if _chance(rng, cfg.elastic_p):
        alpha = _uniform(rng, *cfg.elastic_alpha)
        rows, cols, _ = coarse_shape(height, width, cfg.elastic_sigma)
        noise = rng.random((2, rows, cols), dtype=np.float32) * 2 - 1
        # torchvision: pixel displacement = alpha / 2 times the smoothed noise.
        field = smooth_field(noise, cfg.elastic_sigma, height, width) * np.float32(alpha / 2)
    if _chance(rng, cfg.distort_p) and cfg.distort_kinds:
        kind = cfg.distort_kinds[int(rng.integers(len(cfg.distort_kinds)))]
        ux, uy = _offsets(height, width)
        ref_h, ref_w = reference
        if kind == "radial":
            k1, k2 = (_uniform(rng, -cfg.radial_k, cfg.radial_k) for _ in range(2))
            # Normalized so that the reference square's corners have r = 1 (as before).
            r2 = ((ux / (ref_w / 2)) ** 2 + (uy / (ref_h / 2)) ** 2) / 2
            factor = k1 * r2 + k2 * r2 * r2
            extra = np.stack([ux * factor, uy * factor]).astype(np.float32)
        else:
            sigma = _uniform(rng, *cfg.piecewise_scale)
            points = cfg.piecewise_grid
            # The control grid spans the reference square; a shift of sigma * size.
            control = rng.standard_normal((2, points, points)).astype(np.float32) * 2 * sigma
            extra = _piecewise_pixels(control, ux, uy, ref_h, ref_w)
        field = extra if field is None else field + extra
    return field


@functools.lru_cache(maxsize=8)
def _offsets(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (x, y) ``(h, w)`` of the output pixels from the output's centre."""
    uy, ux = np.mgrid[:height, :width].astype(np.float32)
    ux -= (width - 1) / 2
    uy -= (height - 1) / 2
    ux.setflags(write=False)
    uy.setflags(write=False)
    return ux, uy


def _piecewise_pixels(control, ux, uy, ref_h: int, ref_w: int) -> np.ndarray:
    """The piecewise field of :func:`~.augment_ops.piecewise_field` on the reference square,
    read at the output's pixels, in pixels."""
    points = control.shape[-1]
    # Reference pixel index = offset + (size - 1) / 2; the control points sit on its corners,
    # and bilinear interpolation is separable: rows @ control @ columns.T.
    rows = linear_weights((uy[:, 0] + (ref_h - 1) / 2) * (points - 1) / max(ref_h - 1, 1), points)
    cols = linear_weights((ux[0] + (ref_w - 1) / 2) * (points - 1) / max(ref_w - 1, 1), points)
    field = rows @ control @ cols.T
    # Normalized units (2 = the reference size) to pixels.
    field[0] *= ref_w / 2
    field[1] *= ref_h / 2
    return field.astype(np.float32, copy=False)


def input_coordinates(
    geometry: Geometry, centre: tuple[float, float], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Input coordinates x and y ``(h, w)`` (float32) that each output pixel samples.

    Parameters
    ----------
    geometry : Geometry
    centre : (float, float)
        Input position (y, x) of the output's centre.
    shape : (int, int)
        Output size (h, w).
    """
    ux, uy = _offsets(*shape)
    if geometry.field is not None:
        ux, uy = ux + geometry.field[0], uy + geometry.field[1]
    (a, b), (c, d) = geometry.linear.astype(np.float32)
    x0 = np.float32(centre[1] + geometry.offset[0])
    y0 = np.float32(centre[0] + geometry.offset[1])
    return a * ux + b * uy + x0, c * ux + d * uy + y0


def draw_intensity(config: AugmentConfig, rng: np.random.Generator) -> Intensity:
    """Draw the intensity augmentations of one patch."""
    cfg = config
    noise = _uniform(rng, *cfg.noise_sigma) if _chance(rng, cfg.noise_p) else None
    blur = _chance(rng, cfg.blur_p) and cfg.median_size > 1
    sharp = _uniform(rng, *cfg.sharpen_alpha) if _chance(rng, cfg.sharpen_p) else None
    stains = None
    # Drawn only when on, so that runs of configs without it keep their random stream.
    if cfg.stain_p > 0 and _chance(rng, cfg.stain_p):
        sigma = cfg.stain_sigma
        stains = (rng.uniform(1 - sigma, 1 + sigma, 3), rng.uniform(-sigma, sigma, 3))
    return Intensity(noise, blur, sharp, stains)


def apply_intensity(
    image: torch.Tensor, draw: Intensity, config: AugmentConfig, rng: np.random.Generator
) -> torch.Tensor:
    """Stains, noise scaled to the patch's range, median blur and sharpening, as drawn.

    Parameters
    ----------
    image : (C, H, W) tensor of float32
    """
    # The stain is the specimen's; noise, blur and sharpness come after, from the scanner.
    if draw.stains is not None:
        image = perturb_stains(image, *draw.stains)
    if draw.noise is not None:
        low, high = image.amin(), image.amax()
        sigma = draw.noise * float(high - low)
        # torch's normal sampler is several times faster than numpy's for float32; its
        # generator is seeded from ``rng``, so the patch still depends on ``rng`` alone.
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        image = image + sigma * torch.randn(image.shape, generator=generator)
    if draw.blur:
        image = median_blur(image, config.median_size)
    if draw.sharpen is not None:
        image = sharpen(image, draw.sharpen)
    return image


def sample_patch(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    geometry: Geometry,
    centre: tuple[float, float],
    shape: tuple[int, int],
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Resample an image and its masks once, at output size, as ``geometry`` says.

    Parameters
    ----------
    image : (C, H, W) ndarray of float32
        The whole input (a plane); only the pixels the patch needs are read.
    masks : sequence of (H, W) ndarray
        Any dtype; nearest neighbour, exact.
    geometry : Geometry
    centre : (float, float)
        Input position (y, x) of the output's centre; integer plus
        ``(size - 1) / 2`` puts the output on the input's pixel grid.
    shape : (int, int)
        Output size (h, w).

    Returns
    -------
    image : (C, h, w) tensor of float32
    masks : list of (h, w) ndarray
        Input dtypes; 0 where the output reads outside the input.
    """
    x, y = input_coordinates(geometry, centre, shape)
    height, width = image.shape[-2:]
    flat, inside = nearest_index(x, y, height, width)
    if geometry.exact:
        # Flips and quarter turns of a patch on the pixel grid read whole pixels: copy them.
        channels = [gather_nearest(c, flat, inside, shape) for c in image]
        out_image = torch.from_numpy(np.stack(channels).astype(np.float32, copy=False))
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        out_image = resample_bilinear(tensor, x, y)
    return out_image, [gather_nearest(m, flat, inside, shape) for m in masks]


class Augmenter:
    """Apply random augmentations identically to an image and any number of masks.

    The array front end of :func:`draw_geometry`, :func:`sample_patch` and
    :func:`apply_intensity`, with its own random stream; the training data
    pipeline calls those directly, with one seeded generator per batch.

    Parameters
    ----------
    config : AugmentConfig, str or dict, optional
        What to apply (see :meth:`AugmentConfig.from_value`); the default set if omitted.
    seed : int, optional
        Seed of the augmenter's own random stream: the same seed gives the same
        sequence of augmentations, whatever else uses a random generator.

    Notes
    -----
    Images are resampled bilinearly, masks with nearest neighbour by index, so
    label ids of any size and dtype come back unchanged.
    """

    def __init__(self, config: AugmentConfig | str | dict | None = "default", *, seed: int = 0):
        self.config = AugmentConfig.from_value(config)
        self.rng = np.random.default_rng(int(seed))

    # The state travels with checkpoints of callers that keep one augmenter for a run.
    def get_state(self) -> dict[str, Any]:
        """The random state (numpy's bit-generator state), for checkpoints."""
        return dict(self.rng.bit_generator.state)

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`get_state`."""
        self.rng.bit_generator.state = state

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
            Centre-crop everything to this size (pass a larger input than needed
            so rotations bring in no empty corners).

        Returns
        -------
        tuple
            The image and the masks, in order, of the input kinds (NumPy or torch)
            and dtypes; the image is float32.
        """
        is_tensor = isinstance(image, torch.Tensor)
        array = image.detach().cpu().numpy() if is_tensor else np.asarray(image)
        if array.ndim not in (2, 3):
            raise ValueError(f"The image must be (H, W) or (C, H, W), got shape {array.shape}.")
        squeeze = array.ndim == 2
        array = np.ascontiguousarray(array[None] if squeeze else array, dtype=np.float32)
        height, width = array.shape[-2:]
        plain = []
        for mask in masks:
            values = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask
            values = np.asarray(values)
            if values.shape != (height, width):
                raise ValueError(f"Masks must be (H, W) = {(height, width)}, got {values.shape}.")
            plain.append(values)
        shape = tuple(out_size) if out_size is not None else (height, width)
        top, left = (height - shape[0]) // 2, (width - shape[1]) // 2
        centre = (top + (shape[0] - 1) / 2, left + (shape[1] - 1) / 2)
        geometry = draw_geometry(self.config, self.rng, shape, reference=(height, width))
        out, out_masks = sample_patch(array, plain, geometry, centre, shape)
        out = apply_intensity(out, draw_intensity(self.config, self.rng), self.config, self.rng)
        out_image = out[0] if squeeze else out
        results: list[Any] = [out_image if is_tensor else out_image.numpy()]
        for original, result in zip(masks, out_masks):
            if isinstance(original, torch.Tensor):
                results.append(torch.from_numpy(np.ascontiguousarray(result)).to(original.device))
            else:
                results.append(result)
        return tuple(results)


def window_margin(config: AugmentConfig, patch: int) -> int:
    """Extra pixels per side of the window the strengths of the augmentations refer to.

    Earlier versions transformed a window ``sqrt(2)`` times the patch side (so a
    rotation by 45 degrees brought in no void) and cropped the patch from it;
    shift and crop fractions, the radial radius and the piecewise grid were
    relative to that window. Patches are now resampled from the whole plane,
    and this margin keeps those strengths in pixels.
    """
    if not config.geometric:
        return 0
    return math.ceil((math.sqrt(2) - 1) / 2 * patch)
