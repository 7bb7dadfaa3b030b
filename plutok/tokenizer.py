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

from plutok.audio import load_audio, prepare_waveform, resample
from plutok.backbones import Backbone, backbone_from_config
from plutok.bpe import CodeBPE, OriginalCodeBPE, load_tokenizer
from plutok.container import PltFile, read_plt, write_plt
from plutok.errors import AudioError, ModelError, PlutokError, TokenError
from plutok.files import atomic_write_text
from plutok.vqvae import VQVAE, VQVAEConfig

__all__ = ["Encoding", "Plutok", "MODEL_FORMAT", "MODEL_FORMAT_VERSION", "default_model_path"]

MODEL_FORMAT = "plutok-model"
MODEL_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
VQVAE_FILE = "vqvae.safetensors"
TOKENIZER_FILE = "tokenizer.json"
# Speaker vectors are stored as float16 in .plt files: 16 bits per value.
SPEAKER_BITS_PER_VALUE = 16
# Peak level below which an input counts as silent (-80 dBFS); silent input still encodes.
_SILENCE_PEAK = 1e-4


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
    """

    def __init__(
        self,
        backbone: Backbone,
        vqvae: VQVAE,
        bpe: CodeBPE | OriginalCodeBPE,
        metadata: dict[str, Any] | None = None,
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
        self._fingerprint = self._compute_fingerprint()

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
    def from_pretrained(cls, path: str | os.PathLike | None = None) -> Plutok:
        """Load a saved model directory, or the bundled default when ``path`` is None."""
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
        return cls(backbone, vqvae, bpe, metadata=config.get("metadata"))

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
            if directory.exists():
                if not (directory / CONFIG_FILE).is_file() and any(directory.iterdir()):
                    raise ModelError(f"{directory}: exists and is not a model directory; not overwriting")
                shutil.rmtree(directory)
            os.replace(staging, directory)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return directory

    # -- encoding -------------------------------------------------------------------------
    def _prepare(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        waveform = prepare_waveform(wav, sample_rate, self.sample_rate)
        minimum = self.backbone.hop_length * self.vqvae.downsample
        if waveform.shape[0] < minimum:
            raise AudioError(
                f"audio is too short: {waveform.shape[0] / self.sample_rate * 1000:.1f} ms; "
                f"at least {minimum / self.sample_rate * 1000:.0f} ms (one code) is needed"
            )
        return waveform

    def encode_codes(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """VQ codes ``(codes,)`` int64 and speaker vector ``(speaker_dim,)`` (no BPE)."""
        waveform = self._prepare(wav, sample_rate)
        return self._codes(waveform)

    def _codes(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        analyze = getattr(self.backbone, "analyze", None)
        if analyze is not None:
            features, speaker = analyze(waveform)
        else:
            speaker = self.backbone.speaker_embedding(waveform)
            features = self.backbone.features(waveform, speaker)
        with torch.inference_mode():
            codes = self.vqvae.encode(features)
        return codes, speaker

    def encode(self, wav: np.ndarray, sample_rate: int) -> Encoding:
        """Tokenize one utterance.

        Args:
            wav: samples ``(samples,)`` or ``(samples, channels)``, int PCM or float, any rate.
            sample_rate: Hz of ``wav``.
        Returns:
            :class:`Encoding` with token ids and the speaker vector.
        Raises:
            AudioError: empty, too short (under one code), NaN/inf, bad shape.
        """
        waveform = self._prepare(wav, sample_rate)
        codes, speaker = self._codes(waveform)
        num_samples = int(
            np.asarray(wav).shape[0] if np.asarray(wav).ndim == 1 else max(np.asarray(wav).shape)
        )
        return Encoding(
            ids=self.bpe.encode(codes),
            # Rounded to what a .plt file stores, so decoding from memory and from a file agree.
            speaker=np.asarray(speaker, dtype=np.float16).astype(np.float32),
            sample_rate=int(sample_rate),
            num_samples=num_samples,
            num_codes=int(codes.shape[0]),
            silent=bool(np.max(np.abs(waveform)) < _SILENCE_PEAK),
            fingerprint=self.fingerprint_bytes,
        )

    def encode_file(self, path: str | os.PathLike) -> Encoding:
        """Tokenize an audio file (wav, flac, ogg, mp3, ...)."""
        wav, sample_rate = load_audio(path)
        return self.encode(wav, sample_rate)

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
        return self.bpe.decode(list(ids))

    # -- decoding -------------------------------------------------------------------------
    def decode(self, encoding: Encoding, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
        """Speech from an :class:`Encoding`.

        Args:
            encoding: from :meth:`encode` or :meth:`load_plt`.
            sample_rate: output rate in Hz; default the model's rate.
        Returns:
            ``(wav, sample_rate)``, ``wav`` float32 ``(samples,)`` with the input's duration.
        Raises:
            TokenError: empty or unknown token ids.
        """
        if len(encoding.ids) == 0:
            raise TokenError("no token ids to decode (empty token list)")
        codes = self.bpe.decode(encoding.ids)
        with torch.inference_mode():
            features = self.vqvae.decode(codes)
        speaker = np.asarray(encoding.speaker, dtype=np.float32)
        wav = self.backbone.synthesize(features, speaker)
        target = int(round(encoding.num_samples * self.sample_rate / encoding.sample_rate))
        wav = _fit_length(wav, target)
        output_rate = int(sample_rate or self.sample_rate)
        if output_rate != self.sample_rate:
            wav = resample(wav, self.sample_rate, output_rate)
        return wav, output_rate

    # -- .plt files -----------------------------------------------------------------------
    def save_plt(self, encoding: Encoding, path: str | os.PathLike) -> Path:
        """Write an encoding as a ``.plt`` file (atomically)."""
        return write_plt(path, encoding.to_plt())

    def load_plt(self, path: str | os.PathLike) -> Encoding:
        """Read a ``.plt`` file made by this model (others are refused)."""
        plt = read_plt(path, expected_fingerprint=self.fingerprint_bytes)
        codes = self.bpe.decode(plt.ids)
        return Encoding(
            ids=plt.ids,
            speaker=plt.speaker,
            sample_rate=plt.sample_rate,
            num_samples=plt.num_samples,
            num_codes=int(codes.shape[0]),
            fingerprint=plt.fingerprint,
        )


def _fit_length(wav: np.ndarray, length: int) -> np.ndarray:
    if wav.shape[0] >= length:
        return wav[:length]
    return np.pad(wav, (0, length - wav.shape[0]))
