"""The contract every backbone (analysis/synthesis pair) fulfils.

The VQ-VAE, BPE and tokenizer code only ever talk to this interface, so a new
backbone (a project-trained vocoder, a semantic encoder, OpenVoice) plugs in
without touching them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np

from plutok.parts import FrameGrid, Part


class Backbone(Part, FrameGrid, ABC):
    """Analysis/synthesis pair: waveform <-> (speaker-normalised features, speaker vector).

    A :class:`~plutok.parts.Part` (registry kind ``backbone``): ``name`` (the key stored
    in a v1 model's ``config.json``), ``config``/``from_config``, ``weights_digest`` (part
    of the model's fingerprint) and ``save_weights`` as every part has them, plus the
    abstract members below and those of :class:`~plutok.parts.FrameGrid` (``sample_rate``
    of ``features``/``synthesize``, ``hop_length``, ``feature_dim``). All arrays are numpy,
    float32, on the CPU side of the API.
    """

    @property
    @abstractmethod
    def speaker_dim(self) -> int:
        """Length of the speaker vector."""

    @abstractmethod
    def speaker_embedding(self, wav: np.ndarray) -> np.ndarray:
        """One speaker vector for an utterance.

        Args:
            wav: float32 waveform ``(samples,)`` at ``sample_rate``.
        Returns:
            float32 ``(speaker_dim,)``.
        """

    @abstractmethod
    def features(self, wav: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        """Speaker-normalised frame features.

        Args:
            wav: float32 waveform ``(samples,)`` at ``sample_rate``.
            speaker: ``(speaker_dim,)`` from ``speaker_embedding``.
        Returns:
            float32 ``(feature_dim, frames)``.
        """

    def feature_blocks(self, wav: np.ndarray, speaker: np.ndarray) -> Iterator[np.ndarray]:
        """``features(wav, speaker)`` as consecutive blocks of frames that join to it bit for bit.

        Backbones that can analyse long audio piece by piece override it (bounded memory);
        this default yields all features as one block.
        """
        yield self.features(wav, speaker)

    def analyze(self, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(features (feature_dim, frames), speaker (speaker_dim,))`` of one utterance.

        What encoding calls; backbones that can share work between the two override it.
        """
        speaker = self.speaker_embedding(wav)
        return self.features(wav, speaker), speaker

    @abstractmethod
    def synthesize(
        self, features: np.ndarray, speaker: np.ndarray, chunk_frames: int | None = None
    ) -> np.ndarray:
        """Waveform from features and a (possibly different) speaker vector.

        Args:
            features: ``(feature_dim, frames)``.
            speaker: ``(speaker_dim,)``.
            chunk_frames: synthesise at most this many frames at once (bounded memory
                for long audio); ``None`` is one pass. Backbones may ignore it.
        Returns:
            float32 waveform ``(frames * hop_length,)`` at ``sample_rate``.
        """

    def num_frames(self, num_samples: int) -> int:
        """Frames ``features`` returns for ``num_samples`` samples."""
        return num_samples // self.hop_length
