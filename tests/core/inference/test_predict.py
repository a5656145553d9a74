"""Tiled inference: exactness oracles, 3D modes, TTA, instances, memory, progress and cancel."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from napari_microseg.core.inference.forward import InferenceWarning
from napari_microseg.core.inference.normalize import NormalizationWarning, normalize
from napari_microseg.core.inference.predict import iter_predict, predict
from napari_microseg.core.inference.tiling import TilePlan
from napari_microseg.core.io.checks import ImageValidationError
from napari_microseg.core.models.base import (
    ModelCard,
    ModelError,
    SegmentationModel,
    wrap_module,
)
from napari_microseg.core.progress import Progress


class PlusOne(torch.nn.Module):
    """f(x) = x + 1: any tiling error shows up as a wrong value."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return x + 1


class RaisesOOM(PlusOne):
    """x + 1, but 'out of memory' for batches over ``max_batch`` or tiles over ``max_side``."""

    def __init__(self, max_batch=99, max_side=9999):
        super().__init__()
        self.max_batch, self.max_side = max_batch, max_side

    def forward(self, x):
        if x.shape[0] > self.max_batch or max(x.shape[-2:]) > self.max_side:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward(x)


def small_convnet(in_channels=1, classes=2, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, classes, 3, padding=1),
    ).eval()


def exact(model=None, image=None, **kw):
    return predict(model or PlusOne(), image, activation=None, **kw)


# ----------------------------------------------------------------------------- oracles


@pytest.mark.parametrize("shape", [(16, 15), (7, 5), (37, 29), (1, 9)])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75, 0.9])
@pytest.mark.parametrize("blend", ["gaussian", "average"])
def test_plus_one_comes_back_exactly(shape, overlap, blend):
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32) * 100
    result = exact(image=image, tile_size=8, overlap=overlap, blend=blend, batch_size=3)
    assert result.dtype == np.float32 and result.shape == (1, *shape)
    np.testing.assert_array_equal(result[0], image + 1)


@pytest.mark.parametrize("axes, shape", [("ZYX", (3, 16, 15)), ("YXC", (13, 11, 3))])
def test_plus_one_in_3d_and_rgb(axes, shape):
    image = np.random.default_rng(1).random(shape, dtype=np.float32)
    result = exact(image=image, axes=axes, tile_size=6, overlap=0.5)
    expected = np.moveaxis(image, -1, 0) if axes == "YXC" else image[None]
    np.testing.assert_array_equal(result, expected + 1)


def test_image_smaller_than_a_tile():
    image = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.testing.assert_array_equal(exact(image=image, tile_size=256)[0], image + 1)


def _interior_mask(plan: TilePlan, shape, margin: int) -> np.ndarray:
    """Pixels at least ``margin`` away from every tile edge that is not an image edge."""
    ok = np.ones(shape, bool)
    for y0, x0 in plan:
        covered = np.zeros(shape, bool)
        covered[y0 : y0 + plan.tile[0], x0 : x0 + plan.tile[1]] = True
        inner = np.zeros(shape, bool)
        top = y0 + margin if y0 > 0 else 0
        left = x0 + margin if x0 > 0 else 0
        bottom = y0 + plan.tile[0] - (margin if y0 + plan.tile[0] < shape[0] else 0)
        right = x0 + plan.tile[1] - (margin if x0 + plan.tile[1] < shape[1] else 0)
        inner[top:bottom, left:right] = True
        ok &= ~covered | inner
    return ok


def test_tiled_matches_untiled_in_tile_interiors_for_a_conv_net():
    net = small_convnet()
    image = np.random.default_rng(3).random((50, 70), dtype=np.float32)
    tiled = predict(net, image, tile_size=24, overlap=0.5, amp=False)
    with torch.no_grad():
        full = net(torch.from_numpy(image)[None, None]).softmax(1)[0].numpy()
    mask = _interior_mask(TilePlan.create((50, 70), 24, 0.5), (50, 70), margin=2)
    assert mask.mean() > 0.5
    np.testing.assert_allclose(tiled[:, mask], full[:, mask], atol=1e-5)
    assert np.abs(tiled - full).max() < 0.2  # and close elsewhere


