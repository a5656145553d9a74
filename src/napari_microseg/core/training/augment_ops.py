"""Deterministic building blocks of the augmentations: fields, filters, resampling.

:mod:`.augment` draws their random parameters.

* :func:`radial_field`: barrel, pincushion and moustache distortion.
* :func:`piecewise_field`: smooth local distortion by moving a grid of control points.
* :func:`smooth_field` and :func:`elastic_gain`: the elastic field of
  torchvision's ``ElasticTransform``, drawn on a coarse grid and upsampled.
* :func:`resample_bilinear` and :func:`gather_nearest`: one resampling of an
  image (bilinear) and of masks (nearest neighbour, exact for any dtype) at
  given input coordinates.
* :func:`median_blur` and :func:`sharpen`: the blur and alpha-blended sharpening.
* :func:`perturb_stains`: H&E stain augmentation in the haematoxylin-eosin-DAB
  colour space (Tellez et al. 2018).

:func:`radial_field` and :func:`piecewise_field` return displacements
``(1, H, W, 2)`` in the normalized ``(x, y)`` coordinates of
``torch.nn.functional.grid_sample`` (align_corners False); the training path
works in pixels (:mod:`.augment`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi


def identity_grid(height: int, width: int) -> torch.Tensor:
    """``(1, H, W, 2)`` sampling grid of the pixel centres, normalized (x, y) in (-1, 1)."""
    ys = (torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1
    xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)[None]


def radial_field(height: int, width: int, k1: float, k2: float) -> torch.Tensor:
    """Displacement of a radial distortion: a point at radius r samples radius ``r (1 + k1 r**2 +
    k2 r**4)``; barrel for k < 0, pincushion for k > 0, moustache for mixed signs.

    The radius is normalized so that the image corners have r = 1.
    """
    grid = identity_grid(height, width)
    r2 = grid.pow(2).sum(dim=-1, keepdim=True) / 2
    return grid * (k1 * r2 + k2 * r2 * r2)


def piecewise_field(height: int, width: int, control: torch.Tensor) -> torch.Tensor:
    """Displacement that moves a regular grid of control points and lets pixels follow.

    Parameters
    ----------
    height, width : int
        Size of the field.
    control : (2, P, P) tensor
        Displacement (x, y) of each control point, in normalized units (2 = the
        image size).

    Notes
    -----
    imgaug's PiecewiseAffine maps each triangle of the control grid affinely;
    interpolating the control points' displacements bilinearly gives the same
    local, smooth distortion without a triangulation.
    """
    field = F.interpolate(control[None], size=(height, width), mode="bilinear", align_corners=True)
    return field.permute(0, 2, 3, 1)


def gaussian_kernel(sigma: float, radius: int) -> np.ndarray:
    """Normalized 1D Gaussian ``(2 radius + 1,)`` of float64 (torchvision's ``gaussian_blur``)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def field_spacing(sigma: float) -> int:
    """Grid spacing (whole pixels) of the coarse elastic field: about half its smoothness."""
    # Whole pixels, so the upsampling is a plain bilinear interpolation by an integer factor.
    return max(int(sigma // 2), 1)


@functools.lru_cache(maxsize=16)
def elastic_gain(sigma: float) -> float:
    """Factor that gives a coarse field (:func:`smooth_field`) torchvision's strength.

    torchvision smooths uniform noise in [-1, 1] at every pixel with a Gaussian
    of ``sigma`` pixels (kernel ``int(8 sigma + 1)``, made odd). Smoothing white
    noise with a normalized kernel ``k`` leaves a standard deviation of
    ``|k|_2`` times the noise's; drawing the noise at :func:`field_spacing` and
    smoothing with ``sigma / spacing`` grid steps keeps the correlation length
    (sigma pixels) and leaves ``|k_coarse|_2``. The ratio restores the strength.
    """
    if sigma <= 0:
        return 1.0
    size = int(8 * sigma + 1)
    size += size % 2 == 0
    full = gaussian_kernel(sigma, (size - 1) // 2)
    coarse_sigma = sigma / field_spacing(sigma)
    coarse = gaussian_kernel(coarse_sigma, math.ceil(4 * coarse_sigma))
    # Separable 2D kernels: |k2d|_2 = |k1d|_2 ** 2.
    return float(np.sum(full**2) / np.sum(coarse**2))


def coarse_shape(height: int, width: int, sigma: float) -> tuple[int, int, int]:
    """Rows, columns and padding of the noise :func:`smooth_field` takes for an output field."""
    spacing = field_spacing(sigma)
    pad = math.ceil(4 * sigma / spacing) if sigma > 0 else 0
    rows = math.ceil((height - 1) / spacing) + 2
    cols = math.ceil((width - 1) / spacing) + 2
    return rows + 2 * pad, cols + 2 * pad, pad


def smooth_field(noise: np.ndarray, sigma: float, height: int, width: int) -> np.ndarray:
    """A smooth random field ``(2, H, W)`` of float32 from coarse noise.

    Parameters
    ----------
    noise : (2, R, C) ndarray
        Uniform noise in [-1, 1] on the coarse grid, shaped by :func:`coarse_shape`.
    sigma : float
        Smoothness of the field in pixels of the output.
    height, width : int
        Output size.

    Returns
    -------
    (2, H, W) ndarray of float32
        Gaussian-smoothed noise with the per-pixel strength and correlation
        length of torchvision's full-resolution field (its ``alpha`` not applied);
        grid point ``m`` lies on output pixel ``m * spacing``.
    """
    spacing = field_spacing(sigma)
    _, _, pad = coarse_shape(height, width, sigma)
    field = noise.astype(np.float32, copy=False)
    if sigma > 0:
        kernel = gaussian_kernel(sigma / spacing, pad)
        field = ndi.correlate1d(field, kernel, axis=1, mode="constant")
        field = ndi.correlate1d(field, kernel, axis=2, mode="constant")
        field = field[:, pad : field.shape[1] - pad, pad : field.shape[2] - pad]
        field = field * np.float32(elastic_gain(sigma))
    if spacing > 1:
        rows, cols = field.shape[1:]
        coarse = torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32))[None]
        size = ((rows - 1) * spacing + 1, (cols - 1) * spacing + 1)
        field = F.interpolate(coarse, size=size, mode="bilinear", align_corners=True)[0].numpy()
    return np.ascontiguousarray(field[:, :height, :width], dtype=np.float32)


def linear_weights(positions: np.ndarray, points: int) -> np.ndarray:
    """Matrix ``(len(positions), points)`` of linear interpolation between grid points.

    ``positions`` are in grid units (0 = the first point); outside the grid, 0.
    """
    low = np.floor(positions).astype(np.int64)
    frac = (positions - low).astype(np.float32)
    weights = np.zeros((len(positions), points + 1), np.float32)
    rows = np.arange(len(positions))
    inside = (low >= 0) & (positions <= points - 1)
    weights[rows[inside], low[inside]] = 1 - frac[inside]
    weights[rows[inside], low[inside] + 1] = frac[inside]
    return weights[:, :points]


def resample_bilinear(image: torch.Tensor, x: np.ndarray, y: np.ndarray) -> torch.Tensor:
    """``image`` sampled bilinearly at pixel coordinates; 0 outside it.

    Parameters
    ----------
    image : (C, H, W) tensor of float32
    x, y : (h, w) ndarray of float32
        Input column and row of every output pixel; pixel centres are at integers.

    Returns
    -------
    (C, h, w) tensor of float32
    """
    height, width = image.shape[-2:]
    # grid_sample's normalized coordinates (align_corners False): the centre of pixel k is
    # (2k + 1) / size - 1.
    grid = np.empty((1, *x.shape, 2), np.float32)
    np.multiply(x, np.float32(2 / width), out=grid[0, ..., 0])
    grid[0, ..., 0] += np.float32(1 / width - 1)
    np.multiply(y, np.float32(2 / height), out=grid[0, ..., 1])
    grid[0, ..., 1] += np.float32(1 / height - 1)
    out = F.grid_sample(
        image[None],
        torch.from_numpy(grid),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return out[0]


def nearest_index(
    x: np.ndarray, y: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the nearest input pixels ``(h * w,)`` and where they are inside."""
    col = np.rint(x).astype(np.int64).ravel()
    row = np.rint(y).astype(np.int64).ravel()
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    flat = np.where(inside, row * width + col, 0)
    return flat, inside


def gather_nearest(array: np.ndarray, flat: np.ndarray, inside: np.ndarray, shape) -> np.ndarray:
    """``array`` (H, W) at the flat indices of :func:`nearest_index`, 0 outside; dtype kept."""
    out = np.take(np.ascontiguousarray(array).reshape(-1), flat)
    out[~inside] = 0
    return out.reshape(shape)


# Devillard's 19-exchange network (after Paeth): element 4 ends as the median of 9.
_MEDIAN9 = (
    (1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
    (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2),
)  # fmt: skip


def median_blur(image: torch.Tensor, size: int = 3) -> torch.Tensor:
    """Median filter of each channel over ``size`` x ``size`` pixels (edges replicated).

    Parameters
    ----------
    image : (C, H, W) tensor
    size : int
        Odd window side.

    Returns
    -------
    (C, H, W) tensor
    """
    pad = size // 2
    padded = F.pad(image[None], (pad, pad, pad, pad), mode="replicate")[0]
    height, width = image.shape[-2:]
    if size == 3:
        # A sorting network of element-wise min/max: several times faster than sorting
        # the 9 values of every window, with the same result.
        p = [padded[:, dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
        for a, b in _MEDIAN9:
            p[a], p[b] = torch.minimum(p[a], p[b]), torch.maximum(p[a], p[b])
        return p[4].contiguous()
    windows = padded.unfold(-2, size, 1).unfold(-2, size, 1)
    return windows.reshape(*image.shape, size * size).median(dim=-1).values


def sharpen(image: torch.Tensor, alpha: float) -> torch.Tensor:
    """Blend ``image`` with its Laplacian-sharpened version: ``(1 - alpha) x + alpha s(x)``.

    Parameters
    ----------
    image : (C, H, W) tensor
    alpha : float
        0 keeps the image, 1 gives the fully sharpened one.
    """
    # The Laplacian kernel [[0, -1, 0], [-1, 5, -1], [0, -1, 0]] as four shifted views: a
    # convolution with one input channel costs several times more on the CPU.
    padded = F.pad(image[None], (1, 1, 1, 1), mode="replicate")[0]
    height, width = image.shape[-2:]
    around = (
        padded[:, :height, 1 : width + 1]
        + padded[:, 2:, 1 : width + 1]
        + padded[:, 1 : height + 1, :width]
        + padded[:, 1 : height + 1, 2:]
    )
    # (1 - alpha) x + alpha (5 x - around) = x + alpha (4 x - around)
    return image + alpha * (4 * image - around)


#: Smallest intensity of an RGB pixel in [0, 1] before its optical density is taken
#: (1/255 of an 8-bit image's scale would make pure black an optical density of 5.5).
STAIN_FLOOR = 1e-3


def perturb_stains(image: torch.Tensor, scale: np.ndarray, shift: np.ndarray) -> torch.Tensor:
    """Change the amount of haematoxylin, eosin and DAB of an RGB image in [0, 1].

    Colour deconvolution (Ruifrok and Johnston, 2001; ``skimage.color.rgb2hed``)
    turns the optical density ``-ln(rgb)`` of each pixel into the density of
    each stain; stain ``i`` becomes ``scale[i] * density + shift[i]``, and the
    densities are mixed back to RGB. This is the "HED" augmentation of Tellez
    et al. (2018), which simulates slides stained or scanned in another lab.
    ``scale = (1, 1, 1)`` and ``shift = (0, 0, 0)`` give the image back.

    Parameters
    ----------
    image : (3, H, W) tensor of float32
        RGB, 0 = black, 1 = white (8-bit images normalized by their range);
        values are clipped to ``[STAIN_FLOOR, 1]`` first.
    scale, shift : (3,) ndarray
        Per stain, in the order haematoxylin, eosin, DAB; ``shift`` in units of
        optical density (natural logarithm).

    Returns
    -------
    (3, H, W) tensor of float32
        In ``[0, 1]``.
    """
    from skimage.color import hed_from_rgb, rgb_from_hed

    if image.shape[0] != 3:
        raise ValueError(
            f"Stain augmentation needs an RGB image (3 channels), got {image.shape[0]}; "
            "set stain_p to 0 for this model."
        )
    # Per pixel: rgb and stains are row vectors, stains = od @ hed_from_rgb.
    to_stains = torch.as_tensor(hed_from_rgb, dtype=torch.float32)
    to_rgb = torch.as_tensor(rgb_from_hed, dtype=torch.float32)
    scale_t = torch.as_tensor(np.asarray(scale, np.float32))
    shift_t = torch.as_tensor(np.asarray(shift, np.float32))
    # Folding the scale into the mixing matrix does the three steps in one product.
    mix = to_stains @ (scale_t[:, None] * to_rgb)
    offset = shift_t @ to_rgb
    density = -torch.log(image.clamp(STAIN_FLOOR, 1.0))
    changed = torch.einsum("chw,cd->dhw", density, mix) + offset[:, None, None]
    return torch.exp(-changed).clamp(0.0, 1.0)
