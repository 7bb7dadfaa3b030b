"""Codec contract: analysis features -> codes -> synthesis features (docs/architecture.md, "Data flow").

A codec is an encoder, a :class:`~plutok.quantizers.Quantizer` and a decoder
(for the ``content`` codec, each a registered part: :mod:`plutok.codec.encoders`,
:mod:`plutok.codec.decoders`). Its input (analysis features, ``(C_in, T_in)``) and its output
(synthesis features, ``(C_out, T_out)``) may differ in dimension and frame rate;
``analysis_frames_per_code`` and ``synthesis_frames_per_code`` relate both to the
codes. It holds forward passes only (its training objective lives in
:mod:`plutok.training.objectives`) and declares its receptive field, which :meth:`encode_long`/:meth:`decode_long` use to process long input in
chunks equal to one pass (an attention or flow decoder must declare its own).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, fields
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from plutok.chunking import chunked_apply
from plutok.errors import AudioError, ModelError, TokenError
from plutok.parts import Part
from plutok.settings import SamplingSettings

__all__ = ["Codec", "CodecBatch", "check_codes", "check_features"]


@dataclass
class CodecBatch:
    """A training batch (torch tensors, batch first).

    Attributes:
        analysis: ``(B, C_in, T_in)`` codec input.
        target: ``(B, C_out, T_out)`` synthesis features to predict.
        speaker: ``(B, speaker_dim)`` speaker vectors.
        code_mask: ``(B, codes)`` 1 for real codes, 0 for padding.
        phonemes: ``(B, L)`` int64 phoneme class ids (1-based, 0-padded) of the rows whose
            segment is a whole utterance, for a CTC content objective; ``None`` without labels.
        phoneme_lengths: ``(B,)`` int64 number of ids per row (0: no labels for that row).
        target_scale, target_offset: ``(B, C_out, 1)``: the speaker normalisation undone,
            ``target * target_scale + target_offset`` is the row's log-mel as computed
            (natural log of the mel magnitude); ``None`` when the batch does not carry them.
        utterance, utterance_active: each row's whole utterance (up to a cap), speaker-normalised
            log-mel ``(B, C_out, frames)`` zero-padded, and its active frames ``(B, frames)``
            (1 where the speaker statistics count the frame): what a learned speaker encoder
            reads (:mod:`plutok.training.speaker`); ``None`` otherwise.
    """

    analysis: torch.Tensor
    target: torch.Tensor
    speaker: torch.Tensor
    code_mask: torch.Tensor
    phonemes: torch.Tensor | None = None
    phoneme_lengths: torch.Tensor | None = None
    target_scale: torch.Tensor | None = None
    target_offset: torch.Tensor | None = None
    utterance: torch.Tensor | None = None
    utterance_active: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> CodecBatch:
        return CodecBatch(
            *(
                None if value is None else value.to(device)
                for value in (getattr(self, field.name) for field in fields(self))
            )
        )


def check_features(
    features: object, channels: int, min_frames: int, owner: str = "codec", source: str = "frontend"
) -> np.ndarray:
    """Validate ``(channels, frames)`` features for an encoder; returns them as a numpy array.

    Raises:
        AudioError: not 2-D, fewer than ``min_frames`` frames (one code), NaN/inf or non-numeric.
        ModelError: another number of channels (features of another ``source``).
    """
    array = np.asarray(features)
    if array.ndim != 2:
        raise AudioError(f"features must be a (channels, frames) array, got shape {array.shape}")
    if array.shape[0] != channels:
        raise ModelError(
            f"features have {array.shape[0]} channels but this {owner} expects {channels}"
            f" (features from a different {source}?)"
        )
    if array.shape[1] < min_frames:
        raise AudioError(
            f"too short: {array.shape[1]} feature frames, need at least {min_frames} for one code"
        )
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise AudioError("features contain NaN, inf or non-numeric values")
    return array


def check_codes(codes: object, codebook_size: int) -> np.ndarray:
    """Validate codes and return them as int64 ``(N,)``; raises :class:`TokenError`."""
    array = np.asarray(codes)
    if array.ndim != 1:
        raise TokenError(f"codes must be a 1-D sequence, got shape {array.shape}")
    if array.size == 0:
        raise TokenError("no codes to decode (empty code sequence)")
    if array.dtype.kind not in "iu":
        if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all():
            array = array.astype(np.int64)
        else:
            raise TokenError(f"codes must be integers, got dtype {array.dtype}")
    bad = np.flatnonzero((array < 0) | (array >= codebook_size))
    if bad.size:
        position = int(bad[0])
        raise TokenError(
            f"code {int(array[position])} at position {position} is outside [0, {codebook_size})"
            f" ({bad.size} invalid code(s) in total)"
        )
    return array.astype(np.int64)


class Codec(nn.Module, Part):
    """Encoder + quantizer + decoder over frame features; numpy in and out at the API level."""

    #: The decoder reads the speaker vector.
    speaker_conditioned: bool = False

    @property
    @abstractmethod
    def input_dim(self) -> int:
        """Channels ``C_in`` of the analysis features."""

    @property
    @abstractmethod
    def output_dim(self) -> int:
        """Channels ``C_out`` of the synthesis features."""

    @property
    @abstractmethod
    def codebook_size(self) -> int:
        """Valid codes are ``0 .. codebook_size - 1``."""

    @property
    @abstractmethod
    def analysis_frames_per_code(self) -> int:
        """Analysis frames per code (the encoder's downsampling)."""

    @property
    @abstractmethod
    def synthesis_frames_per_code(self) -> int:
        """Synthesis frames each code decodes to (the decoder's upsampling)."""

    @property
    @abstractmethod
    def encoder_context(self) -> int:
        """Analysis frames, each side, that one code depends on (a multiple of ``analysis_frames_per_code``)."""

    @property
    @abstractmethod
    def decoder_context(self) -> int:
        """Codes, each side, that one decoded frame depends on."""

    @abstractmethod
    def encode_tensor(self, analysis: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, ceil(T_in / analysis_frames_per_code))`` of ``(B, C_in, T_in)``."""

    @abstractmethod
    def decode_tensor(
        self, codes: torch.Tensor, speaker: torch.Tensor | None, sampling: SamplingSettings | None = None
    ) -> torch.Tensor:
        """Synthesis features ``(B, C_out, N * synthesis_frames_per_code)`` of codes ``(B, N)``.

        ``sampling``: steps and seed of a sampling decoder (``None``: its defaults; a
        deterministic decoder ignores it).
        """

    def set_statistics(self, analysis: torch.Tensor, speakers: torch.Tensor) -> None:  # noqa: B027 - optional hook
        """Fix input standardisations from training data (analysis ``(C_in, N)``, speakers ``(M, speaker_dim)``)."""

    # -- numpy API ------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def num_codes(self, analysis_frames: int) -> int:
        return -(-analysis_frames // self.analysis_frames_per_code)

    @torch.no_grad()
    def encode(self, analysis: np.ndarray) -> np.ndarray:
        """Codes int64 ``(ceil(T_in / analysis_frames_per_code),)`` of one utterance ``(C_in, T_in)``.

        Raises:
            AudioError: too few frames for one code, or NaN/inf values.
            ModelError: the features have the wrong number of channels.
        """
        array = check_features(analysis, self.input_dim, self.analysis_frames_per_code)
        was_training = self.training
        self.eval()
        try:
            tensor = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32), device=self._device())
            codes = self.encode_tensor(tensor[None])[0]
        finally:
            self.train(was_training)
        return codes.cpu().numpy().astype(np.int64)

    @torch.no_grad()
    def decode(
        self, codes: object, speaker: np.ndarray | None = None, sampling: SamplingSettings | None = None
    ) -> np.ndarray:
        """Synthesis features float32 ``(C_out, N * synthesis_frames_per_code)`` of codes ``(N,)``.

        Raises:
            TokenError: empty input, wrong shape or type, or a code out of range.
        """
        array = check_codes(codes, self.codebook_size)
        was_training = self.training
        self.eval()
        try:
            device = self._device()
            tensor = torch.as_tensor(array, device=device)[None]
            vector = None
            if speaker is not None and self.speaker_conditioned:
                vector = torch.as_tensor(np.asarray(speaker, dtype=np.float32), device=device)[None]
            decoded = self.decode_tensor(tensor, vector, sampling)
        finally:
            self.train(was_training)
        return decoded[0].float().cpu().numpy()

    def encode_long(self, analysis: np.ndarray, chunk_codes: int | None) -> np.ndarray:
        """:meth:`encode` over chunks of ``chunk_codes`` codes with ``encoder_context`` (same codes)."""
        step = self.analysis_frames_per_code
        chunk = None if chunk_codes is None else chunk_codes * step
        return chunked_apply(
            lambda begin, end: self.encode(analysis[:, begin:end]),
            analysis.shape[1],
            chunk,
            self.encoder_context,
            Fraction(1, step),
        )

    def decode_long(
        self,
        codes: np.ndarray,
        speaker: np.ndarray | None,
        chunk_codes: int | None,
        sampling: SamplingSettings | None = None,
    ) -> np.ndarray:
        """:meth:`decode` over chunks of ``chunk_codes`` codes with ``decoder_context`` of them."""
        return chunked_apply(
            lambda begin, end: self.decode(codes[begin:end], speaker, sampling),
            codes.shape[0],
            chunk_codes,
            self.decoder_context,
            self.synthesis_frames_per_code,
        )
