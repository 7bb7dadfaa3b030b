"""Speaker encoder contract: utterance -> one speaker vector (timbre, channel).

For models whose synthesis features are normalised per speaker (the mel path),
the speaker encoder also maps features to and from that normalised space, so the
codec only carries what changes over time.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from plutok.parts import Part

__all__ = ["SpeakerEncoder"]


class SpeakerEncoder(Part):
    """One vector per utterance; ``normalize``/``denormalize`` are the identity unless overridden."""

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Hz of the waveform ``embed`` reads."""

    @property
    @abstractmethod
    def speaker_dim(self) -> int:
        """Length of the speaker vector."""

    @abstractmethod
    def embed(self, wav: np.ndarray) -> np.ndarray:
        """float32 ``(speaker_dim,)`` of a float32 ``(samples,)`` utterance at ``sample_rate``."""

    def check(self, speaker: np.ndarray) -> np.ndarray:
        """The vector as float32 ``(speaker_dim,)``; :class:`TokenError` for a wrong size or NaN/inf."""
        from plutok.errors import TokenError

        vector = np.asarray(speaker, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.speaker_dim:
            raise TokenError(
                f"the speaker vector has {vector.shape[0]} values; this model uses {self.speaker_dim}"
            )
        if not np.all(np.isfinite(vector)):
            raise TokenError("the speaker vector contains NaN or infinite values")
        return vector

    def normalize(self, features: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        """Speaker-normalised ``(C, T)`` features."""
        return features

    def denormalize(self, features: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalize`."""
        return features

    def denormalize_tensor(self, features: Any, speaker: Any) -> Any:
        """:meth:`denormalize` in torch, differentiable in both: features ``(B, C, T)``, speakers
        ``(B, speaker_dim)``. Code search fits the speaker vector through it (:mod:`plutok.codec.search`)."""
        return features
