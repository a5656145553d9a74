"""The device-resident tile pipeline on the CPU device: exactness, transfers, batch, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from napari_microseg.core.inference import device_tiles, tile_loop
from napari_microseg.core.inference.batch_size import (
    MAX_AUTO_BATCH,
    DeviceMemory,
    batch_from_memory,
    probe_batch_size,
)
from napari_microseg.core.inference.device_tiles import DeviceMerger, DeviceNormalizer
from napari_microseg.core.inference.forward import (
    InferenceWarning,
    RunnerSettings,
    out_of_memory_message,
)
from napari_microseg.core.inference.normalize import Normalizer, fit_normalizer
from napari_microseg.core.inference.options import PredictOptions
from napari_microseg.core.inference.predict import predict, run_prediction
from napari_microseg.core.inference.tiling import TileMerger, TilePlan
from napari_microseg.core.models.base import ModelError
from napari_microseg.core.progress import drain


class PlusOne(torch.nn.Module):
    """f(x) = x + 1, recording the shape of every batch."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return x + 1


class OutOfMemoryOver(PlusOne):
    """x + 1, but a (simulated) CUDA out-of-memory error for batches over ``max_batch``."""

    def __init__(self, max_batch):
        super().__init__()
        self.max_batch = max_batch

    def forward(self, x):
        if x.shape[0] > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward(x)


def run(model, image, **options):
    options.setdefault("activation", None)
    options.setdefault("device", "cpu")
    out = options.pop("out", None)
    axes = options.pop("axes", None)
    job = run_prediction(model, image, axes=axes, out=out, options=PredictOptions(**options))
    return drain(job, show=False)


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("shape", [(16, 15), (7, 5), (37, 29), (1, 9)])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75, 0.9])
@pytest.mark.parametrize("blend", ["gaussian", "average"])
def test_device_path_plus_one_is_exact_for_uint16_input(shape, overlap, blend):
    # uint16 travels as it is and becomes float32 on the device.
    image = np.random.default_rng(0).integers(0, 65535, shape).astype(np.uint16)
    result = run(PlusOne(), image, tile_size=8, overlap=overlap, blend=blend, batch_size=3)
    assert result.dtype == np.float32 and result.shape == (1, *shape)
    np.testing.assert_array_equal(result[0], image.astype(np.float32) + 1)


@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.9])
def test_device_path_plus_one_is_exact_for_a_stack_in_every_3d_mode(overlap):
    volume = np.random.default_rng(1).normal(size=(5, 16, 15)).astype(np.float32) * 100
    for mode in ({}, {"slice_axis": "X"}, {"slice_axis": "Y"}):
        result = run(PlusOne(), volume, tile_size=7, overlap=overlap, batch_size=4, **mode)
        np.testing.assert_array_equal(result[0], volume + 1)


def test_device_merger_is_exact_for_identical_values_and_a_weighted_mean_otherwise():
    plan = TilePlan.create((37, 29), 8, 0.75)
    rng = np.random.default_rng(2)
    values = {origin: rng.normal(size=(2, 8, 8)).astype(np.float32) for origin in plan}
    host = TileMerger(plan, n_planes=1, n_channels=2, height=37, width=29)
    device = DeviceMerger(plan, n_planes=1, n_channels=2, height=37, width=29, device="cpu")
    constant = DeviceMerger(plan, n_planes=1, n_channels=1, height=37, width=29, device="cpu")
    for origin in plan:
        host.aggregate(values[origin], (0, *origin))
        device.aggregate(torch.from_numpy(values[origin]), (0, *origin))
        constant.aggregate(torch.full((1, 8, 8), 0.1), (0, *origin))
    [(_, reference)] = host.finalize()
    [(_, blended)] = device.finalize()
    np.testing.assert_allclose(blended.result(), reference, rtol=1e-5, atol=1e-6)
    [(_, flat)] = constant.finalize()
    assert np.all(flat.result() == np.float32(0.1))


