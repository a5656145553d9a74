"""segment_to_zarr: predict into zarr, label across blocks, resume; equal to the in-memory run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from napari_microseg.core.blocks.executors import LocalExecutor
from napari_microseg.core.blocks.segment import PHASE, READY, segment_to_zarr
from napari_microseg.core.blocks.store import ChunkedError, resume_state
from napari_microseg.core.inference.options import PredictOptions
from napari_microseg.core.inference.segment import segment_job
from napari_microseg.core.models.base import wrap_module
from napari_microseg.core.postprocess import PostprocessPipeline
from napari_microseg.core.progress import drain

OPTIONS = PredictOptions(tile_size=32, overlap=0.25, device="cpu")
#: Chunks and blocks of 3 x 16 x 16 over a (6, 40, 50) volume: 2 x 3 x 4 = 24 blocks.
GRID = {"chunks": (3, 16, 16), "block": (3, 16, 16)}
N_BLOCKS = 24


class Bright(torch.nn.Module):
    """Two-class logits from the input: class 1 wins where the image is bright."""

    def forward(self, x):
        return torch.cat([(0.5 - x) * 20, (x - 0.5) * 20], dim=1)


@pytest.fixture
def model():
    wrapped = wrap_module(
        Bright(),
        in_channels=1,
        classes=["background", "object"],
        normalization={"kind": "range", "min": 0, "max": 255},
    )
    wrapped.card.recommended["postprocess"] = {"method": "threshold", "threshold": 0.5}
    return wrapped


@pytest.fixture
def volume():
    """A cube on the corner of 8 blocks, a bar through 4, a dim blob and a speck."""
    image = np.full((6, 40, 50), 20, np.uint8)
    image[1:5, 12:20, 12:20] = 200
    image[3, 30:34, 2:48] = 200
    image[0:2, 2:8, 36:44] = 135  # probability about 0.77: kept at 0.5, not at 0.9
    image[5, 38, 49] = 250
    return image


def in_memory(model, volume, pipeline=None):
    job = segment_job(model, volume, axes="ZYX", options=OPTIONS, pipeline=pipeline)
    return drain(job, show=False)


def run(model, volume, tmp_path, **kwargs):
    job = segment_to_zarr(
        model,
        volume,
        tmp_path / "p.zarr",
        tmp_path / "l.zarr",
        axes="ZYX",
        **{"options": OPTIONS, **GRID, **kwargs},
    )
    return drain(job, show=False)


def events_and_result(job):
    """Every event a job yields, and what it returns."""
    events = []
    try:
        while True:
            events.append(next(job))
    except StopIteration as stop:
        return events, stop.value


def test_equals_the_in_memory_segmentation_voxel_for_voxel(tmp_path, model, volume):
    expected = in_memory(model, volume)
    result = run(model, volume, tmp_path)
    np.testing.assert_array_equal(result.prediction.probabilities[:], expected.probabilities)
    labels = zarr.open_array(str(tmp_path / "l.zarr"), mode="r")
    np.testing.assert_array_equal(labels[:], expected.labels)  # ids included
    assert result.labels.n_objects == int(expected.labels.max()) == 4
    assert labels.attrs["complete"] is True and labels.attrs["microseg_kind"] == "labels"
    assert result.pipeline == expected.pipeline
    assert result.prediction.blocks == N_BLOCKS and result.prediction.skipped == 0


def test_overrides_change_the_recommended_pipeline(tmp_path, model, volume):
    pipeline = PostprocessPipeline(method="threshold", threshold=0.9)
    expected = in_memory(model, volume, pipeline)
    result = run(model, volume, tmp_path, postprocess={"threshold": 0.9})
    np.testing.assert_array_equal(result.labels.labels[:], expected.labels)
    assert result.pipeline["threshold"] == 0.9 and result.labels.n_objects == 3


def test_events_say_the_phase_and_a_custom_executor_runs_both_passes(tmp_path, model, volume):
    class Counting(LocalExecutor):
        def __init__(self):
            self.labels = []

        def run(self, fn, items, *args, on_result=None, label="block"):
            self.labels.append(label)
            return (yield from super().run(fn, items, *args, on_result=on_result, label=label))

    executor = Counting()

    job = segment_to_zarr(
        model,
        volume,
        tmp_path / "p.zarr",
        tmp_path / "l.zarr",
        axes="ZYX",
        options=OPTIONS,
        executor=executor,
        **GRID,
    )
    events, result = events_and_result(job)
    phases = [event.info[PHASE] for event in events]
    first_labels = phases.index("labels")
    assert set(phases[: first_labels - 1]) == {"predict"} and phases.count("predicted") == 1
    assert phases[first_labels - 1] == "predicted" and set(phases[first_labels:]) == {"labels"}
    assert not events[0].info[READY] and events[first_labels - 2].info[READY]
    assert executor.labels == ["block", "label block", "face", "relabel"]
    assert result.labels.n_objects == 4


def test_a_closed_job_keeps_its_blocks_and_a_rerun_resumes(tmp_path, model, volume):
    expected = run(model, volume, tmp_path / "whole")
    job = segment_to_zarr(
        model, volume, tmp_path / "p.zarr", tmp_path / "l.zarr", axes="ZYX", options=OPTIONS, **GRID
    )
    for event in job:  # stop after a few blocks, as a cancelled widget would
        if event.step >= 5 and "done" in event.message:
            break
    job.close()
    stored = zarr.open_array(str(tmp_path / "p.zarr"), mode="r")
    done = resume_state(stored)["done"]
    assert stored.attrs["complete"] is False and 5 <= len(done) < N_BLOCKS
    assert not (tmp_path / "l.zarr").exists()

    result = run(model, volume, tmp_path)
    assert result.prediction.skipped == len(done)
    np.testing.assert_array_equal(result.labels.labels[:], expected.labels.labels[:])
    again = run(model, volume, tmp_path)
    assert again.prediction.skipped == N_BLOCKS and again.labels.seconds == 0.0  # found done
    np.testing.assert_array_equal(again.labels.labels[:], expected.labels.labels[:])


def test_without_labels_only_the_probabilities_are_written(tmp_path, model, volume):
    job = segment_to_zarr(model, volume, tmp_path / "p.zarr", None, options=OPTIONS, **GRID)
    result = drain(job, show=False)
    assert result.labels is None and result.pipeline["method"] == "threshold"
    assert result.prediction.probabilities.shape == (2, 6, 40, 50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]


def test_stale_outputs_are_refused_or_replaced_and_foreign_ones_refused(tmp_path, model, volume):
    run(model, volume, tmp_path)
    other = PredictOptions(tile_size=32, overlap=0.5, device="cpu")
    with pytest.raises(ChunkedError, match="another model, input or settings"):
        run(model, volume, tmp_path, options=other)
    expected = in_memory(model, volume)
    job = segment_to_zarr(
        model,
        volume,
        tmp_path / "p.zarr",
        tmp_path / "l.zarr",
        axes="ZYX",
        options=other,
        replace_stale=True,
        **GRID,
    )
    events, result = events_and_result(job)
    assert any("p.zarr holds an older result: starting over" in e.message for e in events)
    assert result.prediction.skipped == 0
    np.testing.assert_array_equal(result.labels.labels[:], expected.labels)

    zarr.create_array(store=str(tmp_path / "foreign.zarr"), shape=(3,), dtype="u1")
    job = segment_to_zarr(
        model, volume, tmp_path / "foreign.zarr", None, options=OPTIONS, replace_stale=True
    )
    with pytest.raises(ChunkedError, match="not written by napari-microseg"):
        drain(job, show=False)
