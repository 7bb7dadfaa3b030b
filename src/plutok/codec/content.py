"""The v2 codec: content features in, speaker-conditioned log-mel out (why: docs/architecture.md, "Facts the code relies on").

::

    analysis (C_in, T)  -- e.g. Whisper-base encoder output at 25 frames/s
      standardise -> Conv1x1 -> encoder_blocks x ConvNeXt -> Conv1x1 -> quantizer (FSQ or VQ) -> codes (T,)
    codes -> code vectors (D, T)
      -> Conv1x1 -> decoder_blocks x ConvNeXt+FiLM(speaker)                  25 frames/s
      -> ConvTranspose (x synthesis_frames_per_code) -> upsampled_blocks x ConvNeXt+FiLM   100 frames/s
      -> Conv1x1 -> speaker-normalised log-mel (C_out, 4 T)
    code vectors -> content head (2 x ConvNeXt) -> standardised analysis features (content_dim, T)

Loss: L1 on the normalised log-mel, plus L1 on its time and frequency differences
(``gradient_weight``; an L1 on values alone rewards blurred spectra, which the
vocoder turns into buzz), plus ``content_weight * (1 - cos)`` between the content
head's prediction and the standardised analysis features (the quantised latent
must keep what the ASR encoder saw), plus the quantizer's own loss. The content
head also gives "ASR from codes": its output, unstandardised, is what Whisper's
decoder would read. With ``ctc_weight`` > 0 a second head (2 ConvNeXt blocks, two
frames per code) reads the utterance's espeak-ng phonemes from the code vectors under
a CTC loss (:mod:`plutok.training.phonemes`): the codes must carry which sounds were
said, not only features that average well; :meth:`ContentCodec.phonemes_from_codes`
reads them back. With ``envelope_weight`` > 0 the loss also asks each mel band's
trajectory over 300 ms segments of speech to *correlate* with the target's
(:func:`envelope_loss`): an L1 is satisfied by a trajectory of the right level but the
wrong shape, while intelligibility (STOI, ASR) lives in the shape. ``band_envelope_weight``
asks the same in STOI's own terms (:func:`band_envelope_loss`): the linear amplitude of
its 15 one-third-octave bands below 4.3 kHz, in which the loud parts of a trajectory
count most.

:meth:`ContentCodec.freeze_codes` fixes everything that decides the codes (encoder
and codebook), so a decoder can be trained on for the codes of a model that already
ships: its token ids keep their meaning.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plutok import registry
from plutok.codec.base import Codec, CodecBatch
from plutok.digests import state_dict_sha256
from plutok.errors import ModelError
from plutok.frontends.mel import MelSettings, slaney_mel_points
from plutok.layers import ConvNeXtStack
from plutok.parts import settings_from_config
from plutok.quantizers.base import Quantizer
from plutok.settings import ContentCodecSettings
from plutok.weights import (
    describe_mismatch,
    load_module_weights,
    read_weights,
    round_to_half,
    save_module_weights,
)

__all__ = [
    "ContentCodec",
    "ContentCodecSettings",
    "band_envelope_loss",
    "envelope_loss",
    "third_octave_bands",
]

WEIGHTS_FILE = "codec.safetensors"
PHONEME_FRAMES_PER_CODE = 2
#: Envelope segments: 30 log-mel frames (300 ms at 100 frames/s; STOI uses 384 ms), hop 15.
ENVELOPE_FRAMES = 30
#: Band-envelope segments: 38 frames (380 ms; STOI: 30 frames of 12.8 ms = 384 ms), hop 4.
BAND_ENVELOPE_FRAMES = 38
BAND_ENVELOPE_HOP = 4
#: STOI's one-third-octave bands: 15, the lowest centred at 150 Hz.
STOI_BANDS = 15
STOI_LOWEST_CENTRE = 150.0
#: A target frame is speech when its mean over the bands of the speaker-normalised
#: log-mel is above this. Normalised speech sits near 0 and silence near -3: a noise
#: floor's trajectory cannot be predicted from codes, so it is left out.
SPEECH_LEVEL = -2.0
#: The codebook's key; :meth:`ContentCodec.start_from` may give a codec a codebook of another size.
CODEBOOK_KEY = "quantizer.codebook"
#: Blocks :meth:`ContentCodec.start_from` may add to a saved codec.
_GROWABLE = re.compile(r"^(decoder|upsampled)\.blocks\.\d+\.")
#: The modules of the CTC phoneme head (``ctc_weight`` > 0).
_PHONEME_HEAD = ("phoneme_in.", "phoneme.", "to_phonemes.")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``(B, C, T)`` values over the frames where ``mask`` ``(B, T)`` is 1."""
    weights = mask[:, None, :].to(values.dtype)
    return (values * weights).sum() / (weights.sum() * values.shape[1]).clamp(min=1)


