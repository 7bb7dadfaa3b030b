"""Speaker vector = smoothed per-bin statistics of the log-mel (v1 and v2 default).

The vector is the per-bin mean and log standard deviation of the log-mel over
the utterance's active (non-silent) frames, each kept as its first
``coefficients`` orthonormal DCT-II coefficients (a smooth spectral envelope: few
bits per utterance). Normalised features are the log-mel minus the rebuilt mean,
divided by the rebuilt std. Timbre and channel colour live in the statistics, so
the codes only have to carry what changes over time. With ``coefficients == n_mels``
the statistics are kept exactly. ``std_coefficients`` (default: ``coefficients``) keeps fewer
coefficients of the log standard deviation, which leaves room in the vector for other
values (the learned part of :mod:`plutok.speaker.learned`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from plutok.errors import ModelError, TokenError
from plutok.frontends.mel import ANALYSIS_BLOCK_FRAMES, LogMel, MelSettings
from plutok.parts import settings_from_config
from plutok.settings import check_size
from plutok.speaker.base import SpeakerEncoder

__all__ = ["MelStatisticsSpeaker", "active_frames", "dct_matrix"]

# Frames quieter than the loudest frame by more than this (natural-log units, ~43 dB)
# do not count towards the statistics: otherwise the amount of silence in a clip
# would shift the "speaker".
_ACTIVE_RANGE = 5.0
# Log-mel blocks (of ANALYSIS_BLOCK_FRAMES, 60 s each: 10 min, 19 MB) kept between the
# passes of ``embed``; longer audio is analysed again for each pass.
_HELD_BLOCKS = 10
# Floor on the per-bin standard deviation so that silent or constant input cannot
# blow up the normalised features.
_MIN_STD = 0.05


def dct_matrix(size: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``(size, size)``: ``coefficients = matrix @ signal``."""
    index = np.arange(size)
    matrix = np.cos(np.pi * (index[None, :] + 0.5) * index[:, None] / size) * np.sqrt(2.0 / size)
    matrix[0] /= np.sqrt(2.0)
    return matrix.astype(np.float64)


def active_frames(frame_level: np.ndarray) -> np.ndarray:
    """Boolean ``(frames,)``: the frames whose mean log-mel level ``(frames,)`` is within
    :data:`_ACTIVE_RANGE` of the loudest frame's (the frames the statistics count)."""
    return frame_level >= frame_level.max() - _ACTIVE_RANGE


