"""Network blocks shared by the trained parts (the v2 codec, the iSTFT vocoder), and the one
rule for how far a stack of them looks (:func:`receptive_field`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvNeXtBlock", "ConvNeXtStack", "receptive_field"]


def receptive_field(layers: Iterable[nn.Module | None], multiple: int = 1) -> int:
    """Input steps on each side that one output of ``layers`` (applied in this order) can depend on.

    What every part with convolutions declares as its context (codec encoders in analysis
    frames, decoders in codes, the iSTFT vocoder in frames), so chunked processing equals
    one pass (:mod:`plutok.chunking`). Modules are walked depth first (``None`` is skipped);
    convolutions are assumed centred, as every one here is:

    * ``Conv1d`` of kernel ``k``, dilation ``d``, stride ``s``: ``(k - 1) d / 2`` input steps,
      rounded up to whole outputs (``s`` steps; a patchifying conv, kernel = stride > 1,
      counts one output);
    * ``ConvTranspose1d`` of kernel ``k``, stride ``s``: ``ceil(k / s)`` input steps;
    * strides change the step size of the layers after them; anything else (norms,
      linear layers, activations) is pointwise in time.

    Returns the reach in steps of the first layer's input, rounded up to a multiple of
    ``multiple`` (an encoder's frames per code, so that chunks are cut between codes).
    """
    reach, step = Fraction(0), Fraction(1)
    for module in layers:
        for layer in module.modules() if module is not None else ():
            if isinstance(layer, nn.ConvTranspose1d):
                reach += math.ceil(Fraction(layer.kernel_size[0], layer.stride[0])) * step
                step /= layer.stride[0]
            elif isinstance(layer, nn.Conv1d):
                stride = layer.stride[0]
                spread = (layer.kernel_size[0] - 1) * layer.dilation[0]
                reach += math.ceil(Fraction(spread, 2 * stride)) * stride * step
                step *= stride
    return multiple * math.ceil(reach / multiple)


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
