"""The whole tokenizer: backbone -> VQ-VAE -> BPE, and back (DESIGN §1, §3).

A saved model is a directory::

    config.json          format, version, and one section per stage
    vqvae.safetensors    VQ-VAE weights
    tokenizer.json       BPE vocabulary (standard HF tokenizers file)
    backbone.*           backbone weights, only for backbones that are not packaged
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plutok.audio import load_audio_stream, prepare_waveform, resample
from plutok.backbones import Backbone, backbone_from_config
from plutok.bpe import CodeBPE, OriginalCodeBPE, load_tokenizer
from plutok.container import PltFile, read_plt, write_plt
from plutok.errors import AudioError, ContainerError, ModelError, PlutokError, TokenError
from plutok.files import atomic_write_text
from plutok.vqvae import VQVAE, ResBlock, VQVAEConfig

__all__ = [
    "DEFAULT_CHUNK_SECONDS",
    "MAX_DURATION_SECONDS",
    "Encoding",
    "Plutok",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "default_model_path",
]

MODEL_FORMAT = "plutok-model"
MODEL_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
VQVAE_FILE = "vqvae.safetensors"
TOKENIZER_FILE = "tokenizer.json"
# Speaker vectors are stored as float16 in .plt files: 16 bits per value.
SPEAKER_BITS_PER_VALUE = 16
# Peak level below which an input counts as silent (-80 dBFS); silent input still encodes.
_SILENCE_PEAK = 1e-4
# Long audio is processed in chunks of this many seconds (VQ-VAE and vocoder), each with
# enough context on both sides that the result equals a single pass (see Plutok.encode).
DEFAULT_CHUNK_SECONDS = 30.0
# Longest audio an Encoding or .plt file may describe. Decoding allocates the output
# waveform up front, so a hostile header must not be able to ask for more.
MAX_DURATION_SECONDS = 24 * 3600
# Output rates decode() accepts.
_MAX_OUTPUT_RATE = 384_000


def default_model_path() -> Path:
    """Directory of the default model bundled with the package."""
    return Path(str(resources.files("plutok") / "assets" / "default"))


@dataclass
class Encoding:
    """One encoded utterance.

    Attributes:
        ids: BPE token ids.
        speaker: float32 ``(speaker_dim,)`` speaker vector (timbre, channel).
        sample_rate: Hz of the input audio.
        num_samples: input length in samples at ``sample_rate`` (decoding restores it).
        num_codes: VQ codes behind ``ids`` (before BPE).
        silent: the input was digital silence (peak below -80 dBFS).
        fingerprint: 8-byte prefix of the fingerprint of the model that made it.
    """

    ids: list[int]
    speaker: np.ndarray
    sample_rate: int
    num_samples: int
    num_codes: int
    silent: bool = False
    fingerprint: bytes = field(default=b"\0" * 8, repr=False)

    @property
    def duration(self) -> float:
        """Seconds of input audio."""
        return self.num_samples / self.sample_rate

    @property
    def tokens_per_second(self) -> float:
        return len(self.ids) / self.duration

    @property
    def codes_per_second(self) -> float:
        return self.num_codes / self.duration

    def to_plt(self) -> PltFile:
        return PltFile(self.fingerprint, self.sample_rate, self.num_samples, self.speaker, list(self.ids))


class Plutok:
    """Speech tokenizer: waveform -> token ids (+ speaker vector) -> waveform.

    Build one with :meth:`from_pretrained` (a saved directory or the bundled default),
    :meth:`from_openvoice` (the original release's files) or from its three stages.

    ``chunk_seconds`` bounds memory on long audio: the VQ-VAE (and the mel backbone's
    vocoder) run over chunks of that length with context on both sides, so activations
    stay the size of one chunk whatever the input length; ``None`` runs each stage in one
    pass. Codes do not depend on it; decoded audio differs by less than 1e-3.
    """

    def __init__(
        self,
        backbone: Backbone,
        vqvae: VQVAE,
        bpe: CodeBPE | OriginalCodeBPE,
        metadata: dict[str, Any] | None = None,
        chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
    ):
        if vqvae.feature_dim != backbone.feature_dim:
            raise ModelError(
                f"VQ-VAE reads {vqvae.feature_dim} feature channels but the {backbone.name} backbone "
                f"gives {backbone.feature_dim}"
            )
        if bpe.codebook_size != vqvae.codebook_size:
            raise ModelError(
                f"tokenizer was trained for {bpe.codebook_size} codes, the VQ-VAE has {vqvae.codebook_size}"
            )
        self.backbone = backbone
        self.vqvae = vqvae.eval()
        self.bpe = bpe
        self.metadata = dict(metadata or {})
        if chunk_seconds is not None and not chunk_seconds > 0:
            raise ModelError(f"chunk_seconds must be positive or None, got {chunk_seconds!r}")
        self.chunk_seconds = chunk_seconds
        self._fingerprint = self._compute_fingerprint()
        # Frames of context each VQ-VAE chunk needs (encoder, in feature frames) and codes
        # of context for each decoder chunk: the receptive fields, computed from the layers.
        downsample = self.vqvae.downsample
        modules = [self.vqvae.input_proj, *self.vqvae.encoder]
        self._encoder_context = downsample * math.ceil(_receptive_field(modules) / downsample)
        self._decoder_context = math.ceil(_receptive_field([*self.vqvae.decoder, self.vqvae.output_proj]))

    # -- facts ----------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """Hz of decoded audio (the backbone's rate)."""
        return self.backbone.sample_rate

    @property
    def codes_per_second(self) -> float:
        """Codes per second of audio before BPE."""
        return self.backbone.frames_per_second / self.vqvae.downsample

    @property
    def codebook_size(self) -> int:
        return self.vqvae.codebook_size

    @property
    def chunk_frames(self) -> int | None:
        """Feature frames per chunk (a multiple of the VQ-VAE downsampling), None for one pass."""
        if self.chunk_seconds is None:
            return None
        downsample = self.vqvae.downsample
        frames = round(self.chunk_seconds * self.backbone.frames_per_second)
        return downsample * max(1, math.ceil(frames / downsample))

    @property
    def vocab_size(self) -> int:
        return self.bpe.vocab_size

    @property
    def speaker_bits(self) -> int:
        """Bits one speaker vector takes in a ``.plt`` file."""
        return self.backbone.speaker_dim * SPEAKER_BITS_PER_VALUE

    @property
    def bits_per_token(self) -> int:
        """Bits of a fixed-width token id: ``ceil(log2(vocab_size))``."""
        return max(1, int(np.ceil(np.log2(self.vocab_size))))

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) over the model's config, weights and vocabulary."""
        return self._fingerprint

    @property
    def fingerprint_bytes(self) -> bytes:
        """The 8-byte prefix stored in ``.plt`` files."""
        return bytes.fromhex(self._fingerprint[:16])

    def _model_config(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "backbone": self.backbone.config(),
            "vqvae": self.vqvae.config.to_dict(),
            "bpe": {"codebook_size": self.bpe.codebook_size, "vocab_size": self.bpe.vocab_size},
        }

    def _compute_fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps(self._model_config(), sort_keys=True).encode())
        for key, tensor in sorted(self.vqvae.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(self.bpe.tokenizer.to_str().encode())
        digest.update(self.backbone.weights_digest().encode())
        return digest.hexdigest()

    def info(self) -> dict[str, Any]:
        """Facts about the model for people and reports."""
        return {
            "backbone": self.backbone.name,
            "sample_rate": self.sample_rate,
            "frames_per_second": self.backbone.frames_per_second,
            "feature_dim": self.backbone.feature_dim,
            "downsample": self.vqvae.downsample,
            "codes_per_second": self.codes_per_second,
            "codebook_size": self.codebook_size,
            "vocab_size": self.vocab_size,
            "bits_per_token": self.bits_per_token,
            "speaker_dim": self.backbone.speaker_dim,
            "speaker_bits": self.speaker_bits,
            "vqvae_parameters": sum(p.numel() for p in self.vqvae.parameters()),
            "fingerprint": self.fingerprint,
            **{key: value for key, value in self.metadata.items() if key in ("trained", "description")},
        }

    # -- loading and saving ---------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None = None, chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS
    ) -> Plutok:
        """Load a saved model directory, or the bundled default when ``path`` is None.

        ``chunk_seconds``: see :class:`Plutok`.
        """
        directory = default_model_path() if path is None else Path(path)
        if not directory.is_dir():
            if path is None:
                raise ModelError(f"the bundled default model is missing ({directory}); reinstall plutok")
            raise ModelError(f"{directory}: not a model directory")
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise ModelError(f"{directory}: no {CONFIG_FILE}; not a Plutok model directory")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelError(f"{config_path}: corrupt JSON ({error})") from None
        if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
            raise ModelError(f"{config_path}: not a Plutok model config")
        if config.get("format_version") != MODEL_FORMAT_VERSION:
            raise ModelError(
                f"{config_path}: model format version {config.get('format_version')} is not supported "
                f"(this Plutok reads {MODEL_FORMAT_VERSION})"
            )
        try:
            backbone = backbone_from_config(config["backbone"], directory)
            vqvae = VQVAE.load(directory / VQVAE_FILE, config=VQVAEConfig.from_dict(config["vqvae"]))
            bpe = load_tokenizer(directory / TOKENIZER_FILE, codebook_size=vqvae.codebook_size)
        except KeyError as error:
            raise ModelError(f"{config_path}: missing section {error}") from None
        return cls(backbone, vqvae, bpe, metadata=config.get("metadata"), chunk_seconds=chunk_seconds)

    @classmethod
    def from_openvoice(
        cls, checkpoint: str | os.PathLike, vqvae: str | os.PathLike, tokenizer: str | os.PathLike
    ) -> Plutok:
        """Load the original release: OpenVoice converter dir, VQ-VAE ``model.pth``, ``tokenizer.json``."""
        from plutok.backbones.openvoice import OpenVoiceBackbone
        from plutok.bpe import load_original_tokenizer

        checkpoint = Path(checkpoint)
        converter = checkpoint / "converter" if (checkpoint / "converter").is_dir() else checkpoint
        backbone = OpenVoiceBackbone.from_checkpoint(converter)
        model = VQVAE.from_original(vqvae)
        bpe = load_original_tokenizer(tokenizer, codebook_size=model.codebook_size)
        return cls(backbone, model, bpe, metadata={"description": "original Plutok release (OpenVoice)"})

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json``, ``vqvae.safetensors``, ``tokenizer.json`` (+ backbone weights).

        The directory is assembled beside the target and renamed into place, so an
        interrupted save never leaves a half-written model.
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; a model dir is meant to be shared
        try:
            self.vqvae.save(staging, write_config=False)  # config.json holds the VQ-VAE section
            self.bpe.save(staging / TOKENIZER_FILE)
            self.backbone.save_weights(staging)
            config = self._model_config()
            config["metadata"] = self.metadata
            atomic_write_text(staging / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")
            # Swap directories with renames only: a kill at any point leaves either the old
            # or the new model in place (plus a hidden leftover), never a mix or nothing.
            previous = None
            if directory.exists():
                if any(directory.iterdir()) and not _is_model_directory(directory):
                    raise ModelError(
                        f"{directory}: exists and is not a Plutok model directory; not overwriting"
                    )
                previous = directory.parent / f".{directory.name}.previous-{os.getpid()}"
                os.replace(directory, previous)
            os.replace(staging, directory)
            if previous is not None:
                shutil.rmtree(previous)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return directory

    # -- encoding -------------------------------------------------------------------------
    def _check_length(self, waveform: np.ndarray) -> np.ndarray:
        minimum = self.backbone.hop_length * self.vqvae.downsample
        if waveform.shape[0] < minimum:
            raise AudioError(
                f"audio is too short: {waveform.shape[0] / self.sample_rate * 1000:.1f} ms; "
                f"at least {minimum / self.sample_rate * 1000:.0f} ms (one code) is needed"
            )
        if waveform.shape[0] > MAX_DURATION_SECONDS * self.sample_rate:
            raise AudioError(
                f"audio is too long: {waveform.shape[0] / self.sample_rate / 3600:.1f} h; "
                f"at most {MAX_DURATION_SECONDS // 3600} h per encoding (split it)"
            )
        return waveform

    def _prepare(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        return self._check_length(prepare_waveform(wav, sample_rate, self.sample_rate))

    def encode_codes(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """VQ codes ``(codes,)`` int64 and speaker vector ``(speaker_dim,)`` (no BPE)."""
        waveform = self._prepare(wav, sample_rate)
        return self._codes(waveform)

    def _codes(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features, speaker = self.backbone.analyze(waveform)
        return self._encode_features(features), speaker

    def _encode_features(self, features: np.ndarray) -> np.ndarray:
        """Codes ``(ceil(T / downsample),)`` of features ``(C, T)``, chunk by chunk.

        Each chunk starts at a multiple of the downsampling and is encoded with
        ``_encoder_context`` frames (the encoder's receptive field) on each side that
        exist in the input, so every kept code sees exactly what a single pass sees.
        """
        downsample = self.vqvae.downsample
        frames = features.shape[1]
        chunk = self.chunk_frames
        context = self._encoder_context
        with torch.inference_mode():
            if chunk is None or frames <= chunk + 2 * context:
                return self.vqvae.encode(features)
            pieces = []
            for start in range(0, frames, chunk):
                stop = min(frames, start + chunk)
                begin, end = max(0, start - context), min(frames, stop + context)
                codes = self.vqvae.encode(features[:, begin:end])
                first = (start - begin) // downsample
                pieces.append(codes[first : first + math.ceil((stop - start) / downsample)])
        return np.concatenate(pieces)

    def encode(self, wav: np.ndarray, sample_rate: int) -> Encoding:
        """Tokenize one utterance.

        Long input is processed in chunks of ``chunk_seconds`` (see :class:`Plutok`);
        the tokens are the same as in one pass.

        Args:
            wav: samples ``(samples,)`` or ``(samples, channels)``, int PCM or float, any rate.
            sample_rate: Hz of ``wav``.
        Returns:
            :class:`Encoding` with token ids and the speaker vector; ``silent`` is set
            when the input is digital silence (it still encodes).
        Raises:
            AudioError: empty, too short (under one code), too long (over 24 h),
                NaN/inf, bad shape.
        """
        waveform = self._prepare(wav, sample_rate)
        array = np.asarray(wav)
        num_samples = int(array.shape[0] if array.ndim == 1 else max(array.shape))
        return self._encoding(waveform, int(sample_rate), num_samples)

    def _encoding(self, waveform: np.ndarray, sample_rate: int, num_samples: int) -> Encoding:
        codes, speaker = self._codes(waveform)
        return Encoding(
            ids=self.bpe.encode(codes),
            # Rounded to what a .plt file stores, so decoding from memory and from a file agree.
            speaker=np.asarray(speaker, dtype=np.float16).astype(np.float32),
            sample_rate=sample_rate,
            num_samples=num_samples,
            num_codes=int(codes.shape[0]),
            silent=bool(np.max(np.abs(waveform)) < _SILENCE_PEAK),
            fingerprint=self.fingerprint_bytes,
        )

    def encode_file(self, path: str | os.PathLike) -> Encoding:
        """Tokenize an audio file (wav, flac, ogg, mp3, ...).

        The file is read block by block and resampled on the fly, so only the mono
        waveform at the model's rate is ever held (1 h at 16 kHz: 230 MB).

        Raises:
            AudioError: missing, a directory, empty, not audio, or bad samples.
        """
        waveform, source_rate, num_samples = load_audio_stream(path, target_rate=self.sample_rate)
        try:
            self._check_length(waveform)
        except AudioError as error:
            raise AudioError(f"{path}: {error}") from None
        return self._encoding(waveform, source_rate, num_samples)

    def encode_files(
        self, paths: Iterable[str | os.PathLike], progress: bool = True
    ) -> Iterator[tuple[Path, Encoding | PlutokError]]:
        """Tokenize many files; yields ``(path, Encoding)`` or ``(path, error)`` per file.

        A bad file does not stop the batch: its :class:`PlutokError` is yielded instead.
        """
        from tqdm import tqdm

        paths = [Path(path) for path in paths]
        for path in tqdm(paths, desc="encoding", unit="file", disable=not progress):
            try:
                yield path, self.encode_file(path)
            except PlutokError as error:
                yield path, error

    def ids_to_codes(self, ids: Iterable[int]) -> np.ndarray:
        """Codes int64 ``(codes,)`` behind token ids; raises :class:`TokenError` for unknown ids."""
        return self.bpe.decode(_check_ids(ids))

    # -- decoding -------------------------------------------------------------------------
    def _decode_codes(self, codes: np.ndarray) -> np.ndarray:
        """Features ``(C, downsample * N)`` of codes ``(N,)``, chunk by chunk with context."""
        chunk = None if self.chunk_frames is None else self.chunk_frames // self.vqvae.downsample
        context = self._decoder_context
        total = codes.shape[0]
        with torch.inference_mode():
            if chunk is None or total <= chunk + 2 * context:
                return self.vqvae.decode(codes)
            downsample = self.vqvae.downsample
            features = np.empty((self.vqvae.feature_dim, downsample * total), dtype=np.float32)
            for start in range(0, total, chunk):
                stop = min(total, start + chunk)
                begin, end = max(0, start - context), min(total, stop + context)
                piece = self.vqvae.decode(codes[begin:end])
                features[:, downsample * start : downsample * stop] = piece[
                    :, downsample * (start - begin) : downsample * (stop - begin)
                ]
        return features

    def decode(self, encoding: Encoding, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
        """Speech from an :class:`Encoding`.

        Long encodings are decoded in chunks of ``chunk_seconds`` (VQ-VAE and vocoder,
        with overlapping context cut at frame boundaries), so memory beyond the output
        waveform does not grow with the duration.

        Args:
            encoding: from :meth:`encode` or :meth:`load_plt`.
            sample_rate: output rate in Hz; default the model's rate.
        Returns:
            ``(wav, sample_rate)``, ``wav`` float32 ``(samples,)`` with the input's duration.
        Raises:
            TokenError: empty or unknown token ids, a duration over 24 h, a length that
                the tokens cannot cover, or a speaker vector that is not finite.
            AudioError: an output sample rate outside 1..384000 Hz.
        """
        if len(encoding.ids) == 0:
            raise TokenError("no token ids to decode (empty token list)")
        output_rate = self.sample_rate if sample_rate is None else sample_rate
        if not isinstance(output_rate, (int, np.integer)) or not 0 < output_rate <= _MAX_OUTPUT_RATE:
            raise AudioError(f"output sample rate must be in 1..{_MAX_OUTPUT_RATE} Hz, got {sample_rate}")
        target = self._target_length(encoding)
        codes = self.bpe.decode(_check_ids(encoding.ids))
        frames_per_code = self.vqvae.downsample
        hop = self.backbone.hop_length
        covered = codes.shape[0] * frames_per_code * hop
        if covered > MAX_DURATION_SECONDS * self.sample_rate:
            raise TokenError(
                f"the tokens stand for {covered / self.sample_rate / 3600:.1f} h of audio; "
                f"at most {MAX_DURATION_SECONDS // 3600} h can be decoded"
            )
        # encode() gives ceil((samples // hop) / downsample) codes: the stated length must
        # be within about one code of what they cover (twice that, for other backbones).
        if abs(covered - target) > 2 * (frames_per_code + 1) * hop:
            raise TokenError(
                f"the encoding claims {target / self.sample_rate:.2f} s of audio but its "
                f"{codes.shape[0]} codes cover {covered / self.sample_rate:.2f} s"
            )
        speaker = np.asarray(encoding.speaker, dtype=np.float32).reshape(-1)
        if speaker.shape[0] != self.backbone.speaker_dim:
            raise TokenError(
                f"the speaker vector has {speaker.shape[0]} values; this model uses {self.backbone.speaker_dim}"
            )
        if not np.all(np.isfinite(speaker)):
            raise TokenError("the speaker vector contains NaN or infinite values")
        features = self._decode_codes(codes)
        wav = self.backbone.synthesize(features, speaker, chunk_frames=self.chunk_frames)
        del features
        wav = _fit_length(wav, target)
        if not np.all(np.isfinite(wav)):
            raise TokenError("decoding gave NaN or infinite samples: the speaker vector is out of range")
        if output_rate != self.sample_rate:
            wav = resample(wav, self.sample_rate, output_rate)
        return wav, output_rate

    def _target_length(self, encoding: Encoding) -> int:
        """Output length in samples at the model's rate for ``encoding``'s stated duration."""
        if not isinstance(encoding.sample_rate, (int, np.integer)) or encoding.sample_rate <= 0:
            raise TokenError(f"encoding has a bad sample rate {encoding.sample_rate!r}")
        if not isinstance(encoding.num_samples, (int, np.integer)) or encoding.num_samples < 0:
            raise TokenError(f"encoding has a bad length {encoding.num_samples!r}")
        if encoding.num_samples > MAX_DURATION_SECONDS * encoding.sample_rate:
            raise TokenError(
                f"the encoding claims {encoding.num_samples / encoding.sample_rate / 3600:.1f} h of audio; "
                f"at most {MAX_DURATION_SECONDS // 3600} h can be decoded"
            )
        return int(round(int(encoding.num_samples) * self.sample_rate / int(encoding.sample_rate)))

    # -- .plt files -----------------------------------------------------------------------
    def save_plt(self, encoding: Encoding, path: str | os.PathLike) -> Path:
        """Write an encoding as a ``.plt`` file (atomically)."""
        return write_plt(path, encoding.to_plt())

    def load_plt(self, path: str | os.PathLike) -> Encoding:
        """Read a ``.plt`` file made by this model.

        Raises:
            ContainerError: missing, truncated or corrupt file, a file from another
                model, a speaker vector of the wrong size, or a header claiming more
                than 24 h of audio.
            TokenError: token ids outside this model's vocabulary.
        """
        plt = read_plt(path, expected_fingerprint=self.fingerprint_bytes)
        if plt.num_samples > MAX_DURATION_SECONDS * plt.sample_rate:
            raise ContainerError(
                f"{path}: header claims {plt.num_samples / plt.sample_rate / 3600:.1f} h of audio; "
                f"at most {MAX_DURATION_SECONDS // 3600} h is supported"
            )
        if plt.speaker.shape[0] != self.backbone.speaker_dim:
            raise ContainerError(
                f"{path}: speaker vector has {plt.speaker.shape[0]} values; this model uses "
                f"{self.backbone.speaker_dim}"
            )
        try:
            codes = self.bpe.decode(plt.ids)
        except TokenError as error:
            raise TokenError(f"{path}: {error}") from None
        return Encoding(
            ids=plt.ids,
            speaker=plt.speaker,
            sample_rate=plt.sample_rate,
            num_samples=plt.num_samples,
            num_codes=int(codes.shape[0]),
            fingerprint=plt.fingerprint,
        )


def _is_model_directory(directory: Path) -> bool:
    """True when ``directory`` holds a ``config.json`` of a Plutok model (safe to replace)."""
    try:
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == MODEL_FORMAT


def _check_ids(ids: Iterable[int]) -> list[int]:
    """Token ids as a list of Python ints; anything that is not an integer is a :class:`TokenError`."""
    checked = []
    for token_id in ids:
        if isinstance(token_id, (bool, np.bool_)) or not isinstance(token_id, (int, np.integer)):
            raise TokenError(f"token ids must be integers, got {token_id!r}")
        checked.append(int(token_id))
    return checked


def _receptive_field(modules: Iterable[torch.nn.Module | None]) -> float:
    """How far (in input steps, each side) an output of these stacked layers can look.

    An upper bound: a ``Conv1d`` of kernel ``k``, dilation ``d`` adds ``(k - 1) * d``
    of its input steps, a ``ConvTranspose1d`` of stride ``s`` adds ``ceil(k / s)``;
    strides change the step size for the layers after them. Anything else is pointwise.
    """
    reach, step = 0.0, 1.0
    for module in modules:
        layer = module.conv if isinstance(module, ResBlock) else module
        if isinstance(layer, torch.nn.ConvTranspose1d):
            reach += math.ceil(layer.kernel_size[0] / layer.stride[0]) * step
            step /= layer.stride[0]
        elif isinstance(layer, torch.nn.Conv1d):
            reach += (layer.kernel_size[0] - 1) * layer.dilation[0] * step
            step *= layer.stride[0]
    return reach


def _fit_length(wav: np.ndarray, length: int) -> np.ndarray:
    if wav.shape[0] >= length:
        return wav[:length]
    return np.pad(wav, (0, length - wav.shape[0]))
