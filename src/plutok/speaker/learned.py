"""``learned-mel``: log-mel statistics plus a few values a network learns with the decoder.

The vector is ``[mel statistics (coefficients + std_coefficients) | learned (learned_dim)]``.
The statistics part is :class:`~plutok.speaker.mel_statistics.MelStatisticsSpeaker`'s
(with fewer log-std coefficients, to make room) and does the speaker normalisation, as
before. The learned part is what :class:`SpeakerNetwork` makes of the whole utterance's
speaker-normalised log-mel: two convolutions, mean and standard deviation over the
active frames, a linear map and ``tanh`` (values in ``(-1, 1)``, safe as float16). It is
trained with the codec decoder (``plutok train-codec --speaker``,
:mod:`plutok.training.speaker`) to carry what the decoder misses from the codes and the
statistics: an utterance-level summary in the spirit of global style tokens. The default
``16 + 8 + 8`` values are 32 float16 numbers: 512 bits per utterance, the budget of the
statistics-only vector it replaces.

The network computes in float64 at encode time, in blocks with the convolutions' full
context, so the vector does not depend on how long audio is cut or on the CPU's kernels
beyond float64 rounding (float16 storage rounds that away).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from plutok.digests import state_dict_sha256
from plutok.errors import ModelError
from plutok.frontends.mel import ANALYSIS_BLOCK_FRAMES, MelSettings
from plutok.parts import settings_from_config
from plutok.settings import MAX_WIDTH, check_size
from plutok.speaker.base import SpeakerEncoder
from plutok.speaker.mel_statistics import MelStatisticsSpeaker, active_frames
from plutok.weights import load_module_weights, save_module_weights

__all__ = ["LearnedMelSpeaker", "SpeakerNetwork"]

WEIGHTS_FILE = "speaker.safetensors"
_KERNEL = 5
_DILATION = 2
#: The projection's bias at the start: every learned value starts at tanh(0.1).
_START = 0.1


class SpeakerNetwork(nn.Module):
    """Speaker-normalised log-mel ``(B, n_mels, T)`` + active frames ``(B, T)`` -> ``(B, learned_dim)`` in (-1, 1)."""

    #: Frames of context each side one output frame of the convolutions reads.
    context = (_KERNEL // 2) * (1 + _DILATION)

    def __init__(self, n_mels: int, channels: int, learned_dim: int) -> None:
        super().__init__()
        self.convolutions = nn.Sequential(
            nn.Conv1d(n_mels, channels, _KERNEL, padding=_KERNEL // 2),
            nn.GELU(),
            nn.Conv1d(channels, channels, _KERNEL, padding=_DILATION * (_KERNEL // 2), dilation=_DILATION),
            nn.GELU(),
        )
        self.project = nn.Linear(2 * channels, learned_dim)
        # The same small value for every utterance at the start: a decoder trained without
        # the learned values starts close to where it was. Not zero: a decoder whose speaker
        # conditioning starts at zero (FiLM) would then give these values no gradient, ever.
        nn.init.zeros_(self.project.weight)
        nn.init.constant_(self.project.bias, _START)

    def forward(self, normalized: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        hidden = self.convolutions(normalized)
        weights = active[:, None, :].to(hidden.dtype)
        count = weights.sum(dim=-1).clamp(min=1)
        return self.pooled(
            (hidden * weights).sum(dim=-1) / count,
            (hidden.square() * weights).sum(dim=-1) / count,
        )

    def pooled(self, mean: torch.Tensor, mean_square: torch.Tensor) -> torch.Tensor:
        """The learned values from the hidden channels' mean and mean square over active frames ``(B, channels)``."""
        return torch.tanh(self.project(pooled_features(mean, mean_square)))


def pooled_features(mean: torch.Tensor, mean_square: torch.Tensor) -> torch.Tensor:
    """``(B, 2 channels)``: the channels' mean and standard deviation over the active frames."""
    std = (mean_square - mean.square()).clamp(min=0).add(1e-5).sqrt()
    return torch.cat([mean, std], dim=-1)


