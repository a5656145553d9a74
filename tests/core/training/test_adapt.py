"""Label-free adaptation (batch-norm statistics), the few-shot recipe and its input checks (#21)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from threshold_net import Threshold

from napari_microseg.core.io import synthetic
from napari_microseg.core.models import registry
from napari_microseg.core.models.base import ModelCard, ModelError, SegmentationModel
from napari_microseg.core.models.build import create_model
from napari_microseg.core.models.checkpoint import inspect_checkpoint
from napari_microseg.core.progress import drain
from napari_microseg.core.training.adapt import (
    adapt,
    adapt_batchnorm,
    batchnorm_layers,
    frozen_batchnorm,
    input_batches,
)
from napari_microseg.core.training.annotations import check_classes, check_modality, edited_region
from napari_microseg.core.training.data import TrainingDataError
from napari_microseg.core.training.fewshot import (
    intensity_quantiles,
    match_intensities,
    parameter_groups,
    scaled_adam,
)
from napari_microseg.core.training.jobs import finetune
from napari_microseg.core.training.settings import TrainSettings

pytestmark = pytest.mark.usefixtures("user_folder")


def conv_bn(in_channels: int = 1, modality: str = "EM") -> SegmentationModel:
    """x -> 1x1 conv (fixed weights) -> batch norm -> 1x1 conv to 2 classes."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, 3, 1),
        torch.nn.BatchNorm2d(3),
        torch.nn.Conv2d(3, 2, 1),
    )
    card = ModelCard(
        name="convbn",
        architecture="custom",
        in_channels=in_channels,
        normalization={"kind": "none"},
        modality=modality,
    )
    return SegmentationModel(module, card)


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def tiny():
    """A tiny batch-norm U-Net saved in the user folder as 'tiny-bn'."""
    torch.manual_seed(0)
    model = create_model("unet", name="tiny-bn", depth=2, base_width=4, batch_norm=True)
    registry.save_user_model(model)
    return registry.load_model("tiny-bn", device="cpu")


# ----------------------------------------------------------------------------- statistics


