"""The v2 codec: a registered encoder, quantizer and decoder, plus heads that read content from the code vectors.

::

    analysis (C_in, T) -> encoder -> latent (D, T_codes) -> quantizer -> codes (T_codes,)
    codes -> code vectors (D, T_codes) -> decoder (+ speaker) -> synthesis features (C_out, F T_codes)
    code vectors -> content head (2 x ConvNeXt) -> standardised analysis features (content_dim, T_codes)
    code vectors -> phoneme head (2 x ConvNeXt, two frames per code) -> CTC phoneme classes

Each of the three parts is a registered part of its own kind (``encoder``,
``quantizer``, ``decoder``; docs/architecture.md, "The registry"), built from its
section of the codec's config. The bundled models use the ``convnext`` encoder and
the ``convnext-film`` decoder (:mod:`plutok.codec.encoders.convnext`,
:mod:`plutok.codec.decoders.convnext`); a codec of those two is saved in the flat
``codec`` section the first v2 models were saved with
(:class:`~plutok.settings.ContentCodecSettings`), so their configs, fingerprints and
``.plt`` files stay valid; any other combination is saved as
``{"name": "content", "encoder": {...}, "quantizer": {...}, "decoder": {...}, "heads": {...},
"objective": {...}}``.

The content head predicts the standardised analysis features from the code vectors: "ASR
from codes" (its output, unstandardised, is what Whisper's decoder would read). With
``phoneme_symbols`` the phoneme head reads the utterance's espeak-ng phonemes from the
code vectors (:meth:`ContentCodec.phonemes_from_codes`). Both heads exist for training
objectives (:class:`~plutok.training.objectives.ContentCodecObjective`, whose weights the
codec records as ``objective``); the codec holds forward passes only.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plutok import registry
from plutok.codec.base import Codec
from plutok.codec.decoders.base import CodecDecoder
from plutok.codec.encoders.base import CodecEncoder
from plutok.digests import state_dict_sha256
from plutok.errors import ModelError
from plutok.layers import ConvNeXtStack
from plutok.parts import settings_from_config
from plutok.quantizers.base import Quantizer
from plutok.settings import (
    ContentCodecSettings,
    ContentHeadSettings,
    ContentObjectiveSettings,
    SamplingSettings,
)
from plutok.weights import load_module_weights, round_to_half, save_module_weights

__all__ = ["ContentCodec", "ContentCodecSettings"]

WEIGHTS_FILE = "codec.safetensors"
#: CTC frames per code of the phoneme head.
PHONEME_FRAMES_PER_CODE = 2
#: Keys of the flat section dropped at their defaults: added after the first v2 model
#: shipped, so that model's config, and so its fingerprint and its .plt files, stay as they were.
_FLAT_OPTIONAL = ("content_dim", "ctc_weight", "envelope_weight", "band_envelope_weight", "phoneme_symbols")
#: The parts whose weights the codec file holds under their ``saved_prefix``.
_PARTS = ("encoder", "decoder")


class ContentCodec(Codec):
    """See the module docstring. Build it with :meth:`from_config`, or from its parts."""

    name = "content"

    def __init__(
        self,
        encoder: CodecEncoder,
        quantizer: Quantizer,
        decoder: CodecDecoder,
        heads: ContentHeadSettings | None = None,
        objective: ContentObjectiveSettings | None = None,
    ) -> None:
        super().__init__()
        if encoder.latent_dim != quantizer.dim or decoder.latent_dim != quantizer.dim:
            raise ModelError(
                f"the encoder writes {encoder.latent_dim}-d latents, the quantizer reads {quantizer.dim}-d "
                f"and the decoder {decoder.latent_dim}-d ones: they must agree"
            )
        h = self.heads = heads or ContentHeadSettings()
        self.objective = objective or ContentObjectiveSettings()
        if h.content_dim > encoder.input_dim:
            raise ModelError(
                f"content_dim must be in [0, input_dim={encoder.input_dim}], got {h.content_dim}"
            )
        # Registered in this order so the parameters keep the order of the first v2 codec
        # (optimiser state in checkpoints is stored by position).
        self.quantizer = quantizer
        self.encoder = encoder
        self.decoder = decoder
        dim = quantizer.dim
        self.content_in = nn.Conv1d(dim, h.content_channels, kernel_size=3, padding=1)
        self.content = ConvNeXtStack(2, h.content_channels, h.kernel_size, h.expansion)
        self._content_dim = h.content_dim or encoder.input_dim
        self.to_content = nn.Conv1d(h.content_channels, self._content_dim, kernel_size=1)
        if h.phoneme_symbols:
            # Two CTC frames per code: phonemes come at up to ~15/s in fast speech, and CTC
            # needs a frame per label plus one between repeats, more than 25 codes/s give.
            classes = len(h.phoneme_symbols) + 1
            self.phoneme_in = nn.Conv1d(dim, h.content_channels, kernel_size=3, padding=1)
            self.phoneme = ConvNeXtStack(2, h.content_channels, h.kernel_size, h.expansion)
            self.to_phonemes = nn.Conv1d(h.content_channels, PHONEME_FRAMES_PER_CODE * classes, kernel_size=1)
        self.speaker_conditioned = decoder.speaker_conditioned
        # The weight file names each part's weights by its saved_prefix.
        self.register_state_dict_post_hook(_to_saved_names)
        self.register_load_state_dict_pre_hook(_from_saved_names)

    # -- contract -------------------------------------------------------------------------
    @property
    def input_dim(self) -> int:
        return self.encoder.input_dim

    @property
    def output_dim(self) -> int:
        return self.decoder.output_dim

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def analysis_frames_per_code(self) -> int:
        return self.encoder.frames_per_code

    @property
    def synthesis_frames_per_code(self) -> int:
        return self.decoder.frames_per_code

    @property
    def encoder_context(self) -> int:
        return self.encoder.context

    @property
    def decoder_context(self) -> int:
        return self.decoder.context

    def set_statistics(self, analysis: torch.Tensor, speakers: torch.Tensor) -> None:
        """Fix the parts' standardisation from training data: analysis ``(C_in, N)`` frames, speakers ``(M, speaker_dim)``."""
        self.encoder.set_statistics(analysis)
        self.decoder.set_statistics(speakers)

    # -- forward pieces -------------------------------------------------------------------
    def latent(self, analysis: torch.Tensor) -> torch.Tensor:
        """Encoder output ``(B, D, T_codes)`` before quantization."""
        return self.encoder(analysis)

    def synthesize_from_vectors(
        self, vectors: torch.Tensor, speaker: torch.Tensor | None, sampling: SamplingSettings | None = None
    ) -> torch.Tensor:
        """Synthesis features ``(B, C_out, F T)`` of code vectors ``(B, D, T)``."""
        return self.decoder(vectors, speaker, sampling)

    @property
    def has_phoneme_head(self) -> bool:
        return bool(self.heads.phoneme_symbols)

    @property
    def phoneme_frames_per_code(self) -> int:
        return PHONEME_FRAMES_PER_CODE

    def content_target(self, analysis: torch.Tensor) -> torch.Tensor:
        """What the content head predicts: standardised analysis ``(B, content_dim, T_codes)`` averaged per code."""
        target = self.encoder.standardize(analysis[:, : self._content_dim])
        stride = self.analysis_frames_per_code
        if stride > 1:
            target = torch.nn.functional.avg_pool1d(target, stride, stride, ceil_mode=True)
        return target

    def predict_content(self, vectors: torch.Tensor) -> torch.Tensor:
        """Standardised analysis features ``(B, content_dim, T)`` predicted from code vectors alone."""
        return self.to_content(self.content(self.content_in(vectors)))

    def phoneme_log_probs(self, vectors: torch.Tensor) -> torch.Tensor:
        """CTC log-probabilities ``(B, classes, 2 T)`` (class 0: blank) of code vectors ``(B, D, T)``."""
        if not self.has_phoneme_head:
            raise ModelError("this codec has no phoneme head (trained without ctc_weight)")
        logits = self.to_phonemes(self.phoneme(self.phoneme_in(vectors)))
        batch, _, frames = logits.shape
        logits = logits.view(batch, PHONEME_FRAMES_PER_CODE, -1, frames).permute(0, 2, 3, 1)
        return logits.reshape(batch, -1, frames * PHONEME_FRAMES_PER_CODE).log_softmax(dim=1)

    def phonemes_from_codes(self, codes: torch.Tensor) -> list[list[str]]:
        """Greedy CTC reading of codes ``(B, T)``: the phonemes the codes carry, per row."""
        best = self.phoneme_log_probs(self.quantizer.dequantize(codes)).argmax(dim=1)
        symbols = self.heads.phoneme_symbols
        readings = []
        for row in best.tolist():
            collapsed = [c for i, c in enumerate(row) if c != 0 and (i == 0 or row[i - 1] != c)]
            readings.append([symbols[c - 1] for c in collapsed])
        return readings

    def content_features(self, codes: torch.Tensor) -> torch.Tensor:
        """Analysis features ``(B, content_dim, T)`` (unstandardised) predicted from codes ``(B, T)``: ASR from codes."""
        return self.encoder.unstandardize(self.predict_content(self.quantizer.dequantize(codes)))

    def encode_tensor(self, analysis: torch.Tensor) -> torch.Tensor:
        return self.quantizer.quantize(self.latent(analysis))

    def decode_tensor(
        self, codes: torch.Tensor, speaker: torch.Tensor | None, sampling: SamplingSettings | None = None
    ) -> torch.Tensor:
        return self.synthesize_from_vectors(self.quantizer.dequantize(codes), speaker, sampling)

    # -- weights --------------------------------------------------------------------------
    def saved_names(self, part: str) -> dict[str, str]:
        """``{module key: key in the weight file}`` of one part (``encoder``, ``quantizer``, ``decoder``)."""
        module = getattr(self, part)
        prefix = getattr(module, "saved_prefix", f"{part}.")
        return {f"{part}.{key}": prefix + key for key in nn.Module.state_dict(module)}

    # -- saving ---------------------------------------------------------------------------
    def flat_settings(self) -> ContentCodecSettings | None:
        """The flat ``codec`` section of the first v2 models for these parts, or ``None``."""
        if self.encoder.name != "convnext" or self.decoder.name != "convnext-film":
            return None
        return ContentCodecSettings.from_parts(
            self.encoder.settings, self.decoder.settings, self.quantizer.config(), self.heads, self.objective
        )

    def config(self) -> dict[str, Any]:
        flat = self.flat_settings()
        if flat is not None:
            settings = asdict(flat)
            settings["quantizer"] = self.quantizer.config()
            settings["phoneme_symbols"] = list(settings["phoneme_symbols"])
            for key in _FLAT_OPTIONAL:
                if not settings[key]:
                    del settings[key]
            return {"name": self.name, **settings}
        heads = asdict(self.heads)
        heads["phoneme_symbols"] = list(heads["phoneme_symbols"])
        if not heads["phoneme_symbols"]:
            del heads["phoneme_symbols"]
        return {
            "name": self.name,
            "encoder": self.encoder.config(),
            "quantizer": self.quantizer.config(),
            "decoder": self.decoder.config(),
            "heads": heads,
            "objective": asdict(self.objective),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> ContentCodec:
        """A codec from its section: the parts' form, or the flat form of the first v2 models."""
        if "encoder" in config or "decoder" in config:
            known = {"name", "encoder", "quantizer", "decoder", "heads", "objective", "weights_sha256"}
            unknown = sorted(set(config) - known)
            if unknown:
                raise ModelError(f"content codec config has unknown keys: {', '.join(unknown)}")
            for part in ("encoder", "quantizer", "decoder"):
                if not isinstance(config.get(part), dict):
                    raise ModelError(f"content codec config needs an {part!r} section with a 'name'")
            heads = settings_from_config(ContentHeadSettings, config.get("heads", {}), "content codec heads")
            objective = settings_from_config(
                ContentObjectiveSettings, config.get("objective", {}), "content codec objective"
            )
            quantizer = registry.build("quantizer", dict(config["quantizer"]))
            encoder_config, decoder_config = dict(config["encoder"]), dict(config["decoder"])
        else:
            flat = settings_from_config(ContentCodecSettings, config, "content codec")
            quantizer = registry.build("quantizer", dict(flat.quantizer))
            encoder_config, decoder_config, heads, objective = flat.parts()
        for kind, section in (("encoder", encoder_config), ("decoder", decoder_config)):
            settings = registry.settings_class(kind, section.get("name", ""))
            if settings is not None and "latent_dim" in {field.name for field in fields(settings)}:
                section.setdefault("latent_dim", quantizer.dim)
        codec = cls(
            registry.build("encoder", encoder_config),
            quantizer,
            registry.build("decoder", decoder_config),
            heads,
            objective,
        )
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


def _to_saved_names(codec: ContentCodec, state: dict[str, Any], prefix: str, metadata: Any) -> None:
    for part in _PARTS:
        for module_key, saved_key in codec.saved_names(part).items():
            if module_key != saved_key and prefix + module_key in state:
                state[prefix + saved_key] = state.pop(prefix + module_key)


def _from_saved_names(codec: ContentCodec, state: dict[str, Any], prefix: str, *_: Any) -> None:
    for part in _PARTS:
        for module_key, saved_key in codec.saved_names(part).items():
            if module_key != saved_key and prefix + saved_key in state:
                state[prefix + module_key] = state.pop(prefix + saved_key)
