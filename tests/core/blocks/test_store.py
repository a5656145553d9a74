"""Compact probability maps (float16, uint8) and the torch thread setting of block-by-block jobs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from napari_microseg.core.blocks.executors import torch_threads
from napari_microseg.core.blocks.labels import label_to_zarr
from napari_microseg.core.blocks.predict import predict_to_zarr
from napari_microseg.core.blocks.store import (
    ChunkedError,
    check_probability_dtype,
    decode_probabilities,
    encode_probabilities,
)
from napari_microseg.core.inference.options import PredictOptions
from napari_microseg.core.inference.predict import predict
from napari_microseg.core.models.build import create_model
from napari_microseg.core.postprocess import PostprocessPipeline
from napari_microseg.core.progress import drain

OPTIONS = PredictOptions(tile_size=32, overlap=0.25, device="cpu")
KWARGS = {"options": OPTIONS, "chunks": (2, 32, 32), "block": (2, 32, 32)}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("unet", name="tiny", depth=2, base_width=4)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, (3, 50, 70)).astype(np.uint8)
    path = tmp_path_factory.mktemp("in") / "in.zarr"
    stored = zarr.create_array(store=str(path), shape=volume.shape, chunks=(2, 32, 32), dtype="u1")
    stored[:] = volume
    return stored


@pytest.fixture(scope="module")
def expected(model, source):
    return predict(model, source, tile_size=32, overlap=0.25, device="cpu")


def test_encoding_rounds_as_documented():
    p = np.array([0.0, 0.001, 0.25, 0.5, 0.998, 1.0, 1.2, -0.1], np.float32)
    stored = encode_probabilities(p, "uint8")
    assert stored.dtype == np.uint8
    # round(p * 255) in float32, half-way to even (127.5 -> 128), clipped to [0, 1] first
    assert stored.tolist() == [0, 0, 64, 128, 254, 255, 255, 0]
    np.testing.assert_array_equal(decode_probabilities(stored), stored.astype(np.float32) / 255)
    assert decode_probabilities(stored).dtype == np.float32
    assert decode_probabilities(np.array([255], np.uint8))[0] == 1.0
    half = encode_probabilities(np.array([0.1, 0.5, 1 / 3], np.float32), "float16")
    assert half.dtype == np.float16 and half.tolist() == [0.0999755859375, 0.5, 0.333251953125]
    assert decode_probabilities(half).dtype == np.float32
    assert encode_probabilities(p, "float32") is p and decode_probabilities(p) is p
    assert check_probability_dtype(np.float16) == "float16"
    assert check_probability_dtype("u1") == "uint8"
    for wrong in ("int16", "half-precision"):
        with pytest.raises(ChunkedError, match="use one of float32, float16, uint8"):
            check_probability_dtype(wrong)


def test_the_documented_error_bounds_hold_on_every_value():
    p = np.linspace(0, 1, 100_001, dtype=np.float32)
    for dtype, bound in (("float16", 2.0**-12), ("uint8", 1 / 510)):
        error = np.abs(decode_probabilities(encode_probabilities(p, dtype)) - p)
        assert error.max() <= bound + 1e-7, dtype  # + float32 rounding of the difference


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_a_compact_map_is_the_float32_result_encoded(tmp_path, model, source, expected, dtype):
    result = drain(
        predict_to_zarr(model, source, tmp_path / "p.zarr", probability_dtype=dtype, **KWARGS),
        show=False,
    )
    stored = zarr.open_array(str(tmp_path / "p.zarr"), mode="r")
    assert stored.dtype == np.dtype(dtype) and stored.attrs["complete"] is True
    assert result.probabilities.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(stored[:], encode_probabilities(expected, dtype))  # exact
    codec = stored.metadata.to_dict()["codecs"][-1]
    assert codec["name"] == "zstd" and codec["configuration"]["level"] == 1
    # A job asking for another storage type refuses the output instead of mixing them.
    with pytest.raises(ChunkedError, match="already holds an array"):
        drain(predict_to_zarr(model, source, tmp_path / "p.zarr", **KWARGS), show=False)
    again = predict_to_zarr(model, source, tmp_path / "p.zarr", probability_dtype=dtype, **KWARGS)
    assert drain(again, show=False).skipped == result.blocks  # resumes: all found done


def test_uint8_cannot_hold_logits(tmp_path, model, source):
    logits = PredictOptions(tile_size=32, device="cpu", activation=None)
    job = predict_to_zarr(
        model, source, tmp_path / "p.zarr", options=logits, probability_dtype="u1"
    )
    with pytest.raises(ChunkedError, match="logits"):
        drain(job, show=False)


def test_labels_of_a_uint8_map_differ_only_where_p_is_within_1_510_of_the_threshold(tmp_path):
    p = np.full((2, 4, 40, 40), 0.0, np.float32)
    p[1, 1:3, 5:15, 5:15] = 0.9  # an object
    p[1, 1:3, 20:30, 20:30] = 0.5  # exactly at the threshold: out in float32, in for uint8
    p[1, 1:3, 32:38, 5:15] = 0.501  # within 1/510 above: in for both (stored as 128)
    p[0] = 1 - p[1]
    pipeline = PostprocessPipeline(method="threshold", threshold=0.5)
    found = {}
    for dtype in ("float32", "uint8"):
        stored = zarr.create_array(
            store=str(tmp_path / f"{dtype}.zarr"), shape=p.shape, chunks=(1, 2, 16, 16), dtype=dtype
        )
        stored[:] = encode_probabilities(p, dtype)
        job = label_to_zarr(stored, tmp_path / f"{dtype}-labels.zarr", pipeline, block=(2, 32, 32))
        found[dtype] = drain(job, show=False)
    assert found["float32"].n_objects == 2 and found["uint8"].n_objects == 3
    exact, compact = found["float32"].labels[:], found["uint8"].labels[:]
    assert ((exact > 0) != (compact > 0)).sum() == 2 * 10 * 10  # the p == 0.5 square only


def test_threads_are_set_for_the_job_and_restored(tmp_path, model, source, expected):
    before = torch.get_num_threads()
    seen = []
    job = predict_to_zarr(model, source, tmp_path / "p.zarr", threads=1, **KWARGS)
    for _ in job:
        seen.append(torch.get_num_threads())
    assert torch.get_num_threads() == before and 1 in seen
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "p.zarr"))[:], expected, atol=1e-6)
    with pytest.raises(ValueError, match="at least 1"), torch_threads(0):
        pass


def test_class_view_reads_one_class_decoded_and_lazily():
    from napari_microseg.core.blocks.store import ChunkedError, ClassView

    reads = []

    class Stored:
        shape = (3, 4, 5)

        def __init__(self):
            self.values = np.arange(60, dtype=np.uint8).reshape(self.shape)

        def __getitem__(self, key):
            reads.append(key)
            return self.values[key]

    stored = Stored()
    view = ClassView(stored, 2)
    assert view.shape == (4, 5) and view.ndim == 2 and view.dtype == np.float32
    np.testing.assert_array_equal(view[1:3, ::2], stored.values[2, 1:3, ::2] / np.float32(255))
    assert reads == [(2, slice(1, 3), slice(None, None, 2))]  # only what was asked for
    stored.values[2, 0, 0] = 255  # a store that is still filling: the next read sees it
    assert view[0, 0] == 1.0 and np.asarray(view).shape == (4, 5)
    with pytest.raises(ChunkedError, match="class 3 does not exist"):
        ClassView(stored, 3)
