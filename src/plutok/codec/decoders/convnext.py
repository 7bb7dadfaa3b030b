"""The ``convnext-film`` codec decoder: ConvNeXt blocks with FiLM speaker conditioning, upsampled to the mel rate.

::

    code vectors (D, T)
      -> Conv k3 -> blocks x ConvNeXt+FiLM(speaker)                                   25 frames/s
      -> ConvTranspose (x frames_per_code) -> upsampled_blocks x ConvNeXt+FiLM       100 frames/s
      -> LayerNorm -> Conv1x1 -> speaker-normalised log-mel (C_out, frames_per_code T)

Deterministic: one pass, no sampling.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plutok.codec.decoders.base import CodecDecoder
from plutok.layers import ConvNeXtStack, receptive_field
from plutok.parts import settings_from_config
from plutok.settings import ConvNeXtDecoderSettings, SamplingSettings

__all__ = ["ConvNeXtDecoder"]


class ConvNeXtDecoder(CodecDecoder):
    """See the module docstring. The weights of the codec holding it are in ``codec.safetensors``."""

    name = "convnext-film"
    settings_class = ConvNeXtDecoderSettings
    #: Saved without a prefix, under the names the first v2 models' weight files use.
    saved_prefix = ""
    speaker_conditioned = True

    def __init__(self, settings: ConvNeXtDecoderSettings | None = None) -> None:
        super().__init__()
        s = self.settings = settings or ConvNeXtDecoderSettings()
        # Fixed speaker statistics, set from the training data before training.
        self.register_buffer("speaker_mean", torch.zeros(s.speaker_dim))
        self.register_buffer("speaker_std", torch.ones(s.speaker_dim))
        self.decoder_in = nn.Conv1d(s.latent_dim, s.channels, kernel_size=3, padding=1)
        self.decoder = ConvNeXtStack(s.blocks, s.channels, s.kernel_size, s.expansion, s.speaker_dim)
        up = s.frames_per_code
        self.upsample = nn.ConvTranspose1d(
            s.channels, s.upsampled_channels, 2 * up, stride=up, padding=up // 2
        )
        self.upsampled = ConvNeXtStack(
            s.upsampled_blocks, s.upsampled_channels, s.kernel_size, s.expansion, s.speaker_dim
        )
        self.output_norm = nn.LayerNorm(s.upsampled_channels)
        self.to_output = nn.Conv1d(s.upsampled_channels, s.output_dim, kernel_size=1)

    @property
    def latent_dim(self) -> int:
        return self.settings.latent_dim

    @property
    def output_dim(self) -> int:
        return self.settings.output_dim

    @property
    def frames_per_code(self) -> int:
        return self.settings.frames_per_code

    @property
    def context(self) -> int:
        return receptive_field([self.decoder_in, self.decoder, self.upsample, self.upsampled, self.to_output])

    def set_statistics(self, speakers: torch.Tensor) -> None:
        with torch.no_grad():
            self.speaker_mean.copy_(speakers.mean(dim=0))
            self.speaker_std.copy_(speakers.std(dim=0).clamp(min=1e-3))

    def forward(
        self, vectors: torch.Tensor, speaker: torch.Tensor | None, sampling: SamplingSettings | None = None
    ) -> torch.Tensor:
        if speaker is None:
            conditioning = torch.zeros(vectors.shape[0], self.settings.speaker_dim, device=vectors.device)
        else:
            conditioning = (speaker - self.speaker_mean) / self.speaker_std
        hidden = self.decoder(self.decoder_in(vectors), conditioning)
        hidden = self.upsampled(self.upsample(hidden), conditioning)
        hidden = self.output_norm(hidden.transpose(1, 2)).transpose(1, 2)
        return self.to_output(hidden)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.settings)}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> ConvNeXtDecoder:
        return cls(settings_from_config(ConvNeXtDecoderSettings, config, "convnext-film decoder"))
