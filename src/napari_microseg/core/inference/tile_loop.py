"""The tile loop: bands of every plane go to the device once, come back blended once.

For every view (one; three in the ortho mode) and group of planes, the bands
of tile rows are read in raster order by a reader thread, one band ahead of
the device (:func:`.device_tiles.read_ahead`), uploaded once each and
normalized there (:func:`.device_tiles.device_band`). Their tiles are batched
across rows, planes and views, run (:class:`.forward.TileRunner`) and blended
on the device into one :class:`.device_tiles.DeviceMerger` per group of planes
(instance detections are stitched on the host). Finished rows come back once
per band and are written to the output sink while the device runs the next
batch. A :class:`~.progress.Progress` event follows every batch, so closing
the generator stops within one batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import closing
from typing import TYPE_CHECKING, Any

import numpy as np

from ..progress import EtaClock, Job, Progress
from .batch_size import device_memory, probe_batch_size
from .device_tiles import DeviceMerger, DeviceNormalizer, Download, device_band, read_ahead, stage
from .job import PredictionJob
from .planes import View, is_lazy
from .stitching import Instances, InstanceStitcher, detections_to_tile_labels
from .tiling import TilePlan

if TYPE_CHECKING:
    import torch

Tile = tuple["_Group", tuple[int, int, int], Any]


class _Group:
    """A group of planes of one view in flight: its merger or stitchers."""

    def __init__(self, index: int, view: View, plan: TilePlan, outer: tuple, planes: tuple):
        self.index = index  # the view's position; views after the first accumulate
        self.view = view
        self.plan = plan
        self.outer = outer
        self.planes = planes
        self.size = planes[1] - planes[0]
        self.merger: DeviceMerger | None = None
        self.stitchers: list[InstanceStitcher] = []
        self.done = 0


def _band_specs(job: PredictionJob) -> Iterator[tuple[_Group, int]]:
    """``(group, first row)`` of every band, in the order the tiles are run."""
    for index, (view, plan, size) in enumerate(zip(job.views, job.plans, job.group_sizes)):
        for outer, planes in view.groups(size):
            group = _Group(index, view, plan, outer, planes)
            for y0 in plan.starts[0]:
                yield group, y0


def _tile_stream(job: PredictionJob) -> Iterator[Tile]:
    """Every tile of every view, in raster order within groups of planes, on the device."""
    device = job.runner.settings.device
    normalizer = DeviceNormalizer(job.normalizer, device)  # type: ignore[arg-type]

    def read(spec: tuple[_Group, int]) -> torch.Tensor:
        group, y0 = spec
        raw = group.view.read_raw(
            group.outer,
            group.planes,
            (y0, y0 + group.plan.tile[0]),
            context=job.context,
            min_shape=group.plan.shape,
        )
        return stage(raw, device)

    # Reading ahead hides a GPU's wait for the next band, and a lazy (zarr, dask)
    # input's decompression behind the CPU's convolutions.
    threaded = device.type != "cpu" or is_lazy(job.views[0].array)
    for (group, y0), staged in read_ahead(_band_specs(job), read, threaded=threaded):
        band = device_band(staged, device, normalizer, job.context)
        cols = group.plan.tile[1]
        for plane in range(group.size):
            for x0 in group.plan.starts[1]:
                yield group, (plane, y0, x0), band[plane, :, :, x0 : x0 + cols]


def _batches(job: PredictionJob) -> Iterator[list[Tile]]:
    """Tiles in batches of the runner's current batch size (it may shrink on the way).

    A batch holds tiles of one shape: ortho views of a non-cubic volume tile differently.
    """
    batch: list[Tile] = []
    for item in _tile_stream(job):
        if batch and batch[0][2].shape != item[2].shape:
            yield batch
            batch = []
        batch.append(item)
        if len(batch) >= job.runner.batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _stack(batch: list[Tile]) -> torch.Tensor:
    import torch

    with torch.inference_mode():
        return torch.stack([tile for _, _, tile in batch])


def _fit_batch(job: PredictionJob) -> None:
    """Choose the batch for the device when none was given (:mod:`.batch_size`)."""
    import torch

    runner = job.runner
    if runner.settings.batch_size is not None:
        return
    device = runner.settings.device
    view, plan = job.views[0], job.plans[0]
    shape = (view.channels * (2 * job.context + 1), *plan.tile)

    def blank(n: int) -> torch.Tensor:
        return torch.zeros((n, *shape), device=device)

    runner.batch_size = probe_batch_size(
        runner.probe, blank, device_memory(device), device_type=device.type
    )


def _progress(job: PredictionJob, clock: EtaClock, done: int, seen: int) -> tuple[Progress, int]:
    notices = job.runner.notices
    message = notices[-1] if len(notices) > seen else f"Predicting on {job.device_name}"
    info = {"batch_size": job.runner.batch_size, "notices": list(notices)}
    return clock.progress(done, message, **info), len(notices)


def _row_align(job: PredictionJob, view: View) -> int:
    chunks = getattr(job.sink.out, "chunks", None)
    if chunks is None or job.sink.labels:
        return 1
    axis = 1 + job.sink.spatial_axes.index(view.plane[0])
    return int(chunks[axis]) if isinstance(chunks, tuple) else 1


def _merger(job: PredictionJob, group: _Group, n_classes: int) -> DeviceMerger:
    height, width = group.view.plane_shape
    return DeviceMerger(
        group.plan,
        n_planes=group.size,
        n_channels=n_classes,
        height=height,
        width=width,
        blend=job.runner.settings.blend,
        row_align=_row_align(job, group.view),
        device=job.runner.settings.device,
    )


def _write(job: PredictionJob, group: _Group, first_row: int, pending: Download) -> None:
    job.sink.write(
        group.view,
        group.outer,
        group.planes,
        first_row,
        pending.result(),
        accumulate=group.index > 0,
    )


def predict_semantic(job: PredictionJob) -> Job[np.ndarray]:
    clock = EtaClock(job.total)
    _fit_batch(job)
    # Finished bands on their way to the host, written one batch later (in order), so the
    # device already runs the next batch while the host waits for a copy and writes it.
    writes: deque[tuple[_Group, int, Download]] = deque()
    # Closed at once, also on an error or a cancel: the band reader thread stops there.
    with closing(_batches(job)) as batches:
        yield from _run_semantic(job, batches, writes, clock)
    while writes:
        _write(job, *writes.popleft())
    return job.sink.finish()


def _run_semantic(
    job: PredictionJob,
    batches: Iterator[list[Tile]],
    writes: deque[tuple[_Group, int, Download]],
    clock: EtaClock,
) -> Iterator[Progress]:
    done = seen = 0
    for batch in batches:
        values = job.runner.semantic_tensor(_stack(batch))
        job.sink.prepare(int(values.shape[1]))
        touched: dict[int, _Group] = {}
        for (group, location, _), value in zip(batch, values):
            if group.merger is None:
                group.merger = _merger(job, group, int(values.shape[1]))
            group.merger.aggregate(value, location)
            touched[id(group)] = group
        ready = [
            (group, first_row, pending)
            for group in touched.values()
            for first_row, pending in group.merger.pop_ready(scale=group.view.weight)  # type: ignore[union-attr]
        ]
        while writes:
            _write(job, *writes.popleft())
        writes.extend(ready)
        done += len(batch)
        event, seen = _progress(job, clock, done, seen)
        yield event


def predict_instances(job: PredictionJob) -> Job[Instances]:
    clock = EtaClock(job.total)
    done = seen = 0
    scores: list[np.ndarray] = [np.zeros(1, np.float32)]
    next_id = 1
    with closing(_batches(job)) as batches:
        for batch in batches:
            detections = job.runner.instances(_stack(batch))
            job.sink.prepare()
            for (group, (plane, y0, x0), tile), found in zip(batch, detections):
                if not group.stitchers:
                    group.stitchers = [
                        InstanceStitcher(group.plan.shape, iou_threshold=job.iou_threshold)
                        for _ in range(group.size)
                    ]
                labels, label_scores = detections_to_tile_labels(
                    job.model, found, tuple(tile.shape[-2:])
                )
                group.stitchers[plane].add(labels, label_scores, (y0, x0))
                group.done += 1
                if group.done < group.size * group.plan.n_tiles:
                    continue
                height, width = group.view.plane_shape
                planes = []
                for stitcher in group.stitchers:
                    plane_labels, plane_scores = stitcher.result(height, width)
                    # Ids stay unique over the whole stack; slices are not linked in 3D.
                    plane_labels[plane_labels > 0] += np.uint32(next_id - 1)
                    next_id += len(plane_scores) - 1
                    scores.append(plane_scores[1:])
                    planes.append(plane_labels)
                job.sink.write(group.view, group.outer, group.planes, 0, np.stack(planes))
                group.stitchers = []
            done += len(batch)
            event, seen = _progress(job, clock, done, seen)
            yield event
    return Instances(job.sink.finish(), np.concatenate(scores))
