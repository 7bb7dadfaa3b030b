"""Plutok: multilingual speech to very few discrete tokens, and back."""

from __future__ import annotations

from typing import Any

__version__ = "0.6.0"

__all__ = ["CodeSearch", "Encoding", "Plutok", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy so that `import plutok` (and `plutok --help`) stay fast: torch loads on first use.
    if name == "Plutok":
        from plutok.api import Plutok

        return Plutok
    if name == "CodeSearch":
        from plutok.codec.search import CodeSearch

        return CodeSearch
    if name == "Encoding":
        from plutok.encoding import Encoding

        return Encoding
    raise AttributeError(name)
