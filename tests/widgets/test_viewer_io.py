"""Reader, writer and sample data inside a real napari viewer (run under xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

PLUGIN = "napari-microseg"


@pytest.mark.parametrize(
    ("key", "ndim", "rgb"),
    [("fibsem_mitochondria", 3, False), ("fluorescence_nuclei", 2, False), ("he_glands", 2, True)],
)
def test_each_sample_opens(make_napari_viewer, key, ndim, rgb):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, key)
    image, labels = viewer.layers
    assert image.rgb is rgb
    assert labels.data.ndim == ndim and labels.data.max() > 0
    assert image.scale[-1] < 1  # physical voxel size in µm travels to the layer
    # Every layer in µm, so the scale bar has one physical unit to show.
    assert {str(u) for u in viewer.layers.units} == {"micrometer"}


def test_open_and_save_labels_through_napari(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = np.zeros((2, 10, 12), np.uint16)
    labels[0, 1:4, 1:4] = 3
    layer = viewer.add_labels(labels, scale=(0.1, 0.02, 0.02), name="mine")
    path = tmp_path / "mine.tif"
    viewer.layers.save(str(path), selected=False, plugin=PLUGIN)
    viewer.layers.remove(layer)
    [reopened] = viewer.open(str(path), plugin=PLUGIN)
    assert reopened.__class__.__name__ == "Labels"
    np.testing.assert_array_equal(reopened.data, labels)
    np.testing.assert_allclose(reopened.scale, (0.1, 0.02, 0.02))


def test_bad_files_keep_the_open_layers(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.ones((5, 5)), name="precious")
    tifffile.imwrite(tmp_path / "cut.tif", np.ones((3, 64, 64), np.uint8))
    (tmp_path / "cut.tif").write_bytes((tmp_path / "cut.tif").read_bytes()[:400])
    tifffile.imwrite(tmp_path / "nan.tif", np.full((6, 6), np.nan, np.float32))
    for bad in ("cut.tif", "nan.tif"):
        with pytest.raises(Exception, match=r"truncated or corrupt|only NaN"):
            viewer.open(str(tmp_path / bad), plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers] == ["precious"]


def test_image_with_some_nans_opens_with_finite_contrast(make_napari_viewer, tmp_path):
    data = np.arange(36, dtype=np.float32).reshape(6, 6)
    data[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "some_nan.tif", data)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "some_nan.tif"), plugin=PLUGIN)
    assert np.isfinite(layer.contrast_limits).all()


def test_demo_viewer_has_sample_and_widgets(make_napari_viewer, monkeypatch):
    import napari

    from napari_microseg import demo_gui

    created = []
    monkeypatch.setattr(
        napari, "Viewer", lambda **kw: created.append(make_napari_viewer()) or created[-1]
    )
    viewer = demo_gui.open_demo_viewer(show=False)
    assert "fibsem_mitochondria" in viewer.layers
    docked = set(viewer.window.dock_widgets)
    for name in demo_gui.plugin_widget_names():
        assert any(name in key for key in docked)
