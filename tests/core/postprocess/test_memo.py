import numpy as np

from napari_microseg.core.postprocess import memo
from napari_microseg.core.postprocess.memo import SmallCache, array_key


def test_results_are_kept_per_content_and_the_oldest_goes_first():
    cache: SmallCache[int] = SmallCache(2)
    calls = []

    def compute(value):
        calls.append(value)
        return value

    a, b, c = np.zeros(4), np.ones(4), np.arange(4.0)
    assert cache.get(lambda: compute(1), a) == 1
    assert cache.get(lambda: compute(99), a.copy()) == 1  # same bytes: kept
    cache.get(lambda: compute(2), b)
    cache.get(lambda: compute(3), c)  # a is dropped
    assert cache.get(lambda: compute(4), a) == 4
    assert calls == [1, 2, 3, 4]
    assert cache.get(lambda: compute(5), a, extra=(0.5, 1.0)) == 5  # extra is part of the key
    cache.clear()
    assert cache.get(lambda: compute(6), a) == 6


def test_keys_tell_shapes_and_dtypes_apart():
    assert array_key(np.zeros((2, 3))) != array_key(np.zeros((3, 2)))
    assert array_key(np.zeros(4, np.float32)) != array_key(np.zeros(2, np.float64))


def test_large_arrays_are_never_kept(monkeypatch):
    monkeypatch.setattr(memo, "MAX_CACHED_ELEMENTS", 10)
    cache: SmallCache[int] = SmallCache(2)
    calls = []
    for _ in range(2):
        cache.get(lambda: calls.append(1) or 1, np.zeros(11))
    assert len(calls) == 2


def test_frozen_arrays_are_keyed_by_identity_and_kept_alive():
    cache: SmallCache[int] = SmallCache(2)
    calls = []
    frozen = np.arange(4.0)
    frozen.flags.writeable = False
    assert memo.is_frozen(frozen) and not memo.is_frozen(frozen[1:])  # a view owns nothing
    cache.get(lambda: calls.append(1) or 1, frozen)
    assert cache.get(lambda: calls.append(2) or 2, frozen) == 1
    twin = frozen.copy()
    twin.flags.writeable = False
    assert cache.get(lambda: calls.append(3) or 3, twin) == 3  # same bytes, other array
    assert calls == [1, 3]
    # The cache holds the frozen array, so its identity cannot be reused while kept.
    key = memo.array_key(frozen)
    del frozen
    held = [arrays for _, arrays in cache._items.values()]
    assert any(memo.array_key(a) == key for arrays in held for a in arrays)
