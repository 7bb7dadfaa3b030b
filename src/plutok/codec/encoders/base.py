"""Codec encoder contract: analysis features ``(B, C_in, T_in)`` -> latents ``(B, D, T_codes)``.

The quantizer (:mod:`plutok.quantizers`) turns the latents into codes. An encoder
declares its receptive field (:attr:`CodecEncoder.context`), which chunked encoding
uses to give the codes of one pass.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn

from plutok.parts import Part

__all__ = ["CodecEncoder"]


class CodecEncoder(nn.Module, Part):
    """Analysis features to latents, ``frames_per_code`` analysis frames per latent frame.

    ``settings_class``: the dataclass of its settings (its config section without ``name``),
    from which ``plutok train-codec`` makes its ``--encoder-*`` options. ``saved_prefix``:
    how its weights are named in the codec's weight file (``"encoder."`` + its own names).
    """

    settings_class: type
    saved_prefix: str = "encoder."

    @property
    @abstractmethod
    def input_dim(self) -> int:
        """Channels ``C_in`` of the analysis features."""

    @property
    @abstractmethod
    def latent_dim(self) -> int:
        """Channels ``D`` of the latents (the quantizer's dimension)."""

    @property
    @abstractmethod
    def frames_per_code(self) -> int:
        """Analysis frames per code (the downsampling)."""

    @property
    @abstractmethod
    def context(self) -> int:
        """Analysis frames, each side, that one latent frame depends on (a multiple of ``frames_per_code``)."""

    @abstractmethod
    def forward(self, analysis: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, latent_dim, ceil(T_in / frames_per_code))`` of analysis ``(B, C_in, T_in)``."""

    def set_statistics(self, analysis: torch.Tensor) -> None:  # noqa: B027 - optional hook
        """Fix an input standardisation from training frames ``(C_in, N)`` (called once, before training)."""

    def standardize(self, analysis: torch.Tensor) -> torch.Tensor:
        """The analysis ``(B, C_in, T)`` as the encoder sees it (standardised; identity by default)."""
        return analysis

    def unstandardize(self, standardised: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`standardize` for the first ``C`` channels of ``(B, C, T)``."""
        return standardised
