"""Frontend contract: waveform -> analysis features ``(C_in, T_in)`` at the frontend's frame rate."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from plutok.parts import Part

__all__ = ["Frontend"]


class Frontend(Part):
    """A frozen feature extractor over 16 kHz (or ``sample_rate``) mono audio.

    ``analyze`` must be deterministic and must not depend on how a caller would
    chunk the audio: it sees the whole utterance and chunks internally on a fixed
    grid where it must (long audio stays bounded). ``context_frames`` is how far
    one output frame can look at neighbouring frames (in its own frames), for
    callers that cut features further.
    """

    #: The features are normalised by the speaker vector (``SpeakerEncoder.normalize``)
    #: before the codec sees them (the v1 mel models).
    normalize_by_speaker: bool = False

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Hz of the waveform ``analyze`` reads."""

    @property
    @abstractmethod
    def frames_per_second(self) -> float:
        """Feature frames per second of audio."""

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """Channels ``C_in``."""

    @property
    def context_frames(self) -> int:
        """Frames of context each output frame depends on, on each side."""
        return 0

    @abstractmethod
    def num_frames(self, num_samples: int) -> int:
        """Frames ``analyze`` returns for ``num_samples`` samples."""

    @abstractmethod
    def analyze(self, wav: np.ndarray, speaker: np.ndarray | None = None) -> np.ndarray:
        """Analysis features of one utterance.

        Args:
            wav: float32 ``(samples,)`` at ``sample_rate``.
            speaker: the utterance's speaker vector; only frontends that are
                conditioned on it (OpenVoice) read it.
        Returns:
            float32 ``(feature_dim, num_frames(samples))``.
        """

    def analysis_blocks(self, wav: np.ndarray, speaker: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """``analyze(wav, speaker)`` as consecutive blocks of frames ``(feature_dim, frames_i)``.

        Their concatenation equals :meth:`analyze` bit for bit. Frontends that can
        analyse long audio piece by piece override it, so that only a bounded block
        exists at a time (the encoder consumes them chunk by chunk); this default
        yields the whole analysis as one block.
        """
        yield self.analyze(wav, speaker)

    def analyze_batch(
        self, wavs: Sequence[np.ndarray], speakers: Sequence[np.ndarray | None] | None = None
    ) -> list[np.ndarray]:
        """``analyze`` of many utterances; frontends that batch well override it (same results)."""
        speakers = speakers if speakers is not None else [None] * len(wavs)
        return [self.analyze(wav, speaker) for wav, speaker in zip(wavs, speakers, strict=False)]

    def normalized(self, analysis: np.ndarray, speaker: np.ndarray, speaker_encoder: Any) -> np.ndarray:
        """What the codec reads: ``analysis`` normalised by the speaker vector where this frontend asks."""
        if self.normalize_by_speaker:
            return speaker_encoder.normalize(analysis, speaker)
        return analysis

    def to(self, device: str) -> Frontend:
        """Move to ``device`` (``"cpu"``/``"cuda"``); frontends that only run on the CPU ignore it."""
        return self
