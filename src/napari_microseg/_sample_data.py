"""npe2 sample data: synthetic FIB-SEM, fluorescence and H&E images with their labels.

The arrays are generated from a fixed seed by :mod:`napari_microseg.core.io.synthetic`
(the same arrays as the files in the project's ``sample_data/`` folder).
"""

from __future__ import annotations

from typing import Any

from ._reader import MICROMETRE
from .core.io import synthetic

LayerData = tuple[Any, dict[str, Any], str]


def _layers(sample: synthetic.Sample, **image_kwargs: Any) -> list[LayerData]:
    meta = {"axes": sample.axes, "voxel_size_um": sample.scale, "synthetic": True}
    image = (
        sample.image,
        {
            "name": sample.name,
            "scale": sample.scale,
            "units": MICROMETRE,
            "metadata": meta,
            **image_kwargs,
        },
        "image",
    )
    labels = (
        sample.labels,
        {
            "name": f"{sample.name} ground truth",
            "scale": sample.scale,
            "units": MICROMETRE,
            "opacity": 0.4,
            "visible": False,
            "metadata": meta,
        },
        "labels",
    )
    return [image, labels]


def fibsem_mitochondria() -> list[LayerData]:
    """A synthetic FIB-SEM stack (ZYX, uint8) with mitochondria and their labels."""
    return _layers(synthetic.fibsem_mitochondria(), colormap="gray")


def fluorescence_nuclei() -> list[LayerData]:
    """A synthetic 2D fluorescence image (uint16) of touching nuclei and their labels."""
    return _layers(synthetic.fluorescence_nuclei(), colormap="gray")


def he_glands() -> list[LayerData]:
    """A synthetic H&E-like RGB image of glands and their labels."""
    return _layers(synthetic.he_glands(), rgb=True)
