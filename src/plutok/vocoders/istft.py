"""A project-trained fast vocoder: ConvNeXt over the log-mel, then an inverse STFT (Vocos-style).

::

    log-mel (80, T), standardised -> Conv1d k7 -> LayerNorm -> blocks x ConvNeXt -> LayerNorm
      -> Linear -> log-magnitude and phase of n_fft // 2 + 1 bins per frame
      -> inverse STFT (window n_fft, hop 160, "same" framing) -> (T * 160,) samples

Nothing runs at the sample rate: the network works at 100 frames/s and the
inverse FFT makes the waveform, which is why it is orders of magnitude cheaper
than HiFi-GAN's transposed convolutions. The STFT frames are aligned with the
log-mel's (frame ``t`` centred on sample ``t * hop + hop / 2``), so the network
learns no shift. Trained by distillation from the packaged HiFi-GAN
(:mod:`plutok.training.vocoder`, objective
:class:`~plutok.training.objectives.ISTFTDistillationObjective`): its waveforms are the
targets, compared in the vocoder's own STFT domain (which, unlike real audio, makes
phase a well-posed regression target) and by multi-resolution STFT losses.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plutok.chunking import chunked_apply
from plutok.digests import state_dict_sha256
from plutok.errors import ModelError
from plutok.layers import ConvNeXtStack, receptive_field
from plutok.parts import settings_from_config
from plutok.settings import ISTFTVocoderSettings
from plutok.vocoders.base import Vocoder
from plutok.weights import load_module_weights, save_module_weights

__all__ = ["ISTFTNet", "ISTFTVocoder", "ISTFTVocoderSettings", "istft_same", "stft_same"]

WEIGHTS_FILE = "vocoder.safetensors"
# Log-magnitudes are clamped here before exp(): an untrained or out-of-range input
# cannot produce inf samples.
_MAX_LOG_MAGNITUDE = 7.0


def stft_same(wave: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Complex STFT ``(B, n_fft // 2 + 1, N // hop)`` of ``(B, N)``, frame ``t`` centred on ``t * hop + hop / 2``."""
    pad = (n_fft - hop) // 2
    frames = wave.shape[-1] // hop
    padded = F.pad(wave[..., : frames * hop], (pad, pad))
    return torch.stft(padded, n_fft, hop, win_length=n_fft, window=window, center=False, return_complex=True)


