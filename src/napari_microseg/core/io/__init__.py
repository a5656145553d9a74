"""Stage 1, io: files to arrays and back, keeping axes and voxel size.

Reads TIFF, PNG/JPEG, slice folders and zarr/OME-Zarr into :class:`ImageData`
(lazily for volumes larger than memory), checks that an array can be used
(:func:`validate_image`), and writes labels and images atomically, so a failure
never leaves a half-written file; :func:`check_outputs` is the one rule for what
may be replaced. Also: label autosaves and synthetic samples.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_HOMES = {
    "ImageData": "image_data",
    "ImageReadError": "image_data",
    "IMAGE_SUFFIXES": "image_data",
    "ZARR_SUFFIXES": "image_data",
    "imread": "images",
    "describe": "images",
    "is_readable_path": "images",
    "open_volume": "volumes",
    "read_zarr": "zarr_arrays",
    "write_ome_zarr": "zarr_arrays",
    "write_ome_labels": "ome_labels",
    "labels_target_in_image": "ome_labels",
    "is_ome_image": "image_data",
    "write_labels": "writers",
    "write_image": "writers",
    "ImageValidationError": "checks",
    "validate_image": "checks",
    "atomic_path": "atomic",
    "DiskFullError": "atomic",
    "atomic_write_text": "atomic",
    "write_autosave": "autosave",
    "list_autosaves": "autosave",
    "discard_autosave": "autosave",
    "autosave_path": "autosave",
    "Output": "outputs",
    "check_outputs": "outputs",
    "is_ours": "outputs",
    "staged_store": "outputs",
}

__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
