"""Vocoder contract: synthesis features ``(C_out, T_out)`` -> waveform."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from plutok.parts import FrameGrid, Part

__all__ = ["Vocoder"]


class Vocoder(Part, FrameGrid):
    """Features at ``sample_rate / hop_length`` frames per second -> ``(frames * hop_length,)`` samples.

    ``context_frames`` is its receptive field (frames on each side that change an
    output frame); :func:`plutok.chunking.chunked_apply` uses it so chunked
    synthesis equals one pass. ``sample_rate`` (Hz of the waveform it writes),
    ``hop_length`` and ``feature_dim`` (channels ``C_out`` it reads): :class:`FrameGrid`.
    """

    @property
    @abstractmethod
    def context_frames(self) -> int:
        """Receptive field in frames, each side."""

    @abstractmethod
    def synthesize(
        self, features: np.ndarray, speaker: np.ndarray | None = None, chunk_frames: int | None = None
    ) -> np.ndarray:
        """float32 ``(frames * hop_length,)`` from features ``(feature_dim, frames)``.

        Args:
            features: ``(feature_dim, frames)`` (for mel vocoders: the log-mel itself).
            speaker: only vocoders conditioned on a speaker (OpenVoice) read it.
            chunk_frames: at most this many frames at once (bounded memory); ``None`` one pass.
        """

    def to(self, device: str) -> Vocoder:
        """Move to ``device``; vocoders that only run on the CPU ignore it."""
        return self
