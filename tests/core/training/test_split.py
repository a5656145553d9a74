"""What a fine-tune's split leaves whole: every annotated plane once (core.training.split)."""

from __future__ import annotations

import numpy as np

from napari_microseg.core.training.data import Plane, Region
from napari_microseg.core.training.split import annotated_regions


def plane_of(labels: np.ndarray) -> Plane:
    return Plane(
        labels[None].astype(np.float32),
        labels.astype(np.uint16),
        (labels > 0).astype(np.uint8),
        np.ones(labels.shape, bool),
        name="plane",
    )


def test_the_annotated_regions_are_whole_planes_each_once():
    labels = np.zeros((64, 64), np.uint16)
    labels[8:20, 8:20] = 1
    plane, other = plane_of(labels), plane_of(labels)
    other.annotated[:, 32:] = False
    strip = np.zeros(labels.shape, bool)
    strip[:12] = True
    train = [Region(plane, ~strip), Region(other, other.annotated & ~strip)]
    held_out = [Region(plane, strip), Region(other, other.annotated & strip)]
    regions = annotated_regions(train, held_out)
    assert [r.plane for r in regions] == [plane, other]
    assert regions[0].mask.all() and np.array_equal(regions[1].mask, other.annotated)
