"""napari-microseg: deep-learning segmentation of microscopy images.

The package root stays light: importing it loads neither napari, Qt nor torch.
The public scripting API is re-exported lazily from :mod:`napari_microseg.core`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ._version import __version__

# name -> "module:attribute"; filled in as the core grows.
_LAZY_API: dict[str, str] = {
    "imread": "napari_microseg.core.io.images:imread",
    "write_labels": "napari_microseg.core.io.writers:write_labels",
    "write_image": "napari_microseg.core.io.writers:write_image",
    "Progress": "napari_microseg.core.progress:Progress",
    "drain": "napari_microseg.core.progress:drain",
    "load_model": "napari_microseg.core.models.registry:load_model",
    "predict": "napari_microseg.core.inference.predict:predict",
    "iter_predict": "napari_microseg.core.inference.predict:iter_predict",
    "wrap_module": "napari_microseg.core.models.base:wrap_module",
    "list_models": "napari_microseg.core.models.registry:list_models",
    "postprocess": "napari_microseg.core.postprocess:postprocess",
    "PostprocessPipeline": "napari_microseg.core.postprocess:PostprocessPipeline",
    "segment_job": "napari_microseg.core.inference.segment:segment_job",
    "predict_to_zarr": "napari_microseg.core.blocks.predict:predict_to_zarr",
    "label_to_zarr": "napari_microseg.core.blocks.labels:label_to_zarr",
    "measure_objects": "napari_microseg.core.evaluation.measure:measure_objects",
}

__all__ = ["__version__", *_LAZY_API]


def __getattr__(name: str) -> Any:
    target = _LAZY_API.get(name)
    if target is None:
        raise AttributeError(f"module 'napari_microseg' has no attribute {name!r}")
    module_name, _, attribute = target.partition(":")
    value = getattr(import_module(module_name), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