def test_device_normalizer_gives_the_host_normalizer_values():
    rng = np.random.default_rng(3)
    image = rng.normal(100, 30, size=(2, 3, 9, 11)).astype(np.float32)
    image[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    cases = [
        (image, fit_normalizer(image, None, channel_axis=1)),
        (image, fit_normalizer(image, {"kind": "zscore", "per_channel": True}, channel_axis=1)),
        (image, Normalizer(np.array([90.0]), np.array([20.0]), True)),
        (
            rng.integers(0, 4096, (2, 1, 9, 11)).astype(np.uint16),
            Normalizer(np.ones(1), np.ones(1)),
        ),
        (
            rng.integers(0, 255, (2, 1, 9, 11)).astype(np.uint8),
            Normalizer(np.ones(1) * 3, np.ones(1) * 7),
        ),
    ]
    for raw, normalizer in cases:
        staged = device_tiles.stage(raw, torch.device("cpu"))
        on_device = DeviceNormalizer(normalizer, torch.device("cpu"))(staged).numpy()
        np.testing.assert_array_equal(on_device, normalizer(raw, channel_axis=1))
        assert np.all(np.isfinite(on_device))


def test_a_band_made_on_the_device_equals_the_host_reference():
    from napari_microseg.core.inference.planes import make_views

    volume = np.random.default_rng(14).integers(0, 4000, (5, 7, 9)).astype(np.uint16)
    [view] = make_views(volume, "ZYX", slice_axis=None, ortho=False)
    normalizer = fit_normalizer(volume, None)
    cpu = torch.device("cpu")
    for planes, rows in (((0, 2), (0, 8)), ((3, 5), (0, 8)), ((1, 4), (0, 8))):
        # Rows and columns mirrored up to a 8 x 12 tile, planes repeated at the stack's ends.
        options = {"context": 1, "min_shape": (8, 12)}
        raw = view.read_raw((), planes, rows, **options)
        on_device = device_tiles.device_band(
            device_tiles.stage(raw, cpu), cpu, DeviceNormalizer(normalizer, cpu), 1
        )
        host = view.read_band((), planes, rows, normalizer=normalizer, **options)
        assert on_device.shape == host.shape == (planes[1] - planes[0], 3, 8, 12)
        np.testing.assert_array_equal(on_device.numpy(), host)


def test_context_slices_are_made_on_the_device_from_one_band():
    from napari_microseg.core.models.base import ModelCard, SegmentationModel

    class Difference(torch.nn.Module):
        def forward(self, x):
            return x[:, 2:3] - x[:, 0:1]

    card = ModelCard(
        name="ctx",
        architecture="custom",
        in_channels=3,
        classes=["d"],
        context_slices=1,
        normalization={"kind": "none"},
    )
    model = SegmentationModel(Difference(), card, activation="none")
    volume = np.broadcast_to(np.arange(6, dtype=np.uint8)[:, None, None], (6, 8, 8)).copy()
    result = run(model, volume, tile_size=8)
    np.testing.assert_array_equal(result[0, :, 0, 0], [1, 2, 2, 2, 2, 1])


# ----------------------------------------------------------------------------- transfers


class Transfers:
    """Counts the host <-> device copies of the tile loop (wrapping the two transfer functions)."""

    def __init__(self, monkeypatch):
        self.uploads: list[tuple[int, ...]] = []
        self.downloads: list[tuple[int, ...]] = []
        upload, download = device_tiles.upload, device_tiles.download

        def counted_upload(staged, device):
            self.uploads.append(tuple(staged.shape))
            return upload(staged, device)

        def counted_download(tensor):
            self.downloads.append(tuple(tensor.shape))
            return download(tensor)

        monkeypatch.setattr(device_tiles, "upload", counted_upload)
        monkeypatch.setattr(device_tiles, "download", counted_download)


def test_one_upload_and_at_most_one_download_per_band_not_per_tile(monkeypatch):
    transfers = Transfers(monkeypatch)
    image = np.random.default_rng(4).random((70, 50), dtype=np.float32)
    net = PlusOne()
    result = run(net, image, tile_size=16, overlap=0.5, batch_size=3)
    np.testing.assert_array_equal(result[0], image + 1)
    plan = TilePlan.create((70, 50), 16, 0.5)
    bands = len(plan.starts[0])
    tiles = sum(shape[0] for shape in net.calls)
    assert tiles == plan.n_tiles > 3 * bands
    assert transfers.uploads == [(1, 1, 16, 50)] * bands  # whole rows of the plane, once
    assert 1 <= len(transfers.downloads) <= bands
    assert sum(shape[2] for shape in transfers.downloads) == 70  # every row comes back once


def test_a_stack_uploads_each_band_of_a_group_of_planes_once(monkeypatch):
    transfers = Transfers(monkeypatch)
    volume = np.random.default_rng(5).random((6, 40, 30), dtype=np.float32)
    net = PlusOne()
    result = run(net, volume, tile_size=16, overlap=0.25, batch_size=8)
    np.testing.assert_array_equal(result[0], volume + 1)
    bands = len(TilePlan.create((40, 30), 16, 0.25).starts[0])
    assert transfers.uploads == [(6, 1, 16, 30)] * bands  # all six planes in one group
    assert len(transfers.downloads) <= bands
    assert max(shape[0] for shape in net.calls) == 8  # tiles of different planes in one batch


def test_ortho_views_batch_planes_together_and_stay_close_to_exact():
    volume = np.random.default_rng(6).random((6, 12, 10), dtype=np.float32)
    net = PlusOne()
    result = run(net, volume, tile_size=8, ortho=True, batch_size=16)
    np.testing.assert_allclose(result[0], volume + 1, rtol=1e-6)
    assert max(shape[0] for shape in net.calls) == 16


# ----------------------------------------------------------------------------- batch size


def test_batch_from_memory_is_a_power_of_two_within_the_free_memory():
    gib = 2**30
    assert batch_from_memory(80 * gib, 0.5 * gib, fixed_bytes=2 * gib) == 64
    assert batch_from_memory(80 * gib, 3 * gib) == 8  # 40 GiB / 3 GiB = 13 -> 8
    assert batch_from_memory(10 * gib, 0.1 * gib, fixed_bytes=4 * gib) == 8  # (5 - 4) / 0.1
    assert batch_from_memory(1 * gib, 4 * gib) == 1
    assert batch_from_memory(1000 * gib, 1) == MAX_AUTO_BATCH


class FakeMemory:
    """A device whose passes take ``fixed + n * per_tile`` bytes at their peak."""

    def __init__(self, free, fixed, per_tile):
        self.free_bytes, self.fixed, self.per_tile = free, fixed, per_tile
        self.last = 0

    def forward(self, x):
        self.last = x.shape[0]
        return x

    def readings(self):
        return DeviceMemory(
            free=lambda: self.free_bytes,
            allocated=lambda: 1000,
            reset_peak=lambda: None,
            peak=lambda: 1000 + self.fixed + self.last * self.per_tile,
        )


def test_probe_measures_one_more_tile_and_the_fixed_part():
    fake = FakeMemory(free=10_000_000, fixed=1_000_000, per_tile=200_000)
    batch = probe_batch_size(fake.forward, lambda n: torch.zeros(n, 1, 4, 4), fake.readings())
    assert batch == 16  # (5e6 - 1e6) / 2e5 = 20 -> 16
    assert probe_batch_size(fake.forward, torch.zeros, None, device_type="cpu") == 1
    assert probe_batch_size(fake.forward, torch.zeros, None, device_type="mps") == 8


def test_probe_out_of_memory_gives_one():
    def forward(x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    fake = FakeMemory(free=10_000_000, fixed=0, per_tile=1)
    assert probe_batch_size(forward, lambda n: torch.zeros(n), fake.readings()) == 1


def test_automatic_batch_that_is_too_large_is_halved_until_it_fits(monkeypatch):
    # The memory reading promises room for 64 tiles; the device fits 4 at most.
    fake = FakeMemory(free=10**12, fixed=0, per_tile=1)
    monkeypatch.setattr(tile_loop, "device_memory", lambda device: fake.readings())
    net = OutOfMemoryOver(max_batch=4)
    original = net.forward
    net.forward = lambda x: fake.forward(x) is not None and original(x)
    image = np.random.default_rng(7).random((200, 200), dtype=np.float32)
    with pytest.warns(InferenceWarning, match="Out of memory with 64 tiles"):
        result = run(net, image, tile_size=16, overlap=0.0)
    np.testing.assert_array_equal(result[0], image + 1)
    sizes = [shape[0] for shape in net.calls]
    assert sizes[:2] == [1, 2] and max(sizes) == 4  # the probe, then batches of 4


# ----------------------------------------------------------------------------- options


def test_compile_that_fails_falls_back_to_eager_with_a_notice(monkeypatch):
    def broken_compile(module, *args, **kwargs):
        def compiled(*inputs):
            raise RuntimeError("no C++ compiler found\nmore detail")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    image = np.random.default_rng(8).random((20, 20), dtype=np.float32)
    with pytest.warns(InferenceWarning, match="torch.compile failed .*no C\\+\\+ compiler"):
        result = run(PlusOne(), image, tile_size=8, compile=True)
    np.testing.assert_array_equal(result[0], image + 1)


def test_amp_off_is_float32_on_the_device_path():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1)).eval()
    image = np.random.default_rng(9).random((24, 24), dtype=np.float32)
    full = predict(net, image, tile_size=24, device="cpu", amp=False)
    with torch.no_grad():
        reference = net(torch.from_numpy(image)[None, None]).softmax(1)[0].numpy()
    np.testing.assert_allclose(full, reference, atol=1e-6)


