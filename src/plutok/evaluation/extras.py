"""Lazy imports of the optional evaluation dependencies (``pip install plutok[eval]``).

Nothing heavy is imported when ``plutok.evaluation`` is imported; each metric
asks for its package on first use and a missing one becomes one clear
:class:`~plutok.errors.PlutokError` instead of an ``ImportError`` traceback.
"""

from __future__ import annotations

import importlib
import shutil
from types import ModuleType

from plutok.errors import PlutokError

__all__ = ["require", "require_tool", "EXTRA_HINT"]

EXTRA_HINT = "pip install plutok[eval]"


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`PlutokError` naming the ``eval`` extra.

    Args:
        module: importable name, e.g. ``"pystoi"``.
        purpose: what it is needed for, shown in the message (e.g. ``"STOI"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise PlutokError(
            f"{purpose} needs the Python package {module!r}, which is not installed ({error}); "
            f"install the evaluation extras with: {EXTRA_HINT}"
        ) from None


def require_tool(program: str, package: str) -> str:
    """Absolute path of an external program, or :class:`PlutokError` naming the Debian package."""
    path = shutil.which(program)
    if path is None:
        raise PlutokError(
            f"the program {program!r} is not on PATH; install it (Debian: apt-get install {package})"
        )
    return path
