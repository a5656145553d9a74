"""Validation in batches on the device scores exactly as region by region."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_microseg.core.io import synthetic
from napari_microseg.core.models.build import create_model
from napari_microseg.core.training import scoring
from napari_microseg.core.training.data import Region, TrainingPair, prepare


def test_batched_validation_scores_like_one_region_at_a_time(monkeypatch):
    torch.manual_seed(0)
    model = create_model(
        "unet", name="three", classes=["background", "nucleus", "boundary"], depth=2, base_width=4
    )
    planes = []
    for seed in range(4):
        sample = synthetic.fluorescence_nuclei((64, 64), n_objects=8, seed=seed)
        planes += prepare([TrainingPair(sample.image, sample.labels)], model).planes
    regions = [Region(p, p.annotated) for p in planes]
    regions.append(Region(planes[0], np.pad(np.ones((20, 30), bool), ((4, 40), (10, 24)))))
    device = torch.device("cpu")
    batched = scoring.evaluate_regions(model, regions, device=device)
    monkeypatch.setattr(scoring, "BATCH_PIXELS", 1)  # one crop per forward pass
    single = scoring.evaluate_regions(model, regions, device=device)
    assert batched.keys() == single.keys()
    for key, value in single.items():
        assert batched[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert batched["pixels"] == sum(r.pixels for r in regions)


class FixedLogits(torch.nn.Module):
    """A network that answers every input with the same logits (1, K, H, W)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1, -1, -1)


#: The watershed a gland card recommends, without its minimum size.
GLAND_WATERSHED = {
    "method": "watershed",
    "threshold": 0.5,
    "foreground_class": 1,
    "boundary_class": 2,
    "h": 2,
}


def gland_and_speck():
    """A 3-class model that finds a plane's one gland and also a 3 x 3 speck of gland."""
    classes = ["background", "gland", "boundary"]
    model = create_model("unet", name="glands", classes=classes, depth=2, base_width=4)
    yy, xx = np.mgrid[:64, :64]
    gland = ((yy - 24) ** 2 + (xx - 24) ** 2 <= 12**2).astype(np.uint16)
    plane = prepare([TrainingPair(gland.astype(np.float32), gland)], model).planes[0]
    predicted = np.zeros((64, 64), np.int64)
    predicted[gland == 1] = 1
    predicted[50:53, 50:53] = 1
    logits = torch.nn.functional.one_hot(torch.from_numpy(predicted), 3).permute(2, 0, 1)
    model.module = FixedLogits(10.0 * logits[None].float())
    return model, plane


def test_a_watershed_card_is_scored_on_the_objects_its_watershed_finds():
    model, plane = gland_and_speck()
    regions = [Region(plane, plane.annotated)]
    device = torch.device("cpu")

    assert scoring.object_pipeline(model) is None  # no recommendation: components
    components = scoring.evaluate_regions(model, regions, device=device)
    assert components["object_f1"] == pytest.approx(2 / 3)  # one gland, one false speck

    model.card.recommended["postprocess"] = {**GLAND_WATERSHED, "min_size": 50}
    assert scoring.object_pipeline(model) is not None
    watershed = scoring.evaluate_regions(model, regions, device=device)
    assert watershed["object_f1"] == pytest.approx(1.0)  # the speck is below min_size
    assert watershed["dice"] == components["dice"]  # pixels are scored on the class map


def test_objects_come_from_components_for_other_post_processing():
    model = create_model(
        "unet", name="three", classes=["background", "nucleus", "boundary"], depth=2, base_width=4
    )
    model.card.recommended["postprocess"] = {"method": "otsu", "fill_holes": True}
    assert scoring.object_pipeline(model) is None
    two = create_model("unet", name="two", depth=2, base_width=4)
    two.card.recommended["postprocess"] = {"method": "watershed", "boundary_class": 2}
    assert scoring.object_pipeline(two) is None  # no boundary class to split along


def test_a_resampled_plane_scores_the_watershed_with_sizes_in_its_own_pixels():
    model, plane = gland_and_speck()  # the speck: 9 pixels of the plane
    # 100 image pixels: the speck is 9 x 16 = 144 of them, the gland far more.
    model.card.recommended["postprocess"] = {**GLAND_WATERSHED, "min_size": 100}
    regions = [Region(plane, plane.annotated)]
    device = torch.device("cpu")
    assert scoring.evaluate_regions(model, regions, device=device)["object_f1"] == 1.0
    # A plane resampled to a quarter of the image's rows and columns: 100 image pixels are
    # 6.25 of its own, and the speck is a real (false) object, as on the image itself.
    plane.zoom = (0.25, 0.25)
    scored = scoring.evaluate_regions(model, regions, device=device)
    assert scored["object_f1"] == pytest.approx(2 / 3)