def test_running_statistics_become_those_of_the_new_data():
    model = conv_bn()
    rng = np.random.default_rng(0)
    batches = [rng.normal(5.0, 2.0, (1, 1, 20, 30)).astype(np.float32) for _ in range(3)]
    batches.append(rng.normal(-1.0, 0.5, (2, 1, 10, 10)).astype(np.float32))  # other sizes too
    n = adapt_batchnorm(model.module, batches)
    assert n == 1 and not model.module.training
    conv = model.module[0]
    with torch.no_grad():
        features = torch.cat(
            [conv(torch.from_numpy(b)).permute(1, 0, 2, 3).reshape(3, -1) for b in batches], 1
        ).double()
    bn = model.module[1]
    np.testing.assert_allclose(bn.running_mean.numpy(), features.mean(1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        bn.running_var.numpy(), features.var(1, unbiased=True).numpy(), rtol=1e-4
    )
    assert int(bn.num_batches_tracked) == 0  # the parent's count, untouched


def test_strength_mixes_old_and_new_statistics():
    model = conv_bn()
    bn = model.module[1]
    old = bn.running_mean.clone()
    batch = np.full((1, 1, 8, 8), 3.0, np.float32)
    full = conv_bn()
    adapt_batchnorm(full.module, [batch])
    adapt_batchnorm(model.module, [batch], strength=0.25)
    expected = 0.75 * old + 0.25 * full.module[1].running_mean
    np.testing.assert_allclose(bn.running_mean.numpy(), expected.numpy(), rtol=1e-6)


def test_a_model_without_batch_norm_has_nothing_to_adapt():
    model = create_model("unet", name="plain", depth=2, base_width=4)
    assert batchnorm_layers(model.module) == []
    with pytest.raises(ModelError, match="no batch-norm"):
        drain(adapt(model, np.zeros((32, 32), np.float32), save=False), show=False)


def test_input_batches_are_normalised_crops_within_the_budget(tiny):
    image = np.arange(6 * 40 * 50, dtype=np.uint16).reshape(6, 40, 50)
    batches = input_batches(tiny, image, axes="ZYX", max_pixels=3 * 40 * 50, crop=64)
    assert len(batches) == 3 and all(b.shape == (1, 1, 40, 50) for b in batches)
    assert all(b.dtype == np.float32 for b in batches)
    assert -0.1 < min(b.min() for b in batches) and max(b.max() for b in batches) < 1.1


def test_input_batches_are_resampled_to_the_model_pixel_size(tiny):
    from dataclasses import replace

    model = tiny  # a fresh load for each test
    model.card = replace(model.card, pixel_size_um=0.625)
    image = np.arange(6 * 40 * 50, dtype=np.uint16).reshape(6, 40, 50)
    # 1.25 µm pixels, twice the model's: each crop doubles in Y and X, its values stay in range.
    batches = input_batches(
        model, image, axes="ZYX", max_pixels=3 * 40 * 50, crop=64, spacing=(1.0, 1.25, 1.25)
    )
    plain = input_batches(model, image, axes="ZYX", max_pixels=3 * 40 * 50, crop=64)
    assert len(batches) == 3 and all(b.shape == (1, 1, 80, 100) for b in batches)
    assert all(b.dtype == np.float32 and b.flags.c_contiguous for b in batches)
    for big, small in zip(batches, plain, strict=True):
        assert big.mean() == pytest.approx(small.mean(), abs=1e-3)
    # An unknown pixel size (napari's scale 1) leaves the crops as they are.
    same = input_batches(model, image, axes="ZYX", max_pixels=3 * 40 * 50, spacing=(1, 1, 1))
    assert all(b.shape == (1, 1, 40, 50) for b in same)


# ----------------------------------------------------------------------------- the job


def test_adapt_saves_a_new_version_with_lineage_and_leaves_the_parent(tiny):
    parent_file = registry.find_model("tiny-bn").path
    before = file_hash(parent_file)
    parent_state = {k: v.clone() for k, v in tiny.module.state_dict().items()}
    image = synthetic.fibsem_mitochondria((3, 64, 64), seed=1).image
    events = []
    result = drain(
        adapt("tiny-bn", image, axes="ZYX", name="tiny-bn-session2"),
        show=False,
        on_progress=events.append,
    )
    assert file_hash(parent_file) == before
    assert all(torch.equal(v, tiny.module.state_dict()[k]) for k, v in parent_state.items())
    assert result.name == "tiny-bn-session2" and result.card.parent == "tiny-bn"
    lineage = result.card.lineage
    assert lineage["kind"] == "adapt" and lineage["parent"] == "tiny-bn"
    assert lineage["parent_sha256"] == inspect_checkpoint(parent_file).sha256
    assert lineage["batchnorm_layers"] and lineage["data"]["pixels"] == 3 * 64 * 64
    done = events[-1].info
    assert done["phase"] == "done" and done["layers"] == len(lineage["batchnorm_layers"])
    reloaded = registry.load_model("tiny-bn-session2", device="cpu")
    first = batchnorm_layers(reloaded.module)[0][1]
    assert not torch.allclose(first.running_mean, batchnorm_layers(tiny.module)[0][1].running_mean)
    with pytest.raises(ModelError, match="already exists"):
        drain(adapt("tiny-bn", image, axes="ZYX", name="tiny-bn-session2"), show=False)


def test_cancelled_adaptation_saves_nothing(tiny, user_folder):
    job = adapt(tiny, np.zeros((64, 64), np.float32) + np.eye(64, dtype=np.float32))
    next(job)
    job.close()
    assert not list(Path(user_folder).glob("tiny-bn-adapted*"))


# ----------------------------------------------------------------------------- recipe pieces


def test_frozen_batchnorm_trains_with_the_running_statistics():
    model = conv_bn()
    bn = model.module[1]
    bn.running_mean.fill_(0.5)
    x = torch.randn(2, 1, 8, 8)
    model.module.eval()
    expected = model.module(x)
    model.module.train()
    with frozen_batchnorm(model.module) as count:
        assert count == 1
        got = model.module(x)
    torch.testing.assert_close(got, expected)
    assert torch.all(bn.running_mean == 0.5)  # not updated by the training-mode pass
    assert "forward" not in vars(bn)  # restored: training mode uses batch statistics again
    model.module(x)
    assert not torch.all(bn.running_mean == 0.5)


def test_the_encoder_learns_at_its_share_of_the_rate():
    model = create_model("unet", name="u", depth=2, base_width=4, batch_norm=True)
    module = model.module
    groups = parameter_groups(module, 0.25)
    assert {g["part"] for g in groups} == {"encoder", "decoder"}
    optimizer = scaled_adam(groups, lr=0.1)
    encoder_param = next(module.encoders.parameters())
    decoder_param = next(
        p for p in module.parameters() if all(p is not q for q in module.encoders.parameters())
    )
    e0, d0 = encoder_param.detach().clone(), decoder_param.detach().clone()
    module(torch.randn(1, 1, 16, 16)).sum().backward()
    optimizer.step()
    # Adam's first step moves every parameter with a gradient by the rate (times the sign).
    moved_e = (encoder_param.detach() - e0).abs()
    moved_d = (decoder_param.detach() - d0).abs()
    np.testing.assert_allclose(moved_e[moved_e > 0].numpy(), 0.025, rtol=1e-3)
    np.testing.assert_allclose(moved_d[moved_d > 0].numpy(), 0.1, rtol=1e-3)
    assert optimizer.param_groups[1]["lr"] == 0.1  # the schedule's rate is left as set


def test_anchor_decay_pulls_each_step_back_towards_the_start():
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = scaled_adam([{"params": [weight], "lr_scale": 1.0}], lr=0.1, anchor_decay=0.2)
    (weight - 3.0).pow(2).sum().backward()
    optimizer.step()
    # Adam moves it by the rate (1.0 -> 1.1); the pull takes back 20 % of that.
    assert float(weight) == pytest.approx(1.0 + 0.1 * 0.8, abs=1e-6)
    # At half the rate (a schedule's later step) the pull is half as strong.
    slow = torch.nn.Parameter(torch.tensor([1.0]))
    halved = scaled_adam([{"params": [slow], "lr_scale": 1.0}], lr=0.1, anchor_decay=0.2)
    halved.param_groups[0]["lr"] = 0.05
    (slow - 3.0).pow(2).sum().backward()
    halved.step()
    assert float(slow) == pytest.approx(1.0 + 0.05 * 0.9, abs=1e-6)
    free = torch.nn.Parameter(torch.tensor([1.0]))
    plain = scaled_adam([{"params": [free], "lr_scale": 1.0}], lr=0.1)
    for _ in range(30):
        for parameter, optim in ((weight, optimizer), (free, plain)):
            optim.zero_grad()
            (parameter - 3.0).pow(2).sum().backward()
            optim.step()
    # Without the pull it reaches the data's optimum; with it, it stays between.
    assert float(free) > 2.5 and 1.0 < float(weight) < 1.6


def test_match_intensities_restores_a_gamma_change():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64)).astype(np.float32)
    reference = intensity_quantiles(image)
    changed = 255.0 * (image / 255.0) ** 2.2 * 0.6 + 40.0
    matched = match_intensities(changed, reference)
    np.testing.assert_allclose(matched, image, atol=1.5)


