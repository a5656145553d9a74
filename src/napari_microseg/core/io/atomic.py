"""Atomic file writes: a failure never leaves a half-written file behind.

The data goes to a temporary file in the destination folder, is flushed to
disk, and only then replaces the destination in one ``os.replace``. If
anything fails (an exception, a full disk, a cancelled job), the temporary
file is removed and the previous file, if any, is untouched.

A process killed outright (SIGKILL, power cut) cannot remove its temporary
file. Temporary names therefore carry the writer's host and process id
(:func:`partial_prefix`), and the next write to the same destination removes
the ones whose writer is no longer running (:func:`remove_stale_partials`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: What the name of a temporary file or folder ends with, before the destination's suffix.
PARTIAL_MARK = ".partial"


class DiskFullError(OSError):
    """The disk filled up during a write; the message names the file and the space needed."""


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, *, overwrite: bool = True, size_hint: int | None = None
) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` when the block succeeds.

    Parameters
    ----------
    path : path-like
        The final destination.
    overwrite : bool
        When False and ``path`` exists, raise ``FileExistsError`` before writing.
    size_hint : int, optional
        About how many bytes will be written, for the message when the disk is full.

    Yields
    ------
    tmp : Path
        A path in the same folder (so the final rename is atomic) with the same
        suffix (so format detection by extension still works).

    Raises
    ------
    FileExistsError
        If ``overwrite`` is False and the destination exists, or if the
        destination is an existing folder (``out.tif/``), which is never replaced.
    DiskFullError
        If the disk fills up; the previous file is kept.
    PermissionError, OSError
        If the folder is not writable; the message names the folder.
    """
    dest = Path(path)
    if dest.is_dir():
        raise FileExistsError(
            f"{dest} is an existing folder, not a file; choose another output name "
            "(or remove that folder)."
        )
    if not overwrite and dest.exists():
        raise FileExistsError(f"{dest} already exists; choose another name or allow overwriting.")
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"Cannot write {dest.name}: the folder {folder} does not exist.")
    remove_stale_partials(dest, dest.suffix)
    try:
        handle, tmp_name = tempfile.mkstemp(
            prefix=partial_prefix(dest), suffix=f"{PARTIAL_MARK}{dest.suffix}", dir=folder
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
    except BaseException as error:
        written = _size(tmp)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise_if_disk_full(error, dest, max(written, size_hint or 0))
        raise


def partial_prefix(dest: Path) -> str:
    """The start of the name of a temporary file or folder written for ``dest``.

    ``.<name>.<host>-<pid>.``: hidden, tied to ``dest``, and saying which
    process on which machine writes it, so a later run can tell a stale one
    (its writer died) from one being written right now.
    """
    return f".{dest.name}.{_host_tag()}-{os.getpid()}."


def remove_stale_partials(dest: Path, suffix: str = "") -> list[Path]:
    """Remove temporary files and folders for ``dest`` left by writers that died.

    Only names made by :func:`partial_prefix` for exactly ``dest`` (with
    ``.partial<suffix>`` at the end) are considered, and only those written on
    this machine by a process that is no longer running; a concurrent writer's
    temporary file, or one from another machine sharing the folder, is left alone.

    Parameters
    ----------
    dest : Path
        The destination whose leftovers to remove.
    suffix : str
        What the temporary names end with after ``.partial`` (the destination's
        suffix for files, empty for zarr folders).

    Returns
    -------
    list of Path
        What was removed.
    """
    folder = dest.parent if str(dest.parent) else Path(".")
    start = f".{dest.name}.{_host_tag()}-"
    pattern = re.compile(
        re.escape(start) + r"(\d+)\.[A-Za-z0-9_]+" + re.escape(f"{PARTIAL_MARK}{suffix}")
    )
    removed = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        # startswith first: this runs before every write, in folders of many files.
        for entry in entries:
            match = pattern.fullmatch(entry.name) if entry.name.startswith(start) else None
            if match is None or _is_running(int(match.group(1))):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def raise_if_disk_full(error: BaseException, dest: Path, needed: int) -> None:
    """Turn an out-of-space ``OSError`` into a :class:`DiskFullError` naming ``dest``.

    Parameters
    ----------
    error : BaseException
        What the write raised; anything but ENOSPC / EDQUOT is left alone.
    dest : Path
        The file or folder being written.
    needed : int
        Bytes the write needed, as far as known (0 when unknown).
    """
    if not isinstance(error, OSError) or error.errno not in (errno.ENOSPC, errno.EDQUOT):
        return
    folder = dest.parent if str(dest.parent) else Path(".")
    try:
        free = f"{_megabytes(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "no space left"
    need = f"about {_megabytes(needed)}" if needed else "more space"
    kept = f"the previous {dest.name} is kept unchanged" if dest.exists() else "nothing was kept"
    raise DiskFullError(
        error.errno,
        f"The disk is full: writing {dest} needed {need} ({free} in {folder}); {kept}. "
        "Free some space or choose another output folder, then run again.",
    ) from error


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move ``tmp`` onto ``dest``; the old ``dest`` is removed only after the move."""
    old = dest.with_name(f".{dest.name}.old")
    # A run killed between the two renames below left this; the new result replaces it.
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(old)
    if dest.exists():
        os.replace(dest, old)
    else:
        old = None
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically and return the path."""
    with atomic_path(path, size_hint=len(payload)) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _host_tag() -> str:
    # A short hash: host names may hold dots and other characters unsafe in file names.
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _is_running(pid: int) -> bool:
    import psutil  # unlike os.kill, safe on Windows

    return pid == os.getpid() or psutil.pid_exists(pid)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    if path.is_dir():
        return
    with open(path, "rb+") as stream:
        os.fsync(stream.fileno())
