"""Frontends: frozen feature extractors, waveform -> analysis features ``(C_in, T_in)`` (:class:`Frontend`)."""

from plutok.frontends.base import Frontend

__all__ = ["Frontend"]