class LearnedMelSpeaker(SpeakerEncoder):
    """See the module docstring. Weights in ``speaker.safetensors`` of the model directory."""

    name = "learned-mel"

    def __init__(
        self,
        settings: MelSettings | None = None,
        coefficients: int = 16,
        std_coefficients: int = 8,
        learned_dim: int = 8,
        channels: int = 128,
    ) -> None:
        self.statistics = MelStatisticsSpeaker(settings, coefficients, std_coefficients)
        self.settings = self.statistics.settings
        #: The log-mel it reads (what copy-synthesis and the cache use of a mel speaker encoder).
        self.log_mel = self.statistics.log_mel
        self.learned_dim = check_size("learned-mel speaker", "learned_dim", learned_dim, 1, MAX_WIDTH)
        self.channels = check_size("learned-mel speaker", "channels", channels, 1, MAX_WIDTH)
        self.initialize()

    def initialize(self) -> None:
        """Fresh, untrained network weights, drawn from torch's global random state."""
        self.network = SpeakerNetwork(self.settings.n_mels, self.channels, self.learned_dim).eval()
        #: False until weights are loaded or trained: ``embed`` refuses to make vectors before.
        self.trained = False

    @property
    def sample_rate(self) -> int:
        return self.settings.sample_rate

    @property
    def statistics_dim(self) -> int:
        """Leading values of the vector that are mel statistics (the rest are learned)."""
        return self.statistics.speaker_dim

    @property
    def speaker_dim(self) -> int:
        return self.statistics_dim + self.learned_dim

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **asdict(self.settings),
            "coefficients": self.statistics.coefficients,
            "std_coefficients": self.statistics.std_coefficients,
            "learned_dim": self.learned_dim,
            "channels": self.channels,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> LearnedMelSpeaker:
        values = dict(config)
        sizes = {
            key: values.pop(key)
            for key in ("coefficients", "std_coefficients", "learned_dim", "channels")
            if key in values
        }
        speaker = cls(settings_from_config(MelSettings, values, "learned-mel speaker"), **sizes)
        if directory is not None:
            load_module_weights(speaker.network, Path(directory) / WEIGHTS_FILE, "learned-mel speaker")
            speaker.trained = True
        return speaker

    def weights_digest(self) -> str:
        return state_dict_sha256(self.network.state_dict())

    def save_weights(self, directory: Path) -> None:
        save_module_weights(self.network, Path(directory) / WEIGHTS_FILE)

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """``(speaker_dim,)``: the statistics of the waveform's log-mel, then the network's values.

        The whole log-mel is held (230 MB for 2 h of audio); the network reads it in blocks of
        :data:`~plutok.frontends.mel.ANALYSIS_BLOCK_FRAMES` frames plus its context, summing
        in float64, which equals one pass over the whole.
        """
        if not self.trained:
            raise ModelError(
                "this learned-mel speaker encoder has no trained weights: train it with "
                "'plutok train-codec --speaker' and load it from the model folder"
            )
        log_mel = self.log_mel(np.asarray(wav, dtype=np.float32))
        statistics = self.statistics.from_log_mel(log_mel)
        normalized = self.statistics.normalize(log_mel, statistics).astype(np.float64)
        active = active_frames(log_mel.mean(axis=0))
        return np.concatenate([statistics, self.learned_values(normalized, active)]).astype(np.float32)

    @torch.no_grad()
    def learned_values(self, normalized: np.ndarray, active: np.ndarray) -> np.ndarray:
        """The learned part ``(learned_dim,)`` float64 of a speaker-normalised log-mel ``(n_mels, T)``
        and its active frames ``(T,)``."""
        # float64 copies of the weights for this call: the module itself stays float32 and
        # untouched, so encodes in several threads can share it.
        convolutions, project = (
            {key: value.double() for key, value in module.state_dict().items()}
            for module in (self.network.convolutions, self.network.project)
        )
        context = SpeakerNetwork.context
        frames = normalized.shape[1]
        first_moment = torch.zeros(self.channels, dtype=torch.float64)
        second_moment = torch.zeros(self.channels, dtype=torch.float64)
        for start in range(0, frames, ANALYSIS_BLOCK_FRAMES):
            stop = min(frames, start + ANALYSIS_BLOCK_FRAMES)
            begin, end = max(0, start - context), min(frames, stop + context)
            block = torch.from_numpy(np.ascontiguousarray(normalized[:, begin:end], dtype=np.float64))[None]
            hidden = functional_call(self.network.convolutions, convolutions, (block,), strict=True)
            hidden = hidden[0, :, start - begin : stop - begin]
            mask = torch.from_numpy(active[start:stop].astype(np.float64))
            first_moment += (hidden * mask).sum(dim=-1)
            second_moment += (hidden.square() * mask).sum(dim=-1)
        count = max(1.0, float(np.count_nonzero(active)))
        features = pooled_features(first_moment[None] / count, second_moment[None] / count)
        return torch.tanh(functional_call(self.network.project, project, (features,), strict=True))[0].numpy()

    def normalize(self, features: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        return self.statistics.normalize(features, np.asarray(speaker).reshape(-1)[: self.statistics_dim])

    def denormalize(self, features: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        return self.statistics.denormalize(features, np.asarray(speaker).reshape(-1)[: self.statistics_dim])

    def denormalize_tensor(self, features: Any, speaker: Any) -> Any:
        return self.statistics.denormalize_tensor(features, speaker[:, : self.statistics_dim])
