"""Model families (U-Net, SegNet, Micro-Net, Mask R-CNN), checkpoints and the registry.

Importing this package does not import torch; each architecture module does.
The names below are loaded on first use:

- :func:`load_model`, :func:`list_models`, :func:`save_user_model`: the registry
- :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`import_state_dict`: files
- :func:`create_model`, :func:`build_module`: fresh networks by architecture name
- :class:`SegmentationModel`, :class:`ModelCard`, :func:`wrap_module`, :class:`ModelError`
- :func:`detections_to_labels`: Mask R-CNN detections to a label image
- :func:`export_bioimageio`, :func:`import_bioimageio`, :func:`load_package`: bioimage.io
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY: dict[str, str] = {
    "ModelCard": "base",
    "ModelError": "base",
    "SegmentationModel": "base",
    "wrap_module": "base",
    "ARCHITECTURES": "build",
    "build_module": "build",
    "build_model": "build",
    "create_model": "build",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "import_state_dict": "state_dict_import",
    "read_card": "checkpoint",
    "detections_to_labels": "instances",
    "ModelEntry": "registry",
    "list_models": "registry",
    "load_model": "registry",
    "save_user_model": "registry",
    "model_choices": "registry",
    "user_models_dir": "registry",
    "export_bioimageio": "bioimageio_export",
    "export_bioimageio_job": "bioimageio_export",
    "import_bioimageio": "bioimageio_import",
    "load_package": "bioimageio_runtime",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