def envelope_loss(prediction: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - Pearson correlation`` of band trajectories over speech segments.

    ``prediction``, ``target``: speaker-normalised log-mel ``(B, C, T)`` at 100 frames/s;
    ``frame_mask`` ``(B, T)``: 1 on real frames. Segments of :data:`ENVELOPE_FRAMES`
    frames (hop half that) count when they lie inside the mask and at least half their
    frames are speech (:data:`SPEECH_LEVEL`); a band that is flat in the target (std below
    0.05) has no trajectory to follow and is skipped. 0 when no segment counts.
    """
    frames = prediction.shape[-1]
    if frames < ENVELOPE_FRAMES:
        return prediction.new_zeros(())
    hop = ENVELOPE_FRAMES // 2
    predicted = prediction.float().unfold(-1, ENVELOPE_FRAMES, hop)  # (B, C, S, frames)
    wanted = target.float().unfold(-1, ENVELOPE_FRAMES, hop)
    inside = frame_mask.float().unfold(-1, ENVELOPE_FRAMES, hop).amin(dim=-1)  # (B, S)
    speech = (wanted.mean(dim=1) > SPEECH_LEVEL).float().mean(dim=-1) >= 0.5  # (B, S)
    varying = wanted.std(dim=-1) > 0.05  # (B, C, S)
    weight = (inside * speech)[:, None, :] * varying
    correlation = F.cosine_similarity(
        predicted - predicted.mean(dim=-1, keepdim=True), wanted - wanted.mean(dim=-1, keepdim=True), dim=-1
    )
    return ((1 - correlation) * weight).sum() / weight.sum().clamp(min=1)


def third_octave_bands(n_mels: int, settings: MelSettings | None = None) -> torch.Tensor:
    """``(bands, n_mels)``: STOI's one-third-octave bands (15, centres 150 Hz to 3.8 kHz) as
    weights on the log-mel bins.

    A bin belongs to the band its Slaney centre frequency falls in, weighted by its width
    in Hz: Slaney-normalised filters average the magnitude over their width, so
    ``width * mel**2`` is the bin's share of the band's power. Bands without a bin (a
    coarse mel) are left out.
    """
    mel = MelSettings(**{**asdict(settings or MelSettings()), "n_mels": n_mels})
    points = slaney_mel_points(mel.n_mels, mel.fmin, mel.fmax)
    centres, widths = points[1:-1], (points[2:] - points[:-2]) / 2
    rows = []
    for band in range(STOI_BANDS):
        low, high = (STOI_LOWEST_CENTRE * 2 ** ((2 * band + side) / 6) for side in (-1, 1))
        inside = (centres >= low) & (centres < high)
        if inside.any():
            rows.append(np.where(inside, widths, 0.0))
    return torch.tensor(np.stack(rows) if rows else np.zeros((0, n_mels)), dtype=torch.float32)


def band_envelope_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    frame_mask: torch.Tensor,
    scale: torch.Tensor,
    offset: torch.Tensor,
    bands: torch.Tensor,
) -> torch.Tensor:
    """Mean ``1 - Pearson correlation`` of one-third-octave band amplitudes over speech segments.

    STOI's view, on log-mels: ``prediction`` and ``target`` ``(B, C, T)`` speaker-normalised
    at 100 frames/s are mapped back (``x * scale + offset``, ``(B, C, 1)`` each) to the
    natural log of the mel magnitude, then to the linear amplitude of the bands ``bands``
    ``(bands, C)`` (:func:`third_octave_bands`). Correlations are taken over segments of
    :data:`BAND_ENVELOPE_FRAMES` frames (hop :data:`BAND_ENVELOPE_HOP`) that lie inside
    ``frame_mask`` ``(B, T)`` with at least half their frames within 40 dB of the crop's
    loudest frame (STOI drops quieter frames); linear amplitude weights the loud parts of
    each trajectory, as STOI does, where :func:`envelope_loss` weights every level alike.
    A band constant over a segment in the target is skipped; 0 when no segment counts.
    """
    frames = prediction.shape[-1]
    if frames < BAND_ENVELOPE_FRAMES or bands.shape[0] == 0:
        return prediction.new_zeros(())
    # exp() of log magnitudes spans ~20 orders of magnitude: float32 throughout, also
    # inside a bf16/fp16 autocast region on a GPU.
    with torch.autocast(prediction.device.type, enabled=False):
        bands = bands.to(prediction.device)

        def band_power(normalised: torch.Tensor) -> torch.Tensor:
            log_magnitude = normalised.float() * scale.float() + offset.float()
            return torch.einsum("kc,bct->bkt", bands, torch.exp(2 * log_magnitude.clamp(max=20)))

        predicted = (
            (band_power(prediction) + 1e-10).sqrt().unfold(-1, BAND_ENVELOPE_FRAMES, BAND_ENVELOPE_HOP)
        )
        wanted_power = band_power(target)
        wanted = (wanted_power + 1e-10).sqrt().unfold(-1, BAND_ENVELOPE_FRAMES, BAND_ENVELOPE_HOP)
        level = 10 * torch.log10(wanted_power.sum(dim=1) + 1e-10)  # (B, T) dB
        loudest = level.masked_fill(frame_mask <= 0, -1e9).amax(dim=-1, keepdim=True)
        audible = (level >= loudest - 40).float() * frame_mask
        inside = frame_mask.float().unfold(-1, BAND_ENVELOPE_FRAMES, BAND_ENVELOPE_HOP).amin(dim=-1)  # (B, S)
        speech = audible.unfold(-1, BAND_ENVELOPE_FRAMES, BAND_ENVELOPE_HOP).mean(dim=-1) >= 0.5
        varying = wanted.std(dim=-1) > 1e-3 * wanted.mean(dim=-1)  # (B, K, S)
        weight = (inside * speech)[:, None, :] * varying
        correlation = F.cosine_similarity(
            predicted - predicted.mean(dim=-1, keepdim=True),
            wanted - wanted.mean(dim=-1, keepdim=True),
            dim=-1,
        )
        return ((1 - correlation) * weight).sum() / weight.sum().clamp(min=1)


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
        # Not saved: a function of output_dim (the vocoder's mel settings), so weights of
        # codecs trained without the term load as they are.
        self.register_buffer("_stoi_bands", third_octave_bands(s.output_dim), persistent=False)
        reach = (s.kernel_size - 1) // 2
        self._encoder_context = stride * (s.encoder_blocks * reach + 1)
        self._decoder_context = 1 + s.decoder_blocks * reach + 2 + math.ceil(s.upsampled_blocks * reach / up)
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._codes_frozen = False

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

    def _code_modules(self) -> dict[str, nn.Module]:
        return {
            "encoder_in": self.encoder_in,
            "encoder": self.encoder,
            "encoder_norm": self.encoder_norm,
            "to_latent": self.to_latent,
            "quantizer": self.quantizer,
        }

    def freeze_codes(self) -> None:
        """Stop training what decides the codes (standardisation, encoder, codebook): they stay as they are.

        The quantizer's upkeep (dead-code replacement) stops too
        (:meth:`quantizer_parts` returns nothing), and the quantizer loss becomes a constant.
        """
        for module in self._code_modules().values():
            module.requires_grad_(False)
        self._codes_frozen = True

    def code_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights and statistics that decide the codes (what :meth:`freeze_codes` keeps)."""
        state = {"analysis_mean": self.analysis_mean, "analysis_std": self.analysis_std}
        for prefix, module in self._code_modules().items():
            state.update({f"{prefix}.{key}": value for key, value in module.state_dict().items()})
        return state

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

    def loss(self, batch: CodecBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s = self.settings
        latent = self.latent(batch.analysis)
        codes_mask = batch.code_mask[:, : latent.shape[-1]]
        quantized = self.quantizer(latent, codes_mask)
        self._last = (latent.detach(), quantized.codes, codes_mask)
        prediction = self.synthesize_from_vectors(quantized.quantized, batch.speaker)
        frames = min(prediction.shape[-1], batch.target.shape[-1])
        prediction, target = prediction[..., :frames], batch.target[..., :frames]
        frame_mask = codes_mask.repeat_interleave(s.synthesis_frames_per_code, dim=1)[:, :frames]
        mel_l1 = _masked_mean((prediction - target).abs(), frame_mask)
        time_diff = (prediction.diff(dim=-1) - target.diff(dim=-1)).abs()
        freq_diff = (prediction.diff(dim=1) - target.diff(dim=1)).abs()
        gradient = _masked_mean(time_diff, frame_mask[:, 1:] * frame_mask[:, :-1]) + _masked_mean(
            freq_diff, frame_mask
        )
        kept = slice(0, self._content_dim)
        content_target = (batch.analysis[:, kept] - self.analysis_mean[kept]) / self.analysis_std[kept]
        stride = s.analysis_frames_per_code
        if stride > 1:
            content_target = F.avg_pool1d(content_target, stride, stride, ceil_mode=True)
        content_target = content_target[..., : latent.shape[-1]]
        cosine = F.cosine_similarity(self.predict_content(quantized.quantized), content_target, dim=1)
        content = ((1 - cosine) * codes_mask).sum() / codes_mask.sum().clamp(min=1)
        total = mel_l1 + s.gradient_weight * gradient + s.content_weight * content + quantized.loss
        metrics = {
            "mel_l1": mel_l1,
            "gradient": gradient,
            "content": content,
            "quantizer": quantized.loss,
            "perplexity": quantized.perplexity,
            "usage": quantized.usage,
        }
        if s.envelope_weight > 0:
            envelope = envelope_loss(prediction, target, frame_mask)
            total = total + s.envelope_weight * envelope
            metrics["envelope"] = envelope
        elif not self.training:  # reported on dev either way, so runs with and without compare
            metrics["envelope"] = envelope_loss(prediction, target, frame_mask)
        if batch.target_scale is not None and (s.band_envelope_weight > 0 or not self.training):
            # Reported on dev either way, as the envelope term is.
            band = band_envelope_loss(
                prediction, target, frame_mask, batch.target_scale, batch.target_offset, self._stoi_bands
            )
            metrics["band_envelope"] = band
            if s.band_envelope_weight > 0:
                total = total + s.band_envelope_weight * band
        if s.ctc_weight > 0 and s.phoneme_symbols and batch.phoneme_lengths is not None:
            ctc = self._ctc_loss(quantized.quantized, codes_mask, batch.phonemes, batch.phoneme_lengths)
            if ctc is not None:
                total = total + s.ctc_weight * ctc
                metrics["ctc"] = ctc
        return total, metrics

    def _ctc_loss(
        self, vectors: torch.Tensor, codes_mask: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor | None:
        """Mean CTC loss per phoneme over the rows with labels (``None`` when no row has any)."""
        rows = lengths > 0
        if not bool(rows.any()):
            return None
        log_probs = self.phoneme_log_probs(vectors[rows]).float()
        frames = (codes_mask[rows].sum(dim=1) * PHONEME_FRAMES_PER_CODE).long()
        lengths = lengths[rows]
        loss = F.ctc_loss(
            log_probs.permute(2, 0, 1),
            labels[rows],
            frames,
            lengths,
            blank=0,
            reduction="sum",
            zero_infinity=True,  # a transcript too long for its audio must not give inf
        )
        return loss / lengths.sum()

    def quantizer_parts(self):
        if self._last is None or self._codes_frozen:
            return None, None, None, None
        latent, codes, mask = self._last
        return self.quantizer, latent, codes, mask

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

    def start_from(self, path: Path) -> list[str]:
        """Load the weights of a trained codec that may have fewer decoder blocks or codes; returns what is new.

        Everything the saved codec has must match (keys and shapes); blocks this codec adds at
        the end of ``decoder`` (25 Hz) or ``upsampled`` (100 Hz) start as the identity (their
        last layer zero), so training begins from the saved codec's exact output and a bigger
        decoder can be trained on for the codes of a model that ships. A CTC phoneme head the
        saved codec lacks starts fresh (``ctc_weight`` on a codec trained without it). A
        codebook with another number of codes (same code dimension) is not loaded:
        ``"quantizer.codebook"`` is then in the returned list, and the caller initialises it
        from the trained encoder's latents (the trainer's k-means): how v2.4 grew from
        1,024 to 4,096 codes.
        """
        state = read_weights(path, "codec")
        expected = self.state_dict()
        added_codebook = []
        saved_codebook = state.get(CODEBOOK_KEY)
        if (
            saved_codebook is not None
            and CODEBOOK_KEY in expected
            and saved_codebook.shape[1:] == expected[CODEBOOK_KEY].shape[1:]
            and saved_codebook.shape[0] != expected[CODEBOOK_KEY].shape[0]
        ):
            state = {key: value for key, value in state.items() if key != CODEBOOK_KEY}
            expected = {key: value for key, value in expected.items() if key != CODEBOOK_KEY}
            added_codebook = [CODEBOOK_KEY]
        added = sorted(
            {".".join(key.split(".")[:3]) for key in expected if key not in state and _GROWABLE.match(key)}
        )
        # A phoneme head the saved codec lacks is a loss head (nothing decodes through it):
        # it starts from its random initialisation.
        heads = []
        if not any(key.startswith(_PHONEME_HEAD) for key in state):
            heads = sorted({key.split(".")[0] for key in expected if key.startswith(_PHONEME_HEAD)})
        kept = {
            key: shape
            for key, shape in expected.items()
            if not key.startswith(tuple(part + "." for part in added + heads))
        }
        problem = describe_mismatch(
            {k: tuple(v.shape) for k, v in kept.items()}, {k: tuple(v.shape) for k, v in state.items()}
        )
        if problem:
            raise ModelError(f"{path} cannot start this codec: {problem}")
        self.load_state_dict({key: value.float() for key, value in state.items()}, strict=False)
        with torch.no_grad():
            for block in added:
                stack, _, index = block.split(".")
                project = getattr(self, stack).blocks[int(index)].project
                project.weight.zero_()
                project.bias.zero_()
        return added + heads + added_codebook

    def weights_digest(self) -> str:
        return state_dict_sha256(self.state_dict())

    def save_weights(self, directory: Path) -> None:
        save_module_weights(self, Path(directory) / WEIGHTS_FILE)

    def load_weights(self, path: Path) -> None:
        load_module_weights(self, path, "codec")

    def round_to_half(self) -> ContentCodec:
        """Round every weight to the nearest float16 value (kept as float32), so it saves at half size."""
        return round_to_half(self)
