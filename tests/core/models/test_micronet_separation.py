"""Why the GlaS Micro-Net never separated glands, pinned (issue #20, point 2).

Three causes were found (docs/models.md, "Micro-Net: why it did not separate glands"):

1. With PyTorch's default initialisation every tanh layer shrank the signal about
   threefold, so the fresh network's logits hardly depended on the input (spread
   over an image about 0.004): all four outputs sat at the uniform ``ln 3`` and the
   first hundreds of steps learnt nothing.
2. The config trained with cross-entropy alone and full inverse-frequency class
   balancing: the 3-pixel boundary class (about 3 % of the pixels) then carries as
   much of the loss as the whole gland class, so a network paints boundary wherever
   it is a little unsure and the gland cores that should become objects fall apart.
3. The config recommended no post-processing, so a trained model's card fell back
   to Otsu on the gland class: nothing used the boundary class to split glands.

What was ruled out is pinned too: the output is not shifted against the input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_microseg.core.evaluation.objects import object_f1
from napari_microseg.core.inference.segment import recommended_pipeline
from napari_microseg.core.models.base import ModelCard
from napari_microseg.core.models.micronet import MicroNet
from napari_microseg.core.training.settings import TrainSettings
from napari_microseg.core.training.targets import class_targets, unet_weight_map

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "glas-micronet.yaml"


def _textured_image(seed: int = 0, size: int = 128) -> torch.Tensor:
    """Smooth random RGB blobs in [0, 1], like stained tissue at low magnification."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    noise = rng.random((3, size, size))
    image = np.stack([ndi.gaussian_filter(c, 4) for c in noise])
    image = (image - image.min()) / (image.max() - image.min())
    return torch.from_numpy(image.astype(np.float32))[None]


def _config() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(CONFIG.read_text(encoding="utf-8"))


def _glands(gap: int = 4) -> np.ndarray:
    """Two GlaS-sized glands (about 100 px across) ``gap`` pixels apart, and a third apart."""
    yy, xx = np.mgrid[:160, :320]
    labels = np.zeros((160, 320), np.int32)
    labels[(yy - 80) ** 2 + (xx - 60) ** 2 < 50**2] = 1
    labels[(yy - 80) ** 2 + (xx - (160 + gap)) ** 2 < 50**2] = 2
    labels[(yy - 80) ** 2 + (xx - 275) ** 2 < 30**2] = 3
    return labels


# ----------------------------------------------------------------------------- 1. initialisation


def test_fresh_network_output_depends_on_the_input():
    # Before the fix the logits' spread over the image was 0.003-0.005 (their values
    # nearly constant) and the last up block's activations had a spread of 0.04-0.06.
    torch.manual_seed(0)
    net = MicroNet(3, 3, base_width=16).eval()
    seen = {}
    net.up[-1].register_forward_hook(lambda m, i, o: seen.setdefault("up", o))
    with torch.no_grad():
        main, aux = net.forward_with_aux(_textured_image())
    assert float(seen["up"].std()) > 0.3
    # The logits differ between pixels, yet the probabilities start near uniform: the
    # classifiers start small, so the loss starts at ln 3, not above it.
    assert 0 < float(net.head[1].weight.detach().std()) < 0.05
    for logits in (main, *aux):
        assert float(logits[0].std(dim=(1, 2)).mean()) > 0.02
        probs = torch.softmax(logits, dim=1)
        assert float((probs - 1 / 3).abs().max()) < 0.3


def test_signal_does_not_fade_through_the_network():
    torch.manual_seed(0)
    net = MicroNet(3, 2, base_width=8).eval()
    spreads = []
    for module in net.modules():
        if isinstance(module, torch.nn.Tanh):
            module.register_forward_hook(lambda m, i, o: spreads.append(float(o.std())))
    with torch.no_grad():
        net(_textured_image(1, 64))
    # Default initialisation: from about 0.3 after the first layer down to 0.02 in the bridge.
    assert min(spreads) > 0.15, spreads


def test_transposed_convolutions_count_only_the_taps_that_reach_a_pixel():
    net = MicroNet(3, 2, base_width=8)
    up = net.aux[0].up  # 4x4 kernel, stride 4: one tap per output pixel
    assert isinstance(up, torch.nn.ConvTranspose2d)
    expected = (5 / 3) / up.in_channels**0.5
    assert float(up.weight.detach().std()) == pytest.approx(expected, rel=0.15)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    assert all(float(m.bias.abs().max()) == 0 for m in convs)


# ----------------------------------------------------------------------------- 2. loss weights