def test_edited_region_is_the_touched_objects_plus_a_margin():
    before = np.zeros((2, 12, 12), np.uint16)
    before[0, 2:5, 2:5] = 1  # object 1, untouched
    before[0, 7:10, 7:10] = 2  # object 2, one pixel fixed
    before[1, 1:3, 1:3] = 3  # slice 1: untouched
    after = before.copy()
    after[0, 9, 9] = 0
    region = edited_region(before, after, margin=0)
    expected = np.zeros(before.shape, bool)
    expected[0, 7:10, 7:10] = True
    np.testing.assert_array_equal(region, expected)
    grown = edited_region(before, after, margin=1)
    assert grown[0, 6:11, 6:11].all() and grown.sum() == 25
    with pytest.raises(TrainingDataError, match="shaped"):
        edited_region(before, after[0])


# ----------------------------------------------------------------------------- bad input


def test_colour_into_a_grey_em_model_is_refused():
    he = synthetic.he_glands((64, 64)).image
    with pytest.raises(TrainingDataError, match="colour"):
        check_modality(conv_bn(), he, "YXC")
    grey_rgb = np.repeat(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64, 1), 3, axis=2)
    check_modality(conv_bn(), grey_rgb, "YXC")  # a grey image saved as RGB is fine
    check_modality(conv_bn(modality="brightfield"), he, "YXC")  # colour by nature
    with pytest.raises(TrainingDataError, match="greyscale"):
        check_modality(conv_bn(3, modality="H&E"), np.zeros((64, 64), np.uint8), "YX")


