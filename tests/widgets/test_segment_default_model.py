"""Segment widget: the model picker preselects the bundled model suited to the chosen image."""

from __future__ import annotations

import pytest

from napari_microseg._widgets.segment import SegmentWidget, layer_hints
from napari_microseg.core.io import synthetic


@pytest.fixture
def bundled(model_registry, make_bundled_model):
    """mito-em (grey EM) and gland-he (RGB H&E) bundled, beside the user's tiny models."""
    from napari_microseg.core.models import registry

    folder = registry.bundled_models_dir()
    make_bundled_model(folder, "mito-em")
    make_bundled_model(folder, "gland-he", in_channels=3, modality="H&E", kind="glas")
    return folder


def _add_samples(viewer):
    fib = synthetic.fibsem_mitochondria((8, 128, 128))
    he = synthetic.he_glands((128, 128))
    em = viewer.add_image(fib.image, name="fibsem", scale=fib.scale)
    rgb = viewer.add_image(he.image, name="he", rgb=True)
    return em, rgb


def test_the_picker_follows_the_image_until_the_user_picks(make_napari_viewer, bundled):
    viewer = make_napari_viewer()
    em, rgb = _add_samples(viewer)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.value = em
    assert widget.model_combo.value == "mito-em"
    assert "bundled" in widget.card_label.value and "target" in widget.card_label.value
    assert widget.tile.value == 128  # the bundled card's recommendation
    widget.image_combo.value = rgb
    assert widget.model_combo.value == "gland-he"
    widget.image_combo.value = em
    assert widget.model_combo.value == "mito-em"
    widget.model_combo.value = "tiny-grey"  # the user's own choice is kept from now on
    widget.image_combo.value = rgb
    assert widget.model_combo.value == "tiny-grey"
    viewer.add_image(synthetic.fluorescence_nuclei((64, 64)).image, name="more")
    assert widget.model_combo.value == "tiny-grey"


def test_the_sample_opened_first_gets_its_model_when_the_widget_opens(make_napari_viewer, bundled):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-microseg", "fibsem_mitochondria")
    widget = SegmentWidget(viewer)
    assert widget.image_combo.value.name == "fibsem_mitochondria"
    assert widget.model_combo.value == "mito-em"


def test_without_bundled_models_the_picker_is_unchanged(make_napari_viewer, model_registry):
    viewer = make_napari_viewer()
    em, rgb = _add_samples(viewer)
    widget = SegmentWidget(viewer)
    first = widget.model_combo.value
    assert first in ("tiny-grey", "tiny-rgb")
    widget.image_combo.value = rgb
    widget.image_combo.value = em
    assert widget.model_combo.value == first
    assert widget.suggest_model() is None


def test_layer_hints_describe_channels_dimensions_and_pixel_size(make_napari_viewer):
    viewer = make_napari_viewer()
    em, rgb = _add_samples(viewer)
    hints = layer_hints(em)
    assert (hints["channels"], hints["spatial_ndim"]) == (1, 3)
    assert hints["pixel_size_um"] == pytest.approx(0.01)
    assert hints["sample"].ndim == 2
    hints = layer_hints(rgb)
    assert (hints["channels"], hints["spatial_ndim"], hints["pixel_size_um"]) == (3, 2, None)
