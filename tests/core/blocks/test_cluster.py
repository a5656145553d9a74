"""Block tasks on a Dask LocalCluster: same result as one process, one model load per worker."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import zarr

from napari_microseg.core.blocks.cluster import (
    LOADS,
    DaskExecutor,
    DistributedError,
    ModelRef,
    clear_model_cache,
    cluster_client,
)
from napari_microseg.core.blocks.executors import LocalExecutor
from napari_microseg.core.blocks.labels import label_to_zarr
from napari_microseg.core.blocks.predict import predict_to_zarr
from napari_microseg.core.inference.options import PredictOptions
from napari_microseg.core.models.build import create_model
from napari_microseg.core.postprocess import PostprocessPipeline
from napari_microseg.core.progress import drain

OPTIONS = PredictOptions(tile_size=32, overlap=0.25, device="cpu")


@pytest.fixture(scope="module")
def client():
    with cluster_client(workers=2, processes=False) as connected:
        yield connected


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("unet", name="tiny", depth=2, base_width=4)


@pytest.fixture
def source(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, (2, 50, 64)).astype(np.uint8)
    stored = zarr.create_array(
        store=str(tmp_path / "in.zarr"), shape=volume.shape, chunks=(2, 32, 32), dtype="u1"
    )
    stored[:] = volume
    return stored


def test_two_workers_give_the_single_process_result(tmp_path, client, model, source):
    kwargs = {"options": OPTIONS, "chunks": (2, 16, 32), "block": (2, 32, 32)}
    local = drain(predict_to_zarr(model, source, tmp_path / "a.zarr", **kwargs), show=False)
    job = predict_to_zarr(
        model, source, tmp_path / "b.zarr", executor=DaskExecutor(client), **kwargs
    )
    spread = drain(job, show=False)
    assert spread.probabilities.attrs["complete"] is True
    np.testing.assert_array_equal(spread.probabilities[:], local.probabilities[:])
    pipeline = PostprocessPipeline(method="threshold", threshold=0.5, connectivity=2)
    expected = pipeline.run(local.probabilities[:], class_axis=0)
    labels = drain(
        label_to_zarr(
            spread.probabilities, tmp_path / "l.zarr", pipeline, executor=DaskExecutor(client)
        ),
        show=False,
    )
    np.testing.assert_array_equal(labels.labels[:], expected)


def test_workers_load_a_model_file_once(tmp_path, client, model, source):
    from napari_microseg.core.models.checkpoint import save_checkpoint

    weights = save_checkpoint(model, tmp_path / "tiny")
    clear_model_cache()
    ref = ModelRef(str(weights), "cpu")
    job = predict_to_zarr(
        model,
        source,
        tmp_path / "p.zarr",
        options=OPTIONS,
        chunks=(2, 32, 32),
        block=(2, 32, 32),
        executor=DaskExecutor(client),
        model_ref=ref,
    )
    assert drain(job, show=False).blocks == 4
    assert LOADS == [ref]  # one process here, so one load for 4 blocks


def test_a_failing_task_is_retried_then_reported(tmp_path, client):
    marker = tmp_path / "failed-once"

    def flaky(path, item):
        if item == 1 and not path.exists():
            path.touch()
            raise RuntimeError("transient")
        return item * 10

    results = drain(DaskExecutor(client, retries=1).run(flaky, [0, 1, 2], marker), show=False)
    assert results == {0: 0, 1: 10, 2: 20}

    def broken(item):
        raise RuntimeError("disk full")

    with pytest.raises(DistributedError, match="failed after 1 retries: RuntimeError: disk full"):
        drain(DaskExecutor(client, retries=1).run(broken, [0]), show=False)


def test_the_local_executor_runs_the_same_tasks():
    assert drain(LocalExecutor().run(lambda k, i: k + i, [1, 2], 5), show=False) == {1: 6, 2: 7}


def test_an_unreachable_scheduler_is_one_clear_error():
    with pytest.raises(DistributedError, match="Could not reach the Dask scheduler"):
        with cluster_client("tcp://127.0.0.1:9", timeout=1):
            pass


def _die_once(path, item):
    import os

    if item == 0 and not path.exists():
        path.touch()
        os._exit(1)  # the worker process dies mid-task
    return item + 1


@pytest.mark.skipif(sys.platform == "win32", reason="worker processes")
def test_a_worker_that_dies_mid_task_is_replaced_and_the_task_rerun(tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with cluster_client(workers=2, processes=True, memory_limit="1GB") as procs:
            results = drain(DaskExecutor(procs).run(_die_once, [0, 1, 2], tmp_path / "died"))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert (tmp_path / "died").exists() and results == {0: 1, 1: 2, 2: 3}
