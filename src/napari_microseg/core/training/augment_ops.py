"""What torchvision.transforms.v2 lacks for the seeds' augmentations: fields and filters.

Deterministic building blocks; :mod:`.augment` draws their random parameters.

* :func:`radial_field`: barrel, pincushion and moustache distortion.
* :func:`piecewise_field`: smooth local distortion by moving a grid of control points.
* :func:`median_blur` and :func:`sharpen`: the blur and alpha-blended sharpening.

Fields are displacements ``(1, H, W, 2)`` in the normalized ``(x, y)``
coordinates of ``torch.nn.functional.grid_sample`` (align_corners False),
the form ``torchvision.transforms.v2.functional.elastic`` takes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    kernel = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]])
    channels = image.shape[0]
    weight = kernel.to(image)[None, None].repeat(channels, 1, 1, 1)
    padded = F.pad(image[None], (1, 1, 1, 1), mode="replicate")
    sharp = F.conv2d(padded, weight, groups=channels)[0]
    return (1 - alpha) * image + alpha * sharp
