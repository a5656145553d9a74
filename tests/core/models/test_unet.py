from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_microseg.core.models.footprint import count_parameters
from napari_microseg.core.models.unet import PAPER_CONFIG, UNet


@pytest.mark.parametrize(("shape", "n_classes"), [((1, 1, 37, 53), 2), ((2, 3, 64, 80), 3)])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_forward_keeps_any_size(shape, n_classes, batch_norm):
    net = UNet(shape[1], n_classes, depth=3, base_width=4, batch_norm=batch_norm).eval()
    with torch.no_grad():
        out = net(torch.rand(shape))
    assert out.shape == (shape[0], n_classes, *shape[2:])
    assert torch.isfinite(out).all()


def test_tiny_inputs_smaller_than_the_padding():
    net = UNet(1, 2, depth=4, base_width=4).eval()
    assert net(torch.rand(1, 1, 3, 5)).shape == (1, 2, 3, 5)


def test_overfits_a_tiny_batch(overfit):
    losses = overfit(UNet(1, 2, depth=3, base_width=8), channels=1)
    assert losses[-1] < 0.5 * losses[0]


def test_parameter_counts_of_default_and_paper_configurations():
    assert count_parameters(UNet(1, 2)) == 1_925_058
    assert count_parameters(UNet(1, 2, **PAPER_CONFIG)) == 31_030_658
    assert PAPER_CONFIG == {"depth": 5, "base_width": 64, "batch_norm": False}


def test_paper_structure():
    net = UNet(1, 2, **PAPER_CONFIG)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    ups = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    # The paper's 23 convolutional layers: 18 3x3, 4 up-convolutions and the 1x1 head.
    assert sum(c.kernel_size == (3, 3) for c in convs) == 18
    assert len(ups) == 4 and all(u.kernel_size == (2, 2) for u in ups)
    assert convs[-1].kernel_size == (1, 1)
    assert max(c.out_channels for c in convs) == 1024


@pytest.mark.parametrize("shape", [(1, 3, 64, 96), (2, 3, 37, 53)])
def test_downsample_is_the_plain_network_on_pooled_pixels(shape):
    plain = UNet(3, 3, depth=3, base_width=4, batch_norm=True).eval()
    coarse = UNet(3, 3, depth=3, base_width=4, batch_norm=True, downsample=2).eval()
    coarse.load_state_dict(plain.state_dict())  # the same weights: no layer depends on it
    x = torch.rand(shape)
    with torch.no_grad():
        out = coarse(x)
        assert out.shape == (shape[0], 3, *shape[2:])
        if shape[2] % 8 == 0 and shape[3] % 8 == 0:  # no padding: exactly pool, net, upsample
            expected = F.interpolate(
                plain(F.avg_pool2d(x, 2)), size=shape[2:], mode="bilinear", align_corners=False
            )
            torch.testing.assert_close(out, expected)
    assert coarse.multiple == 8 and plain.multiple == 4


@pytest.mark.parametrize("bad", [{"depth": 0}, {"base_width": -1}, {"downsample": 0}])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(ValueError, match="positive"):
        UNet(1, 2, **bad)
