"""The tile loop: stream tiles of every plane through the network and blend them back.

Tiles are read band by band (:meth:`.planes.View.read_band`), batched across
rows, planes and views, run (:class:`.forward.TileRunner`) and aggregated into
one :class:`.tiling.TileMerger` (or instance stitchers) per group of planes;
finished rows go straight to the output sink. A :class:`~.progress.Progress`
event follows every batch, so closing the generator stops within one batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..progress import EtaClock, Job, Progress
from .job import PredictionJob
from .planes import View
from .stitching import Instances, InstanceStitcher, detections_to_tile_labels
from .tiling import TileMerger, TilePlan


class _Group:
    """A group of planes of one view in flight: its merger or stitchers."""

    def __init__(self, index: int, view: View, plan: TilePlan, outer: tuple, planes: tuple):
        self.index = index  # the view's position; views after the first accumulate
        self.view = view
        self.plan = plan
        self.outer = outer
        self.planes = planes
        self.size = planes[1] - planes[0]
        self.merger: TileMerger | None = None
        self.stitchers: list[InstanceStitcher] = []
        self.done = 0


def _tile_stream(job: PredictionJob) -> Iterator[tuple[_Group, tuple[int, int, int], np.ndarray]]:
    """Every tile of every view, in raster order within groups of planes."""
    for index, (view, plan, size) in enumerate(zip(job.views, job.plans, job.group_sizes)):
        rows, cols = plan.tile
        for outer, planes in view.groups(size):
            group = _Group(index, view, plan, outer, planes)
            for y0 in plan.starts[0]:
                band = view.read_band(
                    outer,
                    planes,
                    (y0, y0 + rows),
                    normalizer=job.normalizer,  # type: ignore[arg-type]
                    context=job.context,
                    min_shape=plan.shape,
                )
                for plane in range(group.size):
                    for x0 in plan.starts[1]:
                        yield group, (plane, y0, x0), band[plane, :, :, x0 : x0 + cols]


def _batches(job: PredictionJob) -> Iterator[list[tuple[_Group, tuple[int, int, int], np.ndarray]]]:
    batch: list[tuple[_Group, tuple[int, int, int], np.ndarray]] = []
    for item in _tile_stream(job):
        batch.append(item)
        if len(batch) >= job.batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


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


def predict_semantic(job: PredictionJob) -> Job[np.ndarray]:
    clock = EtaClock(job.total)
    done = seen = 0
    for batch in _batches(job):
        values = job.runner.semantic(np.stack([tile for _, _, tile in batch]))
        n_classes = values.shape[1]
        job.sink.prepare(n_classes)
        touched: dict[int, _Group] = {}
        for (group, location, _), value in zip(batch, values):
            if group.merger is None:
                height, width = group.view.plane_shape
                group.merger = TileMerger(
                    group.plan,
                    n_planes=group.size,
                    n_channels=n_classes,
                    height=height,
                    width=width,
                    blend=job.runner.settings.blend,
                    row_align=_row_align(job, group.view),
                )
            group.merger.aggregate(value, location)
            touched[id(group)] = group
        for group in touched.values():
            for first_row, block in group.merger.pop_ready():  # type: ignore[union-attr]
                if group.view.weight != 1.0:
                    block *= np.float32(group.view.weight)
                job.sink.write(
                    group.view,
                    group.outer,
                    group.planes,
                    first_row,
                    block,
                    accumulate=group.index > 0,
                )
        done += len(batch)
        event, seen = _progress(job, clock, done, seen)
        yield event
    return job.sink.finish()


def predict_instances(job: PredictionJob) -> Job[Instances]:
    clock = EtaClock(job.total)
    done = seen = 0
    scores: list[np.ndarray] = [np.zeros(1, np.float32)]
    next_id = 1
    for batch in _batches(job):
        detections = job.runner.instances(np.stack([tile for _, _, tile in batch]))
        job.sink.prepare()
        for (group, (plane, y0, x0), tile), found in zip(batch, detections):
            if not group.stitchers:
                group.stitchers = [
                    InstanceStitcher(group.plan.shape, iou_threshold=job.iou_threshold)
                    for _ in range(group.size)
                ]
            labels, label_scores = detections_to_tile_labels(job.model, found, tile.shape[-2:])
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
