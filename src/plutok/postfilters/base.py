"""The post-filter contract (docs/architecture.md, "Contracts")."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING

import numpy as np

from plutok.parts import Part

if TYPE_CHECKING:
    import torch

__all__ = ["Postfilter"]


class Postfilter(Part):
    """A transform of codec decoder output ``(C_out, frames)`` that treats every frame alike.

    Pointwise in time by contract (no context), so it commutes with the chunking of the
    decode path; it must keep shape and dtype (float32).
    """

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """Channels ``C_out`` it reads (the codec decoder's output channels)."""

    @abstractmethod
    def apply(self, features: np.ndarray) -> np.ndarray:
        """Filtered features, float32 ``(C_out, frames)`` of float32 ``(C_out, frames)``."""

    @abstractmethod
    def apply_tensor(self, features: torch.Tensor) -> torch.Tensor:
        """:meth:`apply` in torch, differentiable, on a batch ``(B, C_out, frames)`` of any float dtype.

        What code search (:mod:`plutok.codec.search`) compares with the audio: the decoder's
        output as the vocoder will read it.
        """