# ----------------------------------------------------------------------------- bad input


def test_out_of_memory_at_batch_one_on_a_256_tile_is_explained_and_nothing_is_left(tmp_path):
    image = np.random.default_rng(10).random((256, 300), dtype=np.float32)
    path = tmp_path / "probabilities.dat"
    out = np.memmap(path, np.float32, "w+", shape=(1, 256, 300))
    with pytest.raises(ModelError) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore", InferenceWarning)
        run(OutOfMemoryOver(max_batch=0), image, tile_size=256, batch_size=1, out=out)
    message = str(caught.value)
    assert "256x256 tile" in message and "tile_size=128" in message and "--tile 128" in message
    assert "Nothing was written" in message
    assert not np.asarray(out).any()  # the first batch failed: the caller's array is untouched
    gpu = RunnerSettings(device=torch.device("cuda"), min_tile=16)
    assert "device='cpu'" in out_of_memory_message(gpu, (1, 1, 256, 256))


@pytest.mark.parametrize(
    "network",
    [
        torch.nn.Conv2d(1, 2, 3),  # no padding: 2 pixels smaller
        torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.AvgPool2d(2)),
    ],
)
def test_output_of_another_spatial_size_is_refused_and_nothing_is_left(tmp_path, network):
    import zarr

    image = np.random.default_rng(11).random((40, 40), dtype=np.float32)
    store = zarr.create_array(store=str(tmp_path / "p.zarr"), shape=(2, 40, 40), dtype="f4")
    with pytest.raises(ModelError, match=r"input's H and W.*Nothing was written"):
        run(network.eval(), image, tile_size=16, out=store, activation="auto")
    assert store.attrs.get("complete") is not True
    array = np.zeros((2, 40, 40), np.float32)
    with pytest.raises(ModelError, match="input's H and W"):
        run(network.eval(), image, tile_size=16, out=array, activation="auto")
    assert not array.any()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_says_so_and_runs_the_device_path_on_the_cpu(monkeypatch):
    from napari_microseg.core.models.device import DeviceWarning

    transfers = Transfers(monkeypatch)
    image = np.random.default_rng(12).random((20, 20), dtype=np.float32)
    with pytest.warns(DeviceWarning, match="CUDA GPU was requested but .*running on the CPU"):
        result = run(PlusOne(), image, tile_size=8, device="cuda")
    np.testing.assert_array_equal(result[0], image + 1)
    assert transfers.uploads


class FailsAfter(PlusOne):
    """x + 1 for the first ``ok`` batches, then out of memory for good."""

    def __init__(self, ok):
        super().__init__()
        self.ok = ok

    def forward(self, x):
        if len(self.calls) >= self.ok:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward(x)


def test_out_of_memory_after_some_bands_were_written_leaves_nothing_half_written(tmp_path):
    import zarr

    volume = np.random.default_rng(13).random((4, 40, 40), dtype=np.float32)
    path = tmp_path / "p.dat"
    mapped = np.memmap(path, np.float32, "w+", shape=(1, 4, 40, 40))
    store = zarr.create_array(store=str(tmp_path / "p.zarr"), shape=(1, 4, 40, 40), dtype="f4")
    for out in (mapped, store):
        with pytest.raises(ModelError, match="Out of memory"), warnings.catch_warnings():
            warnings.simplefilter("ignore", InferenceWarning)
            run(FailsAfter(ok=6), volume, tile_size=8, batch_size=4, memory_budget_mb=0.01, out=out)
    assert not path.exists()  # the memmap's file is removed
    assert store.attrs["complete"] is False