def test_tiled_matches_untiled_for_a_small_unet():
    from napari_microseg.core.models import unet

    torch.manual_seed(0)
    net = unet.UNet(1, 2, depth=2, base_width=4).eval()
    image = np.random.default_rng(4).random((96, 128), dtype=np.float32)
    tiled = predict(net, image, tile_size=64, overlap=0.5, amp=False)
    with torch.no_grad():
        full = net(torch.from_numpy(image)[None, None]).softmax(1)[0].numpy()
    mask = _interior_mask(TilePlan.create((96, 128), 64, 0.5), (96, 128), margin=14)
    np.testing.assert_allclose(tiled[:, mask], full[:, mask], atol=1e-5)


# ----------------------------------------------------------------------------- activation


def test_plain_module_activation_softmax_sigmoid_or_logits():
    image = np.random.default_rng(5).random((20, 20), dtype=np.float32)
    two = predict(small_convnet(classes=2), image, tile_size=16)
    np.testing.assert_allclose(two.sum(0), 1.0, rtol=1e-5)
    one = predict(small_convnet(classes=1), image, tile_size=16)
    assert one.shape == (1, 20, 20) and 0 < one.min() and one.max() < 1
    logits = predict(small_convnet(classes=1), image, tile_size=16, activation=None)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), one, rtol=1e-5)


def test_model_card_normalization_is_computed_once_for_the_volume():
    card = ModelCard(name="plus", architecture="custom", classes=["x"])  # default: percentiles
    model = SegmentationModel(PlusOne(), card, activation="none")
    volume = np.linspace(0, 5000, 4 * 20 * 30).reshape(4, 20, 30).astype(np.uint16)
    result = predict(model, volume, tile_size=8)
    np.testing.assert_allclose(result[0], normalize(volume) + 1, rtol=1e-6, atol=1e-6)


def test_amp_on_the_cpu_is_bfloat16_when_native_else_explained():
    from napari_microseg.core.inference.forward import cpu_has_fast_bfloat16

    image = np.random.default_rng(14).random((40, 40), dtype=np.float32)
    net = small_convnet()
    full = predict(net, image, tile_size=32, device="cpu", amp=False)
    if cpu_has_fast_bfloat16():
        fast = predict(net, image, tile_size=32, device="cpu", amp=True)
        assert fast.dtype == np.float32 and not np.array_equal(fast, full)
        np.testing.assert_allclose(fast, full, atol=2e-2)
    else:
        with pytest.warns(InferenceWarning, match="bfloat16"):
            fast = predict(net, image, tile_size=32, device="cpu", amp=True)
        np.testing.assert_array_equal(fast, full)


@pytest.mark.parametrize("native", [True, False])
def test_default_precision_is_bfloat16_only_on_cpus_that_have_it(monkeypatch, native):
    from napari_microseg.core.inference import job as inference_setup

    monkeypatch.setattr(inference_setup, "cpu_has_fast_bfloat16", lambda: native)
    assert inference_setup._amp(None, "cpu") is native
    assert inference_setup._amp(None, "cpu", instance=True) is False  # detection heads: float32
    assert inference_setup._amp(None, "cuda") is True
    assert inference_setup._amp(None, "mps") is False
    assert inference_setup._amp(False, "cpu") is False


# ----------------------------------------------------------------------------- 3D modes


