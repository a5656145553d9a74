"""The zarr side of block-by-block prediction: the output array and its resume record.

:func:`open_output` creates (or reopens, to resume) the output array and refuses
one that holds something else; :class:`DoneLog` records in the array's
attributes which blocks are fully written, so a killed job starts again where
it stopped. Probabilities may be stored compactly (:data:`PROBABILITY_DTYPES`,
:func:`encode_probabilities`, :func:`decode_probabilities`). Used by
:mod:`.predict` and :mod:`.labels`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..models.base import SegmentationModel

#: Attribute of the output array holding the resume record.
RECORD_KEY = "microseg_chunked"


class ChunkedError(ValueError):
    """Bad input to an out-of-core or distributed job; the message says what to do."""


# ---------------------------------------------------------------------- compact probabilities

#: How block-by-block probabilities can be stored: bytes per voxel and class. ``float32`` is
#: exact. ``float16`` keeps 11 significant bits: a probability in [0, 1] is off by at most
#: 2**-12 (0.00025), and by at most 2**-11 of itself. ``uint8`` stores ``round(p * 255)``
#: (as empanada does): off by at most 1/510 (0.002); it cannot hold logits.
PROBABILITY_DTYPES = {"float32": 4, "float16": 2, "uint8": 1}
#: The value of 1.0 in a ``uint8`` probability map.
UINT8_ONE = 255


def check_probability_dtype(dtype: Any) -> str:
    """The canonical name of a probability storage type, or a :class:`ChunkedError`."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in PROBABILITY_DTYPES:
        raise ChunkedError(
            f"probability_dtype={dtype!r}; use one of {', '.join(PROBABILITY_DTYPES)}."
        )
    return name


def encode_probabilities(values: np.ndarray, dtype: Any) -> np.ndarray:
    """Probabilities (float32) as stored in an array of ``dtype``.

    ``float32`` returns ``values`` itself; ``float16`` rounds to nearest;
    ``uint8`` is ``round(clip(p, 0, 1) * 255)`` computed in float32 (half-way
    values round to even).
    """
    name = check_probability_dtype(dtype)
    if name == "float32":
        return np.asarray(values, dtype=np.float32)
    if name == "float16":
        return np.asarray(values).astype(np.float16)
    scaled = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    scaled *= np.float32(UINT8_ONE)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def decode_probabilities(values: np.ndarray) -> np.ndarray:
    """Stored probabilities as float32: ``uint8`` is divided by 255, ``float16`` widened.

    Other dtypes are returned as they are (float32 maps without a copy).
    """
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values.astype(np.float32) / np.float32(UINT8_ONE)
    if values.dtype == np.float16:
        return values.astype(np.float32)
    return values


class ClassView:
    """One class of a stored probability array, read lazily and decoded to float32.

    A viewer shows a stored ``(C, *spatial)`` array as one foreground map without
    a class slider and without reading the whole store: indexing reads only the
    requested region of that class, at the time it is asked for (so a store that
    is still filling shows its newest blocks on the next read).

    Parameters
    ----------
    stored : array-like, shape (C, *spatial)
        The probability store (a zarr array, or anything indexable the same way).
    index : int
        The class to show, ``0 <= index < C``.

    Examples
    --------
    >>> view = ClassView(np.zeros((2, 4, 5), np.uint8), 1)
    >>> view.shape, view.dtype
    ((4, 5), dtype('float32'))
    """

    def __init__(self, stored: Any, index: int) -> None:
        n_classes = int(stored.shape[0])
        if not 0 <= index < n_classes:
            raise ChunkedError(f"class {index} does not exist: the store has {n_classes}.")
        self.stored = stored
        self.index = int(index)
        self.shape = tuple(int(n) for n in stored.shape[1:])
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return decode_probabilities(self.stored[(self.index, *key)]).astype(np.float32, copy=False)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[...]
        return values if dtype is None else values.astype(dtype)


# ----------------------------------------------------------------------------- resume log


