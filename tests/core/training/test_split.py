"""core.training.split: what a fine-tune's split leaves whole, and the tuning planes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.core.training.data import Plane, Region, TrainingDataError
from napari_microseg.core.training.split import annotated_regions, split_tuning


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


def planes_with_one_object(count: int) -> list[Plane]:
    planes = []
    for number in range(count):
        labels = np.zeros((16, 16), np.uint16)
        labels[4:8, 4:8] = 1
        plane = plane_of(labels)
        plane.name = f"p{number}"
        planes.append(plane)
    return planes


def test_tuning_holds_out_whole_training_planes_evenly_spread():
    regions = [Region(p, p.annotated) for p in planes_with_one_object(10)]
    train, tuning, text = split_tuning(regions, fraction=0.2, validation="2 of 12 held out")
    # Two of ten: indices round(4.5) = 4 and 9, away from the start where validation's first is.
    assert [r.plane.name for r in tuning] == ["p4", "p9"]
    assert [r.plane.name for r in train] == ["p0", "p1", "p2", "p3", "p5", "p6", "p7", "p8"]
    assert all(r.mask.all() for r in tuning)
    assert text == "2 of 12 held out; 2 training planes held out for tuning (p4, p9)"


def test_tuning_needs_enough_planes_and_objects_left_to_train_on():
    few = [Region(p, p.annotated) for p in planes_with_one_object(3)]
    with pytest.raises(TrainingDataError, match="at least 4 training planes"):
        split_tuning(few, fraction=0.2, validation="")
    regions = [Region(p, p.annotated) for p in planes_with_one_object(4)]
    for region in regions[:2]:
        region.plane.instances[:] = 0
    with pytest.raises(TrainingDataError, match="Every training object"):
        split_tuning(regions, fraction=0.5, validation="")
    with pytest.raises(ValueError, match="tuning fraction"):
        split_tuning(regions, fraction=0.0, validation="")
