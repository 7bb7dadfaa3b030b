"""Codes -> waveform: codec decoder, speaker de-normalisation, vocoder (the decode half of :class:`~plutok.api.Plutok`)."""

from __future__ import annotations

import numpy as np
import torch

from plutok.audio import resample
from plutok.encoding import check_duration
from plutok.errors import AudioError, TokenError
from plutok.model_directory import ModelParts

__all__ = [
    "MAX_OUTPUT_RATE",
    "covered_samples",
    "output_rate",
    "synthesis_features",
    "synthesize",
    "vocoder_waveform",
]

#: Highest output rate decoding accepts (Hz).
MAX_OUTPUT_RATE = 384_000


def output_rate(requested: int | None, model_rate: int) -> int:
    """The output rate in Hz (``model_rate`` when ``requested`` is None); :class:`AudioError` outside 1..384000."""
    rate = model_rate if requested is None else requested
    if not isinstance(rate, (int, np.integer)) or not 0 < rate <= MAX_OUTPUT_RATE:
        raise AudioError(f"output sample rate must be in 1..{MAX_OUTPUT_RATE} Hz, got {requested}")
    return int(rate)


def covered_samples(parts: ModelParts, num_codes: int) -> int:
    """Samples (at the vocoder's rate) ``num_codes`` codes decode to; :class:`TokenError` over 24 h."""
    covered = num_codes * parts.codec.synthesis_frames_per_code * parts.vocoder.hop_length
    check_duration(covered / parts.vocoder.sample_rate, TokenError, "the tokens stand for")
    return covered


def synthesis_features(
    parts: ModelParts, codes: np.ndarray, speaker: np.ndarray, chunk_codes: int | None
) -> np.ndarray:
    """What the vocoder reads ``(C_out, frames)`` for codes ``(N,)`` and a speaker vector.

    Codec decoder, the model's post-filter if it has one (pointwise in time, so applying it
    to the whole output equals applying it chunk by chunk), speaker de-normalisation.
    """
    with torch.inference_mode():
        features = parts.codec.decode_long(codes, speaker, chunk_codes)
    if parts.postfilter is not None:
        features = parts.postfilter.apply(features)
    return parts.speaker.denormalize(features, speaker)


def vocoder_waveform(
    parts: ModelParts, codes: np.ndarray, speaker: np.ndarray, chunk_codes: int | None
) -> np.ndarray:
    """Float32 ``(N * synthesis_frames_per_code * hop_length,)`` vocoder output of codes ``(N,)``, uncut.

    Codec decoder, speaker de-normalisation and vocoder, each over chunks of
    ``chunk_codes`` codes with its declared context (``None``: one pass).
    """
    features = synthesis_features(parts, codes, speaker, chunk_codes)
    chunk = None if chunk_codes is None else chunk_codes * parts.codec.synthesis_frames_per_code
    return parts.vocoder.synthesize(features, speaker, chunk_frames=chunk)


def synthesize(
    parts: ModelParts,
    codes: np.ndarray,
    speaker: np.ndarray,
    length: int,
    rate: int,
    chunk_codes: int | None,
) -> np.ndarray:
    """Float32 ``(length * rate / vocoder rate,)`` waveform of codes ``(N,)`` in ``speaker``'s voice.

    ``length``: samples at the vocoder's rate (cut or zero-padded to it), then
    resampled to ``rate`` Hz. Raises :class:`TokenError` when the output is not finite.
    """
    wav = vocoder_waveform(parts, codes, speaker, chunk_codes)
    wav = wav[:length] if wav.shape[0] >= length else np.pad(wav, (0, length - wav.shape[0]))
    if not np.all(np.isfinite(wav)):
        raise TokenError("decoding gave NaN or infinite samples: the speaker vector is out of range")
    if rate != parts.vocoder.sample_rate:
        wav = resample(wav, parts.vocoder.sample_rate, rate)
    return wav
