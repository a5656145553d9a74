"""A noisy session learns from smoothed images (core.training.smoothing, adapt's ``smooth``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.measure import label
from threshold_net import Threshold

from napari_microseg.core.inference.denoise import (
    GENTLE_SIGMA,
    STRONG_SIGMA,
    noise_level,
    smooth_planes,
)
from napari_microseg.core.inference.resample import resample_plane_job
from napari_microseg.core.io import synthetic
from napari_microseg.core.models import registry
from napari_microseg.core.models.base import ModelCard, SegmentationModel
from napari_microseg.core.models.build import create_model
from napari_microseg.core.progress import drain
from napari_microseg.core.training.adapt import adapt, input_batches
from napari_microseg.core.training.data import (
    TrainingPair,
    input_noise,
    prepare,
    with_input_reference,
)
from napari_microseg.core.training.jobs import finetune
from napari_microseg.core.training.settings import TrainSettings
from napari_microseg.core.training.smoothing import tries_smoothing

pytestmark = pytest.mark.usefixtures("user_folder")


def blobs(size: int = 96) -> np.ndarray:
    """Two smooth random planes in [0, 1]: their objects are where they exceed 0.5."""
    field = ndi.gaussian_filter(np.random.default_rng(0).random((2, size, size)), (0, 4, 4))
    return ((field - field.min()) / np.ptp(field)).astype(np.float32)


def threshold_model(training_noise: float | None) -> SegmentationModel:
    """A :class:`Threshold` whose card records its training inputs' noise level."""
    normalization = {"kind": "range", "min": 0, "max": 1}
    if training_noise is not None:
        normalization["noise"] = training_noise
    card = ModelCard(name="threshold", architecture="custom", normalization=normalization)
    return SegmentationModel(Threshold(), card)


def noisy(image: np.ndarray, sigma: float) -> np.ndarray:
    return image + np.random.default_rng(1).normal(0.0, sigma, image.shape).astype(np.float32)


def quick(**overrides) -> TrainSettings:
    # A rate too small to move the threshold: only the choice of inputs can change the result.
    base = {"steps": 2, "minutes": None, "patch_size": 32, "batch_size": 2, "val_every": 1}
    return TrainSettings.for_finetune(
        **{**base, "learning_rate": 1e-9, "warmup_steps": 0, **overrides}
    )


def run(parent, image, labels, name):
    events = []
    result = drain(
        finetune(parent, image, labels, axes="ZYX", name=name, settings=quick()),
        show=False,
        on_progress=events.append,
    )
    (noise,) = [e.info for e in events if e.info.get("phase") == "noise"]
    return result, noise, events[-1].info


def test_a_noisy_session_is_learnt_smoothed_and_the_new_model_smooths(user_folder):
    clean = blobs()
    labels = label(clean > 0.5).astype(np.uint16)
    parent = threshold_model(training_noise=0.01)
    image = noisy(clean, 0.2)  # 10x and more as noisy as the training data
    result, noise, done = run(parent, image, labels, "threshold-smooth")
    assert noise["smooth"] == STRONG_SIGMA and noise["noise"] > 4 * noise["training_noise"]
    plain = noise["metrics_plain"]["dice"]
    # The threshold cannot learn (rate 1e-9): the parent with the smoothing, a new model.
    assert done["kept"] == "smoothed parent" and result.name == "threshold-smooth"
    assert result.card.normalization["smooth"] == STRONG_SIGMA
    assert "smooth" not in parent.card.normalization  # the parent is untouched
    assert result.card.lineage["recipe"]["smooth"] == STRONG_SIGMA
    assert result.card.lineage["metrics_before"]["dice"] == pytest.approx(plain)
    assert result.card.lineage["metrics_after"]["dice"] > plain + 0.05
    assert list(Path(user_folder).glob("threshold-smooth*"))


