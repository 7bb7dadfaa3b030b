"""Waveform -> speaker vector + codes -> :class:`Encoding` (the encode half of :class:`~plutok.api.Plutok`).

One utterance (:func:`encode_waveform`) or many files (:func:`encode_paths`): files are
read one by one, the frontend analyses a batch at once (Whisper batches its windows;
other frontends loop), and each file then goes through the codec on its own, so tokens
equal one-by-one encoding. A bad file becomes its error in the output, in order, and
never stops the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plutok.audio import load_audio_stream
from plutok.encoding import Encoding, check_duration
from plutok.errors import AudioError, PlutokError
from plutok.hub import ModelParts

__all__ = [
    "SILENCE_PEAK",
    "check_length",
    "codes_of_analysis",
    "codes_per_second",
    "codes_of_waveform",
    "encode_paths",
    "encode_waveform",
    "make_encoding",
    "samples_per_code",
]

#: Peak level below which an input counts as silent (-80 dBFS); silent input still encodes.
SILENCE_PEAK = 1e-4


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


def codes_of_analysis(
    parts: ModelParts, analysis: np.ndarray, speaker: np.ndarray, chunk_codes: int | None
) -> np.ndarray:
    """Codes ``(N,)`` int64 of frontend output ``(C_in, T_in)`` (normalised by ``speaker`` where the frontend asks)."""
    analysis = parts.frontend.normalized(analysis, speaker, parts.speaker)
    with torch.inference_mode():
        return parts.codec.encode_long(analysis, chunk_codes)


def codes_of_waveform(
    parts: ModelParts, waveform: np.ndarray, chunk_codes: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(N,)`` and speaker vector ``(speaker_dim,)`` of a checked waveform at the model's rate."""
    speaker = parts.speaker.embed(waveform)
    analysis = parts.frontend.analyze(waveform, speaker)
    return codes_of_analysis(parts, analysis, speaker, chunk_codes), speaker


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
        silent=bool(np.max(np.abs(waveform)) < SILENCE_PEAK),
        fingerprint=fingerprint,
    )


def encode_waveform(
    parts: ModelParts,
    waveform: np.ndarray,
    sample_rate: int,
    num_samples: int,
    chunk_codes: int | None,
    fingerprint: bytes,
) -> Encoding:
    """Encode a prepared waveform at the model's rate; ``sample_rate``/``num_samples`` describe the input."""
    codes, speaker = codes_of_waveform(parts, check_length(parts, waveform), chunk_codes)
    return make_encoding(parts, codes, speaker, waveform, sample_rate, num_samples, fingerprint)


def _load(parts: ModelParts, path: Path) -> tuple[Path, np.ndarray, int, int]:
    waveform, source_rate, num_samples = load_audio_stream(path, target_rate=parts.vocoder.sample_rate)
    try:
        check_length(parts, waveform)
    except AudioError as error:
        raise AudioError(f"{path}: {error}") from None
    return path, waveform, source_rate, num_samples


def encode_paths(
    parts: ModelParts,
    paths: list[Path],
    batch_size: int,
    raise_errors: bool,
    chunk_codes: int | None,
    fingerprint: bytes,
    bar: Any,
) -> Iterator[tuple[Path, Encoding | PlutokError]]:
    """``(path, Encoding)`` or ``(path, error)`` per file, in order; ``bar.update(1)`` after each."""
    for first in range(0, len(paths), batch_size):
        loaded: list[tuple[Path, np.ndarray, int, int] | tuple[Path, PlutokError]] = []
        for path in paths[first : first + batch_size]:
            try:
                loaded.append(_load(parts, path))
            except PlutokError as error:
                if raise_errors:
                    raise
                loaded.append((path, error))
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
                codes = codes_of_analysis(parts, next(analyses), speaker, chunk_codes)
                yield (
                    path,
                    make_encoding(parts, codes, speaker, waveform, source_rate, num_samples, fingerprint),
                )
            bar.update(1)
