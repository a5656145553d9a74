"""Fine-tune widget (#21): base model follows the image, edited region, adapt button, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg._widgets._layer_edits import mark_made
from napari_microseg._widgets.finetune import EDITED_REGION, WHOLE_SLICES, FinetuneWidget
from napari_microseg.core.io.synthetic import fluorescence_nuclei, he_glands


@pytest.fixture
def viewer_and_image(make_napari_viewer, model_registry):
    viewer = make_napari_viewer()
    sample = fluorescence_nuclei()
    image = viewer.add_image(sample.image[:128, :128], name="cells")
    return viewer, image, sample.labels[:128, :128].astype(np.uint16)


def test_the_base_model_is_the_one_that_segmented_the_image(viewer_and_image):
    viewer, image, labels = viewer_and_image
    other = viewer.add_image(np.zeros((64, 64), np.uint8), name="other")
    # What the Segment widget leaves behind: "<image> <model> ..." layers naming the model.
    viewer.add_image(
        np.zeros((128, 128), np.float32),
        name="cells tiny-rgb probabilities",
        metadata={"model": "tiny-rgb"},
    )
    made = viewer.add_labels(labels, name="cells tiny-rgb labels")
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.value = other
    widget.image_combo.value = image
    assert widget.model_combo.value == "tiny-rgb"  # not the first in the list (tiny-grey)
    assert widget.labels_combo.value is made
    widget.model_combo.value = "tiny-grey"  # the user's own pick stays
    widget.image_combo.value = other
    widget.image_combo.value = image
    assert widget.model_combo.value == "tiny-grey"


def test_edited_region_and_annotated_pixels(viewer_and_image):
    viewer, _, labels = viewer_and_image
    layer = viewer.add_labels(labels.copy(), name="cells tiny-grey labels")
    mark_made(layer)  # as the Segment widget does
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.labels_combo.value = layer
    assert widget.update_pixels() == 128 * 128  # whole image by default
    widget.region_combo.value = EDITED_REGION
    assert widget.update_pixels() == 0  # nothing corrected yet
    target = int(labels[labels > 0][0])
    edited = layer.data.copy()
    edited[labels == target] = 0  # the user deletes one object
    layer.data = edited
    widget.margin.value = 2
    count = widget.update_pixels()
    mask = widget.annotated_mask()
    assert count == int(mask.sum()) > int((labels == target).sum())
    assert (mask[labels == target].all() and not mask[0, 0]) or mask.sum() < 128 * 128
    assert "annotated pixels in the edited region" in widget.pixels_label.value
    widget.region_combo.value = WHOLE_SLICES
    assert widget.annotated_mask() is None


def test_bad_input_is_a_message_before_training(viewer_and_image, monkeypatch):
    viewer, image, labels = viewer_and_image
    warnings = []
    monkeypatch.setattr("napari_microseg._widgets.finetune.show_warning", warnings.append)
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.value = image
    widget.model_combo.value = "tiny-grey"
    cases = {
        "single class": np.ones(labels.shape, np.uint16),
        "no annotated": np.zeros(labels.shape, np.uint16),
    }
    for expected, data in cases.items():
        widget.labels_combo.value = viewer.add_labels(data, name=expected)
        widget.start()
        assert expected.split()[0] in warnings[-1].lower() or "annotated" in warnings[-1]
        assert widget.runner.worker is None
    he = he_glands((128, 128))
    widget.image_combo.value = viewer.add_image(he.image, name="he", rgb=True)
    widget.model_combo.value = "tiny-grey"
    widget.labels_combo.value = viewer.add_labels(he.labels, name="he labels")
    widget.start()
    assert "colour" in warnings[-1] and widget.runner.worker is None


def test_edited_region_unknown_is_a_message(viewer_and_image, monkeypatch):
    viewer, image, labels = viewer_and_image
    warnings = []
    monkeypatch.setattr("napari_microseg._widgets.finetune.show_warning", warnings.append)
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.value = image
    widget.model_combo.value = "tiny-grey"
    widget.labels_combo.value = viewer.add_labels(labels, name="painted by hand")
    widget.region_combo.value = EDITED_REGION
    widget.start()
    assert "edited region" in warnings[-1] and widget.runner.worker is None


def test_adapt_to_this_image_saves_an_adapted_model(viewer_and_image, model_registry, qtbot):
    import torch

    from napari_microseg.core.models.build import create_model
    from napari_microseg.core.models.registry import save_user_model

    torch.manual_seed(0)
    save_user_model(
        create_model("unet", name="tiny-bn", depth=2, base_width=4, batch_norm=True),
        folder=model_registry,
    )
    viewer, image, _ = viewer_and_image
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.value = image
    widget.model_combo.value = "tiny-bn"
    widget.adapt_to_image()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=120000)
    assert widget.new_model is not None and widget.new_model.card.parent == "tiny-bn"
    assert "batch-norm layers adapted" in widget.result_label.value
    assert not widget.segment_again.native.isHidden()
    assert widget.new_model.name in widget.model_combo.choices
    assert "flat_field" not in widget.new_model.card.normalization  # off by default
    widget.model_combo.value = "tiny-bn"
    widget.flat_field.value = True
    widget.adapt_to_image()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=120000)
    assert widget.new_model.card.normalization["flat_field"] > 0
    assert "illumination corrected" in widget.result_label.value


def test_adapting_to_a_noisy_image_says_it_smooths(viewer_and_image, model_registry, qtbot):
    import torch

    from napari_microseg.core.inference.denoise import STRONG_SIGMA, noise_level
    from napari_microseg.core.models.build import create_model
    from napari_microseg.core.models.registry import save_user_model

    torch.manual_seed(0)
    model = create_model("unet", name="clean-bn", depth=2, base_width=4, batch_norm=True)
    viewer, image, _ = viewer_and_image
    # Trained on images 5x cleaner than this one (as its card says): the session is noisy.
    model.card.normalization = {
        **model.card.normalization,
        "noise": noise_level(np.asarray(image.data)) / 5,
    }
    save_user_model(model, folder=model_registry)
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.value = image
    widget.model_combo.value = "clean-bn"
    widget.adapt_to_image()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=120000)
    assert widget.new_model.card.normalization["smooth"] == STRONG_SIGMA
    assert "noisy input smoothed (sigma 1 px)" in widget.result_label.value


def test_adapting_an_image_of_another_pixel_size_says_so(viewer_and_image, model_registry, qtbot):
    from dataclasses import replace

    import torch

    from napari_microseg.core.models.build import create_model
    from napari_microseg.core.models.registry import save_user_model

    torch.manual_seed(0)
    model = create_model("unet", name="bn-5nm", depth=2, base_width=4, batch_norm=True)
    model.card = replace(model.card, pixel_size_um=0.005)
    save_user_model(model, folder=model_registry)
    viewer, image, _ = viewer_and_image
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.value = image
    widget.model_combo.value = "bn-5nm"
    image.scale = (0.01,) * image.ndim  # 10 nm pixels, twice the model's
    widget.adapt_to_image()
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=120000)
    assert "at the model's pixel size (Resampling" in widget.result_label.value
    assert "(2x), the model's 5 nm per pixel" in widget.result_label.value


def test_the_recipe_follows_the_models_benchmark(viewer_and_image, model_registry):
    from napari_microseg._widgets.finetune import ONE_IMAGE_HINT, RECIPE, RECIPE_NO_LABEL_FREE
    from napari_microseg.core.models.registry import load_model, save_user_model

    harmful = load_model("tiny-grey", device="cpu")
    harmful.card.name = "tiny-harmful"
    harmful.card.recommended = {
        **harmful.card.recommended,
        "adaptation": {
            "label_free": False,
            "dice_shifted_vs_adapted": {"blur_noise": {"shifted": 0.71, "adapted": 0.43}},
            "learning_rate": 1e-4,
            "steps": 1000,
            "train_on_one_image": False,
        },
    }
    save_user_model(harmful, folder=model_registry)
    viewer = viewer_and_image[0]
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.refresh_models()
    widget.model_combo.value = "tiny-harmful"
    assert widget.recipe_label.value == f"{RECIPE_NO_LABEL_FREE} {ONE_IMAGE_HINT}"
    assert "0.71 -> 0.43" in widget.adapt_button.tooltip
    assert not widget.adapt_first.value and not widget.adapt_first.enabled
    assert widget.learning_rate.value == pytest.approx(1e-4)
    assert widget.steps.value == 1000
    widget.model_combo.value = "tiny-grey"
    assert widget.recipe_label.value == RECIPE
    assert widget.adapt_first.value and widget.adapt_first.enabled
    assert widget.learning_rate.value == pytest.approx(1e-3)  # no recommendation: the default
    assert widget.steps.value == 400


def test_the_result_says_when_the_fine_tune_corrected_the_illumination(viewer_and_image):
    from napari_microseg.core.models.registry import load_model
    from napari_microseg.core.progress import Progress

    viewer = viewer_and_image[0]
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._adapt_info, widget._illumination_info = {}, {}
    # What recipe.illumination_start reports, then a fine-tune that kept the corrected parent.
    widget._on_progress(
        Progress(
            0,
            10,
            "Uneven illumination: ...",
            None,
            {"phase": "illumination", "flat": True, "metrics_flat": {"dice": 0.81}},
        )
    )
    model = load_model("tiny-grey", device="cpu")
    model.card.name = "tiny-grey-ft"
    model.card.lineage = {
        "metrics_before": {"dice": 0.62},
        "metrics_after": {"dice": 0.81},
        "recipe": {"start": "parent", "kept": "flat-field parent", "flat_field": True},
    }
    widget._on_done(model)
    text = widget.result_label.value
    assert "illumination corrected (training did not help)" in text
    assert "parent 0.620 → illumination corrected 0.810 → result 0.810" in text
    assert widget.new_model is model and not widget.segment_again.native.isHidden()
