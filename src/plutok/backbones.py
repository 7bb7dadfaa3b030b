"""The v1 backbones under their earlier import path (``from plutok.backbones import OpenVoiceBackbone``,
as ``docs/openvoice.md`` shows); they live in :mod:`plutok.legacy.backbones`."""

from __future__ import annotations

from typing import Any

from plutok.legacy import backbones as _backbones

__all__ = list(_backbones.__all__)


def __getattr__(name: str) -> Any:
    return getattr(_backbones, name)