def test_single_class_annotations_are_refused():
    with pytest.raises(TrainingDataError, match="one class"):
        check_classes({"pixels_per_class": {"background": 0, "foreground": 100}})
    check_classes({"pixels_per_class": {"background": 5, "foreground": 100}})


def quick(**overrides) -> TrainSettings:
    base = {"steps": 6, "minutes": None, "patch_size": 32, "batch_size": 2, "val_every": 3}
    return TrainSettings.for_finetune(**{**base, **overrides})


def sample():
    s = synthetic.fibsem_mitochondria((4, 64, 64), n_objects=10, seed=3)
    labels = np.zeros_like(s.labels)
    labels[[1, 2]] = s.labels[[1, 2]]
    return s.image, labels


def test_bad_annotations_are_refused_before_any_training(tiny):
    image, labels = sample()
    cases = {
        "one class": np.where(labels[[1]] >= 0, 1, 0).astype(np.uint8),  # all foreground
        "no annotated": np.zeros((1, 64, 64), np.uint8),
        "shaped": np.ones((1, 60, 64), np.uint8),
    }
    for message, bad in cases.items():
        events = []
        with pytest.raises(TrainingDataError, match=message):
            drain(
                finetune(tiny, image[[1]], bad, axes="ZYX", settings=quick(), save=False),
                show=False,
                on_progress=events.append,
            )
        assert not [e for e in events if e.info.get("phase") in ("train", "adapt")], message
    rgb = synthetic.he_glands((64, 64))
    with pytest.raises(TrainingDataError, match="colour"):
        drain(finetune(tiny, rgb.image, rgb.labels, settings=quick(), save=False), show=False)


def test_finetune_adapts_first_and_records_the_recipe(tiny):
    image, labels = sample()
    events = []
    result = drain(
        finetune("tiny-bn", image, labels, axes="ZYX", name="tiny-bn-ft", settings=quick()),
        show=False,
        on_progress=events.append,
    )
    adapt_events = [e.info for e in events if e.info.get("phase") == "adapt"]
    assert adapt_events and "metrics_adapted" in adapt_events[-1]
    done = events[-1].info
    assert done["phase"] == "done" and done["kept"] in ("trained", "adapted", "parent")
    if done["kept"] != "parent":
        assert result.name == "tiny-bn-ft" and result.card.lineage["recipe"]["kept"] == done["kept"]
        # "before" is the parent as the user had it, not the adapted start.
        parent_dice = adapt_events[-1]["metrics_parent"]["dice"]
        assert result.card.lineage["metrics_before"]["dice"] == parent_dice


def threshold_and_blobs(size: int, blur: float) -> tuple[SegmentationModel, np.ndarray, np.ndarray]:
    """A :class:`Threshold` parent, two smooth random images in [0, 1] and its perfect labels."""
    from scipy import ndimage as ndi
    from skimage.measure import label

    card = ModelCard(
        name="threshold", architecture="custom", normalization={"kind": "range", "min": 0, "max": 1}
    )
    field = np.random.default_rng(0).random((2, size, size))
    field = ndi.gaussian_filter(field, (0, blur, blur))
    image = ((field - field.min()) / np.ptp(field)).astype(np.float32)
    return SegmentationModel(Threshold(), card), image, label(image > 0.5).astype(np.uint16)


def test_a_worse_result_keeps_the_parent_and_saves_nothing(user_folder):
    parent, image, labels = threshold_and_blobs(64, 4)
    # A huge rate wrecks the threshold in one step; the parent was perfect.
    settings = quick(steps=1, learning_rate=50.0, warmup_steps=0)
    events = []
    result = drain(
        finetune(parent, image, labels, axes="ZYX", name="threshold-worse", settings=settings),
        show=False,
        on_progress=events.append,
    )
    done = events[-1].info
    assert done["kept"] == "parent" and "Kept the parent" in events[-1].message
    assert done["metrics_before"]["dice"] == 1.0
    assert result.name == "threshold" and "kept" in " ".join(result.card.lineage["notes"])
    assert float(result.module.threshold) == 0.5 and float(parent.module.threshold) == 0.5
    assert not list(Path(user_folder).glob("threshold-worse*"))
    # Evenly lit: the flat-field correction was tried and left out.
    (tried,) = [e.info for e in events if e.info.get("phase") == "illumination"]
    assert tried["flat"] is False and tried["metrics_plain"]["dice"] == 1.0
    assert "flat_field" not in result.card.normalization


