"""May I write here? The one rule every command follows before it writes anything.

An existing file or store is replaced only when napari-microseg wrote it (our tag is
in it) **and** the caller allows overwriting; an input of the same run is never
replaced, and two outputs of one run never share a path. :func:`check_outputs`
checks every output path of a run at once, before the model loads and before the
first file is written, so a refusal costs seconds and loses nothing.

Our tags: ``microseg`` in a TIFF description (:data:`LABELS_MARKER` for labels,
:data:`IMAGE_MARKER` for images such as probabilities) or in a PNG text chunk; a
``microseg_*`` attribute at the root of a zarr store; the header row of a CSV, as
recognised by the function its writer gives (:attr:`Output.csv_header`); the
``schema`` and ``method`` keys of a saved post-processing pipeline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .atomic import PARTIAL_MARK, partial_prefix, remove_stale_partials, replace_dir
from .image_data import (
    LABELS_MARKER,
    PLAIN_IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    ZARR_SUFFIXES,
    is_ome_image,
    looks_like_zarr,
)

#: Key of our tag in TIFF descriptions and PNG text chunks.
MARKER_KEY = "microseg"
#: Tag value of intensity images (probabilities) we write; labels carry LABELS_MARKER.
IMAGE_MARKER = "napari-microseg-image"
#: Prefix of the root attributes that mark a zarr store as ours.
ZARR_ATTR_PREFIX = "microseg_"

_MARKERS = (LABELS_MARKER, IMAGE_MARKER)


class Output(NamedTuple):
    """One path a run will write.

    Attributes
    ----------
    path : Path
        Where it goes.
    flag : str
        The option that names it (``"--out"``, ``"--csv"``...), for messages.
    source : str
        The input it is made from, when several inputs share the flag (batches).
    csv_header : callable, optional
        For a CSV output: tells our header row from any other, so an earlier CSV of
        ours can be replaced (a CSV has no room for a tag; its writer knows its header).
    """

    path: Path
    flag: str
    source: str = ""
    csv_header: Callable[[str], bool] | None = None


def is_ours(path: str | os.PathLike, csv_header: Callable[[str], bool] | None = None) -> bool:
    """True when ``path`` exists and carries napari-microseg's tag.

    Parameters
    ----------
    path : path-like
        A TIFF, PNG, CSV or JSON file, or a zarr store.
    csv_header : callable, optional
        Recognises the header row of the CSV kind expected at ``path``; without it
        no CSV counts as ours.

    Returns
    -------
    bool
        False for anything missing, untagged, unreadable or of another kind
        (a plain folder, a JPEG...).
    """
    p = Path(path)
    name = p.name.lower()
    try:
        if p.is_dir():
            return (name.endswith(ZARR_SUFFIXES) or looks_like_zarr(p)) and _zarr_is_ours(p)
        if not p.is_file():
            return False
        if name.endswith(TIFF_SUFFIXES):
            return _tiff_is_ours(p)
        if name.endswith(PLAIN_IMAGE_SUFFIXES):
            return _png_is_ours(p)
        if name.endswith(".csv"):
            return csv_header is not None and csv_header(_first_line(p))
        if name.endswith(".json"):
            stored = json.loads(p.read_text(encoding="utf-8"))
            return isinstance(stored, dict) and "schema" in stored and "method" in stored
    except Exception:  # a file we cannot parse is not one we wrote
        return False
    return False


def check_outputs(
    outputs: Sequence[Output],
    inputs: Sequence[str | os.PathLike] = (),
    *,
    overwrite: bool,
    resume: bool = False,
    permission: str = "--overwrite",
) -> None:
    """Refuse a run that would replace data it may not replace; checks every output first.

    Parameters
    ----------
    outputs : sequence of Output
        Every path the run will write.
    inputs : sequence of path-like
        Every input of the run (files, folders, zarr stores).
    overwrite : bool
        Whether ``--overwrite`` was given: outputs we wrote earlier may be replaced.
    resume : bool
        The run continues our existing zarr stores (block by block) and checks
        itself that they hold its own job, so existing stores of ours pass.
    permission : str
        How the user allows replacing our outputs, for messages: the CLI's flag, or
        ``"your confirmation"`` in the widgets.

    Raises
    ------
    FileExistsError
        Naming the path, the conflict and what to do: an output that is an input
        (or inside an input zarr store other than ``<image>/labels/<name>`` of an OME-Zarr
        image, where NGFF keeps its labels; or holds an input), two outputs with the same
        path, an existing path not written by napari-microseg, or one of ours
        without ``overwrite``.
    """
    sources = [(Path(p), Path(p).resolve()) for p in inputs]
    seen: dict[Path, Output] = {}
    for output in outputs:
        target = output.path.resolve()
        for given, source in sources:
            if _same_data(target, source):
                raise FileExistsError(
                    f"{output.flag} {output.path} would overwrite the input {given}; inputs "
                    "are never replaced, choose another output path."
                )
        if target in seen:
            raise FileExistsError(_twice(output.path, seen[target], output))
        seen[target] = output
        if not os.path.lexists(output.path):
            continue
        if not is_ours(output.path, output.csv_header):
            raise FileExistsError(
                f"{output.flag} {output.path} already exists and was not written by "
                f"napari-microseg, so it is never replaced (not even with {permission}); move "
                "it or choose another output path."
            )
        if not (overwrite or (resume and output.path.is_dir())):
            raise FileExistsError(
                f"{output.flag} {output.path} already exists (written earlier by "
                f"napari-microseg); pass {permission} to replace it, or choose another output path."
            )


def png_tag(marker: str) -> Any:
    """Our tag as a PNG text chunk, for ``pnginfo=`` of Pillow (and imageio) writers."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(MARKER_KEY, marker)
    return info


