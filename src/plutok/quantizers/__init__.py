"""Quantizers: latents ``(B, D, T)`` <-> codes ``(B, T)`` (:class:`Quantizer`): VQ (+EMA), FSQ."""

from plutok.quantizers.base import Quantizer, QuantizerOutput

__all__ = ["Quantizer", "QuantizerOutput"]
