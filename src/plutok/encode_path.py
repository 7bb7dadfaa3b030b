"""Waveform -> speaker vector + codes -> :class:`Encoding` (the encode half of :class:`~plutok.api.Plutok`).

One utterance (:func:`encode_waveform`) or many files (:func:`encode_paths`): files are
read one by one, the frontend analyses a batch at once (Whisper batches its windows;
other frontends loop), and each file then goes through the codec on its own, so tokens
equal one-by-one encoding. A bad file becomes its error in the output, in order, and
never stops the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plutok.audio import SpooledWaveform, load_audio_stream
from plutok.chunking import chunked_apply_to_blocks
from plutok.codec.search import CodeSearch, fit_speaker, search_codes
from plutok.encoding import Encoding, check_duration
from plutok.errors import AudioError, PlutokError
from plutok.model_directory import ModelParts

__all__ = [
    "SILENCE_PEAK",
    "check_length",
    "codes_of_analysis",
    "codes_per_second",
    "codes_of_waveform",
    "check_search",
    "searched_encoding",
    "encode_paths",
    "encode_waveform",
    "make_encoding",
    "peak",
    "samples_per_code",
    "streams",
]

#: Peak level below which an input counts as silent (-80 dBFS); silent input still encodes.
SILENCE_PEAK = 1e-4
# Samples :func:`peak` reads at a time (4 MB of float32).
_PEAK_BLOCK = 1 << 20


def codes_per_second(parts: ModelParts) -> float:
    """Codes per second of audio: the frontend's frame rate over the codec's frames per code."""
    return parts.frontend.frames_per_second / parts.codec.analysis_frames_per_code


def samples_per_code(parts: ModelParts) -> int:
    """Input samples (at the model's rate) one code stands for."""
    return round(parts.vocoder.sample_rate / codes_per_second(parts))


def check_length(parts: ModelParts, waveform: np.ndarray) -> np.ndarray:
    """``waveform`` (at the model's rate); :class:`AudioError` under one code or over 24 h."""
    rate, minimum = parts.vocoder.sample_rate, samples_per_code(parts)
    if waveform.shape[0] < minimum:
        raise AudioError(
            f"audio is too short: {waveform.shape[0] / rate * 1000:.1f} ms; "
            f"at least {minimum / rate * 1000:.0f} ms (one code) is needed"
        )
    check_duration(waveform.shape[0] / rate, AudioError, "audio is too long:")
    return waveform


def check_search(parts: ModelParts, search: CodeSearch | None) -> None:
    """:class:`~plutok.errors.ModelError` when ``search`` is set and the model cannot search its codes."""
    from plutok.codec.search import check_searchable
    from plutok.errors import ModelError

    if search is None:
        return
    check_searchable(parts.codec)
    if not hasattr(parts.speaker, "log_mel"):
        raise ModelError("code search needs a speaker encoder that computes the log-mel the decoder writes")


def codes_of_analysis(
    parts: ModelParts, analysis: np.ndarray, speaker: np.ndarray, chunk_codes: int | None
) -> np.ndarray:
    """Codes ``(N,)`` int64 of frontend output ``(C_in, T_in)`` (normalised by ``speaker`` where the frontend asks)."""
    analysis = parts.frontend.normalized(analysis, speaker, parts.speaker)
    with torch.inference_mode():
        return parts.codec.encode_long(analysis, chunk_codes)


def searched_encoding(
    parts: ModelParts, analysis: np.ndarray, speaker: np.ndarray, waveform: np.ndarray, search: CodeSearch
) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(N,)`` and speaker vector of one utterance chosen by code search (:mod:`plutok.codec.search`).

    ``analysis``: the frontend's output ``(C_in, T_in)`` of ``waveform``, ``speaker`` the
    speaker encoder's vector of it; both read in one pass.
    """
    normalized = parts.frontend.normalized(analysis, speaker, parts.speaker)
    log_mel = parts.speaker.log_mel(np.asarray(waveform))
    # The decoder reads the speaker vector as a .plt file stores it: float16 values.
    stored = np.asarray(speaker, dtype=np.float16).astype(np.float32)
    target = parts.speaker.normalize(log_mel, stored)
    codes = search_codes(parts.codec, normalized, target, stored, search, parts.postfilter)
    fitted = fit_speaker(parts.codec, codes, log_mel, stored, parts.speaker, search, parts.postfilter)
    return codes, fitted


def _refuse_long_search(
    parts: ModelParts, num_samples: int, chunk_codes: int | None, search: CodeSearch | None
) -> None:
    """:class:`AudioError` when ``search`` is set and the audio would be encoded in more than one chunk."""
    if search is not None and streams(parts, num_samples, chunk_codes):
        codec = parts.codec
        # What fits one pass: a chunk and the encoder's context on both sides (see streams).
        frames = chunk_codes * codec.analysis_frames_per_code + 2 * codec.encoder_context
        raise AudioError(
            f"code search reads the whole utterance at once: it takes audio encoded in one pass, "
            f"up to {frames / parts.frontend.frames_per_second:g} s with these chunks "
            f"(--chunk-seconds / chunk_seconds raises it); this audio is "
            f"{num_samples / parts.vocoder.sample_rate:.1f} s"
        )


def codes_of_waveform(
    parts: ModelParts, waveform: np.ndarray, chunk_codes: int | None, search: CodeSearch | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(N,)`` and speaker vector ``(speaker_dim,)`` of a checked waveform at the model's rate.

    With ``chunk_codes`` nothing as long as the waveform is built besides the waveform:
    (1) the speaker vector comes from statistics the speaker encoder streams over its own
    analysis blocks; (2) the frontend's analysis blocks, each normalised by that vector,
    feed the codec window by window (the windows of its ``encode_long``), so one chunk
    of features exists at a time and the codes equal one pass bit for bit. ``waveform``
    may be a :class:`~plutok.audio.SpooledWaveform` (what :func:`encode_paths` reads a long
    file into): every stage reads it by slices, so then nothing grows with the duration
    but the codes. ``None`` runs every stage in one pass over whole arrays. ``search``
    (:mod:`plutok.codec.search`) chooses the codes by analysis by synthesis, for audio of
    up to one chunk (:class:`AudioError` beyond).
    """
    _refuse_long_search(parts, waveform.shape[0], chunk_codes, search)
    speaker = parts.speaker.embed(waveform)
    if search is not None:
        return searched_encoding(parts, parts.frontend.analyze(waveform, speaker), speaker, waveform, search)
    if chunk_codes is None:
        analysis = parts.frontend.analyze(waveform, speaker)
        return codes_of_analysis(parts, analysis, speaker, chunk_codes), speaker
    codec = parts.codec
    blocks = (
        parts.frontend.normalized(block, speaker, parts.speaker)
        for block in parts.frontend.analysis_blocks(waveform, speaker)
    )
    with torch.inference_mode():
        codes = chunked_apply_to_blocks(
            codec.encode,
            blocks,
            parts.frontend.num_frames(waveform.shape[0]),
            chunk_codes * codec.analysis_frames_per_code,
            codec.encoder_context,
            Fraction(1, codec.analysis_frames_per_code),
        )
    return codes, speaker


def streams(parts: ModelParts, num_samples: int, chunk_codes: int | None) -> bool:
    """Whether :func:`codes_of_waveform` of ``num_samples`` samples runs in more than one codec chunk."""
    if chunk_codes is None:
        return False
    codec = parts.codec
    frames = parts.frontend.num_frames(num_samples)
    return frames > chunk_codes * codec.analysis_frames_per_code + 2 * codec.encoder_context


def peak(waveform: np.ndarray) -> float:
    """``max(abs(waveform))``, block by block (no full-length temporary)."""
    step = _PEAK_BLOCK
    return max(float(np.max(np.abs(waveform[i : i + step]))) for i in range(0, waveform.shape[0], step))


def make_encoding(
    parts: ModelParts,
    codes: np.ndarray,
    speaker: np.ndarray,
    waveform: np.ndarray,
    sample_rate: int,
    num_samples: int,
    fingerprint: bytes,
) -> Encoding:
    """The :class:`Encoding` of codes and speaker vector; ``sample_rate``/``num_samples`` describe the input."""
    return Encoding(
        ids=parts.bpe.encode(codes),
        # Rounded to what a .plt file stores, so decoding from memory and from a file agree.
        speaker=np.asarray(speaker, dtype=np.float16).astype(np.float32),
        sample_rate=sample_rate,
        num_samples=num_samples,
        num_codes=int(codes.shape[0]),
        silent=peak(waveform) < SILENCE_PEAK,
        fingerprint=fingerprint,
    )


def encode_waveform(
    parts: ModelParts,
    waveform: np.ndarray,
    sample_rate: int,
    num_samples: int,
    chunk_codes: int | None,
    fingerprint: bytes,
    search: CodeSearch | None = None,
) -> Encoding:
    """Encode a prepared waveform at the model's rate; ``sample_rate``/``num_samples`` describe the input."""
    codes, speaker = codes_of_waveform(parts, check_length(parts, waveform), chunk_codes, search)
    return make_encoding(parts, codes, speaker, waveform, sample_rate, num_samples, fingerprint)


def _load(
    parts: ModelParts, path: Path, chunk_codes: int | None, search: CodeSearch | None
) -> tuple[Path, np.ndarray, int, int]:
    """``(path, waveform, source_rate, source_samples)`` of a file, checked.

    A file that will be encoded in more than one chunk (:func:`streams`) is spooled to a
    temporary file (:class:`~plutok.audio.SpooledWaveform`) instead of held: its encoding
    reads it a window at a time, so memory does not grow with the recording (230 MB per
    hour otherwise).
    """
    waveform, source_rate, num_samples = load_audio_stream(
        path,
        target_rate=parts.vocoder.sample_rate,
        spool_if=lambda samples: streams(parts, samples, chunk_codes),
    )
    try:
        check_length(parts, waveform)
        _refuse_long_search(parts, waveform.shape[0], chunk_codes, search)
    except AudioError as error:
        raise AudioError(f"{path}: {error}") from None
    if isinstance(waveform, SpooledWaveform) and not streams(parts, waveform.shape[0], chunk_codes):
        # The header promised more samples than the file held: encoded in one pass, in a batch.
        waveform = waveform[:]
    return path, waveform, source_rate, num_samples


def encode_paths(
    parts: ModelParts,
    paths: list[Path],
    batch_size: int,
    raise_errors: bool,
    chunk_codes: int | None,
    fingerprint: bytes,
    bar: Any,
    search: CodeSearch | None = None,
) -> Iterator[tuple[Path, Encoding | PlutokError]]:
    """``(path, Encoding)`` or ``(path, error)`` per file, in order; ``bar.update(1)`` after each.

    Files of one codec chunk or less are analysed ``batch_size`` at a time; a longer
    file is encoded on its own as soon as it is read (:func:`codes_of_waveform`,
    chunk by chunk, from a spooled copy), after the shorter files read before it. Both
    give the codes of one pass.
    """
    pending: list[tuple[Path, np.ndarray, int, int] | tuple[Path, PlutokError]] = []
    for path in paths:
        try:
            loaded = _load(parts, path, chunk_codes, search)
        except PlutokError as error:
            if raise_errors:
                raise
            pending.append((path, error))
        else:
            if streams(parts, loaded[1].shape[0], chunk_codes):
                yield from _encode_batch(parts, pending, chunk_codes, fingerprint, bar, search)
                pending = []
                _, waveform, source_rate, num_samples = loaded
                codes, speaker = codes_of_waveform(parts, waveform, chunk_codes, search)
                yield (
                    path,
                    make_encoding(parts, codes, speaker, waveform, source_rate, num_samples, fingerprint),
                )
                del loaded, waveform  # before the next file is read, not after
                bar.update(1)
                continue
            pending.append(loaded)
        if len(pending) == batch_size:
            yield from _encode_batch(parts, pending, chunk_codes, fingerprint, bar, search)
            pending = []
    yield from _encode_batch(parts, pending, chunk_codes, fingerprint, bar, search)


def _encode_batch(
    parts: ModelParts,
    loaded: list[tuple[Path, np.ndarray, int, int] | tuple[Path, PlutokError]],
    chunk_codes: int | None,
    fingerprint: bytes,
    bar: Any,
    search: CodeSearch | None = None,
) -> Iterator[tuple[Path, Encoding | PlutokError]]:
    """Encodings (or the errors) of files read by :func:`_load`, the frontend batching them."""
    good = [item for item in loaded if len(item) == 4]
    speakers = [parts.speaker.embed(item[1]) for item in good]
    analyses = iter(parts.frontend.analyze_batch([item[1] for item in good], speakers))
    speaker_of_good = iter(speakers)
    for item in loaded:
        if len(item) == 2:
            yield item  # type: ignore[misc]
        else:
            path, waveform, source_rate, num_samples = item  # type: ignore[misc]
            speaker = next(speaker_of_good)
            if search is None:
                codes = codes_of_analysis(parts, next(analyses), speaker, chunk_codes)
            else:
                codes, speaker = searched_encoding(parts, next(analyses), speaker, waveform, search)
            yield (
                path,
                make_encoding(parts, codes, speaker, waveform, source_rate, num_samples, fingerprint),
            )
        bar.update(1)
