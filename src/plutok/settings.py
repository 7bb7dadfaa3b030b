"""Settings of the trainable parts and of training, importable without torch.

The CLI builds its options (and their defaults) from these dataclasses when it starts,
so they live apart from the torch modules that use them: ``plutok --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from plutok.errors import ModelError

__all__ = [
    "AdversarialSettings",
    "MAX_BLOCKS",
    "MAX_CODEBOOK_VALUES",
    "MAX_FFT_SIZE",
    "MAX_FRAMES_PER_CODE",
    "MAX_KERNEL_SIZE",
    "MAX_SAMPLE_RATE",
    "MAX_WIDTH",
    "MIN_SAMPLE_RATE",
    "ContentCodecSettings",
    "ContentHeadSettings",
    "ContentObjectiveSettings",
    "ConvNeXtDecoderSettings",
    "ConvNeXtEncoderSettings",
    "ISTFTVocoderSettings",
    "SamplingSettings",
    "TrainerConfig",
    "VQVAEConfig",
    "check_size",
    "warmup_cosine",
]

#: Settings of codec parts that training fills in from the data and the other parts
#: (the frontend's width, the vocoder's features, the speaker encoder, the quantizer):
#: not command-line options.
DERIVED_FIELDS = ("input_dim", "output_dim", "speaker_dim", "latent_dim")

# Bounds on the sizes a model config may ask for, checked when its settings are made,
# before any part is built. A config is a file users pass in, and each size turns into
# memory when the part is built or runs: a codebook of 10^12 codes, 10^6 blocks or an
# n_fft of 10^9 must be refused here, not found by the allocator. All are far above any
# model Plutok trains (widths of 512, 6 blocks, kernels of 7, n_fft 1024, 4,096 codes).
MAX_WIDTH = 8192  # channels, feature and code dimensions, mel bands
MAX_BLOCKS = 64  # residual blocks of one stage
MAX_KERNEL_SIZE = 255
MAX_FFT_SIZE = 1 << 16  # n_fft, window and hop in samples
MAX_FRAMES_PER_CODE = 64
MAX_CODEBOOK_VALUES = 1 << 26  # codes x code dimensions of a learned codebook (256 MB)
# Rates a model may run at (Hz): the range of input rates encode accepts.
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 384_000


def check_size(what: str, name: str, value: object, low: int, high: int) -> int:
    """``value`` when it is an int (not a bool) in ``low..high``, else :class:`ModelError` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ModelError(f"{what}: {name} must be an integer in {low}..{high}, got {value!r}")
    return value


