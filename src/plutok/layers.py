"""Network blocks shared by the trained parts (the v2 codec, the iSTFT vocoder)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvNeXtBlock", "ConvNeXtStack"]


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> LayerNorm (+ FiLM from the speaker) -> pointwise MLP, residual."""

    def __init__(self, channels: int, kernel_size: int, expansion: int, speaker_dim: int = 0) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.film = nn.Linear(speaker_dim, 2 * channels) if speaker_dim else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        self.expand = nn.Linear(channels, expansion * channels)
        self.project = nn.Linear(expansion * channels, channels)

    def forward(self, x: torch.Tensor, speaker: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.norm(self.depthwise(x).transpose(1, 2))  # (B, T, C)
        if self.film is not None and speaker is not None:
            scale, shift = self.film(speaker)[:, None].chunk(2, dim=-1)
            hidden = hidden * (1 + scale) + shift
        hidden = self.project(F.gelu(self.expand(hidden)))
        return x + hidden.transpose(1, 2)


class ConvNeXtStack(nn.Module):
    """``count`` :class:`ConvNeXtBlock` in a row, all FiLM-conditioned on the same vector (if any)."""

    def __init__(
        self, count: int, channels: int, kernel_size: int, expansion: int, speaker_dim: int = 0
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(channels, kernel_size, expansion, speaker_dim) for _ in range(count)
        )

    def forward(self, x: torch.Tensor, speaker: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, speaker)
        return x
