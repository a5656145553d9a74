from __future__ import annotations

import pytest
import torch

from napari_microseg.core.models.footprint import count_parameters
from napari_microseg.core.models.segnet import PAPER_CONFIG, SegNet


@pytest.mark.parametrize(("shape", "n_classes"), [((1, 1, 37, 53), 2), ((2, 3, 64, 80), 4)])
def test_forward_keeps_any_size(shape, n_classes):
    net = SegNet(shape[1], n_classes, depth=3, base_width=4).eval()
    with torch.no_grad():
        out = net(torch.rand(shape))
    assert out.shape == (shape[0], n_classes, *shape[2:])


def test_decoder_upsamples_with_the_encoder_pooling_indices():
    net = SegNet(1, 2, depth=2, base_width=4).eval()
    calls = []
    original = torch.nn.functional.max_unpool2d

    def spy(x, indices, *args, **kwargs):
        calls.append(indices.shape)
        return original(x, indices, *args, **kwargs)

    torch.nn.functional.max_unpool2d = spy
    try:
        net(torch.rand(1, 1, 16, 16))
    finally:
        torch.nn.functional.max_unpool2d = original
    assert calls == [(1, 8, 4, 4), (1, 4, 8, 8)]


def test_overfits_a_tiny_batch(overfit):
    losses = overfit(SegNet(3, 2, depth=3, base_width=8), channels=3)
    assert losses[-1] < 0.5 * losses[0]


def test_parameter_counts_of_default_and_paper_configurations():
    assert count_parameters(SegNet(1, 2)) == 7_371_938
    paper = SegNet(1, 2, **PAPER_CONFIG)
    assert count_parameters(paper) == 29_471_042
    # VGG-16's 13 encoder convolutions.
    encoder_convs = [m for m in paper.encoders.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(encoder_convs) == 13


def test_too_deep_is_refused():
    with pytest.raises(ValueError, match="at most 5"):
        SegNet(1, 2, depth=6)
