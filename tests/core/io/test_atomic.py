"""Atomic writes never leave half-written files nor destroy the previous one."""

from __future__ import annotations

import os
import stat

import pytest

from napari_microseg.core.io.atomic import atomic_path, atomic_write_text


def test_success_replaces_the_file_with_normal_permissions(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert list(tmp_path.iterdir()) == [target]
    assert stat.S_IMODE(os.stat(target).st_mode) & 0o044  # readable by others, not 0600


def test_failure_keeps_the_previous_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("precious")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "precious"
    assert list(tmp_path.iterdir()) == [target]


def test_refuses_to_overwrite_when_asked(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("x")
    with pytest.raises(FileExistsError), atomic_path(target, overwrite=False):
        pass


def test_missing_folder_is_named(tmp_path):
    with (
        pytest.raises(FileNotFoundError, match="does not exist"),
        atomic_path(tmp_path / "nope" / "a.txt"),
    ):
        pass


def test_unwritable_folder_says_so(tmp_path, monkeypatch):
    # Root ignores folder permissions, so simulate the refusal the OS would give a user.
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match="permission denied"), atomic_path(tmp_path / "a.txt"):
        pass
