"""Synthetic microscopy images with exact ground truth, generated from a fixed seed.

Three kinds of sample, each realistic enough that thresholding alone is not
the whole answer:

* :func:`fibsem_mitochondria` -- a FIB-SEM-like greyscale stack (ZYX) of dark,
  double-membraned, elongated mitochondria with cristae, in textured cytoplasm
  with dark vesicles and membranes as distractors.
* :func:`fluorescence_nuclei` -- a 2D fluorescence image (uint16) of nuclei of
  varied brightness, many of them touching, on an uneven background.
* :func:`he_glands` -- a 2D H&E-like RGB image of irregular glands (a lumen
  ringed by epithelium with dark nuclei) in pink stroma.

The files in the project's ``sample_data/`` folder are written by
``python -m napari_microseg.core.io.synthetic sample_data``; the same functions
with the same seed give the same arrays.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

DEFAULT_SEED = 2026


@dataclass(frozen=True)
class Sample:
    """A synthetic image with its ground-truth instance labels.

    Parameters
    ----------
    image : ndarray
        Pixels; axes as in ``axes``.
    labels : ndarray of uint16
        Object ids (0 = background), the image's shape without the channel axis.
    axes : str
        Axis letters of ``image``: ``"ZYX"``, ``"YX"`` or ``"YXC"``.
    scale : tuple of float
        Voxel size in µm for the non-channel axes.
    name : str
        Short name used for files and layers.
    """

    image: np.ndarray
    labels: np.ndarray
    axes: str
    scale: tuple[float, ...]
    name: str


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit standard deviation."""
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return (field - field.mean()) / (field.std() + 1e-8)


