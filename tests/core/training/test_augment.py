"""Augmentations move image and masks together and never invent label values."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch

from napari_microseg.core.training.augment import AugmentConfig, Augmenter, window_margin
from napari_microseg.core.training.augment_ops import STAIN_FLOOR, median_blur, perturb_stains

SQUARE = 8
GEOMETRIC = {
    "crop": {"crop_p": 1.0},
    "hflip": {"hflip_p": 1.0},
    "vflip": {"vflip_p": 1.0},
    "rot90": {"rot90_p": 1.0},
    "rotate": {"rotate_p": 1.0},
    "affine": {"affine_p": 1.0},
    "elastic": {"elastic_p": 1.0, "elastic_alpha": (200.0, 300.0)},
    "radial": {"distort_p": 1.0, "distort_kinds": ("radial",)},
    "piecewise": {"distort_p": 1.0, "distort_kinds": ("piecewise",)},
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def only(**enabled) -> AugmentConfig:
    return AugmentConfig(**{**AugmentConfig.preset("none").__dict__, **enabled})


def checkerboard(size: int = 96):
    """A checkerboard image and a label image with one unique id per square."""
    yy, xx = np.mgrid[:size, :size]
    row, col = yy // SQUARE, xx // SQUARE
    board = ((row + col) % 2).astype(np.float32)
    ids = (row * (size // SQUARE) + col + 1).astype(np.int64)
    colour = np.zeros(ids.max() + 1, np.float32)
    colour[ids.ravel()] = board.ravel()
    return board, ids, colour


@pytest.mark.parametrize("name", [*GEOMETRIC, "all"])
def test_checkerboard_stays_aligned(name):
    board, ids, colour = checkerboard()
    settings = (
        {k: v for d in GEOMETRIC.values() for k, v in d.items() if k != "distort_kinds"}
        if name == "all"
        else GEOMETRIC[name]
    )
    augment = Augmenter(only(**settings), seed=3)
    for _ in range(3):
        image, labels, annotated = augment(board, ids, np.ones(board.shape, bool))
        known = annotated & (labels > 0)
        assert known.mean() > 0.4
        # Bilinear blurs the image only at square edges; the labels must agree elsewhere.
        # Everything at once resamples twice (affine, then one displacement field).
        agree = (image[known] > 0.5) == (colour[labels[known]] > 0.5)
        assert agree.mean() > (0.93 if name == "all" else 0.98), name
        # Void brought in from outside is never annotated and has no label.
        assert not labels[~annotated].any()


def test_masks_never_get_new_values_even_for_huge_ids():
    _, ids, _ = checkerboard()
    huge = ids + 2**40  # beyond float32: must still come back exactly
    cfg = {k: v for d in GEOMETRIC.values() for k, v in d.items() if k != "distort_kinds"}
    augment = Augmenter(only(**cfg), seed=0)
    for _ in range(4):
        _, out = augment(np.zeros(ids.shape, np.float32), huge)
        assert out.dtype == huge.dtype
        assert set(np.unique(out)) <= set(np.unique(huge)) | {0}


def test_dtypes_kinds_and_out_size_are_kept():
    rng = np.random.default_rng(0)
    image = rng.random((3, 64, 64), dtype=np.float32)
    labels = rng.integers(0, 5, (64, 64)).astype(np.uint16)
    weight = rng.random((64, 64), dtype=np.float32)
    out = Augmenter("default", seed=1)(image, labels, labels > 0, weight, out_size=(40, 40))
    assert [o.shape for o in out] == [(3, 40, 40), (40, 40), (40, 40), (40, 40)]
    assert [o.dtype for o in out] == [np.float32, np.uint16, bool, np.float32]
    tensors = Augmenter("light", seed=1)(torch.from_numpy(image[0]), torch.from_numpy(weight))
    assert all(isinstance(t, torch.Tensor) for t in tensors)
    assert tensors[0].shape == (64, 64)


def test_same_seed_same_augmentation_whatever_else_uses_torch_random():
    board, ids, _ = checkerboard(48)
    first = Augmenter("default", seed=7)(board, ids)
    torch.rand(100)  # another user of the global generator in between
    second = Augmenter("default", seed=7)(board, ids)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    other = Augmenter("default", seed=8)(board, ids)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_intensity_changes_touch_only_the_image():
    board, ids, _ = checkerboard(48)
    cfg = only(noise_p=1.0, blur_p=1.0, sharpen_p=1.0)
    image, labels = Augmenter(cfg, seed=0)(board, ids)
    assert np.array_equal(labels, ids)
    assert not np.array_equal(image, board)


def test_noise_scales_with_the_image_range():
    flat = np.zeros((64, 64), np.float32)
    flat[:, 32:] = 100.0
    image = Augmenter(only(noise_p=1.0, noise_sigma=(0.02, 0.02)), seed=0)(flat)[0]
    assert np.std(image[:, :32]) == pytest.approx(2.0, rel=0.15)


def test_median_blur_removes_salt():
    image = torch.zeros(1, 9, 9)
    image[0, 4, 4] = 1.0
    assert median_blur(image, 3).max() == 0


def test_presets_and_config_checks():
    none = AugmentConfig.preset("none")
    assert all(getattr(none, f.name) == 0 for f in fields(none) if f.name.endswith("_p"))
    light = AugmentConfig.preset("light")
    assert not light.geometric and window_margin(light, 128) == 0
    assert window_margin(AugmentConfig(), 128) == 27
    assert AugmentConfig.from_value({"preset": "light", "noise_p": 0.5}).noise_p == 0.5
    with pytest.raises(ValueError, match="Unknown augmentation setting"):
        AugmentConfig.from_value({"twirl_p": 1})
    with pytest.raises(ValueError, match="must be in"):
        AugmentConfig(hflip_p=2)
    with pytest.raises(ValueError, match="preset"):
        AugmentConfig.preset("heavy")


# ----------------------------------------------------------------------------- H&E stains


def stained(densities: np.ndarray) -> torch.Tensor:
    """An RGB image (3, H, W) of stain densities (3, H, W) (haematoxylin, eosin, DAB)."""
    from skimage.color import rgb_from_hed

    density = np.einsum("shw,sc->chw", densities, rgb_from_hed)
    return torch.from_numpy(np.exp(-density).astype(np.float32))


def test_unchanged_stains_give_the_image_back():
    rgb = torch.from_numpy(
        np.random.default_rng(0).uniform(0.05, 1.0, (3, 16, 16)).astype(np.float32)
    )
    same = perturb_stains(rgb, np.ones(3), np.zeros(3))
    assert torch.allclose(same, rgb, atol=1e-5)


def test_twice_the_haematoxylin_is_twice_its_optical_density():
    densities = np.zeros((3, 4, 4))
    densities[0] = 0.4  # haematoxylin only
    densities[1, :, 2:] = 0.3  # and eosin on the right half
    out = perturb_stains(stained(densities), np.array([2.0, 1.0, 1.0]), np.zeros(3))
    expected = densities.copy()
    expected[0] = 0.8
    assert torch.allclose(out, stained(expected), atol=1e-5)


def test_a_shift_tints_white_background_with_that_stain():
    white = torch.ones(3, 2, 2)
    out = perturb_stains(white, np.ones(3), np.array([0.0, 0.2, 0.0]))
    densities = np.zeros((3, 2, 2))
    densities[1] = 0.2
    assert torch.allclose(out, stained(densities), atol=1e-5)
    assert (out[1] < out[0]).all() and (out[1] < out[2]).all()  # eosin is pink


def test_black_pixels_are_floored_and_results_stay_in_range():
    rgb = torch.zeros(3, 2, 2)
    out = perturb_stains(rgb, np.full(3, 0.5), np.zeros(3))
    assert torch.allclose(out, torch.full((3, 2, 2), STAIN_FLOOR**0.5), rtol=1e-4)
    assert perturb_stains(torch.ones(3, 2, 2), np.ones(3), np.full(3, -0.5)).max() <= 1


def test_stain_augmentation_needs_rgb():
    with pytest.raises(ValueError, match="RGB"):
        perturb_stains(torch.ones(1, 4, 4), np.ones(3), np.zeros(3))


def test_stain_augmentation_is_off_by_default_and_keeps_other_runs_streams():
    assert AugmentConfig().stain_p == 0 and AugmentConfig.preset("light").stain_p == 0
    rgb = np.random.default_rng(1).uniform(0.1, 1, (3, 32, 32)).astype(np.float32)
    default = Augmenter("default", seed=3)(rgb)[0]
    # A stain strength that is never used changes nothing, not even the random stream.
    unused = Augmenter({"stain_sigma": 0.3}, seed=3)(rgb)[0]
    assert np.array_equal(default, unused)
    recoloured = Augmenter(only(stain_p=1.0, stain_sigma=0.2), seed=3)(rgb)[0]
    assert recoloured.shape == rgb.shape and not np.allclose(recoloured, rgb, atol=1e-3)
    assert 0 <= recoloured.min() and recoloured.max() <= 1
    with pytest.raises(ValueError, match="stain_sigma"):
        AugmentConfig(stain_sigma=1.5)


def test_a_grey_model_with_stain_augmentation_is_refused_before_training():
    from types import SimpleNamespace

    from napari_microseg.core.training.sampling import training_sampler
    from napari_microseg.core.training.settings import TrainingError, TrainSettings

    grey = SimpleNamespace(name="grey", in_channels=1, n_classes=2)
    settings = TrainSettings(augment={"stain_p": 0.5})
    with pytest.raises(TrainingError, match="RGB model"):
        training_sampler(grey, settings, [])
