"""Finite scalar quantization (FSQ, Mentzer et al. 2023): each latent dimension rounded to a few levels.

A ``D = len(levels)`` latent is squashed into ``(-L/2, L/2)`` per dimension with
``tanh`` and rounded (straight-through); the code is the mixed-radix number of
the rounded digits, so ``codebook_size = prod(levels)``. Every code is reachable
and there is no codebook to collapse: no auxiliary loss, no upkeep.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from plutok.errors import ModelError
from plutok.quantizers.base import Quantizer, QuantizerOutput, code_statistics
from plutok.settings import MAX_CODEBOOK_VALUES, MAX_WIDTH, check_size

__all__ = ["FiniteScalarQuantizer"]

_EPSILON = 1e-3


class FiniteScalarQuantizer(Quantizer):
    """FSQ with per-dimension ``levels`` (e.g. ``[8, 5, 5, 5]``: 1000 codes in 4 dimensions)."""

    name = "fsq"

    def __init__(self, levels: list[int]) -> None:
        super().__init__()
        if not isinstance(levels, (list, tuple)) or not 1 <= len(levels) <= MAX_WIDTH:
            raise ModelError(f"FSQ levels must be a list of 1..{MAX_WIDTH} integers, got {levels!r}")
        for level in levels:
            check_size("FSQ quantizer", "each level", level, 2, MAX_CODEBOOK_VALUES)
        if math.prod(levels) > MAX_CODEBOOK_VALUES:
            raise ModelError(f"FSQ levels make {math.prod(levels)} codes; at most {MAX_CODEBOOK_VALUES}")
        self.levels = [int(level) for level in levels]
        levels_tensor = torch.tensor(self.levels, dtype=torch.float32)
        radix = torch.tensor([math.prod(self.levels[:i]) for i in range(len(self.levels))], dtype=torch.int64)
        self.register_buffer("_levels", levels_tensor, persistent=False)
        self.register_buffer("_radix", radix, persistent=False)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    @property
    def dim(self) -> int:
        return len(self.levels)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "levels": list(self.levels)}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> FiniteScalarQuantizer:
        levels = config.get("levels")
        return cls(list(levels) if isinstance(levels, (list, tuple)) else levels)

    def _bound(self, latent: torch.Tensor) -> torch.Tensor:
        """Squash ``(B, D, T)`` so that rounding gives exactly ``levels[d]`` integer values per dimension."""
        levels = self._levels[None, :, None]
        half = (levels - 1) * (1 - _EPSILON) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(latent + shift) * half - offset

    def _digits(self, latent: torch.Tensor) -> torch.Tensor:
        """Integer digits ``(B, D, T)`` in ``[0, levels[d])`` (float, straight-through in training)."""
        bounded = self._bound(latent)
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return rounded + (self._levels[None, :, None] // 2)

    def _vectors(self, digits: torch.Tensor) -> torch.Tensor:
        """Digits -> code vectors in ``[-1, 1]`` per dimension."""
        half_width = self._levels[None, :, None] // 2
        return (digits - half_width) / half_width

    def _codes(self, digits: torch.Tensor) -> torch.Tensor:
        return (digits.round().long() * self._radix[None, :, None]).sum(dim=1)

    def forward(self, latent: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        # Rounding to the levels in float32, also under autocast.
        with torch.autocast(latent.device.type, enabled=False):
            return self._forward(latent.float(), mask)

    def _forward(self, latent: torch.Tensor, mask: torch.Tensor | None) -> QuantizerOutput:
        digits = self._digits(latent)
        codes = self._codes(digits.detach())
        perplexity, usage = code_statistics(codes, self.codebook_size, mask)
        return QuantizerOutput(self._vectors(digits), codes, latent.new_zeros(()), perplexity, usage)

    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        return self._codes(torch.round(self._bound(latent)) + (self._levels[None, :, None] // 2))

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        levels = self._levels.long()[None, :, None]
        digits = (codes[:, None, :] // self._radix[None, :, None]) % levels
        return self._vectors(digits.float())
