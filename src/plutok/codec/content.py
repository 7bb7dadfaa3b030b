"""The v2 codec: content features in, speaker-conditioned log-mel out (why: docs/architecture.md, "Facts the code relies on").

::

    analysis (C_in, T)  -- e.g. Whisper-base encoder output at 25 frames/s
      standardise -> Conv1x1 -> encoder_blocks x ConvNeXt -> Conv1x1 -> quantizer (FSQ or VQ) -> codes (T,)
    codes -> code vectors (D, T)
      -> Conv1x1 -> decoder_blocks x ConvNeXt+FiLM(speaker)                  25 frames/s
      -> ConvTranspose (x synthesis_frames_per_code) -> upsampled_blocks x ConvNeXt+FiLM   100 frames/s
      -> Conv1x1 -> speaker-normalised log-mel (C_out, 4 T)
    code vectors -> content head (2 x ConvNeXt) -> standardised analysis features (content_dim, T)

The content head predicts the standardised analysis features from the code vectors: "ASR
from codes" (its output, unstandardised, is what Whisper's decoder would read). With
``phoneme_symbols`` a second head (2 ConvNeXt blocks, two frames per code) reads the
utterance's espeak-ng phonemes from the code vectors (:meth:`ContentCodec.phonemes_from_codes`).
Both heads exist for training objectives (:class:`~plutok.training.objectives.ContentCodecObjective`);
the codec itself holds forward passes only. Which weights decide the codes, and how a
trained codec starts a bigger one: :mod:`plutok.training.codec`.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from plutok import registry
from plutok.codec.base import Codec
from plutok.digests import state_dict_sha256
from plutok.errors import ModelError
from plutok.layers import ConvNeXtStack
from plutok.parts import settings_from_config
from plutok.quantizers.base import Quantizer
from plutok.settings import ContentCodecSettings
from plutok.weights import (
    load_module_weights,
    round_to_half,
    save_module_weights,
)

__all__ = ["ContentCodec", "ContentCodecSettings"]

WEIGHTS_FILE = "codec.safetensors"
#: CTC frames per code of the phoneme head.
PHONEME_FRAMES_PER_CODE = 2


class ContentCodec(Codec):
    """See the module docstring. The quantizer is built from ``settings.quantizer`` via the registry."""

    name = "content"
    speaker_conditioned = True

    def __init__(
        self, settings: ContentCodecSettings | None = None, quantizer: Quantizer | None = None
    ) -> None:
        super().__init__()
        s = self.settings = settings or ContentCodecSettings()
        self.quantizer = (
            quantizer if quantizer is not None else registry.build("quantizer", dict(s.quantizer))
        )
        dim = self.quantizer.dim
        if s.synthesis_frames_per_code != 4 and s.synthesis_frames_per_code != 2:
            raise ModelError("synthesis_frames_per_code must be 2 or 4")
        # Fixed input/speaker statistics, set from the training data before training.
        self.register_buffer("analysis_mean", torch.zeros(s.input_dim, 1))
        self.register_buffer("analysis_std", torch.ones(s.input_dim, 1))
        self.register_buffer("speaker_mean", torch.zeros(s.speaker_dim))
        self.register_buffer("speaker_std", torch.ones(s.speaker_dim))
        stride = s.analysis_frames_per_code
        self.encoder_in = nn.Conv1d(s.input_dim, s.channels, kernel_size=stride, stride=stride)
        self.encoder = ConvNeXtStack(s.encoder_blocks, s.channels, s.kernel_size, s.expansion)
        self.encoder_norm = nn.LayerNorm(s.channels)
        self.to_latent = nn.Conv1d(s.channels, dim, kernel_size=1)
        self.decoder_in = nn.Conv1d(dim, s.channels, kernel_size=3, padding=1)
        self.decoder = ConvNeXtStack(s.decoder_blocks, s.channels, s.kernel_size, s.expansion, s.speaker_dim)
        up = s.synthesis_frames_per_code
        self.upsample = nn.ConvTranspose1d(
            s.channels, s.upsampled_channels, 2 * up, stride=up, padding=up // 2
        )
        self.upsampled = ConvNeXtStack(
            s.upsampled_blocks, s.upsampled_channels, s.kernel_size, s.expansion, s.speaker_dim
        )
        self.output_norm = nn.LayerNorm(s.upsampled_channels)
        self.to_output = nn.Conv1d(s.upsampled_channels, s.output_dim, kernel_size=1)
        self.content_in = nn.Conv1d(dim, s.content_channels, kernel_size=3, padding=1)
        self.content = ConvNeXtStack(2, s.content_channels, s.kernel_size, s.expansion)
        self._content_dim = s.content_dim or s.input_dim
        self.to_content = nn.Conv1d(s.content_channels, self._content_dim, kernel_size=1)
        if s.phoneme_symbols:
            # Two CTC frames per code: phonemes come at up to ~15/s in fast speech, and CTC
            # needs a frame per label plus one between repeats, more than 25 codes/s give.
            classes = len(s.phoneme_symbols) + 1
            self.phoneme_in = nn.Conv1d(dim, s.content_channels, kernel_size=3, padding=1)
            self.phoneme = ConvNeXtStack(2, s.content_channels, s.kernel_size, s.expansion)
            self.to_phonemes = nn.Conv1d(s.content_channels, PHONEME_FRAMES_PER_CODE * classes, kernel_size=1)
        reach = (s.kernel_size - 1) // 2
        self._encoder_context = stride * (s.encoder_blocks * reach + 1)
        self._decoder_context = 1 + s.decoder_blocks * reach + 2 + math.ceil(s.upsampled_blocks * reach / up)

    # -- contract -------------------------------------------------------------------------
    @property
    def input_dim(self) -> int:
        return self.settings.input_dim

    @property
    def output_dim(self) -> int:
        return self.settings.output_dim

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def analysis_frames_per_code(self) -> int:
        return self.settings.analysis_frames_per_code

    @property
    def synthesis_frames_per_code(self) -> int:
        return self.settings.synthesis_frames_per_code

    @property
    def encoder_context(self) -> int:
        return self._encoder_context

    @property
    def decoder_context(self) -> int:
        return self._decoder_context

    def set_statistics(self, analysis: torch.Tensor, speakers: torch.Tensor) -> None:
        """Fix the standardisation from training data: analysis ``(C_in, N)`` frames, speakers ``(M, speaker_dim)``."""
        with torch.no_grad():
            self.analysis_mean.copy_(analysis.mean(dim=1, keepdim=True))
            self.analysis_std.copy_(analysis.std(dim=1, keepdim=True).clamp(min=1e-3))
            self.speaker_mean.copy_(speakers.mean(dim=0))
            self.speaker_std.copy_(speakers.std(dim=0).clamp(min=1e-3))

    # -- forward pieces -------------------------------------------------------------------
    def latent(self, analysis: torch.Tensor) -> torch.Tensor:
        """Encoder output ``(B, D, T_codes)`` before quantization."""
        frames = analysis.shape[-1]
        stride = self.analysis_frames_per_code
        if frames % stride:
            analysis = F.pad(analysis, (0, stride - frames % stride))
        hidden = self.encoder(self.encoder_in((analysis - self.analysis_mean) / self.analysis_std))
        hidden = self.encoder_norm(hidden.transpose(1, 2)).transpose(1, 2)
        return self.to_latent(hidden)

    def _speaker(self, speaker: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        if speaker is None:
            return torch.zeros(batch, self.settings.speaker_dim, device=device)
        return (speaker - self.speaker_mean) / self.speaker_std

    def synthesize_from_vectors(self, vectors: torch.Tensor, speaker: torch.Tensor | None) -> torch.Tensor:
        """Normalised log-mel ``(B, C_out, 4 T)`` of code vectors ``(B, D, T)``."""
        conditioning = self._speaker(speaker, vectors.shape[0], vectors.device)
        hidden = self.decoder(self.decoder_in(vectors), conditioning)
        hidden = self.upsampled(self.upsample(hidden), conditioning)
        hidden = self.output_norm(hidden.transpose(1, 2)).transpose(1, 2)
        return self.to_output(hidden)

    @property
    def has_phoneme_head(self) -> bool:
        return bool(self.settings.phoneme_symbols)

    @property
    def phoneme_frames_per_code(self) -> int:
        return PHONEME_FRAMES_PER_CODE

    def content_target(self, analysis: torch.Tensor) -> torch.Tensor:
        """What the content head predicts: standardised analysis ``(B, content_dim, T_codes)`` averaged per code."""
        kept = slice(0, self._content_dim)
        target = (analysis[:, kept] - self.analysis_mean[kept]) / self.analysis_std[kept]
        stride = self.settings.analysis_frames_per_code
        if stride > 1:
            target = F.avg_pool1d(target, stride, stride, ceil_mode=True)
        return target

    def predict_content(self, vectors: torch.Tensor) -> torch.Tensor:
        """Standardised analysis features ``(B, content_dim, T)`` predicted from code vectors alone."""
        return self.to_content(self.content(self.content_in(vectors)))

    def phoneme_log_probs(self, vectors: torch.Tensor) -> torch.Tensor:
        """CTC log-probabilities ``(B, classes, 2 T)`` (class 0: blank) of code vectors ``(B, D, T)``."""
        if not self.settings.phoneme_symbols:
            raise ModelError("this codec has no phoneme head (trained without ctc_weight)")
        logits = self.to_phonemes(self.phoneme(self.phoneme_in(vectors)))
        batch, _, frames = logits.shape
        logits = logits.view(batch, PHONEME_FRAMES_PER_CODE, -1, frames).permute(0, 2, 3, 1)
        return logits.reshape(batch, -1, frames * PHONEME_FRAMES_PER_CODE).log_softmax(dim=1)

    def phonemes_from_codes(self, codes: torch.Tensor) -> list[list[str]]:
        """Greedy CTC reading of codes ``(B, T)``: the phonemes the codes carry, per row."""
        best = self.phoneme_log_probs(self.quantizer.dequantize(codes)).argmax(dim=1)
        symbols = self.settings.phoneme_symbols
        readings = []
        for row in best.tolist():
            collapsed = [c for i, c in enumerate(row) if c != 0 and (i == 0 or row[i - 1] != c)]
            readings.append([symbols[c - 1] for c in collapsed])
        return readings

    def content_features(self, codes: torch.Tensor) -> torch.Tensor:
        """Analysis features ``(B, content_dim, T)`` (unstandardised) predicted from codes ``(B, T)``: ASR from codes."""
        kept = slice(0, self._content_dim)
        standardised = self.predict_content(self.quantizer.dequantize(codes))
        return standardised * self.analysis_std[kept] + self.analysis_mean[kept]

    def encode_tensor(self, analysis: torch.Tensor) -> torch.Tensor:
        return self.quantizer.quantize(self.latent(analysis))

    def decode_tensor(self, codes: torch.Tensor, speaker: torch.Tensor | None) -> torch.Tensor:
        return self.synthesize_from_vectors(self.quantizer.dequantize(codes), speaker)

    # -- saving ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        settings = asdict(self.settings)
        settings["quantizer"] = self.quantizer.config()
        settings["phoneme_symbols"] = list(settings["phoneme_symbols"])
        for key in (
            "content_dim",
            "ctc_weight",
            "envelope_weight",
            "band_envelope_weight",
            "phoneme_symbols",
        ):
            # Added after the first v2 model shipped: left out at their defaults so that
            # model's config, and so its fingerprint and its .plt files, stay as they were.
            if not settings[key]:
                del settings[key]
        return {"name": self.name, **settings}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> ContentCodec:
        settings = settings_from_config(ContentCodecSettings, config, "content codec")
        codec = cls(settings)
        if directory is not None:
            codec.load_weights(Path(directory) / WEIGHTS_FILE)
        return codec

    def weights_digest(self) -> str:
        return state_dict_sha256(self.state_dict())

    def save_weights(self, directory: Path) -> None:
        save_module_weights(self, Path(directory) / WEIGHTS_FILE)

    def load_weights(self, path: Path) -> None:
        load_module_weights(self, path, "codec")

    def round_to_half(self) -> ContentCodec:
        """Round every weight to the nearest float16 value (kept as float32), so it saves at half size."""
        return round_to_half(self)