def test_lazy_zarr_volume_is_read_in_slabs(tmp_path, monkeypatch):
    import zarr

    from napari_microseg.core.inference import planes
    from napari_microseg.core.inference.options import PredictOptions
    from napari_microseg.core.inference.predict import run_prediction

    volume = np.random.default_rng(6).random((10, 40, 30), dtype=np.float32)
    store = zarr.create_array(
        store=str(tmp_path / "in.zarr"), shape=volume.shape, chunks=(2, 20, 30), dtype="float32"
    )
    store[:] = volume
    bands = []
    read_raw = planes.View.read_raw

    def spy(self, *args, **kwargs):
        assert planes.is_lazy(self.array)  # the input was never loaded whole
        band = read_raw(self, *args, **kwargs)
        bands.append(band.shape)
        return band

    monkeypatch.setattr(planes.View, "read_raw", spy)
    out = zarr.create_array(
        store=str(tmp_path / "out.zarr"),
        shape=(1, *volume.shape),
        chunks=(1, 2, 20, 30),
        dtype="float32",
    )
    options = PredictOptions(tile_size=16, activation=None, memory_budget_mb=0.01)
    _drain(run_prediction(PlusOne(), store, out=out, options=options))
    np.testing.assert_array_equal(out[0], volume + 1)
    assert out.attrs["complete"] is True
    # One plane, one tile's rows at a time: a tenth of the 10 x 40 x 30 volume at most.
    assert max(np.prod(shape) for shape in bands) <= 16 * 30
    assert len(bands) == 10 * len(TilePlan.create((40, 30), 16, 0.25).starts[0])


def test_ortho_planes_average_three_views():
    net = PlusOne()
    volume = np.random.default_rng(7).random((6, 20, 30), dtype=np.float32)
    result = exact(net, volume, tile_size=16, ortho=True)
    np.testing.assert_allclose(result[0], volume + 1, rtol=1e-6)
    heights = {shape[-2] for shape in net.calls}
    assert 6 in heights and 16 in heights  # ZX/ZY planes (6 rows) as well as YX tiles


def test_slice_axis_cuts_other_planes():
    net = PlusOne()
    volume = np.random.default_rng(8).random((5, 12, 9), dtype=np.float32)
    result = exact(net, volume, tile_size=8, slice_axis="X")
    np.testing.assert_array_equal(result[0], volume + 1)
    assert all(shape[-2] == 5 for shape in net.calls)  # ZY planes


class Context(torch.nn.Module):
    """For 3 slices as channels (z-1, z, z+1): returns (z+1) - (z-1)."""

    def forward(self, x):
        return x[:, 2:3] - x[:, 0:1]


def test_context_slices_become_channels():
    card = ModelCard(
        name="ctx",
        architecture="custom",
        in_channels=3,
        classes=["d"],
        context_slices=1,
        normalization={"kind": "none"},
    )
    model = SegmentationModel(Context(), card, activation="none")
    volume = np.broadcast_to(np.arange(5, dtype=np.float32)[:, None, None], (5, 8, 8)).copy()
    result = predict(model, volume, tile_size=8)[0]
    np.testing.assert_array_equal(result[:, 0, 0], [1, 2, 2, 2, 1])  # edges repeat the end slice
    with pytest.warns(InferenceWarning, match="repeated"):
        flat = predict(model, volume[0], tile_size=8)
    assert np.all(flat == 0)


# ----------------------------------------------------------------------------- TTA


class AddColumnRamp(torch.nn.Module):
    """x + column index: not flip-invariant, so TTA changes its output."""

    def forward(self, x):
        return x + torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)


def test_tta_undoes_each_transform_before_averaging():
    image = np.random.default_rng(9).random((20, 20), dtype=np.float32)
    np.testing.assert_allclose(exact(image=image, tile_size=8, tta=True)[0], image + 1, rtol=1e-6)
    # The 8 un-done column ramps average to (tile - 1) / 2 everywhere.
    ramp = exact(AddColumnRamp(), image, tile_size=8, overlap=0.5, tta=True)[0]
    np.testing.assert_allclose(ramp, image + 3.5, rtol=1e-5)
    net = PlusOne()
    exact(net, image, tile_size=20, tta=True)
    assert net.calls == [(8, 1, 20, 20)]  # the 8 transforms of a tile in one batch


