from __future__ import annotations

import pytest
import torch

from napari_microseg.core.models.footprint import count_parameters, estimate_training_memory
from napari_microseg.core.models.micronet import MicroNet


@pytest.mark.parametrize(("shape", "n_classes"), [((1, 1, 37, 53), 2), ((2, 3, 64, 80), 3)])
def test_forward_keeps_any_size(shape, n_classes):
    net = MicroNet(shape[1], n_classes, base_width=4).eval()
    with torch.no_grad():
        out = net(torch.rand(shape))
    assert out.shape == (shape[0], n_classes, *shape[2:])


def test_auxiliary_outputs_at_full_resolution_and_consistent_main_output():
    net = MicroNet(1, 2, base_width=4).eval()
    x = torch.rand(1, 1, 37, 53)
    with torch.no_grad():
        main, aux = net.forward_with_aux(x)
        assert torch.equal(main, net(x))
    assert len(aux) == 3
    assert all(a.shape == (1, 2, 37, 53) for a in aux)


def test_multi_resolution_input_reaches_every_down_block():
    net = MicroNet(3, 2, base_width=4)
    first_convs = [block.image_features[0] for block in net.down]
    assert len(first_convs) == 4
    assert all(conv.in_channels == 3 for conv in first_convs)
    assert all(
        isinstance(m, torch.nn.Tanh) for m in net.down[0].features if not hasattr(m, "weight")
    )
    assert not any(isinstance(m, torch.nn.ReLU) for m in net.modules())


def test_overfits_a_tiny_batch(overfit):
    losses = overfit(MicroNet(1, 2, base_width=4), channels=1)
    assert losses[-1] < 0.5 * losses[0]


def test_default_size_is_sane_and_trains_in_8_gb():
    net = MicroNet(3, 2)
    assert count_parameters(net) == 9_948_200  # the published re-implementation: 1.86e9
    estimate = estimate_training_memory(net, (4, 3, 508, 508), optimizer="adam")
    # Leave 1 GB of the 8 GB for the CUDA context, cuDNN workspaces and fragmentation.
    assert estimate.total_gib < 7.0, str(estimate)
    assert estimate.activations > estimate.parameters  # activations dominate, as expected


@pytest.mark.parametrize("bad", [{"depth": 2}, {"dropout": 1.0}, {"base_width": 0}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match="Micro-Net"):
        MicroNet(1, 2, **bad)
