"""16 kHz log-mel analysis exactly as the packaged HiFi-GAN expects it (docs/architecture.md, "Facts the code relies on").

80-bin Slaney log-mel, n_fft 1024, window 640, hop 160 (100 frames/s), fmin 0,
fmax 8000, magnitude (not power), natural log of ``max(mel, 1e-5)``. The same
function gives the v1 codec input (normalised by the speaker statistics), the
synthesis target of the v2 codec and the input of the speaker statistics.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plutok.audio import as_waveform
from plutok.errors import AudioError, ModelError
from plutok.frontends.base import Frontend
from plutok.parts import settings_from_config
from plutok.settings import MAX_FFT_SIZE, MAX_SAMPLE_RATE, MAX_WIDTH, MIN_SAMPLE_RATE, check_size

__all__ = [
    "ANALYSIS_BLOCK_FRAMES",
    "LogMel",
    "LogMelFrontend",
    "MelSettings",
    "slaney_mel_filterbank",
    "slaney_mel_points",
]

# Long input is analysed in blocks of this many frames (60 s) so the STFT of a long
# recording never exists at once (1 h would be ~2 GB of complex spectrum). Frames are
# computed independently; only float rounding of the filterbank product (~1e-6) can
# depend on the block shape, and the block size is fixed, so analysis is deterministic.
ANALYSIS_BLOCK_FRAMES = 6000
# Frames whose spectrum is taken at once inside a block (a multiple of the SIMD width, so
# only a block's last frames take the FFT's remainder path, as in one call per block).
_STFT_FRAMES = 1000

# Slaney mel scale: linear below 1 kHz (66.67 Hz per mel), logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel_slaney(frequency: np.ndarray) -> np.ndarray:
    frequency = np.asarray(frequency, dtype=np.float64)
    linear = frequency / _SLANEY_HZ_PER_MEL
    ratio = np.maximum(frequency, _SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ
    logarithmic = _SLANEY_MIN_LOG_MEL + np.log(ratio) / _SLANEY_LOGSTEP
    return np.where(frequency >= _SLANEY_MIN_LOG_HZ, logarithmic, linear)


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    linear = mels * _SLANEY_HZ_PER_MEL
    logarithmic = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (mels - _SLANEY_MIN_LOG_MEL))
    return np.where(mels >= _SLANEY_MIN_LOG_MEL, logarithmic, linear)


def slaney_mel_points(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """``(n_mels + 2,)`` Hz: the Slaney-scale filter edges; filter ``k`` rises from point ``k``,
    peaks at ``k + 1`` (its centre) and falls to ``k + 2``."""
    return _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2))


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filters on the Slaney scale with Slaney (area) normalisation.

    Returns:
        float32 ``(n_mels, n_fft // 2 + 1)``; the same matrix librosa's ``mel(htk=False, norm="slaney")`` gives.
    """
    fft_frequencies = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    hz_points = slaney_mel_points(n_mels, fmin, fmax)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_frequencies[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return weights.astype(np.float32)


@dataclass(frozen=True)
class MelSettings:
    """Log-mel parameters (the packaged HiFi-GAN's, by default)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 640
    hop_length: int = 160
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0

    def __post_init__(self) -> None:
        what = "mel settings"
        check_size(what, "sample_rate", self.sample_rate, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)
        for name in ("n_fft", "win_length", "hop_length"):
            check_size(what, name, getattr(self, name), 1, MAX_FFT_SIZE)
        check_size(what, "n_mels", self.n_mels, 1, MAX_WIDTH)
        if self.win_length > self.n_fft:
            raise ModelError(f"{what}: win_length {self.win_length} is longer than n_fft {self.n_fft}")
        for name in ("fmin", "fmax"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ModelError(f"{what}: {name} must be a finite number of Hz, got {value!r}")
        if not 0 <= self.fmin < self.fmax:
            raise ModelError(f"{what}: need 0 <= fmin < fmax, got {self.fmin}, {self.fmax}")
        if (self.n_fft - self.hop_length) % 2:
            raise ModelError("n_fft - hop_length must be even for symmetric padding")


class LogMel:
    """The log-mel function itself, shared by the mel frontend, the speaker statistics and training."""

    def __init__(self, settings: MelSettings | None = None) -> None:
        self.settings = settings or MelSettings()
        s = self.settings
        self._filterbank = torch.from_numpy(
            slaney_mel_filterbank(s.sample_rate, s.n_fft, s.n_mels, s.fmin, s.fmax)
        )
        self._window = torch.hann_window(s.win_length)

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        """Log-mel ``(n_mels, samples // hop_length)`` float32 of a float32 ``(samples,)`` waveform.

        Long input is computed in blocks of :data:`ANALYSIS_BLOCK_FRAMES` frames, so
        memory beyond the output stays bounded; up to 60 s it is a single block.
        """
        wav = self._checked(wav)
        output = np.empty((self.settings.n_mels, wav.shape[0] // self.settings.hop_length), dtype=np.float32)
        start = 0
        for block in self._blocks(wav):
            output[:, start : start + block.shape[1]] = block
            start += block.shape[1]
        return output

    def blocks(self, wav: np.ndarray) -> Iterator[np.ndarray]:
        """The log-mel of :meth:`__call__` as consecutive blocks of :data:`ANALYSIS_BLOCK_FRAMES` frames.

        Each block is float32 ``(n_mels, <= ANALYSIS_BLOCK_FRAMES)``, computed exactly as
        ``__call__`` computes it, so their concatenation equals ``__call__(wav)`` bit for
        bit while only one block exists at a time. The waveform is checked at the call.
        """
        return self._blocks(self._checked(wav))

    def _blocks(self, wav: np.ndarray) -> Iterator[np.ndarray]:
        s = self.settings
        hop = s.hop_length
        padding = (s.n_fft - hop) // 2
        frames = wav.shape[0] // hop
        # Reflect padding needs more samples than the pad; very short input falls back to zeros.
        if wav.shape[0] > padding:
            left = np.pad(wav[: padding + 1], (padding, 0), mode="reflect")[:padding]
            right = np.pad(wav[-(padding + 1) :], (0, padding), mode="reflect")[-padding:]
        else:
            left = right = np.zeros(padding, dtype=np.float32)
        for start in range(0, frames, ANALYSIS_BLOCK_FRAMES):
            stop = min(frames, start + ANALYSIS_BLOCK_FRAMES)
            # Samples [start * hop, (stop - 1) * hop + n_fft) of the padded signal.
            begin, end = start * hop - padding, (stop - 1) * hop + s.n_fft - padding
            pieces = [left[padding + begin :]] if begin < 0 else []
            pieces.append(wav[max(begin, 0) : min(end, wav.shape[0])])
            if end > wav.shape[0]:
                pieces.append(right[: end - wav.shape[0]])
            yield self._frames(np.concatenate(pieces))

    def _checked(self, wav: np.ndarray) -> np.ndarray:
        """``wav`` as float32 ``(samples,)``; :class:`AudioError` for another shape or under one hop.

        A :class:`~plutok.audio.SpooledWaveform` stays on disk: :meth:`blocks` reads it by slices.
        """
        s = self.settings
        wav = as_waveform(wav)
        if wav.ndim != 1:
            raise AudioError(f"expected a mono waveform (samples,), got shape {wav.shape}")
        if wav.shape[0] < s.hop_length:
            raise AudioError(
                f"audio is too short: {wav.shape[0]} samples, at least {s.hop_length} "
                f"({1000 * s.hop_length / s.sample_rate:.0f} ms) needed"
            )
        return wav

    def _frames(self, padded: np.ndarray) -> np.ndarray:
        """Log-mel of every full ``n_fft`` frame (hop ``hop_length``) of an already padded signal.

        The spectrum is taken :data:`_STFT_FRAMES` frames at a time into one magnitude
        matrix, so its transients (windowed frames, complex spectrum: ~60 MB for a whole
        60 s block, kept resident by the allocator afterwards) stay a sixth of that; each
        frame's FFT is its own, so the magnitudes are those of one call, and the filterbank
        product still sees the whole block (its rounding depends on the block shape).
        """
        s = self.settings
        with torch.inference_mode():
            signal = torch.from_numpy(np.ascontiguousarray(padded))
            frames = (signal.shape[0] - s.n_fft) // s.hop_length + 1
            magnitude = torch.empty(s.n_fft // 2 + 1, frames)
            for start in range(0, frames, _STFT_FRAMES):
                stop = min(frames, start + _STFT_FRAMES)
                spectrum = torch.stft(
                    signal[start * s.hop_length : (stop - 1) * s.hop_length + s.n_fft],
                    n_fft=s.n_fft,
                    hop_length=s.hop_length,
                    win_length=s.win_length,
                    window=self._window,
                    center=False,
                    return_complex=True,
                )
                magnitude[:, start:stop] = torch.sqrt(spectrum.real.pow(2) + spectrum.imag.pow(2) + 1e-9)
            mel = torch.log(torch.clamp(self._filterbank @ magnitude, min=1e-5))
        return mel.numpy()


class LogMelFrontend(Frontend):
    """The log-mel as analysis features, ``(n_mels, samples // hop)`` at 100 frames/s.

    ``normalize_by_speaker`` (the v1 models): the codec reads the log-mel normalised
    by the speaker statistics instead of the raw log-mel.
    """

    name = "log-mel"

    def __init__(self, settings: MelSettings | None = None, normalize_by_speaker: bool = True) -> None:
        self.settings = settings or MelSettings()
        self.normalize_by_speaker = bool(normalize_by_speaker)
        self.log_mel = LogMel(self.settings)

    @property
    def sample_rate(self) -> int:
        return self.settings.sample_rate

    @property
    def frames_per_second(self) -> float:
        return self.settings.sample_rate / self.settings.hop_length

    @property
    def feature_dim(self) -> int:
        return self.settings.n_mels

    @property
    def context_frames(self) -> int:
        return 0  # frames are computed independently

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.settings.hop_length

    def analyze(self, wav: np.ndarray, speaker: np.ndarray | None = None) -> np.ndarray:
        return self.log_mel(wav)

    def analysis_blocks(self, wav: np.ndarray, speaker: np.ndarray | None = None) -> Iterator[np.ndarray]:
        return self.log_mel.blocks(wav)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.settings), "normalize_by_speaker": self.normalize_by_speaker}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> LogMelFrontend:
        values = dict(config)
        normalize = values.pop("normalize_by_speaker", True)
        return cls(
            settings_from_config(MelSettings, values, "log-mel frontend"), normalize_by_speaker=normalize
        )
