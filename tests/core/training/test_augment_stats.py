"""The cheaper augmentation keeps its statistics: field strength, smoothness, exact paths."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from napari_microseg.core.training.augment import AugmentConfig, Augmenter
from napari_microseg.core.training.augment_ops import coarse_shape, median_blur, smooth_field


def field_stats(fields: np.ndarray, lag: int = 5) -> tuple[float, float]:
    """RMS of the x displacement and its correlation at ``lag`` pixels along x."""
    x = fields[:, 0]
    rms = float(np.sqrt(np.mean(x**2)))
    a, b = x[..., :-lag].ravel(), x[..., lag:].ravel()
    return rms, float(np.corrcoef(a, b)[0, 1])


def test_the_coarse_elastic_field_is_as_strong_and_smooth_as_torchvisions():
    size, sigma, alpha, n = 128, 5.0, 60.0, 24
    torch.manual_seed(0)
    reference = []
    for _ in range(n):
        field = v2.ElasticTransform(alpha=alpha, sigma=sigma).make_params(
            [torch.zeros(1, size, size)]
        )["displacement"][0]
        reference.append(field.permute(2, 0, 1).numpy() * size / 2)  # normalized -> pixels
    rng = np.random.default_rng(0)
    ours = []
    for _ in range(n):
        rows, cols, _ = coarse_shape(size, size, sigma)
        noise = rng.random((2, rows, cols), dtype=np.float32) * 2 - 1
        ours.append(smooth_field(noise, sigma, size, size) * alpha / 2)
    # Away from torchvision's reflected borders.
    inner = slice(20, -20)
    ref_rms, ref_corr = field_stats(np.stack(reference)[..., inner, inner])
    our_rms, our_corr = field_stats(np.stack(ours)[..., inner, inner])
    assert abs(our_rms / ref_rms - 1) < 0.1, (our_rms, ref_rms)
    assert abs(our_corr - ref_corr) < 0.1, (our_corr, ref_corr)


def test_the_median_network_equals_sorting():
    image = torch.rand(2, 37, 41)
    pad = torch.nn.functional.pad(image[None], (1, 1, 1, 1), mode="replicate")[0]
    windows = pad.unfold(-2, 3, 1).unfold(-2, 3, 1).reshape(2, 37, 41, 9)
    assert torch.equal(median_blur(image, 3), windows.median(dim=-1).values)


def test_flips_and_quarter_turns_copy_pixels_exactly():
    image = np.random.default_rng(0).random((3, 40, 40), dtype=np.float32)
    config = AugmentConfig.preset("light")
    config = AugmentConfig.from_value(
        {**config.to_dict(), "noise_p": 0, "blur_p": 0, "sharpen_p": 0, "preset": "none"}
    )
    augment = Augmenter(config, seed=2)
    outputs = [augment(image)[0] for _ in range(8)]
    assert all(set(out.ravel()) <= set(image.ravel()) for out in outputs)
    assert any(not np.array_equal(out, image) for out in outputs)
    assert all(np.allclose(np.sort(out.ravel()), np.sort(image.ravel())) for out in outputs)