@contextlib.contextmanager
def staged_store(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a new folder beside ``dest`` that replaces ``dest`` only when the block succeeds.

    For zarr stores written piece by piece: an interrupted or failed write removes
    the new folder and leaves the old ``dest`` (a finished result) untouched.

    Parameters
    ----------
    dest : path-like
        The store to write.

    Yields
    ------
    Path
        The temporary folder (hidden, in the same folder as ``dest``) to write into.
    """
    target = Path(dest)
    remove_stale_partials(target)
    tmp = Path(
        tempfile.mkdtemp(prefix=partial_prefix(target), suffix=PARTIAL_MARK, dir=target.parent)
    )
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _same_data(target: Path, source: Path) -> bool:
    """True when writing ``target`` replaces ``source`` or writes inside an input store."""
    if target == source or source.is_relative_to(target):
        return True
    is_store = source.is_dir() and (source.name.endswith(ZARR_SUFFIXES) or looks_like_zarr(source))
    if is_store and target.parent == source / "labels" and is_ome_image(source):
        # NGFF's place for labels of an OME-Zarr image: adding them leaves the image's arrays
        # and metadata as they are (core.io.ome_labels), so the image is not replaced.
        return False
    return is_store and target.is_relative_to(source)


def _twice(path: Path, first: Output, second: Output) -> str:
    if first.source and second.source and first.source != second.source:
        return (
            f"{first.source} and {second.source} would both be written to {path}; rename one "
            "of them or run them separately."
        )
    return f"{first.flag} and {second.flag} both name {path}; give each its own path."


def _tiff_is_ours(path: Path) -> bool:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        tags = [m for m in (tif.shaped_metadata or ()) if isinstance(m, dict)]
        if tif.is_imagej and tif.imagej_metadata:
            tags.append(tif.imagej_metadata)
    return any(tag.get(MARKER_KEY) in _MARKERS for tag in tags)


def _png_is_ours(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as image:
        return image.info.get(MARKER_KEY) in _MARKERS


def _zarr_is_ours(path: Path) -> bool:
    import zarr

    attrs = dict(zarr.open(str(path), mode="r").attrs)
    return any(key.startswith(ZARR_ATTR_PREFIX) for key in attrs)


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8") as stream:
        return stream.readline().rstrip("\r\n")
