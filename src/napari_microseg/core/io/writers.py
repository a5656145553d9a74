"""Atomic writers for label images (TIFF, PNG) and intensity images (TIFF, PNG, JPEG)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .checks import ImageValidationError, label_dtype, validate_image
from .image_data import LABELS_MARKER, PLAIN_IMAGE_SUFFIXES, TIFF_SUFFIXES
from .outputs import IMAGE_MARKER, MARKER_KEY, png_tag


def write_labels(
    path: str | os.PathLike,
    labels: np.ndarray,
    *,
    scale: tuple[float, ...] | None = None,
    axes: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a label image atomically to TIFF (2D or 3D) or PNG (2D).

    Parameters
    ----------
    path : path-like
        Destination; ``.tif``/``.tiff`` or ``.png``.
    labels : (M, N) or (P, M, N) ndarray of int
        Object ids, 0 for background. Ids are kept exactly: uint16 when they fit,
        uint32 (or uint64) otherwise.
    scale : tuple of float, optional
        Voxel size in µm per axis, stored in the TIFF metadata and resolution tags.
    axes : str, optional
        Axis letters; ``"YX"`` or ``"ZYX"`` by default.
    overwrite : bool
        Refuse to replace an existing file when False.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ImageValidationError
        For non-integer or negative labels, or labels PNG cannot hold.
    FileExistsError
        If ``path`` is an existing folder, or exists and ``overwrite`` is False.
    DiskFullError
        If the disk fills up; the previous file is kept.
    """
    labels = np.asarray(labels)
    axes = axes or ("ZYX" if labels.ndim == 3 else "YX")[-labels.ndim :]
    validate_image(labels, axes, name="The label image")
    dtype = label_dtype(labels)
    dest = Path(path)
    suffix = dest.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        with atomic_path(dest, overwrite=overwrite, size_hint=labels.nbytes) as tmp:
            _write_labels_tiff(tmp, labels.astype(dtype, copy=False), axes, scale)
    elif suffix == ".png":
        if labels.ndim != 2:
            raise ImageValidationError(
                f"PNG holds 2D images only; these labels are {labels.ndim}D. Save as TIFF."
            )
        if dtype.itemsize > 2:
            raise ImageValidationError(
                "PNG holds ids up to 65535; these labels go higher. Save as TIFF to keep every id."
            )
        import imageio.v3 as iio

        with atomic_path(dest, overwrite=overwrite, size_hint=labels.nbytes) as tmp:
            iio.imwrite(
                tmp,
                labels.astype(np.uint16 if dtype.itemsize == 2 else np.uint8),
                pnginfo=png_tag(LABELS_MARKER),
            )
    else:
        raise ImageValidationError(
            f"Cannot write labels as {suffix or 'a file without extension'}; use .tif or .png."
        )
    return dest


def _write_labels_tiff(
    path: Path, labels: np.ndarray, axes: str, scale: tuple[float, ...] | None
) -> None:
    import tifffile

    metadata: dict[str, Any] = {"axes": axes, "microseg": LABELS_MARKER}
    kwargs: dict[str, Any] = {}
    if scale is not None:
        scale = tuple(float(s) for s in scale)
        metadata["spacing"] = list(scale)
        metadata["unit"] = "um"
        x_um, y_um = scale[-1], scale[-2]
        # Resolution tags in pixels per centimetre, readable by any TIFF reader.
        kwargs["resolution"] = (1e4 / x_um, 1e4 / y_um)
        kwargs["resolutionunit"] = "CENTIMETER"
    tifffile.imwrite(
        path, labels, metadata=metadata, compression="zlib", photometric="minisblack", **kwargs
    )


def write_image(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    scale: tuple[float, ...] | None = None,
    axes: str | None = None,
) -> Path:
    """Write an intensity image atomically as TIFF (or PNG/JPEG for 2D 8-bit).

    Grey uint8, uint16 and float32 images are written ImageJ-compatible, so
    Fiji shows the voxel size; other types become a plain TIFF whose resolution
    tags carry the pixel size.

    Parameters
    ----------
    path : path-like
        Destination, ``.tif``, ``.png`` or ``.jpg``.
    image : (M, N), (M, N, 3) or (P, M, N) ndarray
        Pixels.
    scale : tuple of float, optional
        Voxel size in µm for the non-channel axes.
    axes : str, optional
        Axis letters; guessed from the shape when omitted.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    FileExistsError
        If ``path`` is an existing folder.
    DiskFullError
        If the disk fills up; the previous file is kept.
    """
    import tifffile

    image = np.asarray(image)
    if axes is None:
        axes = {2: "YX", 3: "YXC" if image.shape[-1] in (3, 4) else "ZYX"}.get(image.ndim, "ZYXC")
    validate_image(image, axes)
    dest = Path(path)
    if dest.suffix.lower() in PLAIN_IMAGE_SUFFIXES:
        import imageio.v3 as iio

        # PNG carries our tag, so a later run may replace it (JPEG and BMP have no place for it).
        tag = {"pnginfo": png_tag(IMAGE_MARKER)} if dest.suffix.lower() == ".png" else {}
        with atomic_path(dest, size_hint=image.nbytes) as tmp:
            iio.imwrite(tmp, image, extension=dest.suffix, **tag)
        return dest
    sizes = dict(zip(axes.replace("C", ""), scale)) if scale is not None else {}
    kwargs: dict[str, Any] = {}
    with atomic_path(dest, size_hint=image.nbytes) as tmp:
        if image.dtype in (np.uint8, np.uint16, np.float32) and "C" not in axes:
            metadata: dict[str, Any] = {"axes": axes, MARKER_KEY: IMAGE_MARKER}
            if sizes:
                kwargs["resolution"] = (1.0 / sizes["X"], 1.0 / sizes["Y"])
                metadata["unit"] = "um"
                if "Z" in sizes:
                    metadata["spacing"] = sizes["Z"]
            tifffile.imwrite(tmp, image, imagej=True, metadata=metadata, **kwargs)
        else:
            if sizes:
                kwargs["resolution"] = (1e4 / sizes["X"], 1e4 / sizes["Y"])
                kwargs["resolutionunit"] = "CENTIMETER"
            photometric = "rgb" if axes.endswith("C") else "minisblack"
            tifffile.imwrite(
                tmp,
                image,
                photometric=photometric,
                compression="zlib",
                metadata={MARKER_KEY: IMAGE_MARKER},
                **kwargs,
            )
    return dest
