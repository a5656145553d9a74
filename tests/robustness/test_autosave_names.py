"""Autosave names never collide (issue #22, item 7).

Two labels layers whose names clean up to the same file name keep separate
autosaves, discarding one never deletes the other's, and autosaves written
under the old naming (no digest) are still listed and never discarded for
another layer.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.core.io.autosave import (
    autosave_folder,
    autosave_path,
    discard_autosave,
    list_autosaves,
    write_autosave,
)
from napari_microseg.core.io.images import imread
from napari_microseg.core.io.writers import write_labels

ALIKE = [
    ("cells/nuclei", "cells_nuclei"),
    ("细胞", "ядра"),  # both clean up to "labels"
    ("Cells", "cells"),  # one file on a case-insensitive file system without the digest
    ("a" * 300 + "1", "a" * 300 + "2"),  # the same once the readable part is cut short
]


def _labels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 5, (12, 16)).astype(np.uint16)


@pytest.mark.parametrize(("first", "second"), ALIKE)
def test_names_cleaning_up_alike_keep_separate_autosaves(first, second):
    paths = [write_autosave(_labels(0), first), write_autosave(_labels(1), second)]
    assert paths[0] != paths[1]
    assert paths[0].name.lower() != paths[1].name.lower()
    assert all(len(p.name.encode()) < 255 for p in paths)
    np.testing.assert_array_equal(imread(paths[0]).data, _labels(0))
    np.testing.assert_array_equal(imread(paths[1]).data, _labels(1))
    assert len(list_autosaves()) == 2


@pytest.mark.parametrize(("first", "second"), ALIKE)
def test_discarding_one_keeps_the_other(first, second):
    write_autosave(_labels(0), first)
    kept = write_autosave(_labels(1), second)
    before = kept.read_bytes()
    discard_autosave(first)
    assert not autosave_path(first).exists()
    assert kept.read_bytes() == before
    assert [a.path for a in list_autosaves()] == [kept]


def test_rewriting_replaces_only_that_layers_file():
    other = write_autosave(_labels(0), "cells_nuclei")
    before = other.read_bytes()
    write_autosave(_labels(1), "cells/nuclei")
    path = write_autosave(_labels(2), "cells/nuclei")
    np.testing.assert_array_equal(imread(path).data, _labels(2))
    assert other.read_bytes() == before
    assert len(list_autosaves()) == 2


def test_old_style_autosaves_are_listed_and_never_discarded_for_another_layer():
    # Written as before the digest: <clean name>.autosave.tif, shared by names cleaning alike.
    old = write_labels(autosave_folder() / "cells_nuclei.autosave.tif", _labels(3))
    before = old.read_bytes()
    (found,) = list_autosaves()
    assert (found.path, found.layer_name) == (old, "cells_nuclei")
    discard_autosave("cells/nuclei")
    discard_autosave("cells_nuclei")  # it may hold cells/nuclei's work: kept
    assert old.read_bytes() == before
    new = write_autosave(_labels(4), "cells_nuclei")
    names = {a.path: a.layer_name for a in list_autosaves()}
    assert names == {old: "cells_nuclei", new: "cells_nuclei"}
