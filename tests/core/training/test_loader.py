"""The data pipeline: same batches with any workers, clear errors, fast shutdown, small /dev/shm."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import numpy as np
import pytest
import tifffile
import torch

from napari_microseg.core.io import synthetic
from napari_microseg.core.models.build import create_model
from napari_microseg.core.progress import drain
from napari_microseg.core.training import loader as loader_module
from napari_microseg.core.training.data import Region, TrainingDataError, TrainingPair, prepare
from napari_microseg.core.training.datasets import load_dataset
from napari_microseg.core.training.jobs import finetune
from napari_microseg.core.training.loader import BatchLoader, auto_workers, fitting_workers
from napari_microseg.core.training.sampling import PatchSampler
from napari_microseg.core.training.settings import TrainingError, TrainSettings
from napari_microseg.core.training.targets import unet_weight_map

pytestmark = pytest.mark.usefixtures("user_folder")
FORK = "fork" in multiprocessing.get_all_start_methods()
needs_fork = pytest.mark.skipif(not FORK, reason="worker tests use fork-started workers")


@pytest.fixture(scope="module")
def regions():
    sample = synthetic.fluorescence_nuclei((96, 96), n_objects=12, seed=1)
    model = create_model("unet", name="tiny", depth=2, base_width=4)
    data = prepare([TrainingPair(sample.image, sample.labels)], model)
    return [Region(p, p.annotated) for p in data.planes]


def make_sampler(regions, cls=PatchSampler, seed: int = 0) -> PatchSampler:
    sampler = cls(
        regions,
        patch_size=48,
        augment="default",
        seed=seed,
        margin=10,
        weight_fn=lambda p: unet_weight_map(p.instances, p.target, annotated=p.annotated),
    )
    sampler.prepare()
    return sampler


def take(loader: BatchLoader, n: int) -> list[dict[str, torch.Tensor]]:
    with loader:
        return [loader.next() for _ in range(n)]


def same(first, second) -> bool:
    return all(
        a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        for a, b in zip(first, second, strict=True)
    )


class CrashingSampler(PatchSampler):
    """Its worker dies (as if killed for memory) when asked for batch 2."""

    def batch(self, index, size):
        if index == 2 and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().batch(index, size)


class SlowSampler(PatchSampler):
    """Each batch takes a second: a worker is always busy when the loader is closed."""

    def batch(self, index, size):
        if torch.utils.data.get_worker_info() is not None:
            time.sleep(1.0)
        return super().batch(index, size)


def test_batches_have_the_documented_shapes(regions):
    batch = make_sampler(regions).batch(0, 3)
    assert batch["image"].shape == (3, 1, 48, 48) and batch["image"].dtype == torch.float32
    assert batch["target"].dtype == torch.int64 and batch["annotated"].dtype == torch.bool
    assert batch["weight"].shape == (3, 48, 48) and batch["weight"].dtype == torch.float32


@needs_fork
def test_the_same_seed_gives_the_same_batches_with_any_number_of_workers(regions):
    sampler = make_sampler(regions)
    in_process = take(BatchLoader(sampler, batch_size=2, workers=0), 5)
    for workers in (1, 2):
        assert same(take(BatchLoader(sampler, batch_size=2, workers=workers), 5), in_process)
    # Starting at batch 3 (a resumed run) continues the same sequence.
    assert same(take(BatchLoader(sampler, batch_size=2, workers=2, start=3), 2), in_process[3:])
    other = take(BatchLoader(make_sampler(regions, seed=1), batch_size=2, workers=0), 5)
    assert not same(other, in_process)


@needs_fork
def test_a_worker_that_dies_is_a_clear_error_not_a_hang(regions):
    loader = BatchLoader(make_sampler(regions, CrashingSampler), batch_size=2, workers=1)
    start = time.monotonic()
    with pytest.raises(TrainingError, match="data worker process stopped") as caught:
        for _ in range(6):
            loader.next()
    assert time.monotonic() - start < 30
    assert "data_workers: 0" in str(caught.value)
    loader.close()


@needs_fork
def test_close_stops_busy_workers_within_a_second(regions):
    loader = BatchLoader(make_sampler(regions, SlowSampler), batch_size=2, workers=2)
    loader.next()
    processes = list(loader._iterator._workers)  # torch's own list of its worker processes
    assert all(p.is_alive() for p in processes)
    start = time.monotonic()
    loader.close()
    assert time.monotonic() - start < 1.0
    assert not any(p.is_alive() for p in processes)


def test_little_shared_memory_means_fewer_workers_with_a_notice(regions, monkeypatch):
    monkeypatch.setattr(loader_module, "shm_free_bytes", lambda path=None: 1_000_000)
    loader = BatchLoader(make_sampler(regions), batch_size=2, workers=2)
    assert loader.workers == 0 and loader._iterator is None
    assert "shared memory" in loader.notices[0] and "training process" in loader.notices[0]
    assert loader.next()["image"].shape == (2, 1, 48, 48)
    per_batch = 2 * 48 * 48 * (4 + 8 + 1 + 4)
    assert fitting_workers(4, per_batch, None) == 4
    assert 0 < fitting_workers(4, per_batch, 100 * per_batch * 2 * 5 // 75) < 4


def test_auto_workers_make_patches_beside_the_network_even_on_two_cores():
    assert auto_workers("cpu", cores=2) == 1
    assert auto_workers("cpu", cores=1) == 1
    assert auto_workers("cpu", cores=16) == 4
    assert auto_workers("cuda", cores=2) == 1
    assert auto_workers("cuda", cores=16) == 8


@needs_fork
def test_a_finetune_with_workers_trains_the_same_weights_and_records_them():
    sample = synthetic.fluorescence_nuclei((80, 80), n_objects=10, seed=1)
    models = []
    for workers in (0, 2):
        torch.manual_seed(0)
        parent = create_model("unet", name="tiny", depth=2, base_width=4)
        settings = TrainSettings.for_finetune(
            steps=4, minutes=None, patch_size=48, batch_size=2, seed=2, data_workers=workers
        )
        job = finetune(parent, sample.image, sample.labels, settings=settings, save=False)
        models.append(drain(job, show=False))
    first, second = (m.module.state_dict() for m in models)
    assert all(torch.equal(first[k], second[k]) for k in first)
    lineage = models[1].card.lineage
    assert lineage["data_workers"] == 2 and lineage["device"].startswith("cpu")
    assert lineage["batch_size_used"] == 2 and lineage["amp"] is False
    assert 0 < lineage["validation_share"] < 1
    assert models[0].card.lineage["data_workers"] == 0


def test_bad_worker_settings_are_refused():
    with pytest.raises(TrainingError, match="data_workers"):
        TrainSettings(data_workers=-1).validate()
    with pytest.raises(TrainingError, match="data_workers"):
        TrainSettings(data_workers="many").validate()
    with pytest.raises(TrainingError, match="batch_size_gpu"):
        TrainSettings(batch_size_gpu=0).validate()


def test_a_corrupt_image_is_named_before_training(tmp_path):
    folder = tmp_path / "lucchi"
    folder.mkdir()
    stack = synthetic.fibsem_mitochondria((2, 32, 32), n_objects=4, seed=0)
    tifffile.imwrite(folder / "train_images.tif", stack.image)
    (folder / "train_masks.tif").write_bytes(b"II*\x00" + b"\x17" * 200)  # a broken TIFF
    with pytest.raises(TrainingDataError, match=r"Cannot read .*train_masks\.tif"):
        load_dataset(folder)


def test_an_image_with_nan_is_named_before_training():
    image = np.zeros((2, 32, 32), np.float32)
    image[1, 3, 3] = np.nan
    labels = np.zeros((2, 32, 32), np.uint8)
    labels[:, 8:16, 8:16] = 1
    model = create_model("unet", name="tiny", depth=2, base_width=4)
    with pytest.raises(TrainingDataError, match=r"stack \(slice 1\).*NaN"):
        prepare([TrainingPair(image, labels, name="stack")], model)
