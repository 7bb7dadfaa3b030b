"""Vocoders: synthesis features -> waveform (:class:`Vocoder`)."""

from plutok.vocoders.base import Vocoder

__all__ = ["Vocoder"]