def test_uneven_illumination_is_corrected_when_held_out_pixels_say_so(user_folder):
    """The fine-tune's flat-field check (recipe.illumination_start)."""
    parent, image, labels = threshold_and_blobs(128, 2)
    lit = lit_from_the_left(image)  # a threshold model fails on the dark side
    settings = quick(steps=1, learning_rate=1e-9, warmup_steps=0)  # training cannot help
    events = []
    result = drain(
        finetune(parent, lit, labels, axes="ZYX", name="threshold-flat", settings=settings),
        show=False,
        on_progress=events.append,
    )
    (tried,) = [e.info for e in events if e.info.get("phase") == "illumination"]
    plain, flat = tried["metrics_plain"]["dice"], tried["metrics_flat"]["dice"]
    assert tried["flat"] is True and flat > plain + 0.1
    done = events[-1].info
    # Training did not beat the corrected parent: the parent's weights with the correction.
    assert done["kept"] == "flat-field parent" and result.name == "threshold-flat"
    assert result.card.normalization["flat_field"] > 0
    assert "flat_field" not in parent.card.normalization
    assert result.card.lineage["recipe"]["flat_field"] is True
    assert result.card.lineage["metrics_before"]["dice"] == pytest.approx(plain)
    assert result.card.lineage["metrics_after"]["dice"] == pytest.approx(flat)
    assert float(result.module.threshold) == 0.5
    assert list(Path(user_folder).glob("threshold-flat*"))  # saved as a new model


# ----------------------------------------------------------------------------- intensity matching


def with_reference(model: SegmentationModel, image: np.ndarray) -> SegmentationModel:
    """``model`` whose card records ``image`` as its training inputs' intensity reference."""
    from napari_microseg.core.inference.normalize import normalize

    scaled = normalize(image, model.card.normalization)
    model.card.normalization = {
        **model.card.normalization,
        "reference": intensity_quantiles(scaled).tolist(),
    }
    return model


def test_adapting_matches_a_new_sessions_intensities_to_the_training_reference(tiny):
    image = synthetic.fibsem_mitochondria((3, 64, 64), seed=1).image.astype(np.float32)
    parent = with_reference(tiny, image)
    gamma = 255.0 * (image / 255.0) ** 2.2  # another detector response
    adapted = drain(
        adapt(parent, gamma, axes="ZYX", save=False, match_intensities=True), show=False
    )
    assert adapted.card.normalization["match"] is True
    assert adapted.card.lineage["match_intensities"] is True
    assert "match" not in parent.card.normalization  # the parent is untouched
    # The adapted model sees the new session as the parent saw its own data.
    seen_new = np.concatenate(input_batches(adapted, gamma, axes="ZYX"))
    seen_old = np.concatenate(input_batches(parent, image, axes="ZYX"))
    assert np.abs(seen_new - seen_old).mean() < 0.02
    unmatched = drain(adapt(parent, gamma, axes="ZYX", save=False), show=False)  # the default
    assert "match" not in unmatched.card.normalization
    assert (
        np.abs(np.concatenate(input_batches(unmatched, gamma, axes="ZYX")) - seen_old).mean() > 0.05
    )


def test_matching_without_a_reference_is_refused_and_matching_alone_needs_no_batch_norm(tiny):
    image = synthetic.fibsem_mitochondria((2, 48, 48), seed=2).image
    with pytest.raises(ModelError, match="no intensity reference"):
        drain(adapt(tiny, image, axes="ZYX", save=False, match_intensities=True), show=False)
    plain = create_model("unet", name="plain", depth=2, base_width=4)
    plain = with_reference(plain, image.astype(np.float32))
    adapted = drain(adapt(plain, image, axes="ZYX", save=False, match_intensities=True), show=False)
    assert adapted.card.normalization["match"] is True
    assert adapted.card.lineage["batchnorm_layers"] == []


