"""The v1 mel backbone: log-mel analysis + mel-statistics speaker vector + packaged HiFi-GAN.

Since the stage redesign this is only a composition of three parts, kept for v1
model files (``"backbone": {"name": "mel", ...}``) and for the v1 tools
(``plutok extract``, copy-synthesis): :class:`~plutok.frontends.mel.LogMelFrontend`,
:class:`~plutok.speaker.mel_statistics.MelStatisticsSpeaker` and
:class:`~plutok.vocoders.hifigan.PackagedHiFiGAN`. Results are bit-identical to 0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from plutok.errors import ModelError
from plutok.frontends.mel import ANALYSIS_BLOCK_FRAMES, LogMelFrontend, MelSettings, slaney_mel_filterbank
from plutok.legacy.backbones.base import Backbone
from plutok.speaker.mel_statistics import MelStatisticsSpeaker, dct_matrix
from plutok.vocoders.hifigan import (
    VOCODER_CHUNK_FRAMES,
    VOCODER_CONTEXT_FRAMES,
    PackagedHiFiGAN,
    vocoder_path,
)

__all__ = [
    "ANALYSIS_BLOCK_FRAMES",
    "VOCODER_CHUNK_FRAMES",
    "VOCODER_CONTEXT_FRAMES",
    "MelBackbone",
    "dct_matrix",
    "slaney_mel_filterbank",
    "vocoder_path",
]


class MelBackbone(Backbone):
    """``features``: log-mel normalised by the speaker statistics; ``synthesize``: HiFi-GAN of the denormalised mel."""

    name = "mel"

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        win_length: int = 640,
        hop_length: int = 160,
        n_mels: int = 80,
        fmin: float = 0.0,
        fmax: float = 8000.0,
        speaker_coefficients: int | None = None,
    ) -> None:
        settings = MelSettings(
            int(sample_rate),
            int(n_fft),
            int(win_length),
            int(hop_length),
            int(n_mels),
            float(fmin),
            float(fmax),
        )
        self.settings = settings
        self.frontend = LogMelFrontend(settings, normalize_by_speaker=True)
        self.speaker = MelStatisticsSpeaker(settings, speaker_coefficients)
        self.vocoder = PackagedHiFiGAN()
        self.speaker_coefficients = self.speaker.coefficients
        self.n_mels = settings.n_mels

    @property
    def sample_rate(self) -> int:
        return self.settings.sample_rate

    @property
    def hop_length(self) -> int:
        return self.settings.hop_length

    @property
    def feature_dim(self) -> int:
        return self.settings.n_mels

    @property
    def speaker_dim(self) -> int:
        return self.speaker.speaker_dim

    def config(self) -> dict[str, Any]:
        s = self.settings
        return {
            "name": self.name,
            "sample_rate": s.sample_rate,
            "n_fft": s.n_fft,
            "win_length": s.win_length,
            "hop_length": s.hop_length,
            "n_mels": s.n_mels,
            "fmin": s.fmin,
            "fmax": s.fmax,
            "speaker_coefficients": self.speaker_coefficients,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> MelBackbone:
        settings = {key: value for key, value in config.items() if key != "name"}
        try:
            return cls(**settings)
        except (TypeError, ValueError) as error:
            raise ModelError(f"bad mel backbone config: {error}") from None

    def log_mel(self, wav: np.ndarray) -> np.ndarray:
        """Log-mel ``(n_mels, samples // hop)`` the vocoder expects (see :class:`~plutok.frontends.mel.LogMel`)."""
        return self.frontend.log_mel(wav)

    def speaker_embedding(self, wav: np.ndarray) -> np.ndarray:
        return self.speaker.embed(wav)

    def normalize(self, log_mel: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        return self.speaker.normalize(log_mel, speaker)

    def denormalize(self, features: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        return self.speaker.denormalize(features, speaker)

    def features(self, wav: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        return self.normalize(self.log_mel(wav), speaker)

    def feature_blocks(self, wav: np.ndarray, speaker: np.ndarray) -> Iterator[np.ndarray]:
        """The normalised log-mel block by block (normalisation is per frame, so bit-identical)."""
        for block in self.frontend.log_mel.blocks(wav):
            yield self.normalize(block, speaker)

    def analyze(self, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(features, speaker)`` in one pass over the spectrogram (what extraction needs)."""
        log_mel = self.log_mel(wav)
        speaker = self.speaker.from_log_mel(log_mel)
        return self.normalize(log_mel, speaker), speaker

    def vocode(self, log_mel: np.ndarray, chunk_frames: int | None = VOCODER_CHUNK_FRAMES) -> np.ndarray:
        """Waveform ``(frames * hop,)`` of a log-mel; see :meth:`PackagedHiFiGAN.synthesize`."""
        return self.vocoder.synthesize(log_mel, chunk_frames=chunk_frames)

    def synthesize(
        self, features: np.ndarray, speaker: np.ndarray, chunk_frames: int | None = VOCODER_CHUNK_FRAMES
    ) -> np.ndarray:
        return self.vocode(self.denormalize(features, speaker), chunk_frames=chunk_frames)