def test_a_session_as_clean_as_the_training_data_is_not_smoothed():
    clean = blobs()
    labels = label(clean > 0.5).astype(np.uint16)
    image = noisy(clean, 0.01)
    parent = threshold_model(training_noise=noise_level(image[0]))
    result, noise, _ = run(parent, image, labels, "threshold-clean")
    assert noise["smooth"] is None and "metrics_plain" not in noise
    assert "smooth" not in result.card.normalization
    # Without a recorded level, the check is not even made.
    assert not tries_smoothing(threshold_model(training_noise=None))


def test_smoothing_that_loses_on_the_images_as_they_are_keeps_the_parent(user_folder):
    image = noisy(blobs(), 0.2)
    labels = label(image > 0.5).astype(np.uint16)  # the noisy pixels are the truth
    parent = threshold_model(training_noise=0.01)
    result, noise, done = run(parent, image, labels, "threshold-worse")
    assert noise["smooth"] == STRONG_SIGMA and noise["metrics_plain"]["dice"] == 1.0
    assert done["kept"] == "parent" and result.name == "threshold"
    assert "smooth" not in result.card.normalization
    assert not list(Path(user_folder).glob("threshold-worse*"))  # nothing saved


def test_training_records_its_inputs_noise_level_in_the_card():
    s = synthetic.fibsem_mitochondria((2, 64, 64), n_objects=8, seed=2)
    model = create_model("unet", name="tiny", depth=2, base_width=4)
    planes = prepare([TrainingPair(s.image, s.labels, axes="ZYX")], model).planes
    level = input_noise(planes)
    assert level == pytest.approx(np.median([noise_level(p.image) for p in planes]), abs=1e-6)
    data = prepare([TrainingPair(s.image, s.labels, axes="ZYX")], model)
    recorded = with_input_reference(data, model).card.normalization
    assert recorded["noise"] == pytest.approx(level, abs=1e-6) and "reference" in recorded
    # A model that has a level keeps it (a fine-tune's inputs were smoothed towards it).
    model.card.normalization = {**recorded, "noise": 0.5}
    assert with_input_reference(data, model).card.normalization["noise"] == 0.5


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = create_model("unet", name="tiny-bn", depth=2, base_width=4, batch_norm=True)
    registry.save_user_model(model)
    return registry.load_model("tiny-bn", device="cpu")


def test_adapting_to_a_noisy_session_smooths_it_without_labels(tiny):
    image = synthetic.fibsem_mitochondria((2, 96, 96), seed=1).image.astype(np.float32)
    tiny.card.normalization = {**tiny.card.normalization, "noise": noise_level(image[0])}
    session = noisy(image, 2.0 * np.ptp(image) * tiny.card.normalization["noise"])
    adapted = drain(adapt(tiny, session, axes="ZYX", save=False), show=False)
    assert adapted.card.normalization["smooth"] == GENTLE_SIGMA
    assert adapted.card.lineage["smooth"] == GENTLE_SIGMA
    assert "smoothed" in adapted.card.lineage["method"]
    # The session as clean as the training data: nothing smoothed.
    same = drain(adapt(tiny, image, axes="ZYX", save=False), show=False)
    assert "smooth" not in same.card.normalization
    # The user decides: off, on, or a sigma; an adapted model keeps its sigma.
    off = drain(adapt(tiny, session, axes="ZYX", save=False, smooth=False), show=False)
    assert "smooth" not in off.card.normalization
    forced = drain(adapt(tiny, image, axes="ZYX", save=False, smooth=True), show=False)
    assert forced.card.normalization["smooth"] == GENTLE_SIGMA
    chosen = drain(adapt(tiny, image, axes="ZYX", save=False, smooth=1.5), show=False)
    assert chosen.card.normalization["smooth"] == 1.5
    again = drain(adapt(adapted, image, axes="ZYX", save=False), show=False)
    assert again.card.normalization["smooth"] == GENTLE_SIGMA
    with pytest.raises(ValueError, match="Gaussian sigma"):
        drain(adapt(tiny, image, axes="ZYX", save=False, smooth=-1.0), show=False)


