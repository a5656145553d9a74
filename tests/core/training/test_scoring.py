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
