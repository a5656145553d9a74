"""Out-of-core prediction block by block into zarr: equal to the in-memory result, resumable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from napari_microseg.core.blocks.grid import BlockGrid, HaloPlan
from napari_microseg.core.blocks.predict import choose_block, predict_to_zarr
from napari_microseg.core.blocks.store import ChunkedError, resume_state
from napari_microseg.core.inference.options import PredictOptions
from napari_microseg.core.inference.predict import predict
from napari_microseg.core.models.build import create_model
from napari_microseg.core.progress import drain


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("unet", name="tiny", depth=2, base_width=4)


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (5, 70, 90)).astype(np.uint8)


def as_zarr(path, array, chunks):
    z = zarr.create_array(
        store=str(path), shape=array.shape, chunks=chunks, dtype=array.dtype, overwrite=True
    )
    z[:] = array
    return z


OPTIONS = PredictOptions(tile_size=32, overlap=0.25, device="cpu")


def test_blocks_cover_uneven_shapes():
    grid = BlockGrid((5, 70, 90), (2, 32, 64))
    covered = np.zeros(grid.shape, int)
    for index in range(len(grid)):
        covered[grid.interior(index)] += 1
    assert (covered == 1).all()


def test_halo_reaches_every_tile_touching_the_block():
    plan = HaloPlan("YX", (100, 100), {"Y": ((0, 24, 48, 68), 32), "X": None}, {})
    assert plan.region((slice(34, 50), slice(10, 20))) == (slice(24, 80), slice(0, 100))
    assert plan.region((slice(31, 50), slice(0, 5)))[0] == slice(0, 80)


@pytest.mark.parametrize(("chunks", "block"), [((2, 16, 32), (2, 32, 32)), ((3, 24, 40), None)])
def test_zarr_volume_block_by_block_equals_the_in_memory_prediction(
    tmp_path, model, volume, chunks, block
):
    source = as_zarr(tmp_path / "in.zarr", volume, (2, 32, 32))
    expected = predict(model, source, tile_size=32, overlap=0.25, device="cpu")
    job = predict_to_zarr(
        model, source, tmp_path / "p.zarr", options=OPTIONS, chunks=chunks, block=block
    )
    result = drain(job, show=False)
    stored = zarr.open_array(str(tmp_path / "p.zarr"), mode="r")
    assert stored.attrs["complete"] is True and stored.chunks[1:] == chunks
    np.testing.assert_array_equal(result.probabilities[:], expected)  # bit for bit


@pytest.mark.parametrize("colour", [False, True])
def test_a_flat_field_model_block_by_block_equals_the_in_memory_prediction(
    tmp_path, model, volume, colour
):
    """Each block is corrected with its whole plane's background (PlaneGains)."""
    lit = np.clip(volume * np.linspace(0.4, 1.6, volume.shape[-1]), 0, 255).astype(np.uint8)
    chunks = (2, 32, 32)
    if colour:  # RGB made grey by the model, as prediction does; the gain is shared
        lit = np.stack([lit, lit // 2, lit], axis=-1)
        chunks = (*chunks, 3)
    source = as_zarr(tmp_path / "in.zarr", lit, chunks)
    spec = {"kind": "percentile", "low": 1.0, "high": 99.8, "flat_field": 0.125}
    axes = "ZYXC" if colour else "ZYX"
    expected = predict(
        model, source, axes=axes, tile_size=32, overlap=0.25, device="cpu", normalization=spec
    )
    plain = predict(model, source, axes=axes, tile_size=32, overlap=0.25, device="cpu")
    assert not np.array_equal(expected, plain)  # the correction changes the result
    options = PredictOptions(tile_size=32, overlap=0.25, device="cpu", normalization=spec)
    job = predict_to_zarr(
        model, source, tmp_path / "p.zarr", axes=axes, options=options, chunks=(2, 16, 32)
    )
    np.testing.assert_array_equal(drain(job, show=False).probabilities[:], expected)
    # Without the correction the same output is another job: not resumed, refused.
    other = PredictOptions(tile_size=32, overlap=0.25, device="cpu")
    with pytest.raises(ChunkedError, match="another model, input or settings"):
        drain(predict_to_zarr(model, source, tmp_path / "p.zarr", axes=axes, options=other))


@pytest.mark.parametrize("colour", [False, True])
def test_a_smoothing_model_block_by_block_equals_the_in_memory_prediction(
    tmp_path, model, volume, colour
):
    """Each block is smoothed with a margin of its neighbours, as the whole image is."""
    noisy = volume.astype(np.float32) + np.random.default_rng(5).normal(0, 25, volume.shape)
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    chunks = (2, 32, 32)
    if colour:
        noisy = np.stack([noisy, noisy // 2, noisy], axis=-1)
        chunks = (*chunks, 3)
    source = as_zarr(tmp_path / "in.zarr", noisy, chunks)
    spec = {"kind": "percentile", "low": 1.0, "high": 99.8, "smooth": 1.0}
    axes = "ZYXC" if colour else "ZYX"
    expected = predict(
        model, source, axes=axes, tile_size=32, overlap=0.25, device="cpu", normalization=spec
    )
    plain = predict(model, source, axes=axes, tile_size=32, overlap=0.25, device="cpu")
    assert not np.array_equal(expected, plain)  # the smoothing changes the result
    options = PredictOptions(tile_size=32, overlap=0.25, device="cpu", normalization=spec)
    job = predict_to_zarr(
        model, source, tmp_path / "p.zarr", axes=axes, options=options, chunks=(2, 16, 32)
    )
    result = drain(job, show=False).probabilities[:]
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)
    # Another sigma is another job: not resumed, refused.
    other = PredictOptions(
        tile_size=32, overlap=0.25, device="cpu", normalization={**spec, "smooth": 0.7}
    )
    with pytest.raises(ChunkedError, match="another model, input or settings"):
        drain(predict_to_zarr(model, source, tmp_path / "p.zarr", axes=axes, options=other))


def test_a_2d_image_and_a_numpy_input_work_too(tmp_path, model, volume):
    image = volume[2]
    expected = predict(model, image, tile_size=32, overlap=0.5, device="cpu")
    options = PredictOptions(tile_size=32, overlap=0.5, device="cpu")
    job = predict_to_zarr(model, image, tmp_path / "p.zarr", options=options, chunks=(16, 32))
    np.testing.assert_array_equal(drain(job, show=False).probabilities[:], expected)


def test_an_interrupted_job_resumes_and_equals_an_uninterrupted_one(tmp_path, model, volume):
    source = as_zarr(tmp_path / "in.zarr", volume, (2, 32, 32))
    kwargs = {"options": OPTIONS, "chunks": (2, 32, 32), "block": (2, 32, 32)}
    job = predict_to_zarr(model, source, tmp_path / "p.zarr", **kwargs)
    for event in job:  # stop after a few blocks, as a cancelled widget or Ctrl+C would
        if event.step >= 4 and "done" in event.message:
            break
    job.close()
    stored = zarr.open_array(str(tmp_path / "p.zarr"), mode="r+")
    done = resume_state(stored)["done"]
    assert stored.attrs["complete"] is False and 4 <= len(done) < 27
    todo = next(i for i in range(27) if i not in done)
    grid = BlockGrid((5, 70, 90), (2, 32, 32))
    stored[(slice(None), *grid.interior(todo))] = np.nan  # a block cut short while written
    result = drain(predict_to_zarr(model, source, tmp_path / "p.zarr", **kwargs), show=False)
    assert result.skipped == len(done)
    expected = drain(predict_to_zarr(model, source, tmp_path / "q.zarr", **kwargs), show=False)
    np.testing.assert_array_equal(result.probabilities[:], expected.probabilities[:])
    assert drain(predict_to_zarr(model, source, tmp_path / "p.zarr", **kwargs)).skipped == 27


def test_an_output_holding_another_array_is_refused(tmp_path, model, volume):
    source = as_zarr(tmp_path / "in.zarr", volume, (2, 32, 32))
    as_zarr(tmp_path / "p.zarr", np.zeros((3, 4), np.uint16), (3, 4))
    job = predict_to_zarr(model, source, tmp_path / "p.zarr", options=OPTIONS)
    with pytest.raises(ChunkedError, match="already holds an array of shape"):
        drain(job, show=False)
    job = predict_to_zarr(model, source, tmp_path / "p.zarr", options=OPTIONS, overwrite=True)
    assert drain(job, show=False).probabilities.shape == (2, 5, 70, 90)
    other = PredictOptions(tile_size=32, overlap=0.5, device="cpu")
    with pytest.raises(ChunkedError, match="another model, input or settings"):
        drain(predict_to_zarr(model, source, tmp_path / "p.zarr", options=other), show=False)


def test_bad_blocks_and_modes_get_clear_messages(tmp_path, model, volume):
    with pytest.raises(ChunkedError, match="whole output chunks"):
        choose_block("ZYX", (5, 70, 90), (2, 32, 32), (2, 48, 32))
    assert choose_block("ZYX", (5, 70, 90), (2, 32, 32), (4, 64, 96)) == (4, 64, 90)
    ortho = PredictOptions(tile_size=32, ortho=True)
    with pytest.raises(ChunkedError, match="ortho"):
        drain(predict_to_zarr(model, volume, tmp_path / "p.zarr", options=ortho), show=False)


def test_a_large_tiff_opens_as_a_memmap(tmp_path, volume):
    import tifffile

    from napari_microseg.core.io.volumes import open_volume

    tifffile.imwrite(tmp_path / "v.tif", volume)
    image = open_volume(tmp_path / "v.tif")
    assert isinstance(image.data, np.memmap) and image.axes == "ZYX"
    np.testing.assert_array_equal(image.data, volume)
    tifffile.imwrite(tmp_path / "c.tif", volume, compression="zlib")
    lazy = open_volume(tmp_path / "c.tif")
    assert lazy.axes == "ZYX" and np.array_equal(np.asarray(lazy.data), volume)


def test_measuring_the_illumination_reports_each_plane_and_can_be_cancelled(tmp_path, model):
    lit = np.random.default_rng(2).integers(20, 200, (6, 40, 40)).astype(np.uint8)
    options = PredictOptions(
        tile_size=32, device="cpu", normalization={"kind": "percentile", "flat_field": 0.125}
    )
    job = predict_to_zarr(model, lit, tmp_path / "p.zarr", options=options)
    messages = []
    for event in job:
        messages.append(event.message)
        if "plane 3 of 6" in event.message:
            job.close()  # Cancel during the pass over the planes
            break
    assert [m for m in messages if m.startswith("Measuring")][:3] == [
        f"Measuring the illumination: plane {n} of 6" for n in (1, 2, 3)
    ]
    assert not (tmp_path / "p.zarr").exists()  # nothing written before the blocks