def test_a_trained_model_records_its_inputs_intensity_reference(tiny):
    image, labels = sample()
    result = drain(
        finetune(
            tiny, image, labels, axes="ZYX", save=False, settings=quick(keep_better_start=False)
        ),
        show=False,
    )
    reference = np.asarray(result.card.normalization["reference"])
    assert reference.shape == (101,) and np.all(np.diff(reference) >= 0)
    assert "match" not in result.card.normalization
    # A model that already has a reference keeps it.
    kept = drain(
        finetune(
            result, image, labels, axes="ZYX", save=False, settings=quick(keep_better_start=False)
        ),
        show=False,
    )
    np.testing.assert_array_equal(kept.card.normalization["reference"], reference)


def lit_from_the_left(image: np.ndarray) -> np.ndarray:
    """``image`` under illumination rising from 0.5 on the left to 1.5 on the right."""
    width = image.shape[-1]
    return image * (0.5 + np.arange(width, dtype=np.float32) / width)


def left_right_gap(batches: list[np.ndarray]) -> float:
    """Mean normalised brightness of the right third minus the left third."""
    stacked = np.concatenate(batches)
    third = stacked.shape[-1] // 3
    return float(stacked[..., -third:].mean() - stacked[..., :third].mean())


def test_adapting_with_a_flat_field_corrects_the_sessions_illumination(tiny):
    from napari_microseg.core.inference.illumination import FLAT_FIELD_FRACTION

    image = synthetic.fibsem_mitochondria((2, 96, 96), seed=1).image.astype(np.float32)
    lit = lit_from_the_left(image)
    adapted = drain(adapt(tiny, lit, axes="ZYX", save=False, flat_field=True), show=False)
    assert adapted.card.normalization["flat_field"] == FLAT_FIELD_FRACTION
    assert adapted.card.lineage["flat_field"] is True
    assert "flat field" in adapted.card.lineage["method"]
    assert "flat_field" not in tiny.card.normalization  # the parent is untouched

    # The adapted model sees the lit session as it would see it evenly lit; the parent sees
    # the gradient.
    def gap(model, pixels):
        return left_right_gap(input_batches(model, pixels, axes="ZYX"))

    parents = gap(tiny, lit) - gap(tiny, image)
    assert parents > 0.15 and abs(gap(adapted, lit) - gap(adapted, image)) < parents / 3
    # Adapting the adapted model again keeps its correction unless told otherwise.
    again = drain(adapt(adapted, lit, axes="ZYX", save=False), show=False)
    assert again.card.normalization["flat_field"] == FLAT_FIELD_FRACTION
    off = drain(adapt(adapted, lit, axes="ZYX", save=False, flat_field=False), show=False)
    assert "flat_field" not in off.card.normalization
    # A model without batch norm can still be adapted by the correction alone.
    plain = create_model("unet", name="plain", depth=2, base_width=4)
    corrected = drain(adapt(plain, lit, axes="ZYX", save=False, flat_field=True), show=False)
    assert corrected.card.lineage["batchnorm_layers"] == []


def test_fine_tuning_a_flat_field_model_trains_on_corrected_planes(tiny):
    from napari_microseg.core.training.data import TrainingPair, prepare

    s = synthetic.fibsem_mitochondria((3, 128, 128), n_objects=20, seed=3)
    image, labels = s.image, np.where(np.arange(3)[:, None, None] == 1, s.labels, 0)
    lit = lit_from_the_left(image.astype(np.float32))
    flat = drain(adapt(tiny, lit, axes="ZYX", save=False, flat_field=True), show=False)

    def gap(model, pixels):
        planes = prepare([TrainingPair(pixels, labels, axes="ZYX")], model).planes
        return left_right_gap([plane.image[None] for plane in planes])

    parents = gap(tiny, lit) - gap(tiny, image)
    assert parents > 0.15 and abs(gap(flat, lit) - gap(flat, image)) < parents / 3
    result = drain(
        finetune(flat, lit, labels, axes="ZYX", save=False, settings=quick()), show=False
    )
    assert result.card.normalization["flat_field"] == flat.card.normalization["flat_field"]
