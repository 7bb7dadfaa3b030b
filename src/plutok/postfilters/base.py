"""The post-filter contract (docs/architecture.md, "Contracts")."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from plutok.parts import Part

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
