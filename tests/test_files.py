"""Atomic writes: default permissions without touching the process umask, no temporary left behind."""

from __future__ import annotations

import os
import stat

import pytest

from plutok import files
from plutok.files import atomic_path, atomic_write_bytes, current_umask, give_default_permissions


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield 0o027
    os.umask(previous)


def test_default_permissions_never_set_the_process_umask(tmp_path, umask_027, monkeypatch):
    """Setting the umask, even briefly, makes files that other threads create meanwhile world-writable."""

    def refuse(mask):
        raise AssertionError("os.umask() changes the umask of every thread")

    monkeypatch.setattr(files.os, "umask", refuse)
    assert current_umask() == umask_027
    written = atomic_write_bytes(tmp_path / "out.bin", b"payload")
    assert stat.S_IMODE(written.stat().st_mode) == 0o640
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    give_default_permissions(folder, directory=True)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750


def test_failed_write_leaves_no_temporary(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.bin") as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
