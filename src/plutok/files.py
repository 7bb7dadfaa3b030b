"""Atomic file writing: a killed command never leaves a partial file that looks complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "current_umask",
    "give_default_permissions",
]


def _read_umask_by_setting_it() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# os.umask() can only read the umask by setting it, for the whole process: a thread creating
# a file between the two calls would get mode 0o666/0o777 (world-writable). So it is set only
# here, at import, and later reads come from the kernel's per-process record (Linux >= 4.7).
_UMASK_AT_IMPORT = _read_umask_by_setting_it()


def current_umask() -> int:
    """The process umask, read without changing it (the value at import where /proc cannot tell)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK_AT_IMPORT


def give_default_permissions(path: str | os.PathLike, directory: bool = False) -> None:
    """The mode ``open()``/``mkdir()`` would have given ``path`` (mkstemp/mkdtemp make 0600/0700).

    Never changes the process umask (other threads may be creating files).
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success it is renamed over ``path``.

    Write the output to the yielded path. If the block raises (or the process is
    killed), ``path`` is untouched and the temporary file is removed (or, after a
    kill, left with a ``.part`` suffix that no reader treats as output).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        give_default_permissions(temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(payload)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))
