"""Segment widget on a zarr-backed layer: block by block into zarr, lazy layers, cancel, resume."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_microseg._widgets import _block_plan, _zarr_job
from napari_microseg._widgets.segment import SegmentWidget
from napari_microseg.core.blocks import predict as chunked
from napari_microseg.core.blocks import store as chunk_store
from napari_microseg.core.io.synthetic import fluorescence_nuclei

SHAPE = (6, 96, 96)


def volume() -> np.ndarray:
    """Six shifted crops of the synthetic nuclei, uint16."""
    image = fluorescence_nuclei().image
    return np.stack([image[4 * z : 4 * z + 96, 8 * z : 8 * z + 96] for z in range(6)])


@pytest.fixture(autouse=True)
def predictions_folder(tmp_path, monkeypatch):
    """Results of inputs that are not a writable zarr never reach the user's data folder."""
    folder = tmp_path / "predictions"
    monkeypatch.setenv(_block_plan.ENV_FOLDER, str(folder))
    return folder


@pytest.fixture
def setup(make_napari_viewer, model_registry, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    store = zarr.create_array(
        store=str(data / "em.zarr"), shape=SHAPE, chunks=(2, 48, 48), dtype="u2"
    )
    store[:] = volume()
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(data / "em.zarr"), plugin="napari-microseg")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.value = layer
    widget.model_combo.value = "tiny-grey"
    return viewer, layer, widget, data


def wait(widget, qtbot, timeout=120000):
    qtbot.waitUntil(lambda: widget.runner.worker is None, timeout=timeout)


def in_memory(model_registry, tile):
    from napari_microseg import load_model, predict

    model = load_model("tiny-grey")  # from the test registry
    return predict(model, volume(), axes="ZYX", tile_size=tile, overlap=0.25, blend="gaussian")


def test_zarr_layer_is_predicted_block_by_block_into_lazy_layers(
    setup, qtbot, model_registry, monkeypatch
):
    viewer, layer, widget, data = setup
    assert not isinstance(layer.data, np.ndarray)  # the reader's dask array
    monkeypatch.setattr(_block_plan, "MIN_PLANE_CHUNK", 48)  # chunks and blocks of 2 x 48 x 48
    monkeypatch.setattr(chunked, "DEFAULT_BLOCK_SIDE", 48)
    monkeypatch.setattr(_zarr_job, "REFRESH_INTERVAL_S", 0.0)
    refreshes = []
    refresh = _zarr_job.BlockRun._refresh
    monkeypatch.setattr(
        _zarr_job.BlockRun, "_refresh", lambda self: (refreshes.append(1), refresh(self))
    )
    widget.tile.value = 64
    widget.run()
    wait(widget, qtbot)

    prob = viewer.layers["em tiny-grey probabilities"]
    assert not isinstance(prob.data, np.ndarray)
    # The foreground class alone, read lazily from the store: no class slider.
    assert type(prob.data.stored).__module__.startswith("zarr")
    assert prob.data.shape == SHAPE and viewer.dims.ndim == 3 and prob.colormap.name == "magenta"
    assert prob.metadata["complete"] is True and prob.metadata["postprocess"]["method"] == "otsu"
    assert prob.metadata["foreground_class"] == 1
    assert prob.metadata["postprocess"]["foreground_class"] == 0
    path = data / "em_tiny-grey.probabilities.zarr"  # next to the input
    assert prob.metadata["path"] == str(path)
    state = chunk_store.resume_state(zarr.open_array(str(path), mode="r"))
    assert state["n_blocks"] == 12 and len(state["done"]) == 12
    assert len(refreshes) >= 12  # refreshed as blocks completed
    expected = in_memory(model_registry, 64)
    np.testing.assert_allclose(np.asarray(prob.data[:]), expected[1], atol=1e-5)

    labels = viewer.layers["em tiny-grey labels"]
    assert type(labels.data).__module__.startswith("zarr") and labels.data.shape == SHAPE
    assert labels.data.attrs["complete"] is True
    found = np.asarray(labels.data[:]) > 0
    truth = expected[1] > 0.5
    dice = 2 * (truth & found).sum() / (truth.sum() + found.sum())
    assert dice > 0.8, dice
    assert "objects" in widget.status.value

    n_layers = len(viewer.layers)
    widget.run()  # everything found done: same layers, nothing recomputed
    wait(widget, qtbot)
    assert len(viewer.layers) == n_layers and "12 found done" in widget.status.value

    widget.tile.value = 128  # other settings: the store is started over, not refused
    widget.run()
    wait(widget, qtbot)
    assert "found done" not in widget.status.value
    prob = viewer.layers["em tiny-grey probabilities"]
    np.testing.assert_allclose(
        np.asarray(prob.data[:]), in_memory(model_registry, 128)[1], atol=1e-5
    )


def test_all_classes_shows_the_class_stack_block_by_block(setup, qtbot, monkeypatch):
    viewer, _layer, widget, _data = setup
    monkeypatch.setattr(_block_plan, "MIN_PLANE_CHUNK", 48)
    monkeypatch.setattr(chunked, "DEFAULT_BLOCK_SIDE", 48)
    widget.tile.value = 64
    widget.all_classes.value = True
    widget.run()
    wait(widget, qtbot)
    prob = viewer.layers["em tiny-grey probabilities"]
    assert type(prob.data).__module__.startswith("zarr") and prob.data.shape == (2, *SHAPE)
    assert prob.metadata["class_axis"] == 0 and viewer.dims.ndim == 4
    assert prob.metadata["postprocess"]["foreground_class"] == 1


