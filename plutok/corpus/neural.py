"""Neural voices (Piper, Kokoro); filled in where their packages are installed."""

from __future__ import annotations

import numpy as np

__all__ = ["piper_voices", "kokoro_voices", "synthesize"]


def piper_voices(languages: list[str]) -> list:
    return []


def kokoro_voices(languages: list[str]) -> list:
    return []


def synthesize(voice, text: str) -> tuple[np.ndarray, int]:
    raise RuntimeError(f"no neural engine for {voice.engine}")