def test_tta_of_non_square_tiles_runs_two_batches_of_four():
    image = np.random.default_rng(9).random((12, 20), dtype=np.float32)
    net = PlusOne()
    result = exact(net, image, tile_size=(12, 20), tta=True, batch_size=2)[0]
    np.testing.assert_allclose(result, image + 1, rtol=1e-6)
    assert net.calls == [(4, 1, 12, 20), (4, 1, 20, 12)]  # quarter turns swap rows and columns
    ramp = exact(AddColumnRamp(), image, tile_size=(8, 12), overlap=0.5, tta=True)[0]
    # Un-done ramps: 4 along columns (mean (12 - 1) / 2), 4 along rows (mean (8 - 1) / 2).
    np.testing.assert_allclose(ramp, image + (5.5 + 3.5) / 2, rtol=1e-5)


# ----------------------------------------------------------------------------- memory


def test_out_of_memory_halves_the_batch_then_the_tile():
    image = np.random.default_rng(10).random((40, 40), dtype=np.float32)
    net = RaisesOOM(max_batch=1)
    with pytest.warns(InferenceWarning, match="Out of memory"):
        result = exact(net, image, tile_size=16, batch_size=8)
    np.testing.assert_array_equal(result[0], image + 1)
    assert max(shape[0] for shape in net.calls) == 1
    net = RaisesOOM(max_batch=1, max_side=8)
    with pytest.warns(InferenceWarning) as record:
        result = exact(net, image, tile_size=16, batch_size=2)
    assert any("splitting" in str(w.message) for w in record)
    np.testing.assert_array_equal(result[0], image + 1)
    assert max(shape[-1] for shape in net.calls) == 8


def test_out_of_memory_at_the_smallest_tile_is_an_error():
    with pytest.raises(ModelError, match="Out of memory on cpu even"), warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)
        exact(RaisesOOM(max_batch=0), np.ones((8, 8), np.float32), tile_size=8)


def test_out_accepts_numpy_memmap_and_zarr(tmp_path):
    import zarr

    image = np.random.default_rng(11).random((3, 20, 20), dtype=np.float32)
    mapped = np.memmap(tmp_path / "p.dat", np.float32, "w+", shape=(1, 3, 20, 20))
    store = zarr.create_array(store=str(tmp_path / "p.zarr"), shape=(1, 3, 20, 20), dtype="f4")
    for out in (np.zeros((1, 3, 20, 20), np.float32), mapped, store):
        assert exact(image=image, tile_size=8, out=out) is out
        np.testing.assert_array_equal(np.asarray(out[0]), image + 1)
    assert store.attrs["complete"] is True
    with pytest.raises(ValueError, match="shape"):
        exact(image=image, out=np.zeros((1, 3, 20, 21), np.float32))


# ----------------------------------------------------------------------------- progress, cancel


def _drain(job):
    events = []
    try:
        while True:
            events.append(next(job))
    except StopIteration as stop:
        return events, stop.value


