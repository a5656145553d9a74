from __future__ import annotations

import pytest
import torch

from napari_microseg.core.models.footprint import count_parameters, estimate_training_memory


def test_count_parameters_and_trainable_only():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(2, 1, 1))
    assert count_parameters(net) == (9 * 2 + 2) + (2 + 1)
    net[0].requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == 3


def test_memory_estimate_counts_saved_activations_without_running_the_network():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Tanh())
    estimate = estimate_training_memory(net, (2, 1, 64, 64), optimizer="sgd")
    # The convolution saves its input (2*1*64*64 floats); tanh saves its output (2*8*64*64).
    assert estimate.activations == 4 * (2 * 64 * 64 + 2 * 8 * 64 * 64)
    assert estimate.optimizer == 0
    assert estimate.parameters == estimate.gradients == 4 * count_parameters(net)
    assert next(net.parameters()).device.type == "cpu"  # the caller's module is untouched
    assert "GiB" in str(estimate)


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="optimizer"):
        estimate_training_memory(torch.nn.Identity(), (1, 1, 4, 4), optimizer="lion")
