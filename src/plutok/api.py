"""The :class:`Plutok` facade: frontend -> codec -> BPE, and back through the vocoder (docs/architecture.md).

It only composes parts; each part knows its own rates and context
(:mod:`plutok.frontends`, :mod:`plutok.speaker`, :mod:`plutok.codec`,
:mod:`plutok.vocoders`), model files are :mod:`plutok.model_directory`'s business and
encodings check themselves (:mod:`plutok.encoding`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from plutok import batch, encode_path, streaming, synthesis
from plutok.audio import load_audio_stream, prepare_waveform
from plutok.catalog import retired_model
from plutok.codec.search import CodeSearch
from plutok.container import write_plt
from plutok.devices import resolve_device
from plutok.encoding import (
    SPEAKER_BITS_PER_VALUE,
    UNKNOWN_FINGERPRINT,
    Encoding,
    bits_per_token,
    check_ids,
    check_made_by,
    read_encoding,
)
from plutok.errors import ModelError, PlutokError, TokenError
from plutok.model_directory import (
    ModelParts,
    accepted_fingerprints,
    check_parts,
    fingerprint,
    load_model_parts,
    save_model_parts,
    token_space,
)

__all__ = ["DEFAULT_CHUNK_SECONDS", "Plutok"]

# Long audio is processed in chunks of this many seconds (codec and vocoder), each with
# the context the part declares on both sides, so the result equals a single pass.
DEFAULT_CHUNK_SECONDS = 30.0


class Plutok:
    """Speech tokenizer: waveform -> token ids (+ speaker vector) -> waveform.

    Build one with :meth:`from_pretrained` (a saved directory or the bundled default),
    :meth:`from_openvoice` (the original release) or from its parts (:class:`ModelParts`).

    ``chunk_seconds`` bounds memory on long audio: codec and vocoder run over chunks of
    that length with their declared context on both sides; ``None`` runs each stage in
    one pass. Codes do not depend on it; decoded audio differs by less than 1e-3.

    ``search`` (a :class:`~plutok.codec.search.CodeSearch`) makes encoding choose each
    code by what the model's decoder renders of it (analysis by synthesis): decoded
    speech nearer the input, the same token space, encoding ~25 times slower, and for
    audio of up to one chunk. ``None`` (the default): the encoder's nearest codes.
    """

    def __init__(
        self,
        parts: ModelParts,
        chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
        search: CodeSearch | None = None,
    ) -> None:
        check_parts(parts)
        if chunk_seconds is not None and not chunk_seconds > 0:
            raise ModelError(f"chunk_seconds must be positive or None, got {chunk_seconds!r}")
        if search is not None and not isinstance(search, CodeSearch):
            raise ModelError(f"search must be a CodeSearch or None, got {type(search).__name__}")
        encode_path.check_search(parts, search)
        self.search = search
        self.parts = parts
        self.frontend, self.speaker_encoder = parts.frontend, parts.speaker
        self.codec, self.vocoder, self.bpe = parts.codec.eval(), parts.vocoder, parts.bpe
        self.metadata = parts.metadata
        self.chunk_seconds = chunk_seconds
        self._fingerprint = fingerprint(parts)
        self._token_space = token_space(parts)
        self._accepted: frozenset[bytes] | None = None

    # -- facts ----------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """Hz of decoded audio (the vocoder's rate)."""
        return self.vocoder.sample_rate

    @property
    def codes_per_second(self) -> float:
        return encode_path.codes_per_second(self.parts)

    @property
    def samples_per_code(self) -> int:
        """Input samples (at ``sample_rate``) one code stands for."""
        return encode_path.samples_per_code(self.parts)

    @property
    def codebook_size(self) -> int:
        return self.codec.codebook_size

    @property
    def vocab_size(self) -> int:
        return self.bpe.vocab_size

    @property
    def chunk_codes(self) -> int | None:
        """Codes per processing chunk, ``None`` for one pass."""
        if self.chunk_seconds is None:
            return None
        return max(1, math.ceil(round(self.chunk_seconds * self.codes_per_second, 6)))

    @property
    def speaker_bits(self) -> int:
        """Bits one speaker vector takes in a ``.plt`` file."""
        return self.speaker_encoder.speaker_dim * SPEAKER_BITS_PER_VALUE

    @property
    def bits_per_token(self) -> int:
        """Bits of a fixed-width token id: ``ceil(log2(vocab_size))``."""
        return bits_per_token(self.vocab_size)

    def bitrate(self, tokens_per_second: float, seconds: float) -> float:
        """Bits per second of ``seconds`` (> 0) of audio at ``tokens_per_second``, speaker vector included."""
        if not seconds > 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        return tokens_per_second * self.bits_per_token + self.speaker_bits / seconds

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) over the model's configs, weights (packaged ones too) and vocabulary."""
        return self._fingerprint

    @property
    def fingerprint_bytes(self) -> bytes:
        """The fingerprint's 8-byte prefix (what ``.plt`` files made before token spaces carry)."""
        return bytes.fromhex(self._fingerprint[:16])

    @property
    def token_space(self) -> str:
        """SHA-256 (hex) of what gives the ids their meaning: frontend, speaker encoder, codec, BPE.

        Not the vocoder: models that differ only in it (the default and ``fast``) share
        it and decode each other's files, rows and encodings.
        """
        return self._token_space

    @property
    def token_space_bytes(self) -> bytes:
        """The 8-byte prefix of :attr:`token_space`, stored in ``.plt`` files, rows and encodings."""
        return bytes.fromhex(self._token_space[:16])

    def reads(self, fingerprint: bytes) -> bool:
        """Whether a file, row or encoding with this 8-byte prefix was made in this model's token space."""
        return fingerprint in self._accepted_fingerprints()

    def _accepted_fingerprints(self) -> frozenset[bytes]:
        if self._accepted is None:
            self._accepted = accepted_fingerprints(self.parts)
        return self._accepted

    @property
    def default_speaker(self) -> np.ndarray | None:
        """The voice :meth:`decode_ids` uses when given none (stored with the model), or None."""
        stored = self.parts.default_speaker
        return None if stored is None else np.asarray(stored, dtype=np.float16).astype(np.float32)

    def info(self) -> dict[str, Any]:
        """Facts about the model for people and reports."""
        return {
            "frontend": self.frontend.name,
            "speaker_encoder": self.speaker_encoder.name,
            "codec": self.codec.name,
            "postfilter": self.parts.postfilter.name if self.parts.postfilter is not None else "none",
            "vocoder": self.vocoder.name,
            "sample_rate": self.sample_rate,
            "analysis_frames_per_second": self.frontend.frames_per_second,
            "analysis_dim": self.frontend.feature_dim,
            "codes_per_second": self.codes_per_second,
            "codebook_size": self.codebook_size,
            "vocab_size": self.vocab_size,
            "bits_per_token": self.bits_per_token,
            "speaker_dim": self.speaker_encoder.speaker_dim,
            "speaker_bits": self.speaker_bits,
            "codec_parameters": sum(p.numel() for p in self.codec.parameters()),
            "default_speaker": self.parts.default_speaker is not None,
            "fingerprint": self.fingerprint,
            "token_space": self.token_space,
            **{key: value for key, value in self.metadata.items() if key in ("trained", "description")},
        }

    # -- loading and saving ---------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None = None,
        chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
        search: CodeSearch | None = None,
    ) -> Plutok:
        """Load a bundled model by name (``"v1"``, ``"fast"``), a saved model directory (format v1 or v2)
        by its path, or the bundled default when ``path`` is None.

        A bare name is always a bundled model's: a folder in the working directory is loaded
        only as a path (``"./my-model"`` or a :class:`~pathlib.Path`). ``search``: see the class."""
        return cls(load_model_parts(path), chunk_seconds=chunk_seconds, search=search)

    @classmethod
    def from_backbone(
        cls,
        backbone: Any,
        vqvae: Any,
        bpe: Any,
        metadata: dict[str, Any] | None = None,
        chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
    ) -> Plutok:
        """A v1 model: a :class:`~plutok.legacy.backbones.Backbone`, a :class:`~plutok.legacy.vqvae.VQVAE` and a BPE."""
        from plutok.legacy.parts import parts_from_backbone

        return cls(parts_from_backbone(backbone, vqvae, bpe, metadata), chunk_seconds=chunk_seconds)

    @classmethod
    def from_openvoice(
        cls, checkpoint: str | os.PathLike, vqvae: str | os.PathLike, tokenizer: str | os.PathLike
    ) -> Plutok:
        """Load the original release: OpenVoice converter dir, VQ-VAE ``model.pth``, ``tokenizer.json``."""
        from plutok.legacy.parts import parts_from_openvoice

        return cls(parts_from_openvoice(checkpoint, vqvae, tokenizer))

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the model directory (see :mod:`plutok.model_directory`); atomic, never replaces a non-model directory."""
        return save_model_parts(self.parts, directory)

    def to(self, device: str) -> Plutok:
        """Run frontend, codec and vocoder on ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``)."""
        device = resolve_device(device)
        self.frontend.to(device)
        self.codec.to(device)
        self.vocoder.to(device)
        return self

    # -- encoding -------------------------------------------------------------------------
    def encode_codes(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """Codes ``(codes,)`` int64 and speaker vector ``(speaker_dim,)`` (no BPE)."""
        waveform = prepare_waveform(wav, sample_rate, self.sample_rate)
        return encode_path.codes_of_waveform(
            self.parts, encode_path.check_length(self.parts, waveform), self.chunk_codes, self.search
        )

    def encode(self, wav: np.ndarray, sample_rate: int) -> Encoding:
        """Tokenize one utterance.

        Args:
            wav: samples ``(samples,)`` or ``(samples, channels)`` (as soundfile reads a
                file), int PCM or float, any rate; numpy or a CPU torch tensor. A 2-D
                array is always ``(samples, channels)``; one with more channels than
                samples is refused (a ``(channels, samples)`` array: pass ``wav.T``; a
                batch of clips: :meth:`encode_batch`), never averaged into one clip.
            sample_rate: Hz of ``wav``.
        Returns:
            :class:`Encoding` with token ids and the speaker vector; ``silent`` is set
            when the input is digital silence (it still encodes).
        Raises:
            AudioError: empty, too short (under one code), too long (over 24 h), NaN/inf, bad shape.
        """
        waveform = prepare_waveform(wav, sample_rate, self.sample_rate)
        array = np.asarray(wav)
        num_samples = int(array.shape[0])
        return encode_path.encode_waveform(
            self.parts,
            waveform,
            int(sample_rate),
            num_samples,
            self.chunk_codes,
            self.token_space_bytes,
            self.search,
        )

    def encode_batch(self, wavs: Any, sample_rate: int, lengths: Any = None) -> list[Encoding]:
        """Tokenize a batch of clips; the result equals :meth:`encode` of each, in order.

        Args:
            wavs: a list of clips, each as :meth:`encode` takes it (``(samples,)`` or
                ``(samples, channels)``, numpy or torch); or one padded array/tensor
                ``(B, T)`` or ``(B, C, T)`` (channels first, as EnCodec/DAC take it).
            sample_rate: Hz of every clip.
            lengths: with a padded batch, the valid samples of each row ``(B,)``
                (default: all ``T``).
        Returns:
            One :class:`Encoding` per clip.
        Raises:
            AudioError: as :meth:`encode`, for the first bad clip; a padded batch of another shape.
            PlutokError: ``lengths`` that do not fit the batch.
        """
        return [self.encode(clip, sample_rate) for clip in batch.split_audio(wavs, lengths)]

    def encode_file(self, path: str | os.PathLike) -> Encoding:
        """Tokenize an audio file (wav, flac, ogg, mp3, ...), read block by block.

        A file encoded in more than one chunk (``chunk_seconds``) is not held in memory: its
        waveform is spooled to an unnamed temporary file in ``TMPDIR`` (230 MB per hour of
        audio) and read back a window at a time, with the tokens of one pass.

        Raises:
            AudioError: missing, a directory, empty, not audio, or bad samples.
        """
        return next(iter(self.encode_files([path], progress=False, raise_errors=True)))[1]  # type: ignore[return-value]

    def encode_files(
        self,
        paths: Iterable[str | os.PathLike],
        progress: bool = True,
        batch_size: int = 8,
        raise_errors: bool = False,
    ) -> Iterator[tuple[Path, Encoding | PlutokError]]:
        """Tokenize many files; yields ``(path, Encoding)`` or ``(path, error)`` per file, in order.

        Files are analysed ``batch_size`` at a time (the frontend batches what it can;
        tokens are the same as one by one). A bad file does not stop the batch: its
        :class:`PlutokError` is yielded instead (raised with ``raise_errors``).
        """
        from tqdm import tqdm

        paths = [Path(path) for path in paths]
        with tqdm(total=len(paths), desc="encoding", unit="file", disable=not progress) as bar:
            yield from encode_path.encode_paths(
                self.parts,
                paths,
                batch_size,
                raise_errors,
                self.chunk_codes,
                self.token_space_bytes,
                bar,
                self.search,
            )

    def ids_to_codes(self, ids: Iterable[int]) -> np.ndarray:
        """Codes int64 ``(codes,)`` behind token ids; raises :class:`TokenError` for unknown ids."""
        return self.bpe.decode(check_ids(ids))

    # -- decoding -------------------------------------------------------------------------
    def speaker_vector(self, speaker: Any) -> np.ndarray:
        """A speaker vector from a vector, an :class:`Encoding`, or a reference audio / ``.plt`` file."""
        if isinstance(speaker, Encoding):
            speaker = speaker.speaker
        elif isinstance(speaker, (str, os.PathLike)):
            path = Path(speaker)
            if path.suffix.lower() == ".plt":
                speaker = self.load_plt(path).speaker
            else:
                wav, _, _ = load_audio_stream(path, target_rate=self.sample_rate)
                embedded = self.speaker_encoder.embed(encode_path.check_length(self.parts, wav))
                speaker = np.asarray(embedded, np.float16).astype(np.float32)
        return self.speaker_encoder.check(speaker)

    def decode(
        self, encoding: Encoding, sample_rate: int | None = None, speaker: Any = None
    ) -> tuple[np.ndarray, int]:
        """Speech from an :class:`Encoding`, in its own voice or ``speaker``'s (voice swap).

        Args:
            encoding: from :meth:`encode` or :meth:`load_plt`.
            sample_rate: output rate in Hz; default the model's rate.
            speaker: another voice (see :meth:`speaker_vector`); default the encoding's.
        Returns:
            ``(wav, sample_rate)``, ``wav`` float32 ``(samples,)`` with the input's duration.
        Raises:
            ContainerError: the encoding was made by a model of another token space
                (an unknown, all-zero fingerprint is not checked).
            TokenError: empty or unknown token ids, a duration over 24 h, a length that
                the tokens cannot cover, or a speaker vector that is not finite.
            AudioError: an output sample rate outside 1..384000 Hz.
            ModelError: the encoding was made by a model earlier releases bundled.
        """
        encoding.check()
        self._refuse_retired(encoding.fingerprint)
        self.check_made_here(encoding.fingerprint, "the encoding")
        output_rate = synthesis.output_rate(sample_rate, self.sample_rate)
        codes = self.ids_to_codes(encoding.ids)
        covered = synthesis.covered_samples(self.parts, codes.shape[0])
        # encode() gives ceil(frames / frames_per_code) codes: the stated length must be
        # within about one code of what they cover (twice that, for other frontends).
        tolerance = 2 * (self.samples_per_code + self.vocoder.hop_length)
        target = encoding.check_covered(codes.shape[0], covered, self.sample_rate, tolerance)
        vector = self.speaker_vector(encoding.speaker if speaker is None else speaker)
        return synthesis.synthesize(
            self.parts, codes, vector, target, output_rate, self.chunk_codes
        ), output_rate

    def _refuse_retired(self, fingerprint: bytes) -> None:
        """:class:`ModelError` when ``fingerprint`` is a retired model's (its ids mean other codes here)."""
        retired = retired_model(fingerprint) if fingerprint != self.fingerprint_bytes else None
        if retired is not None:
            raise ModelError(
                f"the encoding was made by {retired.describe()}, which this Plutok no longer ships; "
                f"{retired.where_to_decode()}"
            )

    def decode_batch(
        self, items: Any, speaker: Any = None, sample_rate: int | None = None, lengths: Any = None
    ) -> batch.AudioBatch:
        """Speech from a batch; each clip equals :meth:`decode` (or :meth:`decode_ids`) of its item.

        Args:
            items: a list of :class:`Encoding`; a list of id sequences (lists, numpy or
                torch); or one padded ``(B, N)`` array/tensor of ids with ``lengths``.
            speaker: one voice for all (see :meth:`speaker_vector`), or a list of one per
                item; default each encoding's own voice, for ids the model's default voice.
            sample_rate: output rate in Hz; default the model's rate.
            lengths: with a padded batch, the valid ids of each row ``(B,)`` (default: all ``N``).
        Returns:
            :class:`~plutok.batch.AudioBatch`: ``wavs`` float32 ``(samples_i,)`` per item,
            and :meth:`~plutok.batch.AudioBatch.padded` for ``(B, 1, T)`` + lengths torch
            tensors (on the input tensor's device).
        Raises:
            As :meth:`decode` / :meth:`decode_ids`, for the first bad item.
        """
        if not batch.is_padded(items) and items and all(isinstance(item, Encoding) for item in items):
            voices = batch.per_item(speaker, len(items), _is_vector)
            wavs = [
                self.decode(item, sample_rate, voice)[0] for item, voice in zip(items, voices, strict=True)
            ]
        else:
            sequences = batch.split_ids(items, lengths)
            voices = batch.per_item(speaker, len(sequences), _is_vector)
            wavs = [
                self.decode_ids(ids, voice, sample_rate)[0]
                for ids, voice in zip(sequences, voices, strict=True)
            ]
        rate = synthesis.output_rate(sample_rate, self.sample_rate)
        return batch.AudioBatch(wavs, rate, batch.device_of(items))

    def decode_ids(
        self, ids: Iterable[int], speaker: Any = None, sample_rate: int | None = None
    ) -> tuple[np.ndarray, int]:
        """Speech from bare token ids (e.g. generated by a language model).

        The duration follows from the codes. ``speaker``: a vector, an :class:`Encoding`,
        or a reference audio / ``.plt`` file; ``None`` uses the model's default voice.
        Raises:
            TokenError: no ids, unknown ids, or over 24 h.
            ModelError: ``speaker`` is None and the model stores no default voice.
        """
        codes = self.ids_to_codes(ids)
        if codes.shape[0] == 0:
            raise TokenError("no token ids to decode (empty token list)")
        vector = self.speaker_vector(self._voice(speaker))
        output_rate = synthesis.output_rate(sample_rate, self.sample_rate)
        covered = synthesis.covered_samples(self.parts, codes.shape[0])
        return synthesis.synthesize(
            self.parts, codes, vector, covered, output_rate, self.chunk_codes
        ), output_rate

    def check_made_here(self, fingerprint: bytes, what: str) -> None:
        """:class:`ContainerError` ``WHAT was made by another model (...)`` unless :meth:`reads` it.

        An all-zero ``fingerprint`` (an :class:`Encoding` built by hand) is not checked.
        """
        if bytes(fingerprint) != UNKNOWN_FINGERPRINT:
            check_made_by(bytes(fingerprint), self._accepted_fingerprints(), self.token_space_bytes, what)

    def _voice(self, speaker: Any) -> Any:
        """``speaker``, or the model's default voice when it is None."""
        if speaker is not None:
            return speaker
        if self.default_speaker is None:
            raise ModelError(
                "this model stores no default voice; pass speaker= (a vector, .plt or audio file)"
            )
        return self.default_speaker

    def stream_lookahead_codes(self) -> int:
        """Codes beyond a chunk that must have arrived before its audio is final (see :mod:`plutok.streaming`)."""
        return streaming.lookahead_codes(self.parts)

    def decode_stream(
        self, ids: Iterable[int], speaker: Any = None, chunk_codes: int = streaming.DEFAULT_CHUNK_CODES
    ) -> Iterator[np.ndarray]:
        """Decode token ids as they arrive (e.g. from a language model), yielding audio chunks.

        ``ids`` is read lazily, one id at a time (a generator fed by a language model
        works): each chunk covers ``chunk_codes`` codes and is yielded as soon as
        :meth:`stream_lookahead_codes` more codes have arrived; the concatenation equals
        :meth:`decode_ids` of all ids within 1e-4. ``speaker`` as in :meth:`decode_ids`.
        Yields float32 ``(samples,)`` arrays at :attr:`sample_rate`; see :mod:`plutok.streaming`.
        """
        if chunk_codes < 1:
            raise PlutokError(f"chunk_codes must be positive, got {chunk_codes}")
        yield from streaming.decode_stream(
            self.parts, ids, self.speaker_vector(self._voice(speaker)), chunk_codes
        )

    def synthesis_features(self, codes: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        """What the vocoder reads ``(C_out, frames)`` for codes ``(N,)`` and a speaker vector."""
        return synthesis.synthesis_features(self.parts, codes, speaker, self.chunk_codes)

    # -- .plt files -----------------------------------------------------------------------
    def save_plt(self, encoding: Encoding, path: str | os.PathLike) -> Path:
        """Write an encoding as a ``.plt`` file (atomically)."""
        return write_plt(path, encoding.to_plt())

    def load_plt(self, path: str | os.PathLike) -> Encoding:
        """Read a ``.plt`` file made by this model or another of its token space (e.g. ``fast``).

        Raises:
            ContainerError: missing, truncated or corrupt file, a file from another
                model, a speaker vector of the wrong size, or a header claiming more
                than 24 h of audio.
            TokenError: token ids outside this model's vocabulary.
        """
        return read_encoding(
            path,
            self._accepted_fingerprints(),
            self.token_space_bytes,
            self.speaker_encoder.speaker_dim,
            self.bpe.decode,
        )


def _is_vector(value: Any) -> bool:
    """A list/tuple of numbers: one speaker vector, not one voice per item."""
    return all(isinstance(item, (int, float, np.number)) for item in value)
