"""napari-microseg: deep-learning segmentation of microscopy images.

The package root stays light: importing it loads neither napari, Qt nor torch.
The public scripting API is re-exported lazily from :mod:`napari_microseg.core`.
"""

from __future__ import annotations

from ._version import __version__
from .core.lazy import lazy_exports

# name -> the module that defines it.
_LAZY_API: dict[str, str] = {
    "imread": "napari_microseg.core.io.images",
    "write_labels": "napari_microseg.core.io.writers",
    "write_image": "napari_microseg.core.io.writers",
    "Progress": "napari_microseg.core.progress",
    "drain": "napari_microseg.core.progress",
    "load_model": "napari_microseg.core.models.registry",
    "predict": "napari_microseg.core.inference.predict",
    "iter_predict": "napari_microseg.core.inference.predict",
    "wrap_module": "napari_microseg.core.models.base",
    "list_models": "napari_microseg.core.models.registry",
    "postprocess": "napari_microseg.core.postprocess.pipeline",
    "PostprocessPipeline": "napari_microseg.core.postprocess.pipeline",
    "segment_job": "napari_microseg.core.inference.segment",
    "predict_to_zarr": "napari_microseg.core.blocks.predict",
    "label_to_zarr": "napari_microseg.core.blocks.labels",
    "measure_objects": "napari_microseg.core.evaluation.measure",
}

__all__ = ["__version__", *_LAZY_API]
__getattr__, _ = lazy_exports(__name__, _LAZY_API)


def __dir__() -> list[str]:
    return sorted(__all__)
