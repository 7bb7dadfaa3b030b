"""The ``convnext`` codec encoder: standardise -> strided Conv -> ConvNeXt blocks -> LayerNorm -> Conv1x1.

::

    analysis (C_in, T)  -- e.g. Whisper-base encoder output at 25 frames/s
      standardise -> Conv (kernel = stride = frames_per_code) -> blocks x ConvNeXt
      -> LayerNorm -> Conv1x1 -> latent (latent_dim, ceil(T / frames_per_code))
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from plutok.codec.encoders.base import CodecEncoder
from plutok.layers import ConvNeXtStack, receptive_field
from plutok.parts import settings_from_config
from plutok.settings import ConvNeXtEncoderSettings

__all__ = ["ConvNeXtEncoder"]


class ConvNeXtEncoder(CodecEncoder):
    """See the module docstring. The weights of the codec holding it are in ``codec.safetensors``."""

    name = "convnext"
    settings_class = ConvNeXtEncoderSettings
    #: Saved without a prefix, under the names the first v2 models' weight files use.
    saved_prefix = ""

    def __init__(self, settings: ConvNeXtEncoderSettings | None = None) -> None:
        super().__init__()
        s = self.settings = settings or ConvNeXtEncoderSettings()
        # Fixed input statistics, set from the training data before training.
        self.register_buffer("analysis_mean", torch.zeros(s.input_dim, 1))
        self.register_buffer("analysis_std", torch.ones(s.input_dim, 1))
        stride = s.frames_per_code
        self.encoder_in = nn.Conv1d(s.input_dim, s.channels, kernel_size=stride, stride=stride)
        self.encoder = ConvNeXtStack(s.blocks, s.channels, s.kernel_size, s.expansion)
        self.encoder_norm = nn.LayerNorm(s.channels)
        self.to_latent = nn.Conv1d(s.channels, s.latent_dim, kernel_size=1)

    @property
    def input_dim(self) -> int:
        return self.settings.input_dim

    @property
    def latent_dim(self) -> int:
        return self.settings.latent_dim

    @property
    def frames_per_code(self) -> int:
        return self.settings.frames_per_code

    @property
    def context(self) -> int:
        return receptive_field([self.encoder_in, self.encoder, self.to_latent], self.frames_per_code)

    def set_statistics(self, analysis: torch.Tensor) -> None:
        with torch.no_grad():
            self.analysis_mean.copy_(analysis.mean(dim=1, keepdim=True))
            self.analysis_std.copy_(analysis.std(dim=1, keepdim=True).clamp(min=1e-3))

    def standardize(self, analysis: torch.Tensor) -> torch.Tensor:
        channels = analysis.shape[1]
        return (analysis - self.analysis_mean[:channels]) / self.analysis_std[:channels]

    def unstandardize(self, standardised: torch.Tensor) -> torch.Tensor:
        channels = standardised.shape[1]
        return standardised * self.analysis_std[:channels] + self.analysis_mean[:channels]

    def forward(self, analysis: torch.Tensor) -> torch.Tensor:
        frames = analysis.shape[-1]
        stride = self.frames_per_code
        if frames % stride:
            analysis = F.pad(analysis, (0, stride - frames % stride))
        hidden = self.encoder(self.encoder_in((analysis - self.analysis_mean) / self.analysis_std))
        hidden = self.encoder_norm(hidden.transpose(1, 2)).transpose(1, 2)
        return self.to_latent(hidden)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.settings)}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> ConvNeXtEncoder:
        return cls(settings_from_config(ConvNeXtEncoderSettings, config, "convnext encoder"))