def istft_same(spectrum: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`stft_same` (weighted overlap-add): ``(B, F, T)`` complex -> ``(B, T * hop)``."""
    pad = (n_fft - hop) // 2
    frames = spectrum.shape[-1]
    pieces = torch.fft.irfft(spectrum, n=n_fft, dim=1) * window[None, :, None]  # (B, n_fft, T)
    length = (frames - 1) * hop + n_fft
    fold = dict(output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop))
    wave = F.fold(pieces, **fold)[:, 0, 0]
    envelope = F.fold(window.square()[None, :, None].expand(1, n_fft, frames), **fold)[0, 0, 0]
    wave = wave / envelope.clamp(min=1e-8)
    return wave[:, pad : length - pad]


class ISTFTNet(nn.Module):
    """The network; see the module docstring. ``forward``: log-mel ``(B, n_mels, T)`` -> ``(B, T * hop)``."""

    def __init__(self, settings: ISTFTVocoderSettings | None = None) -> None:
        super().__init__()
        s = self.settings = settings or ISTFTVocoderSettings()
        self.register_buffer("mel_mean", torch.zeros(s.n_mels, 1))
        self.register_buffer("mel_std", torch.ones(s.n_mels, 1))
        self.register_buffer("window", torch.hann_window(s.n_fft), persistent=False)
        self.embed = nn.Conv1d(s.n_mels, s.channels, s.kernel_size, padding=s.kernel_size // 2)
        self.embed_norm = nn.LayerNorm(s.channels)
        self.blocks = ConvNeXtStack(s.blocks, s.channels, s.kernel_size, s.expansion)
        self.output_norm = nn.LayerNorm(s.channels)
        self.bins = s.n_fft // 2 + 1
        self.head = nn.Linear(s.channels, 2 * self.bins)

    def config(self) -> dict[str, Any]:
        return asdict(self.settings)

    @property
    def context_frames(self) -> int:
        """Frames each side that change an output frame: the convolutions' reach + the window overlap."""
        s = self.settings
        return receptive_field([self.embed, self.blocks]) + -(-s.n_fft // (2 * s.hop_length))

    def set_statistics(self, log_mel: torch.Tensor) -> None:
        """Fix the input standardisation from training frames ``(n_mels, N)``."""
        with torch.no_grad():
            self.mel_mean.copy_(log_mel.mean(dim=1, keepdim=True))
            self.mel_std.copy_(log_mel.std(dim=1, keepdim=True).clamp(min=1e-3))

    def spectrum(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Complex STFT ``(B, n_fft // 2 + 1, T)`` of the waveform for log-mel ``(B, n_mels, T)``."""
        hidden = self.embed((log_mel - self.mel_mean) / self.mel_std)
        hidden = self.embed_norm(hidden.transpose(1, 2)).transpose(1, 2)
        hidden = self.blocks(hidden)
        output = self.head(self.output_norm(hidden.transpose(1, 2))).transpose(1, 2)
        log_magnitude, phase = output.float().split(self.bins, dim=1)
        magnitude = torch.exp(log_magnitude.clamp(max=_MAX_LOG_MAGNITUDE))
        return torch.polar(magnitude, phase)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        s = self.settings
        return istft_same(self.spectrum(log_mel), s.n_fft, s.hop_length, self.window)


class ISTFTVocoder(Vocoder):
    """The :class:`ISTFTNet` as a model part: weights in ``vocoder.safetensors`` of the model directory."""

    name = "istft-16k"

    def __init__(self, settings: ISTFTVocoderSettings | None = None, net: ISTFTNet | None = None) -> None:
        self.net = (net if net is not None else ISTFTNet(settings)).eval()
        self.settings = self.net.settings
        self.device = "cpu"

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
    def context_frames(self) -> int:
        return self.net.context_frames

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.settings)}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> ISTFTVocoder:
        vocoder = cls(settings_from_config(ISTFTVocoderSettings, config, "istft vocoder"))
        if directory is not None:
            vocoder.load_weights(Path(directory) / WEIGHTS_FILE)
        return vocoder

    def weights_digest(self) -> str:
        return state_dict_sha256(self.net.state_dict())

    def save_weights(self, directory: Path) -> None:
        save_module_weights(self.net, Path(directory) / WEIGHTS_FILE)

    def load_weights(self, path: Path) -> None:
        load_module_weights(self.net, path, "istft vocoder")

    def to(self, device: str) -> ISTFTVocoder:
        self.device = device
        self.net.to(device)
        return self

    def synthesize(
        self, features: np.ndarray, speaker: np.ndarray | None = None, chunk_frames: int | None = None
    ) -> np.ndarray:
        """Waveform ``(frames * hop,)`` float32 of a log-mel ``(n_mels, frames)``; chunked with full context."""
        log_mel = np.asarray(features, dtype=np.float32)
        if log_mel.ndim != 2 or log_mel.shape[0] != self.feature_dim:
            raise ModelError(f"expected log-mel of shape ({self.feature_dim}, frames), got {log_mel.shape}")
        if log_mel.shape[1] == 0:
            return np.zeros(0, dtype=np.float32)

        def window(begin: int, end: int) -> np.ndarray:
            with torch.inference_mode():
                batch = torch.from_numpy(np.ascontiguousarray(log_mel[:, begin:end]))[None].to(self.device)
                return self.net(batch)[0].float().cpu().numpy()

        return chunked_apply(
            window,
            log_mel.shape[1],
            chunk_frames,
            self.context_frames,
            outputs_per_step=self.hop_length,
            label="vocoder",
        )