def test_progress_per_batch_with_total_and_eta():
    image = np.zeros((40, 40), np.float32)
    events, result = _drain(iter_predict(PlusOne(), image, tile_size=8, batch_size=4))
    n_tiles = len(TilePlan.create((40, 40), 8, 0.25))
    batches = [e for e in events if e.step > 0]
    assert all(isinstance(e, Progress) for e in events)
    assert len(batches) == -(-n_tiles // 4)
    assert batches[-1].step == batches[-1].total == n_tiles
    assert batches[-1].eta_s is not None and batches[-1].eta_s >= 0
    assert result.shape == (1, 40, 40)


def _cancel_after_first_batch(out, image, net):
    job = iter_predict(net, image, tile_size=8, batch_size=2, out=out, activation=None)
    while next(job).step == 0:
        pass
    calls = len(net.calls)
    job.close()
    return calls


def test_cancel_stops_within_a_batch_and_leaves_no_partial_output(tmp_path):
    import zarr

    image = np.random.default_rng(12).random((4, 30, 30), dtype=np.float32)
    net = PlusOne()
    store = zarr.create_array(store=str(tmp_path / "c.zarr"), shape=(1, 4, 30, 30), dtype="f4")
    calls = _cancel_after_first_batch(store, image, net)
    assert store.attrs["complete"] is False
    assert len(net.calls) == calls  # nothing ran after the close
    mapped = np.memmap(tmp_path / "c.dat", np.float32, "w+", shape=(1, 4, 30, 30))
    _cancel_after_first_batch(mapped, image, PlusOne())
    assert not (tmp_path / "c.dat").exists()
    array = np.zeros((1, 4, 30, 30), np.float32)
    _cancel_after_first_batch(array, image, PlusOne())
    assert np.isnan(array).all()


def test_model_is_left_as_it_was_given():
    net = small_convnet()
    net.train()
    predict(net, np.zeros((10, 10), np.float32), tile_size=8)
    assert net.training and not net[1].inplace
    assert next(net.parameters()).is_contiguous()


def test_only_provably_safe_activations_run_in_place():
    from napari_microseg.core.inference.inplace import inplace_activations

    shared = torch.nn.ReLU()
    net = small_convnet()
    net.append(shared)
    net.extra = shared  # also reachable elsewhere: may see tensors that are needed later
    first = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(1, 1, 1))  # input from outside
    switched = inplace_activations(torch.nn.Sequential(net, first))
    assert switched == [net[1]] and not shared.inplace and not first[0].inplace


# ----------------------------------------------------------------------------- bad input


def test_four_and_five_dimensional_arrays_need_axes():
    for shape in [(2, 3, 8, 8), (1, 2, 3, 8, 8)]:
        with pytest.raises(ImageValidationError, match="axes="):
            predict(PlusOne(), np.zeros(shape, np.float32))
    result = exact(image=np.ones((2, 3, 8, 8), np.float32), axes="TZYX", tile_size=8)
    assert result.shape == (1, 2, 3, 8, 8) and np.all(result == 2)


def test_rgb_image_into_a_grey_model_is_made_grey_and_other_mismatches_refused():
    rgb = np.random.default_rng(0).integers(0, 255, (16, 16, 3)).astype(np.uint8)
    grey = rgb.mean(axis=-1, dtype=np.float32)
    for model in (wrap_module(small_convnet(), in_channels=1, classes=2), small_convnet()):
        with pytest.warns(InferenceWarning, match="made grey by the mean of R, G and B"):
            result = predict(model, rgb)
        np.testing.assert_array_equal(result, predict(model, grey))
    model = wrap_module(small_convnet(), in_channels=1, classes=2, name="grey")
    with pytest.raises(ModelError, match=r"greyscale .* has 2 channels"):
        predict(model, np.zeros((2, 16, 16), np.uint8), axes="CYX")


def test_all_zero_image_is_explained():
    card = ModelCard(name="plus", architecture="custom", classes=["x"])
    model = SegmentationModel(PlusOne(), card, activation="none")
    with pytest.warns(NormalizationWarning, match="constant"):
        result = predict(model, np.zeros((16, 16), np.uint8), tile_size=8)
    assert np.all(result == 1.0)


def test_tile_smaller_than_the_network_minimum_is_refused():
    net = PlusOne()
    net.min_tile = 16
    with pytest.raises(ValueError, match="minimum"):
        predict(net, np.zeros((32, 32), np.float32), tile_size=8)


def test_network_failure_on_first_batch_is_explained():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    with pytest.raises(ModelError, match="tile size"):
        predict(net, np.zeros((16, 16), np.float32), tile_size=8)


@pytest.mark.parametrize("overlap", [1.0, -0.25])
def test_overlap_outside_range_is_refused(overlap):
    with pytest.raises(ValueError, match="overlap"):
        predict(PlusOne(), np.zeros((8, 8), np.float32), overlap=overlap)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_falls_back_to_cpu_with_a_warning():
    from napari_microseg.core.models import device

    image = np.ones((8, 8), np.float32)
    with pytest.warns(device.DeviceWarning, match="CPU"):
        result = exact(image=image, device="cuda", tile_size=8)
    assert np.all(result == 2)