def _ranges(indices: Iterable[int]) -> list[list[int]]:
    """``[[start, stop), ...]`` runs of sorted integers (a compact done-set)."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return runs


def _from_ranges(runs: Iterable[Sequence[int]]) -> set[int]:
    return {i for start, stop in runs for i in range(int(start), int(stop))}


class DoneLog:
    """The blocks already written, kept in the output array's attributes.

    Only the process driving the job writes the record (workers write pixels
    only), after a block's data is fully stored, so a block cut short is never
    marked done. The record is saved at most every ``interval`` seconds and
    when the job ends or fails; a hard kill loses at most that much work.

    Parameters
    ----------
    array : zarr array
        The output.
    fingerprint : str
        Identifies the model, settings and input; a record with another
        fingerprint belongs to another job.
    n_blocks : int
        Blocks in the job.
    interval : float
        Seconds between saves.
    """

    def __init__(self, array: Any, fingerprint: str, n_blocks: int, interval: float = 1.0):
        self.array = array
        self.fingerprint = fingerprint
        self.n_blocks = n_blocks
        self.interval = interval
        record = dict(array.attrs).get(RECORD_KEY) or {}
        same = record.get("fingerprint") == fingerprint
        self.done: set[int] = _from_ranges(record.get("done", [])) if same else set()
        self._saved = time.perf_counter()
        self._dirty = not same
        if not same:
            self.save()

    @property
    def complete(self) -> bool:
        return len(self.done) >= self.n_blocks

    def mark(self, index: int) -> None:
        """Record a block as written (call only after its data is stored)."""
        self.done.add(int(index))
        self._dirty = True
        if time.perf_counter() - self._saved >= self.interval or self.complete:
            self.save()

    def save(self) -> None:
        """Write the record into the array's attributes."""
        self.array.attrs[RECORD_KEY] = {
            "fingerprint": self.fingerprint,
            "n_blocks": self.n_blocks,
            "done": _ranges(self.done),
        }
        self.array.attrs["complete"] = self.complete
        self._saved = time.perf_counter()
        self._dirty = False

    def flush(self) -> None:
        """Save if anything changed since the last save."""
        if self._dirty:
            self.save()


def resume_state(array: Any) -> dict[str, Any]:
    """The resume record of an output array (empty when it has none)."""
    record = dict(array.attrs).get(RECORD_KEY) or {}
    return {**record, "done": sorted(_from_ranges(record.get("done", [])))}


def fingerprint(parts: dict[str, Any]) -> str:
    """A short stable hash of JSON-serialisable parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def model_token(model: SegmentationModel) -> str:
    """A hash of the model's weights and name (which model wrote an output)."""
    digest = hashlib.sha1(model.name.encode())
    for name, tensor in sorted(model.module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- output


def open_output(
    out: Any,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: str,
    *,
    axes: Sequence[str],
    key: str,
    overwrite: bool = False,
    zstd_level: int | None = None,
) -> Any:
    """Open or create the zarr array a chunked job writes into.

    Parameters
    ----------
    out : path-like or zarr array
        Where to write.
    shape, chunks : tuple of int
        The array's shape and chunk shape.
    dtype : str
        Its dtype, e.g. ``"float32"`` or ``"uint32"``.
    axes : sequence of str
        Axis names stored in ``attrs["axes"]``.
    key : str
        The job's fingerprint; an existing array made by another job is refused.
    overwrite : bool
        Replace an existing array that belongs to another job.
    zstd_level : int, optional
        Zstandard level of a new array (zarr's default codec and level when None).

    Raises
    ------
    ChunkedError
        If the path holds something else (another array, a file) and
        ``overwrite`` is False.
    """
    import zarr

    if not isinstance(out, str | bytes) and not hasattr(out, "__fspath__"):
        _check_existing(out, shape, dtype, key, str(getattr(out, "store", "out=")))
        return out
    path = str(out)
    existing = None
    if not overwrite:
        try:
            existing = zarr.open(path, mode="r")
        except FileNotFoundError:
            existing = None
        except Exception as error:  # zarr raises many types for foreign folders
            import os

            if os.path.exists(path):
                raise ChunkedError(
                    f"{path} already exists and is not a zarr array; choose another output path "
                    "or remove it."
                ) from error
    if existing is not None:
        if not hasattr(existing, "shape"):
            raise ChunkedError(
                f"{path} already holds a zarr group, not an array; choose another output path "
                "or pass overwrite=True (--overwrite) to replace it."
            )
        _check_existing(existing, shape, dtype, key, path)
        return zarr.open_array(path, mode="r+")
    codec: dict[str, Any] = {}
    if zstd_level is not None:
        from zarr.codecs import ZstdCodec

        codec["compressors"] = ZstdCodec(level=zstd_level)
    array = zarr.create_array(
        store=path, shape=shape, chunks=chunks, dtype=dtype, overwrite=True, fill_value=0, **codec
    )
    array.attrs["axes"] = list(axes)
    array.attrs["complete"] = False
    array.attrs["microseg_job"] = key
    return array


def _check_existing(array: Any, shape: tuple[int, ...], dtype: str, key: str, name: str) -> None:
    same_shape = tuple(array.shape) == tuple(shape) and np.dtype(array.dtype) == np.dtype(dtype)
    stored = dict(array.attrs).get("microseg_job")
    if not same_shape or (stored is not None and stored != key):
        what = (
            f"an array of shape {tuple(array.shape)} and dtype {array.dtype}"
            if not same_shape
            else "the result of another model, input or settings"
        )
        raise ChunkedError(
            f"{name} already holds {what}; choose another output path or pass overwrite=True "
            "(--overwrite) to replace it."
        )
    if stored is None:
        array.attrs["microseg_job"] = key