def test_cancel_keeps_done_blocks_and_a_rerun_resumes(setup, qtbot, model_registry, monkeypatch):
    viewer, _, widget, data = setup
    infos = []
    monkeypatch.setattr(_zarr_job, "show_info", infos.append)
    original = chunked.predict_and_write_block

    gate = threading.Event()

    def gated(model, task, index):
        if index > 0:  # blocks after the first wait until the test has pressed Cancel
            gate.wait(60)
        return (yield from original(model, task, index))

    monkeypatch.setattr(chunked, "predict_and_write_block", gated)
    widget.run()
    filling = "em tiny-grey probabilities (filling)"
    qtbot.waitUntil(lambda: filling in viewer.layers, timeout=60000)
    assert viewer.layers[filling].metadata["complete"] is False
    qtbot.waitUntil(lambda: widget.status.value.startswith("1/3 blocks"), timeout=60000)
    widget.runner.cancel()
    gate.set()
    wait(widget, qtbot)

    names = [layer.name for layer in viewer.layers]
    assert "em tiny-grey probabilities (incomplete)" in names
    assert "em tiny-grey probabilities" not in names and filling not in names
    assert "em tiny-grey labels" not in names
    partial = viewer.layers["em tiny-grey probabilities (incomplete)"]
    assert partial.metadata["complete"] is False
    path = data / "em_tiny-grey.probabilities.zarr"
    stored = zarr.open_array(str(path), mode="r")
    done = chunk_store.resume_state(stored)["done"]
    assert len(done) == 1 and stored.attrs["complete"] is False  # stopped within block 2
    assert infos and "run again to resume" in infos[-1] and f"{len(done)} of 3" in infos[-1]
    assert np.abs(np.asarray(stored[:, :2])).max() > 0  # block 0 written
    assert np.asarray(stored[:, 4:]).max() == 0  # block 2 not

    monkeypatch.setattr(chunked, "predict_and_write_block", original)
    widget.run()
    wait(widget, qtbot)
    names = [layer.name for layer in viewer.layers]
    assert "em tiny-grey probabilities (incomplete)" not in names
    prob = viewer.layers["em tiny-grey probabilities"]
    assert prob.metadata["complete"] is True
    assert f"{len(done)} found done" in widget.status.value
    np.testing.assert_allclose(
        np.asarray(prob.data[:]), in_memory(model_registry, 128)[1], atol=1e-5
    )
    assert "em tiny-grey labels" in viewer.layers


def test_large_numpy_layer_goes_to_the_predictions_folder(
    make_napari_viewer, model_registry, predictions_folder, qtbot, monkeypatch
):
    monkeypatch.setattr(_block_plan, "IN_MEMORY_LIMIT_BYTES", 1000)
    viewer = make_napari_viewer()
    layer = viewer.add_image(volume()[:2], name="big stack", scale=(2.0, 0.5, 0.5))
    widget = SegmentWidget(viewer)
    widget.image_combo.value = layer
    widget.model_combo.value = "tiny-grey"
    widget.run()
    wait(widget, qtbot)
    prob = viewer.layers["big stack tiny-grey probabilities"]
    assert prob.metadata["path"] == str(
        predictions_folder / "big_stack_tiny-grey.probabilities.zarr"
    )
    assert not isinstance(prob.data, np.ndarray)
    np.testing.assert_allclose(prob.scale, (2.0, 0.5, 0.5))  # foreground only: no class axis
    np.testing.assert_allclose(viewer.layers["big stack tiny-grey labels"].scale, (2.0, 0.5, 0.5))


def test_unwritable_output_folder_is_a_notification(
    make_napari_viewer, model_registry, tmp_path, qtbot, monkeypatch
):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(_block_plan.ENV_FOLDER, str(blocker / "predictions"))
    monkeypatch.setattr(_block_plan, "IN_MEMORY_LIMIT_BYTES", 1000)
    warnings = []
    monkeypatch.setattr(_zarr_job, "show_warning", warnings.append)
    viewer = make_napari_viewer()
    layer = viewer.add_image(volume()[:2], name="stack")
    widget = SegmentWidget(viewer)
    widget.image_combo.value = layer
    widget.model_combo.value = "tiny-grey"
    widget.run()
    assert widget.runner.worker is None  # nothing started
    assert len(warnings) == 1 and "Cannot write the results" in warnings[0]
    assert _block_plan.ENV_FOLDER in warnings[0]
    assert [lay.name for lay in viewer.layers] == ["stack"]


def test_foreign_store_in_the_way_is_one_sentence(setup, qtbot, monkeypatch):
    viewer, _, widget, data = setup
    errors = []
    monkeypatch.setattr("napari_microseg._widgets._runner.show_error", errors.append)
    zarr.create_array(store=str(data / "em_tiny-grey.probabilities.zarr"), shape=(3,), dtype="u1")
    widget.run()
    wait(widget, qtbot)
    assert len(errors) == 1 and "not written by napari-microseg" in errors[0]
    assert not [layer for layer in viewer.layers if "tiny-grey" in layer.name]


def test_choices():
    import dask.array as da

    lazy = da.zeros((40, 2000, 3000), chunks=(1, 512, 100))
    assert _block_plan.output_chunks(lazy, "ZYX") == (1, 512, 300)
    assert _block_plan.output_chunks(np.zeros((4, 5)), "YX") is None
    assert _block_plan.output_chunks(da.zeros((64, 64, 3), chunks=(8, 8, 3)), "YXC") == (64, 64)
    assert _block_plan.wants_blocks(lazy, "ZYX")
    assert not _block_plan.wants_blocks(np.zeros((64, 64)), "YX")
    outputs = _block_plan.output_paths(Path("/x"), "my image [1]", "mito/em")
    assert outputs.probabilities.name == "my_image_1_mito_em.probabilities.zarr"