def warmup_cosine(
    step: int, steps: int, warmup_steps: int, learning_rate: float, min_lr_ratio: float
) -> float:
    """Learning rate of the 0-based ``step``: linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if warmup_steps and step < warmup_steps:
        return learning_rate * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return learning_rate * (min_lr_ratio + (1 - min_lr_ratio) * cosine)


@dataclass(frozen=True)
class VQVAEConfig:
    """Hyper-parameters that fix the VQ-VAE architecture.

    Attributes:
        feature_dim: channels ``C`` of the input features (192 for OpenVoice ``z_p``).
        codebook_size: number of codes ``K`` (200 in the original release).
        downsample: frames per code, 1, 2 (original) or 4.
        channels: base width ``h`` of the network (widths h, 2h, 4h; code vectors
            are 4h-dimensional). ``None`` means ``feature_dim``, as in the original.
            Any other value adds a 1x1 input projection (``input_proj``) and
            output projection (``output_proj``).
        latent_dim: ``None`` quantizes the 4h-dimensional encoder output directly (the
            original). A number adds 1x1 projections to and from a ``latent_dim``-space
            (``latent_in`` / ``latent_out``) where the codebook lives: low-dimensional
            codes keep far more of a large codebook in use (factorised codes, as in
            improved VQGAN).
        normalize_latents: L2-normalise the encoder output before quantizing (codes
            on the unit sphere: distances become cosine similarities, and the
            encoder cannot run away from the codebook in scale).
    """

    feature_dim: int
    codebook_size: int = 256
    downsample: int = 2
    channels: int | None = None
    latent_dim: int | None = None
    normalize_latents: bool = False

    def __post_init__(self) -> None:
        check_size("VQ-VAE config", "feature_dim", self.feature_dim, 1, MAX_WIDTH)
        check_size("VQ-VAE config", "codebook_size", self.codebook_size, 2, MAX_CODEBOOK_VALUES)
        if self.downsample not in (1, 2, 4):
            raise ModelError(f"VQ-VAE config: downsample must be 1, 2 or 4, got {self.downsample!r}")
        for name in ("channels", "latent_dim"):
            value = getattr(self, name)
            if value is not None:
                check_size("VQ-VAE config", name, value, 1, MAX_WIDTH)
        if self.codebook_size * self.code_dim > MAX_CODEBOOK_VALUES:
            raise ModelError(
                f"VQ-VAE config: a codebook of {self.codebook_size} x {self.code_dim} values; "
                f"at most {MAX_CODEBOOK_VALUES}"
            )
        if not isinstance(self.normalize_latents, bool):
            raise ModelError(
                f"VQ-VAE config: normalize_latents must be true or false, got {self.normalize_latents!r}"
            )

    @property
    def width(self) -> int:
        """Base width ``h`` actually used."""
        return self.feature_dim if self.channels is None else self.channels

    @property
    def code_dim(self) -> int:
        """Dimension of a code vector (``latent_dim``, else ``4h``)."""
        return self.latent_dim or 4 * self.width

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VQVAEConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise :class:`ModelError`."""
        if not isinstance(data, Mapping):
            raise ModelError(f"VQ-VAE config must be a JSON object, got {type(data).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"VQ-VAE config has unknown keys: {', '.join(unknown)}")
        if "feature_dim" not in data:
            raise ModelError("VQ-VAE config lacks feature_dim")
        return cls(**dict(data))


def _check_odd_kernel(kernel_size: int) -> None:
    if kernel_size % 2 != 1:
        raise ModelError(f"kernel_size must be odd, got {kernel_size}")


def _check_widths(settings: Any, what: str, names: tuple[str, ...]) -> None:
    """Widths of ``settings`` in ``1..MAX_WIDTH``; blocks, kernel and expansion where it has them."""
    for name in names:
        check_size(what, name, getattr(settings, name), 1, MAX_WIDTH)
    if hasattr(settings, "blocks"):
        check_size(what, "blocks", settings.blocks, 0, MAX_BLOCKS)
    check_size(what, "kernel_size", settings.kernel_size, 1, MAX_KERNEL_SIZE)
    check_size(what, "expansion", settings.expansion, 1, 16)


@dataclass(frozen=True)
class ConvNeXtEncoderSettings:
    """The ``convnext`` codec encoder (:class:`~plutok.codec.encoders.convnext.ConvNeXtEncoder`).

    ``input_dim`` and ``latent_dim`` are set by the codec (the frontend's width, the
    quantizer's dimension); ``frames_per_code`` analysis frames make one code.
    """

    input_dim: int = 512
    latent_dim: int = 4
    frames_per_code: int = 1
    channels: int = 256
    blocks: int = 4
    kernel_size: int = 7
    expansion: int = 2

    def __post_init__(self) -> None:
        _check_widths(self, "convnext encoder config", ("input_dim", "latent_dim", "channels"))
        check_size("convnext encoder config", "frames_per_code", self.frames_per_code, 1, MAX_FRAMES_PER_CODE)
        _check_odd_kernel(self.kernel_size)


@dataclass(frozen=True)
class ConvNeXtDecoderSettings:
    """The ``convnext-film`` codec decoder (:class:`~plutok.codec.decoders.convnext.ConvNeXtDecoder`).

    ``latent_dim``, ``output_dim`` and ``speaker_dim`` are set by the codec (the
    quantizer's dimension, the synthesis features, the speaker vector); each code
    decodes to ``frames_per_code`` (2 or 4) synthesis frames.
    """

    latent_dim: int = 4
    output_dim: int = 80
    speaker_dim: int = 32
    frames_per_code: int = 4
    channels: int = 256
    blocks: int = 4
    upsampled_channels: int = 128
    upsampled_blocks: int = 2
    kernel_size: int = 7
    expansion: int = 2

    def __post_init__(self) -> None:
        widths = ("latent_dim", "output_dim", "speaker_dim", "channels", "upsampled_channels")
        _check_widths(self, "convnext-film decoder config", widths)
        for name in ("blocks", "upsampled_blocks"):
            check_size("convnext-film decoder config", name, getattr(self, name), 0, MAX_BLOCKS)
        _check_odd_kernel(self.kernel_size)
        if self.frames_per_code not in (2, 4):
            raise ModelError("synthesis_frames_per_code must be 2 or 4")


@dataclass(frozen=True)
class SamplingSettings:
    """How a sampling decoder (flow matching, diffusion) draws its output.

    ``steps``: solver steps (``None``: the decoder's own default); ``seed``: the noise's
    seed, so one set of codes always decodes to the same features. A deterministic
    decoder ignores both.
    """

    steps: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ModelError(f"sampling steps must be at least 1, got {self.steps}")


@dataclass(frozen=True)
class ContentHeadSettings:
    """The content codec's training heads on the code vectors (content prediction, CTC phonemes)."""

    content_channels: int = 256
    #: The content head predicts the first ``content_dim`` analysis channels (0: all). With a
    #: stacked Whisper + log-mel frontend, 512 keeps the content objective on Whisper's part.
    content_dim: int = 0
    kernel_size: int = 7
    expansion: int = 2
    #: The CTC head's phoneme inventory (class ``i + 1`` is ``phoneme_symbols[i]``, 0 the
    #: blank); set by training from the labels (:mod:`plutok.training.phonemes`). Empty: no head.
    phoneme_symbols: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_widths(self, "content head config", ("content_channels",))
        check_size("content head config", "content_dim", self.content_dim, 0, MAX_WIDTH)
        object.__setattr__(self, "phoneme_symbols", tuple(self.phoneme_symbols))
        _check_odd_kernel(self.kernel_size)
        if self.content_dim < 0:
            raise ModelError(f"content_dim must be >= 0, got {self.content_dim}")


@dataclass(frozen=True)
class ContentObjectiveSettings:
    """Loss weights of :class:`~plutok.training.objectives.ContentCodecObjective` (recorded in the codec's config)."""

    content_weight: float = 1.0
    gradient_weight: float = 1.0
    #: Weight of the envelope term: 1 - correlation of each mel band's trajectory over
    #: 300 ms segments of speech (STOI's view of intelligibility, in the log-mel domain).
    envelope_weight: float = 0.0
    #: Weight of the band-amplitude term: 1 - correlation of the linear amplitude of STOI's
    #: 15 one-third-octave bands (150 Hz - 4.3 kHz) over 380 ms of speech, after undoing the
    #: speaker normalisation (:func:`~plutok.training.objectives.band_envelope_loss`).
    band_envelope_weight: float = 0.0
    #: Weight of the CTC phoneme objective on the code vectors (0: no CTC head).
    ctc_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("ctc_weight", "envelope_weight", "band_envelope_weight"):
            if getattr(self, name) < 0:
                raise ModelError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class ContentCodecSettings:
    """The flat ``codec`` section of the first v2 models: a ``content`` codec of the
    ``convnext`` encoder and the ``convnext-film`` decoder with shared widths.

    Models saved so keep loading (:meth:`parts` maps it onto the parts), and a codec of
    those parts is written back in this form, so its config, fingerprint and ``.plt``
    files stay as they were.
    """

    input_dim: int = 512
    output_dim: int = 80
    speaker_dim: int = 32
    analysis_frames_per_code: int = 1
    synthesis_frames_per_code: int = 4
    channels: int = 256
    encoder_blocks: int = 4
    decoder_blocks: int = 4
    upsampled_channels: int = 128
    upsampled_blocks: int = 2
    content_channels: int = 256
    kernel_size: int = 7
    expansion: int = 2
    content_weight: float = 1.0
    #: The content head predicts the first ``content_dim`` analysis channels (0: all). With a
    #: stacked Whisper + log-mel frontend, 512 keeps the content objective on Whisper's part.
    content_dim: int = 0
    gradient_weight: float = 1.0
    #: Weight of the envelope term: 1 - correlation of each mel band's trajectory over
    #: 300 ms segments of speech (STOI's view of intelligibility, in the log-mel domain).
    envelope_weight: float = 0.0
    #: Weight of the band-amplitude term: 1 - correlation of the linear amplitude of STOI's
    #: 15 one-third-octave bands (150 Hz - 4.3 kHz) over 380 ms of speech, after undoing the
    #: speaker normalisation (:func:`~plutok.training.objectives.band_envelope_loss`).
    band_envelope_weight: float = 0.0
    quantizer: dict[str, Any] = field(default_factory=lambda: {"name": "fsq", "levels": [8, 5, 5, 5]})
    #: Weight of the CTC phoneme objective on the code vectors (0: no CTC head).
    ctc_weight: float = 0.0
    #: The CTC head's phoneme inventory (class ``i + 1`` is ``phoneme_symbols[i]``, 0 the
    #: blank); set by training from the labels (:mod:`plutok.training.phonemes`).
    phoneme_symbols: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        what = "content codec config"
        for name in ("input_dim", "output_dim", "speaker_dim", "channels", "upsampled_channels"):
            check_size(what, name, getattr(self, name), 1, MAX_WIDTH)
        check_size(what, "content_channels", self.content_channels, 1, MAX_WIDTH)
        for name in ("encoder_blocks", "decoder_blocks", "upsampled_blocks"):
            check_size(what, name, getattr(self, name), 0, MAX_BLOCKS)
        for name in ("analysis_frames_per_code", "synthesis_frames_per_code"):
            check_size(what, name, getattr(self, name), 1, MAX_FRAMES_PER_CODE)
        check_size(what, "kernel_size", self.kernel_size, 1, MAX_KERNEL_SIZE)
        check_size(what, "expansion", self.expansion, 1, 16)
        check_size(what, "content_dim", self.content_dim, 0, MAX_WIDTH)
        if not isinstance(self.quantizer, Mapping):
            raise ModelError(f"{what}: quantizer must be a JSON object, got {self.quantizer!r}")
        if not isinstance(self.phoneme_symbols, (list, tuple)) or len(self.phoneme_symbols) > MAX_WIDTH:
            raise ModelError(f"{what}: phoneme_symbols must be a list of at most {MAX_WIDTH} symbols")
        object.__setattr__(self, "phoneme_symbols", tuple(self.phoneme_symbols))
        if self.ctc_weight < 0:
            raise ModelError(f"ctc_weight must be >= 0, got {self.ctc_weight}")
        for name in ("envelope_weight", "band_envelope_weight"):
            if getattr(self, name) < 0:
                raise ModelError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.kernel_size % 2 != 1:
            raise ModelError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.analysis_frames_per_code < 1 or self.synthesis_frames_per_code < 1:
            raise ModelError("frames per code must be positive")
        if not 0 <= self.content_dim <= self.input_dim:
            raise ModelError(
                f"content_dim must be in [0, input_dim={self.input_dim}], got {self.content_dim}"
            )

    def parts(self) -> tuple[dict[str, Any], dict[str, Any], ContentHeadSettings, ContentObjectiveSettings]:
        """``(encoder, decoder, heads, objective)``: the encoder and decoder config sections
        (``latent_dim`` left to the codec: the quantizer's) and the codec's own settings."""
        encoder = {
            "name": "convnext",
            "input_dim": self.input_dim,
            "frames_per_code": self.analysis_frames_per_code,
            "channels": self.channels,
            "blocks": self.encoder_blocks,
            "kernel_size": self.kernel_size,
            "expansion": self.expansion,
        }
        decoder = {
            "name": "convnext-film",
            "output_dim": self.output_dim,
            "speaker_dim": self.speaker_dim,
            "frames_per_code": self.synthesis_frames_per_code,
            "channels": self.channels,
            "blocks": self.decoder_blocks,
            "upsampled_channels": self.upsampled_channels,
            "upsampled_blocks": self.upsampled_blocks,
            "kernel_size": self.kernel_size,
            "expansion": self.expansion,
        }
        heads = ContentHeadSettings(
            self.content_channels, self.content_dim, self.kernel_size, self.expansion, self.phoneme_symbols
        )
        objective = ContentObjectiveSettings(
            self.content_weight,
            self.gradient_weight,
            self.envelope_weight,
            self.band_envelope_weight,
            self.ctc_weight,
        )
        return encoder, decoder, heads, objective

    @classmethod
    def from_parts(
        cls,
        encoder: ConvNeXtEncoderSettings,
        decoder: ConvNeXtDecoderSettings,
        quantizer: dict[str, Any],
        heads: ContentHeadSettings,
        objective: ContentObjectiveSettings,
    ) -> ContentCodecSettings | None:
        """The flat form of these parts, or ``None`` when they do not share what it shares."""
        shared = {
            (encoder.channels, encoder.kernel_size, encoder.expansion),
            (decoder.channels, decoder.kernel_size, decoder.expansion),
        }
        if len(shared) != 1 or (heads.kernel_size, heads.expansion) != (
            encoder.kernel_size,
            encoder.expansion,
        ):
            return None
        return cls(
            input_dim=encoder.input_dim,
            output_dim=decoder.output_dim,
            speaker_dim=decoder.speaker_dim,
            analysis_frames_per_code=encoder.frames_per_code,
            synthesis_frames_per_code=decoder.frames_per_code,
            channels=encoder.channels,
            encoder_blocks=encoder.blocks,
            decoder_blocks=decoder.blocks,
            upsampled_channels=decoder.upsampled_channels,
            upsampled_blocks=decoder.upsampled_blocks,
            content_channels=heads.content_channels,
            kernel_size=encoder.kernel_size,
            expansion=encoder.expansion,
            content_weight=objective.content_weight,
            content_dim=heads.content_dim,
            gradient_weight=objective.gradient_weight,
            envelope_weight=objective.envelope_weight,
            band_envelope_weight=objective.band_envelope_weight,
            quantizer=dict(quantizer),
            ctc_weight=objective.ctc_weight,
            phoneme_symbols=heads.phoneme_symbols,
        )


@dataclass(frozen=True)
class AdversarialSettings:
    """The adversarial term of ``train-codec`` (:mod:`plutok.training.adversarial`): a patch
    discriminator on the decoder's speaker-normalised log-mel, trained beside the codec.

    Training-only, like the schedule: the discriminator never ships and these settings are
    not in the codec's config (a model trained with the term has the same architecture,
    config keys and fingerprint rules as one trained without). ``weight`` 0 turns it off.
    """

    #: Weight of the least-squares generator term (the decoder's log-mel judged real); 0: off.
    weight: float = 0.0
    #: Weight of feature matching: L1 between the discriminator's hidden activations on
    #: the decoded and on the true log-mel, a steadier gradient than the verdict alone.
    feature_matching_weight: float = 1.0
    #: Channels of the discriminator's first layer (doubled twice in the layers after).
    channels: int = 16
    learning_rate: float = 2e-4
    #: Steps in which only the discriminator learns: the decoder feels the term from this
    #: step on, not while the verdicts are still those of random weights.
    warmup_steps: int = 100

    def __post_init__(self) -> None:
        for name in ("weight", "feature_matching_weight", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ModelError(f"adversarial {name} must be >= 0, got {getattr(self, name)}")
        check_size("adversarial discriminator", "channels", self.channels, 1, 512)
        if not self.learning_rate > 0:
            raise ModelError(f"adversarial learning_rate must be positive, got {self.learning_rate}")

    @property
    def enabled(self) -> bool:
        """On when ``weight`` > 0 (feature matching comes with it, never alone)."""
        return self.weight > 0


#: Training precisions (:attr:`TrainerConfig.precision`).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainerConfig:
    """Optimisation schedule (AdamW, linear warm-up then cosine decay)."""

    steps: int = 6000
    batch_size: int = 16
    segment_codes: int = 100
    learning_rate: float = 1e-3
    warmup_steps: int = 300
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    init_batches: int = 8
    #: At most this many of those batches' encoder outputs initialise the quantizer (0: all).
    init_vectors: int = 0
    eval_every: int = 500
    checkpoint_every: int = 250
    log_every: int = 50
    keep_checkpoints: int = 2
    seed: int = 0
    #: The data mix: a second of real speech (cache ``kind`` ``real``) is drawn this many
    #: times as often as a second of synthetic speech. The real recordings are what users
    #: tokenize and what the dev scores are on, but only a quarter of the cached hours.
    real_weight: float = 1.0
    device: str = "cpu"
    #: ``auto`` (bf16 autocast on CUDA where supported, else fp16 with loss scaling;
    #: float32 on CPU), ``fp32``, ``bf16`` or ``fp16`` (CUDA only).
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("steps", "batch_size", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ModelError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("eval_every", "checkpoint_every", "warmup_steps", "init_batches", "init_vectors"):
            if getattr(self, name) < 0:
                raise ModelError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.real_weight > 0:
            raise ModelError(f"real_weight must be positive, got {self.real_weight}")

    def learning_rate_at(self, step: int) -> float:
        return warmup_cosine(step, self.steps, self.warmup_steps, self.learning_rate, self.min_lr_ratio)


@dataclass(frozen=True)
class ISTFTVocoderSettings:
    """Architecture of :class:`ISTFTNet` (part of the model config)."""

    sample_rate: int = 16000
    hop_length: int = 160
    n_fft: int = 640
    n_mels: int = 80
    channels: int = 256
    blocks: int = 6
    kernel_size: int = 7
    expansion: int = 3

    def __post_init__(self) -> None:
        what = "istft vocoder config"
        check_size(what, "sample_rate", self.sample_rate, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)
        for name in ("hop_length", "n_fft"):
            check_size(what, name, getattr(self, name), 1, MAX_FFT_SIZE)
        for name in ("n_mels", "channels"):
            check_size(what, name, getattr(self, name), 1, MAX_WIDTH)
        check_size(what, "blocks", self.blocks, 0, MAX_BLOCKS)
        check_size(what, "kernel_size", self.kernel_size, 1, MAX_KERNEL_SIZE)
        check_size(what, "expansion", self.expansion, 1, 16)
        if (self.n_fft - self.hop_length) % 2 or self.n_fft < self.hop_length:
            raise ModelError("need n_fft >= hop_length with an even difference")
        if self.kernel_size % 2 != 1:
            raise ModelError(f"kernel_size must be odd, got {self.kernel_size}")
