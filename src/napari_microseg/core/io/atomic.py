"""Atomic file writes: a failure never leaves a half-written file behind.

The data goes to a temporary file in the destination folder, is flushed to
disk, and only then replaces the destination in one ``os.replace``. If
anything fails (an exception, a full disk, a cancelled job), the temporary
file is removed and the previous file, if any, is untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` when the block succeeds.

    Parameters
    ----------
    path : path-like
        The final destination.
    overwrite : bool
        When False and ``path`` exists, raise ``FileExistsError`` before writing.

    Yields
    ------
    tmp : Path
        A path in the same folder (so the final rename is atomic) with the same
        suffix (so format detection by extension still works).

    Raises
    ------
    FileExistsError
        If ``overwrite`` is False and the destination exists.
    PermissionError, OSError
        If the folder is not writable; the message names the folder.
    """
    dest = Path(path)
    if not overwrite and dest.exists():
        raise FileExistsError(f"{dest} already exists; choose another name or allow overwriting.")
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"Cannot write {dest.name}: the folder {folder} does not exist.")
    try:
        handle, tmp_name = tempfile.mkstemp(
            prefix=f".{dest.name}.", suffix=f".partial{dest.suffix}", dir=folder
        )
    except PermissionError as error:
        raise PermissionError(
            f"Cannot write to {folder}: permission denied. Choose a folder you can write to."
        ) from error
    os.close(handle)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    if path.is_dir():
        return
    with open(path, "rb+") as stream:
        os.fsync(stream.fileno())
