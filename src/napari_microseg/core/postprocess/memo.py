"""A tiny cache of results computed from arrays, for live previews.

A preview slider re-runs a pipeline on the same slice many times; the steps
that do not depend on the moved setting (a distance transform, the basins of
the maxima) are kept for the last few inputs, keyed by a digest of the arrays'
bytes. Large arrays (volumes) are never kept, so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")

#: Inputs with more elements than this are computed every time, never kept.
MAX_CACHED_ELEMENTS = 2**23


def is_frozen(array: np.ndarray) -> bool:
    """Whether ``array`` is read-only and owns its data, so its bytes cannot change.

    Nothing in this package makes such an array writable again; a cache keys it by
    identity instead of hashing its bytes (a distance map of a 1024x1024 slice
    costs about 8 ms to hash, on every slider move).
    """
    return not array.flags.writeable and array.flags.owndata


def array_key(*arrays: np.ndarray, extra: Hashable = None) -> bytes:
    """A digest of the arrays' shapes, dtypes and bytes (and of ``extra``).

    A frozen array (:func:`is_frozen`) enters by identity, not by its bytes: the
    caller keeps it alive as long as the key is used, so the identity is not reused.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(extra).encode())
    for array in arrays:
        digest.update(repr((array.shape, array.dtype.str)).encode())
        if is_frozen(array):
            digest.update(b"frozen %d" % id(array))
        else:
            digest.update(np.ascontiguousarray(array).data)
    return digest.digest()


class SmallCache(Generic[T]):
    """The last ``size`` results of a computation on arrays; thread-safe.

    Parameters
    ----------
    size : int
        Results kept; the least recently used is dropped first.
    """

    def __init__(self, size: int = 2) -> None:
        self.size = size
        # Each result is kept with the frozen arrays its key names by identity.
        self._items: OrderedDict[bytes, tuple[T, tuple[np.ndarray, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, compute: Callable[[], T], *arrays: np.ndarray, extra: Hashable = None) -> T:
        """``compute()``, or its kept result for the same arrays and ``extra``."""
        if sum(a.size for a in arrays) > MAX_CACHED_ELEMENTS:
            return compute()
        key = array_key(*arrays, extra=extra)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        value = compute()
        with self._lock:
            self._items[key] = (value, tuple(a for a in arrays if is_frozen(a)))
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every kept result."""
        with self._lock:
            self._items.clear()