def as_prediction_sees_it(plane: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
    """``plane`` resampled to ``size``, then smoothed: the order of ``segment_job``."""
    resampled = drain(resample_plane_job(plane[None], 1, 2, size), show=False)[0]
    return smooth_planes(resampled, "YX", sigma)


def test_a_resampled_session_is_smoothed_in_the_model_pixels_as_prediction_smooths_it(tiny):
    from dataclasses import replace

    rng = np.random.default_rng(0)
    structure = ndi.gaussian_filter(rng.normal(size=(64, 64)), 4) * 400
    image = (structure + rng.normal(0, 10, (64, 64))).astype(np.float32)
    labels = np.zeros((64, 64), np.int32)
    labels[4:12, 8:20] = 1
    # Pixels twice the model's: the card's sigma of 1 model pixel is half an image pixel.
    model = tiny
    model.card = replace(
        model.card, pixel_size_um=0.625, normalization={"kind": "none", "smooth": 1.0}
    )
    expected = as_prediction_sees_it(image, (128, 128), 1.0)
    sigma_in_image_pixels = drain(
        resample_plane_job(smooth_planes(image, "YX", 1.0)[None], 1, 2, (128, 128)), show=False
    )[0]
    inside = (slice(8, -8), slice(8, -8))  # the edges are mirrored differently

    def spread(plane: np.ndarray) -> float:
        return float(np.std((plane - expected)[inside]))

    trained_on = prepare([TrainingPair(image, labels, spacing=(1.25, 1.25))], model)
    (measured,) = input_batches(model, image, axes="YX", crop=64, spacing=(1.25, 1.25))
    for plane in (trained_on.planes[0].image[0], measured[0, 0]):
        assert plane.shape == (128, 128)
        # Smoothing then resampling differs from the reverse by interpolation only; a sigma
        # taken in image pixels would blur twice as far (as far from it as no smoothing).
        assert spread(plane) < 0.4 * spread(sigma_in_image_pixels)
        assert spread(plane) < 0.04 * float(np.std(image))


def test_adapt_measures_the_noise_at_the_model_pixel_size(tiny):
    from dataclasses import replace

    image = synthetic.fibsem_mitochondria((2, 96, 96), seed=1).image.astype(np.float32)
    model = tiny
    model.card = replace(model.card, pixel_size_um=0.625)
    model.card.normalization = {**model.card.normalization, "noise": noise_level(image[0])}
    session = noisy(image, 2.0 * np.ptp(image) * model.card.normalization["noise"])
    # On its own grid the session is twice as noisy as the training data: smoothed.
    plain = drain(adapt(model, session, axes="ZYX", save=False), show=False)
    assert plain.card.normalization["smooth"] == GENTLE_SIGMA
    # Its pixels are twice the model's: resampled 2x, the noise spreads over neighbouring
    # pixels and is far below the training data's per pixel, so nothing is smoothed.
    with pytest.warns(UserWarning, match="Resampling 96x96 to 192x192 pixels"):
        coarse = drain(
            adapt(model, session, axes="ZYX", save=False, spacing=(1.0, 1.25, 1.25)), show=False
        )
    assert "smooth" not in coarse.card.normalization
    assert coarse.card.lineage["data"]["resampled"].startswith("Resampling 96x96 to 192x192")
    assert plain.card.lineage["data"]["resampled"] is None


def test_smoothing_must_gain_a_margin_on_the_images_as_they_are():
    from napari_microseg.core.training.smoothing import SMOOTHING_MIN_GAIN, smoothing_outcome

    settings = TrainSettings.for_finetune()
    plain = {"dice": 0.80}
    just_above = {"dice": 0.80 + SMOOTHING_MIN_GAIN + 1e-6}
    assert smoothing_outcome("trained", just_above, plain, settings) == "trained"
    assert smoothing_outcome("parent", just_above, plain, settings) == "smoothed parent"
    assert smoothing_outcome("adapted", {"dice": 0.81}, plain, settings) == "parent"
    # Metrics without a Dice fall back to the monitored metric, by any margin.
    loss = TrainSettings.for_finetune(monitor="val_loss")
    assert smoothing_outcome("trained", {"val_loss": 0.4}, {"val_loss": 0.5}, loss) == "trained"
    assert smoothing_outcome("trained", {"val_loss": 0.5}, {"val_loss": 0.5}, loss) == "parent"