def _with_masks(blocks: Iterator[np.ndarray], active: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each block ``(n_mels, frames_i)`` with its frames' part of the mask ``active``."""
    start = 0
    for block in blocks:
        yield block, active[start : start + block.shape[1]]
        start += block.shape[1]


class MelStatisticsSpeaker(SpeakerEncoder):
    """``(coefficients + std_coefficients,)``: DCT of the per-bin log-mel mean, then of the per-bin log std."""

    name = "mel-statistics"

    def __init__(
        self,
        settings: MelSettings | None = None,
        coefficients: int | None = None,
        std_coefficients: int | None = None,
    ) -> None:
        self.settings = settings or MelSettings()
        n_mels = self.settings.n_mels
        what = "mel-statistics speaker"
        self.coefficients = check_size(
            what, "coefficients", n_mels if coefficients is None else coefficients, 1, n_mels
        )
        self.std_coefficients = check_size(
            what,
            "std_coefficients",
            self.coefficients if std_coefficients is None else std_coefficients,
            1,
            n_mels,
        )
        # Rows of the DCT kept in the speaker vector: coefficients = basis @ statistic.
        self._basis = dct_matrix(n_mels)[: self.coefficients]
        self._std_basis = dct_matrix(n_mels)[: self.std_coefficients]
        self.log_mel = LogMel(self.settings)

    @property
    def sample_rate(self) -> int:
        return self.settings.sample_rate

    @property
    def speaker_dim(self) -> int:
        return self.coefficients + self.std_coefficients

    def config(self) -> dict[str, Any]:
        config = {"name": self.name, **asdict(self.settings), "coefficients": self.coefficients}
        if self.std_coefficients != self.coefficients:
            # Only when it differs, so that the models before it keep their fingerprints.
            config["std_coefficients"] = self.std_coefficients
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> MelStatisticsSpeaker:
        values = dict(config)
        coefficients = values.pop("coefficients", None)
        std_coefficients = values.pop("std_coefficients", None)
        settings = settings_from_config(MelSettings, values, "mel-statistics speaker")
        return cls(settings, coefficients, std_coefficients)

    def narrowed(self, vector: np.ndarray, wider: MelStatisticsSpeaker) -> np.ndarray:
        """This encoder's vector of an utterance, from ``wider``'s vector of it (same log-mel, at
        least as many coefficients of each statistic): the leading DCT coefficients are the same
        numbers, so no audio is needed (a feature cache's vectors serve a narrower encoder)."""
        if (
            asdict(wider.settings) != asdict(self.settings)
            or wider.coefficients < self.coefficients
            or wider.std_coefficients < self.std_coefficients
        ):
            raise ModelError(f"speaker vectors of {wider.config()} cannot give those of {self.config()}")
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        std_start = wider.coefficients
        return np.concatenate(
            [vector[: self.coefficients], vector[std_start : std_start + self.std_coefficients]]
        )

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """The speaker vector of a waveform, its log-mel computed block by block.

        The statistics need three passes over the log-mel (the loudness gate's maximum,
        the mean, the variance about the mean). Up to :data:`_HELD_BLOCKS` blocks
        (10 min) are kept between passes; a longer log-mel is recomputed for each pass
        instead of held (2 h would be 230 MB), which costs two more STFT passes but
        keeps memory bounded. The result equals :meth:`from_log_mel` of the whole
        log-mel bit for bit: the blocks and the order of every sum are the same.
        """
        first = self.log_mel.blocks(wav)
        held: list[np.ndarray] = []
        levels = []
        for block in first:
            levels.append(block.mean(axis=0))
            if len(held) < _HELD_BLOCKS:
                held.append(block)
            else:
                held = []
                levels.extend(block.mean(axis=0) for block in first)
                break
        if held:
            return self._from_blocks(lambda: iter(held), np.concatenate(levels))
        return self._from_blocks(lambda: self.log_mel.blocks(wav), np.concatenate(levels))

    def from_log_mel(self, log_mel: np.ndarray) -> np.ndarray:
        """The speaker vector of an already computed log-mel ``(n_mels, frames)``."""
        step = ANALYSIS_BLOCK_FRAMES
        return self._from_blocks(
            lambda: (log_mel[:, i : i + step] for i in range(0, log_mel.shape[1], step)),
            log_mel.mean(axis=0),
        )

    def _from_blocks(self, blocks: Callable[[], Iterator[np.ndarray]], frame_level: np.ndarray) -> np.ndarray:
        """The vector from ``blocks()`` (a fresh iterator over the log-mel's blocks of
        :data:`ANALYSIS_BLOCK_FRAMES` frames, read twice) and the per-frame mean level ``(frames,)``."""
        active = active_frames(frame_level)
        # Two passes over blocks of frames (mean, then variance about it) in float64, so a
        # long recording needs no float64 copy of its whole spectrogram.
        count = int(np.count_nonzero(active))
        n_mels = self.settings.n_mels
        total = np.zeros(n_mels)
        for block, mask in _with_masks(blocks(), active):
            total += block[:, mask].astype(np.float64).sum(axis=1)
        mean = total / count
        squares = np.zeros(n_mels)
        for block, mask in _with_masks(blocks(), active):
            squares += np.square(block[:, mask].astype(np.float64) - mean[:, None]).sum(axis=1)
        log_std = 0.5 * np.log(squares / count + _MIN_STD**2)
        return np.concatenate([self._basis @ mean, self._std_basis @ log_std]).astype(np.float32)

    def statistics(self, speaker: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-bin mean and std ``(n_mels, 1)`` rebuilt from a speaker vector."""
        speaker = np.asarray(speaker, dtype=np.float64).reshape(-1)
        if speaker.shape[0] != self.speaker_dim:
            raise ModelError(
                f"speaker vector has {speaker.shape[0]} values, this speaker encoder uses {self.speaker_dim}"
            )
        mean = self._basis.T @ speaker[: self.coefficients]
        with np.errstate(over="ignore"):
            std = np.maximum(np.exp(self._std_basis.T @ speaker[self.coefficients :]), _MIN_STD)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and std.max() < 1e30):
            raise TokenError("the speaker vector is out of range (NaN, infinite or overflowing statistics)")
        return mean[:, None].astype(np.float32), std[:, None].astype(np.float32)

    def normalize(self, features: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        mean, std = self.statistics(speaker)
        return ((features - mean) / std).astype(np.float32)

    def denormalize(self, features: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        mean, std = self.statistics(speaker)
        return (np.asarray(features, dtype=np.float32) * std + mean).astype(np.float32)

    def denormalize_tensor(self, features: Any, speaker: Any) -> Any:
        import torch

        def rows(basis: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(basis, dtype=features.dtype, device=features.device)

        values = speaker.to(features.dtype)
        mean = values[:, : self.coefficients] @ rows(self._basis)  # (B, n_mels)
        std = torch.exp(values[:, self.coefficients :] @ rows(self._std_basis)).clamp(min=_MIN_STD)
        return features * std[:, :, None] + mean[:, :, None]