def test_config_does_not_let_the_boundary_class_dominate_the_loss():
    config = _config()
    settings = TrainSettings.from_dict(config["training"]).validate()
    classes = config["classes"]
    labels = _glands()
    target = class_targets(labels, classes, boundary_width=settings.boundary_width)
    weights = unet_weight_map(
        labels, target, n_classes=len(classes), w0=0.0, balance=settings.class_balance
    )
    share = [float(weights[target == c].sum() / weights.sum()) for c in range(len(classes))]
    fraction = float((target == 2).mean())
    # Full balancing (class_balance 1) gives each class a third of the loss: the boundary,
    # 3 % of the pixels, then weighs 17x a gland pixel and an unsure network paints boundary.
    assert 0.01 < fraction < 0.1
    assert share[2] < 0.2, share
    ratio = weights[target == 2].mean() / weights[target == 1].mean()
    assert ratio < 8, ratio
    # ... and a Dice term (as in the gland U-Net) scores the boundary class as an object.
    assert "dice" in settings.loss.split("+")
    assert settings.edge_weights is not False  # the paper's weight map stays (w0 on the gaps)


def test_full_class_balancing_is_what_made_the_boundary_dominant():
    # The mechanism behind the previous test, on the same glands: with class_balance 1 the
    # three classes carry equal shares, so the optimal constant output is uniform.
    labels = _glands()
    target = class_targets(labels, ["background", "gland", "boundary"], boundary_width=3)
    weights = unet_weight_map(labels, target, n_classes=3, w0=0.0, balance=1.0)
    share = [float(weights[target == c].sum() / weights.sum()) for c in range(3)]
    assert share == pytest.approx([1 / 3] * 3, abs=1e-3)


def test_boundary_width_keeps_glands_apart_at_glas_scale():
    config = _config()
    width = config["training"]["boundary_width"]
    labels = _glands(gap=2)
    target = class_targets(labels, config["classes"], boundary_width=width)
    # Between the two glands 2 px apart the gland cores are at least 2 + 2 * width px apart.
    row = target[80, 100:130]
    cores = np.flatnonzero(row == 1)
    gap = np.diff(cores).max() - 1
    assert gap >= 2 + 2 * width


# ----------------------------------------------------------------------------- 3. post-processing


def _card(recommended: dict) -> ModelCard:
    config = _config()
    return ModelCard(
        name="gland-he-micronet",
        architecture="micronet",
        in_channels=3,
        classes=list(config["classes"]),
        recommended=recommended,
    )


def _probabilities(labels: np.ndarray, boundary_width: int, blur_boundary: int = 0) -> np.ndarray:
    """Class probabilities of a model that learnt the targets, with a thicker boundary."""
    from scipy import ndimage as ndi

    classes = ["background", "gland", "boundary"]
    target = class_targets(labels, classes, boundary_width=boundary_width)
    if blur_boundary:
        thick = ndi.binary_dilation(target == 2, iterations=blur_boundary) & (labels > 0)
        target = np.where(thick, 2, target)
    prob = np.stack([(target == c).astype(np.float32) for c in range(3)])
    prob = 0.9 * prob + 0.1 / 3
    return prob


def test_recommended_postprocessing_splits_glands_along_the_boundary_class():
    config = _config()
    recommended = config["recommended"]
    assert recommended["postprocess"]["boundary_class"] == config["classes"].index("boundary")
    pipeline = recommended_pipeline(_card(recommended), 3)
    # Glands that touch (gap 0), and a model whose boundary is 3x thicker than the target's.
    labels = _glands(gap=0)
    prob = _probabilities(labels, config["training"]["boundary_width"], blur_boundary=6)
    predicted = pipeline.run(prob, class_axis=0)
    assert predicted.max() == 3
    assert object_f1(labels, predicted) == 1.0


def test_without_a_recommendation_glands_that_touch_merge_and_boundaries_are_lost():
    # What a card from the old config did (Otsu on the gland class, fill holes): the
    # boundary class is ignored, so a thick predicted boundary shrinks every gland.
    pipeline = recommended_pipeline(_card({}), 3)
    assert pipeline.boundary_class is None
    labels = _glands(gap=0)
    prob = _probabilities(labels, 3, blur_boundary=12)
    predicted = pipeline.run(prob, class_axis=0)
    assert object_f1(labels, predicted) < 1.0


# ----------------------------------------------------------------------------- ruled out: offset


def test_output_pixel_is_centred_on_its_input_pixel():
    # The input pixels an output pixel depends on are centred on it (within a pixel): the
    # padding, pooling, resizing, transposed convolutions and the final crop add no offset.
    torch.manual_seed(0)
    net = MicroNet(3, 3, base_width=4, dropout=0.0).eval()
    image = _textured_image(3, 96).requires_grad_(True)
    y, x = 41, 57
    net(image)[0, :, y, x].sum().backward()
    grad = image.grad.abs().sum(dim=(0, 1)).numpy()
    yy, xx = np.mgrid[: grad.shape[0], : grad.shape[1]]
    window = (abs(yy - y) <= 12) & (abs(xx - x) <= 12)
    cy = (grad * yy * window).sum() / (grad * window).sum()
    cx = (grad * xx * window).sum() / (grad * window).sum()
    assert abs(cy - y) < 1 and abs(cx - x) < 1
