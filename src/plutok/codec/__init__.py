"""Codecs: encoder + quantizer + decoder between analysis and synthesis features (:class:`Codec`)."""

from __future__ import annotations

from typing import Any

__all__ = ["Codec", "CodecBatch"]


def __getattr__(name: str) -> Any:
    # Lazy: importing a torch-free submodule (or the CLI) must not load torch.
    if name in __all__:
        from plutok.codec import base

        return getattr(base, name)
    raise AttributeError(name)
