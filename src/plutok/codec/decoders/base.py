"""Codec decoder contract: code vectors ``(B, D, T)`` (+ speaker) -> synthesis features ``(B, C_out, F T)``.

A decoder declares its receptive field in codes (:attr:`CodecDecoder.context`), which
chunked and streaming decoding use, and whether it samples: a deterministic decoder
(the default) ignores :class:`~plutok.settings.SamplingSettings`; a sampling decoder
(flow matching, diffusion) reads ``steps`` and ``seed`` from it, so that the same
codes, speaker and settings always give the same features.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn

from plutok.parts import Part
from plutok.settings import SamplingSettings

__all__ = ["CodecDecoder", "SamplingSettings"]


class CodecDecoder(nn.Module, Part):
    """Code vectors to synthesis features, ``frames_per_code`` frames per code, speaker-conditioned or not.

    ``settings_class``: the dataclass of its settings (its config section without ``name``),
    from which ``plutok train-codec`` makes its ``--decoder-*`` options. ``saved_prefix``:
    how its weights are named in the codec's weight file (``"decoder."`` + its own names).
    """

    settings_class: type
    saved_prefix: str = "decoder."
    #: Reads the speaker vector.
    speaker_conditioned: bool = False
    #: Draws noise: :meth:`forward` takes ``steps`` and ``seed`` from its ``sampling`` argument.
    samples: bool = False

    @property
    @abstractmethod
    def latent_dim(self) -> int:
        """Channels ``D`` of the code vectors (the quantizer's dimension)."""

    @property
    @abstractmethod
    def output_dim(self) -> int:
        """Channels ``C_out`` of the synthesis features."""

    @property
    @abstractmethod
    def frames_per_code(self) -> int:
        """Synthesis frames each code decodes to (the upsampling ``F``)."""

    @property
    @abstractmethod
    def context(self) -> int:
        """Codes, each side, that one decoded frame depends on."""

    @abstractmethod
    def forward(
        self, vectors: torch.Tensor, speaker: torch.Tensor | None, sampling: SamplingSettings | None = None
    ) -> torch.Tensor:
        """Synthesis features ``(B, C_out, T * frames_per_code)`` of code vectors ``(B, D, T)``.

        ``speaker``: ``(B, speaker_dim)`` speaker vectors as the speaker encoder gives them
        (``None``: the average voice); ``sampling``: ``None`` is ``SamplingSettings()``.
        """

    def set_statistics(self, speakers: torch.Tensor) -> None:  # noqa: B027 - optional hook
        """Fix a speaker standardisation from training speaker vectors ``(M, speaker_dim)`` (once, before training)."""
