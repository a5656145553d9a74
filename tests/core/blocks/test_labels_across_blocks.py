"""Labels block by block: global ids, objects merged across block faces, edges and corners."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

from napari_microseg.core.blocks.labels import label_to_zarr, merge_table
from napari_microseg.core.postprocess import PostprocessPipeline
from napari_microseg.core.progress import drain

BLOCK = (6, 16, 16)


def balls(shape, centres, radius):
    zz, yy, xx = np.indices(shape)
    out = np.zeros(shape, bool)
    for z, y, x in centres:
        out |= (zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 < radius**2
    return out


@pytest.fixture(scope="module")
def corner_prob(tmp_path_factory):
    """Balls centred on block corners (each crosses 8 blocks) and edges, on smooth noise."""
    shape = (12, 40, 44)
    noise = ndi.gaussian_filter(np.random.default_rng(1).random(shape), 2)
    noise = (noise - noise.min()) / (noise.max() - noise.min()) * 0.8
    objects = balls(shape, [(6, 16, 16), (6, 32, 32), (0, 16, 40), (11, 8, 16)], 4)
    fg = np.where(objects, 0.95, noise).astype(np.float32)
    prob = np.stack([1 - fg, fg])
    path = tmp_path_factory.mktemp("merge") / "prob.zarr"
    stored = zarr.create_array(store=str(path), shape=prob.shape, chunks=(1, 3, 8, 8), dtype="f4")
    stored[:] = prob
    return stored


@pytest.mark.parametrize(
    "pipeline",
    [
        PostprocessPipeline(method="threshold", threshold=0.9),
        PostprocessPipeline(method="threshold", threshold=0.5),
        PostprocessPipeline(method="threshold", threshold=0.45, min_size=20, connectivity=3),
        PostprocessPipeline(method="hysteresis", low=0.45, high=0.6, connectivity=2),
        PostprocessPipeline(method="otsu", opening_radius=1, closing_radius=1),
    ],
    ids=lambda p: p.describe(),
)
def test_block_labels_equal_the_in_memory_pipeline_ids_included(tmp_path, corner_prob, pipeline):
    expected = pipeline.run(corner_prob[:], class_axis=0)
    job = label_to_zarr(corner_prob, tmp_path / "labels.zarr", pipeline, block=BLOCK)
    result = drain(job, show=False)
    assert result.labels.attrs["complete"] is True and result.n_objects == expected.max()
    np.testing.assert_array_equal(result.labels[:], expected)


def test_a_ball_on_a_block_corner_is_one_label(tmp_path, corner_prob):
    pipeline = PostprocessPipeline(method="threshold", threshold=0.9)
    labels = drain(label_to_zarr(corner_prob, tmp_path / "l.zarr", pipeline, block=BLOCK))
    stored = labels.labels[:]
    assert labels.n_objects == 4
    corner = stored[5:7, 15:17, 15:17]  # the 8 voxels around the corner of 8 blocks
    assert corner.min() > 0 and np.unique(corner).size == 1


def test_merge_table_joins_pairs_and_numbers_by_first_voxel():
    from napari_microseg.core.blocks.labels import BlockSummary

    summaries = {
        0: BlockSummary(2, np.array([0, 5, 1]), np.array([-1, 10, 3]), None),
        1: BlockSummary(1, np.array([0, 4]), np.array([-1, 20]), None),
    }
    offsets = np.array([0, 2])
    lut, n = merge_table(summaries, np.array([[1, 3]]), offsets, 3, min_pixels=2)
    assert n == 1 and lut.tolist() == [0, 1, 0, 1]  # id 2 is too small
    lut, n = merge_table(summaries, np.zeros((0, 2), np.int64), offsets, 3)
    assert n == 3 and lut.tolist() == [0, 2, 1, 3]  # id 2's first voxel comes first


def test_watershed_splits_survive_block_faces(tmp_path):
    shape = (8, 32, 48)
    two = balls(shape, [(4, 16, 15), (4, 16, 30)], 7)  # touching, the neck near x = 22
    fg = ndi.gaussian_filter(two.astype(np.float32), 1).clip(0, 1)
    prob = np.stack([1 - fg, fg])
    stored = zarr.create_array(
        store=str(tmp_path / "p.zarr"), shape=prob.shape, chunks=(1, 4, 16, 16), dtype="f4"
    )
    stored[:] = prob
    pipeline = PostprocessPipeline(method="watershed", threshold=0.5)
    expected = pipeline.run(prob, class_axis=0)
    result = drain(label_to_zarr(stored, tmp_path / "l.zarr", pipeline, block=(4, 16, 16)))
    assert expected.max() == 2 and result.n_objects == 2


def test_a_2d_map_and_a_finished_output_are_handled(tmp_path):
    fg = np.zeros((40, 40), np.float32)
    fg[10:30, 14:18] = 1
    prob = np.stack([1 - fg, fg])
    stored = zarr.create_array(
        store=str(tmp_path / "p.zarr"), shape=prob.shape, chunks=(1, 16, 16), dtype="f4"
    )
    stored[:] = prob
    pipeline = PostprocessPipeline(method="threshold", threshold=0.5)
    first = drain(label_to_zarr(stored, tmp_path / "l.zarr", pipeline, block=(16, 16)))
    assert first.n_objects == 1
    again = drain(label_to_zarr(stored, tmp_path / "l.zarr", pipeline, block=(16, 16)))
    assert again.seconds == 0.0 and again.n_objects == 1