def _random_rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    if ndim == 2:
        angle = rng.uniform(0, np.pi)
        c, s = np.cos(angle), np.sin(angle)
        return np.array([[c, -s], [s, c]])
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _ellipsoid_coords(
    shape: tuple[int, ...], center: np.ndarray, radii: np.ndarray, rotation: np.ndarray
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """Normalised radius and first body coordinate of an ellipsoid inside its bounding box.

    The box is the ellipsoid's own axis-aligned bounding box (plus two pixels),
    clipped to the volume, so that long thin objects stay cheap.

    Returns
    -------
    box : tuple of slice
        The bounding box in the volume.
    rho : ndarray
        ``sqrt(sum((u_i / r_i)^2))`` in body coordinates: < 1 inside the object.
    along : ndarray
        The coordinate along the first (longest) body axis, in pixels.
    """
    extent = np.sqrt(((rotation * radii) ** 2).sum(axis=1))
    box = tuple(
        slice(max(int(c - e) - 2, 0), min(int(np.ceil(c + e)) + 3, s))
        for c, e, s in zip(center, extent, shape)
    )
    grids = np.meshgrid(
        *[np.arange(b.start, b.stop, dtype=np.float32) - c for b, c in zip(box, center)],
        indexing="ij",
        sparse=True,
    )
    body = [sum(g * np.float32(rotation[i, j]) for i, g in enumerate(grids)) for j in range(3)]
    rho = np.sqrt(sum((u / np.float32(r)) ** 2 for u, r in zip(body, radii)))
    return box, rho, np.broadcast_to(body[0], rho.shape)


#: Range of the minor radius of a synthetic mitochondrion, in nm (diameters ~200-520 nm).
MITO_MINOR_RADIUS_NM = (100.0, 260.0)
#: Range of the ratio long axis / minor axis (lengths ~0.3-2 µm).
MITO_ELONGATION = (1.4, 4.0)


def fibsem_mitochondria(
    shape: tuple[int, int, int] = (32, 384, 384), *, n_objects: int = 14, seed: int = DEFAULT_SEED
) -> Sample:
    """A FIB-SEM-like stack of mitochondria in textured cytoplasm, at 10 nm per voxel.

    Sizes are those of mitochondria in neuropil (e.g. the hippocampus imaged by
    Lucchi et al.): minor radius 100-260 nm (10-26 voxels, diameters about
    200-520 nm), long axis 1.4-4 times the minor one, so 0.3-2 µm long. Each is
    an ellipsoid with a dark double membrane, a darker matrix with cristae, and
    at least a few voxels of cytoplasm to its neighbours.

    Parameters
    ----------
    shape : tuple of int
        (Z, Y, X) size of the stack.
    n_objects : int
        How many mitochondria to try to place (placements overlapping or
        touching one already placed are skipped, up to ``8 * n_objects`` tries).
    seed : int
        Seed of the random generator; the same seed gives the same stack.

    Returns
    -------
    Sample
        ``image`` is uint8 (Z, Y, X); ``labels`` uint16 with one id per mitochondrion.
        Voxel size 0.01 µm (10 nm), near-isotropic like FIB-SEM.
    """
    voxel_nm = 10.0
    rng = np.random.default_rng(seed)
    cytoplasm = 150 + 12 * _smooth_noise(rng, shape, 2.0) + 6 * _smooth_noise(rng, shape, 0.8)
    image = cytoplasm.astype(np.float32)
    labels = np.zeros(shape, np.uint16)
    placed = 0
    low, high = (r / voxel_nm for r in MITO_MINOR_RADIUS_NM)
    for _ in range(n_objects * 8):
        if placed == n_objects:
            break
        minor = rng.uniform(low, high)
        thinnest = rng.uniform(max(low, 0.75 * minor), minor)  # a slightly flattened section
        radii = np.array([minor * rng.uniform(*MITO_ELONGATION), minor, thinnest])
        center = np.array([rng.uniform(0, s) for s in shape])
        rotation = _random_rotation(rng, 3)
        box, rho, along = _ellipsoid_coords(shape, center, radii, rotation)
        inside = rho < 1
        # Keep a gap of cytoplasm (15% of the radii) between mitochondria.
        if not inside.any() or labels[box][rho < 1.15].any():
            continue
        placed += 1
        labels[box][inside] = placed
        # A 2-voxel (20 nm) dark envelope, a matrix with cristae every 35-55 nm.
        shell = 1.0 - 2.0 / radii[1:].min()
        matrix = 98 + 8 * rng.standard_normal()
        cristae = 14 * np.cos(2 * np.pi * along / rng.uniform(3.5, 5.5)) ** 8
        values = np.where(rho > shell, 62.0, matrix + cristae)
        # A thin lighter band between the two membranes of the envelope.
        values = np.where(
            (rho > shell + (1 - shell) * 0.4) & (rho < shell + (1 - shell) * 0.6), 90.0, values
        )
        region = image[box]
        region[inside] = values[inside]
    for _ in range(int(np.prod(shape) / 60000)):  # vesicles: dark, small, not mitochondria
        radius = rng.uniform(2.0, 3.5)
        center = np.array([rng.uniform(0, s) for s in shape])
        box, rho, _ = _ellipsoid_coords(shape, center, np.full(3, radius), np.eye(3))
        free = (rho < 1) & (labels[box] == 0)
        image[box][free] = 95 + 10 * rng.standard_normal()
    axes = [np.arange(s, dtype=np.float32) - s / 2 for s in shape]
    for _ in range(3):  # cell membranes: thin dark sheets crossing the volume
        normal = rng.standard_normal(3).astype(np.float32)
        normal /= np.linalg.norm(normal)
        offset = sum(
            (n * a).reshape([-1 if i == k else 1 for i in range(3)])
            for k, (n, a) in enumerate(zip(normal, axes))
        )
        # Smooth waviness: a (Y, X) field plus a Z profile, cheaper than a 3D field.
        wavy = (
            6 * _smooth_noise(rng, shape[1:], 12.0)
            + 3 * _smooth_noise(rng, shape[:1], 12.0)[:, None, None]
        )
        offset = offset + wavy + rng.uniform(-60, 60)
        sheet = (np.abs(offset) < 1.2) & (labels == 0)
        image[sheet] = 75
    image = ndi.gaussian_filter(image, 0.8)
    image += rng.normal(0, 9, shape).astype(np.float32)
    return Sample(
        np.clip(image, 0, 255).astype(np.uint8),
        labels,
        "ZYX",
        (0.01, 0.01, 0.01),
        "fibsem_mitochondria",
    )


def _irregular_blob(
    shape: tuple[int, int],
    center: np.ndarray,
    radius: float,
    elongation: float,
    rng: np.random.Generator,
    roughness: float = 0.08,
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """A 2D star-convex blob with a wavy outline; returns box, inside mask and normalised radius."""
    reach = int(np.ceil(radius * elongation * (1 + 3 * roughness))) + 2
    box = tuple(
        slice(max(int(c) - reach, 0), min(int(c) + reach + 1, s)) for c, s in zip(center, shape)
    )
    yy, xx = np.meshgrid(*[np.arange(b.start, b.stop) for b in box], indexing="ij")
    rotation = _random_rotation(rng, 2)
    body = np.stack([yy - center[0], xx - center[1]], axis=-1) @ rotation
    angle = np.arctan2(body[..., 0], body[..., 1])
    wobble = 1.0
    for harmonic in range(2, 6):
        wobble += roughness * rng.standard_normal() * np.cos(harmonic * angle + rng.uniform(0, 6.3))
    rho = np.sqrt((body[..., 0] / radius) ** 2 + (body[..., 1] / (radius * elongation)) ** 2)
    rho = rho / wobble
    return box, rho < 1, rho


def fluorescence_nuclei(
    shape: tuple[int, int] = (384, 384), *, n_objects: int = 60, seed: int = DEFAULT_SEED
) -> Sample:
    """A 2D fluorescence image of nuclei, many of them touching.

    Parameters
    ----------
    shape : tuple of int
        (Y, X) size.
    n_objects : int
        How many nuclei to try to place; placements may touch and overlap slightly.
    seed : int
        Seed of the random generator.

    Returns
    -------
    Sample
        ``image`` is uint16 (Y, X); ``labels`` uint16 instance ids. Pixel size 0.2 µm.
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    signal = np.zeros(shape, np.float32)
    placed = 0
    centers: list[np.ndarray] = []
    for _ in range(n_objects * 6):
        if placed == n_objects:
            break
        radius = rng.uniform(9, 15)
        if centers and rng.random() < 0.6:
            # Place next to an existing nucleus so that they touch: the hard case.
            anchor = centers[rng.integers(len(centers))]
            direction = rng.standard_normal(2)
            direction /= np.linalg.norm(direction)
            center = anchor + direction * (radius + rng.uniform(8, 14))
        else:
            center = rng.uniform([0, 0], shape)
        box, inside, rho = _irregular_blob(
            shape, center, radius, rng.uniform(1.0, 1.5), rng, roughness=0.045
        )
        if not inside.any():
            continue
        overlap = (labels[box][inside] > 0).mean()
        if overlap > 0.08:
            continue
        placed += 1
        centers.append(center)
        free = inside & (labels[box] == 0)
        labels[box][free] = placed
        brightness = rng.uniform(0.35, 1.0)
        chromatin = 0.75 + 0.25 * _smooth_noise(rng, inside.shape, 1.5)
        signal[box][free] = (brightness * chromatin * (1.05 - 0.3 * rho**2))[free]
    background = (
        0.06 + 0.05 * np.linspace(0, 1, shape[1])[None, :] + 0.02 * _smooth_noise(rng, shape, 40)
    )
    image = ndi.gaussian_filter(signal, 1.6) + background
    counts = rng.poisson(np.clip(image, 0, None) * 900).astype(np.float32)
    image = counts + rng.normal(100, 6, shape)
    return Sample(
        np.clip(image, 0, 65535).astype(np.uint16), labels, "YX", (0.2, 0.2), "fluorescence_nuclei"
    )


def he_glands(
    shape: tuple[int, int] = (512, 512), *, n_objects: int = 9, seed: int = DEFAULT_SEED
) -> Sample:
    """A 2D H&E-like RGB image of glands in stroma.

    Parameters
    ----------
    shape : tuple of int
        (Y, X) size.
    n_objects : int
        How many glands to try to place (they never overlap).
    seed : int
        Seed of the random generator.

    Returns
    -------
    Sample
        ``image`` is uint8 (Y, X, 3); ``labels`` uint16 with one id per gland
        (epithelium and lumen). Pixel size 0.62 µm, as in GlaS.
    """
    rng = np.random.default_rng(seed)
    stroma = np.array([228, 168, 204], np.float32)
    image = np.broadcast_to(stroma, (*shape, 3)).copy()
    fibres = _smooth_noise(rng, shape, 3.0)
    image += (14 * fibres)[..., None] * np.array([0.4, 1.0, 0.6])
    labels = np.zeros(shape, np.uint16)
    placed = 0
    for _ in range(n_objects * 10):
        if placed == n_objects:
            break
        radius = rng.uniform(30, 58)
        center = rng.uniform([0, 0], shape)
        box, inside, rho = _irregular_blob(
            shape, center, radius, rng.uniform(1.0, 1.6), rng, roughness=0.1
        )
        grown = ndi.binary_dilation(inside, iterations=4)
        if not inside.any() or labels[box][grown].any():
            continue
        placed += 1
        labels[box][inside] = placed
        lumen = rho < rng.uniform(0.45, 0.65)
        epithelium = inside & ~lumen
        region = image[box]
        region[epithelium] = np.array([196, 110, 172]) + 10 * rng.standard_normal(3)
        region[lumen & inside] = np.array([246, 238, 244])
        ring = epithelium & (rho > 0.8)
        nuclei_seeds = ring & (rng.random(ring.shape) < 0.05)
        nuclei = ndi.binary_dilation(nuclei_seeds, iterations=2)
        region[nuclei & inside] = np.array([92, 48, 128])
    scattered = (rng.random(shape) < 0.0025) & (labels == 0)
    image[ndi.binary_dilation(scattered, iterations=2)] = np.array([110, 60, 140])
    image = ndi.gaussian_filter(image, (1.0, 1.0, 0))
    image += rng.normal(0, 6, image.shape)
    return Sample(np.clip(image, 0, 255).astype(np.uint8), labels, "YXC", (0.62, 0.62), "he_glands")


SAMPLES = {
    "fibsem_mitochondria": fibsem_mitochondria,
    "fluorescence_nuclei": fluorescence_nuclei,
    "he_glands": he_glands,
}


def write_samples(folder: str | Path, *, seed: int = DEFAULT_SEED) -> list[Path]:
    """Write every sample and its labels as TIFF into ``folder``.

    Parameters
    ----------
    folder : path-like
        Destination folder (created if needed).
    seed : int
        Seed passed to each generator.

    Returns
    -------
    list of Path
        The files written: ``<name>.tif`` and ``<name>_labels.tif`` for each sample.
    """
    from .writers import write_image, write_labels

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in SAMPLES.items():
        sample = make(seed=seed)
        written.append(
            write_image(out / f"{name}.tif", sample.image, scale=sample.scale, axes=sample.axes)
        )
        written.append(write_labels(out / f"{name}_labels.tif", sample.labels, scale=sample.scale))
    return written


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: ``python -m napari_microseg.core.io.synthetic FOLDER``."""
    parser = argparse.ArgumentParser(description="Write the synthetic sample images and labels.")
    parser.add_argument("folder", type=Path, help="where to write the TIFF files")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    for path in write_samples(args.folder, seed=args.seed):
        print(path)


if __name__ == "__main__":
    main()
