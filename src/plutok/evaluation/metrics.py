"""Objective speech-quality metrics: alignment, STOI, PESQ-WB, speaker similarity, DNSMOS, WER/CER.

Every metric takes mono float32 waveforms ``(samples,)`` at 16 kHz (``METRIC_RATE``).
Intrusive metrics (STOI, PESQ, speaker similarity) compare a decoded waveform with
its reference after :func:`align` has removed the codec's delay. The heavy
packages (pystoi, pesq, resemblyzer, speechmos, jiwer) are imported on first use.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np

from plutok.evaluation.extras import require

__all__ = [
    "METRIC_RATE",
    "SPACELESS_LANGUAGES",
    "ErrorCounts",
    "estimate_lag",
    "align",
    "stoi",
    "pesq_wb",
    "speaker_similarity",
    "dnsmos",
    "normalize_text",
    "error_counts",
]

METRIC_RATE = 16000
"""Sample rate (Hz) every metric works at."""

SPACELESS_LANGUAGES = frozenset({"ja", "zh", "yue", "th", "lo", "km", "my", "bo"})
"""Languages written without spaces between words: WER is undefined, CER is the error rate."""


# --------------------------------------------------------------------------- alignment


def log_envelope(wav: np.ndarray, window: int = 80) -> np.ndarray:
    """Mean-removed log energy envelope ``(samples,)``: squared signal averaged over ``window`` samples.

    Floored 60 dB below the loudest point, so silence does not dominate the correlation.
    """
    energy = np.square(np.asarray(wav, dtype=np.float64))
    cumulative = np.concatenate([[0.0], np.cumsum(energy)])
    if energy.size > window:
        smoothed = (cumulative[window:] - cumulative[:-window]) / window
        smoothed = np.pad(smoothed, (window // 2, energy.size - smoothed.size - window // 2))
    else:
        smoothed = energy
    log = np.log(np.maximum(smoothed, max(float(smoothed.max()), 1e-12) * 1e-6))
    return log - log.mean()


def estimate_lag(reference: np.ndarray, decoded: np.ndarray, max_lag: int) -> int:
    """Delay of ``decoded`` relative to ``reference`` by FFT cross-correlation of the two signals.

    Pass waveforms for systems that keep the waveform (codecs that code it), or
    :func:`log_envelope` of both for any system (vocoders make their own phase, and a
    waveform correlation then peaks at a random lag; see :func:`align`).

    Args:
        reference: ``(samples,)``.
        decoded: ``(samples',)``, possibly delayed, advanced or of another length.
        max_lag: largest absolute lag (samples) searched.
    Returns:
        ``lag`` such that ``decoded[n + lag]`` best matches ``reference[n]`` (0 for silent input).
    """
    ref = np.asarray(reference, dtype=np.float64)
    dec = np.asarray(decoded, dtype=np.float64)
    if ref.size == 0 or dec.size == 0 or not np.any(ref) or not np.any(dec):
        return 0
    size = 1 << int(math.ceil(math.log2(ref.size + dec.size)))
    corr = np.fft.irfft(np.fft.rfft(dec, size) * np.conj(np.fft.rfft(ref, size)), size)
    max_lag = int(min(max_lag, size // 2 - 1))
    # corr[k] = sum_n dec[n + k] * ref[n]; negative k wrap around to the end.
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.concatenate([corr[: max_lag + 1], corr[size - max_lag :]])
    return int(lags[int(np.argmax(values))])


def align(
    reference: np.ndarray, decoded: np.ndarray, max_lag: int = METRIC_RATE // 4
) -> tuple[np.ndarray, int]:
    """Shift and cut/pad ``decoded`` so that it lines up with ``reference`` sample for sample.

    The lag is found on the log energy envelopes (5 ms), the same way for every system:
    a vocoder (copy-synthesis, Plutok) makes its own phase, so a waveform
    cross-correlation peaks at a random lag up to ``max_lag`` and wrecks STOI, while
    envelopes line up whatever the phase. The reference is never changed, so every
    system is scored against the same signal.

    Args:
        reference: ``(samples,)``.
        decoded: ``(samples',)``.
        max_lag: largest lag searched, in samples (default 250 ms at 16 kHz).
    Returns:
        ``(aligned, lag)``: ``aligned`` is float32 ``(len(reference),)``; ``lag`` is the
        delay found (see :func:`estimate_lag`).
    """
    lag = estimate_lag(log_envelope(reference), log_envelope(decoded), max_lag) if len(decoded) else 0
    dec = np.asarray(decoded, dtype=np.float32)
    dec = dec[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag, np.float32), dec])
    out = np.zeros(len(reference), np.float32)
    out[: min(len(dec), len(out))] = dec[: len(out)]
    return out, lag


# --------------------------------------------------------------------------- intrusive metrics


def stoi(reference: np.ndarray, decoded: np.ndarray, sample_rate: int = METRIC_RATE) -> float:
    """Short-Time Objective Intelligibility (0..1, higher is better) of aligned equal-length signals."""
    pystoi = require("pystoi", "STOI")
    value = pystoi.stoi(np.asarray(reference, np.float64), np.asarray(decoded, np.float64), sample_rate)
    return float(value)


def pesq_wb(reference: np.ndarray, decoded: np.ndarray, sample_rate: int = METRIC_RATE) -> float:
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO ~1.04..4.64) at 16 kHz; NaN when PESQ finds no speech."""
    pesq = require("pesq", "PESQ")
    if sample_rate != 16000:
        raise ValueError("PESQ-WB needs 16 kHz audio")
    try:
        return float(
            pesq.pesq(16000, np.asarray(reference, np.float32), np.asarray(decoded, np.float32), "wb")
        )
    except (pesq.PesqError, ValueError):
        return float("nan")


def _import_resemblyzer() -> Any:
    import warnings

    with warnings.catch_warnings():  # resemblyzer imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        return require("resemblyzer", "speaker similarity (Resemblyzer)")


class _SpeakerEncoder:
    _instance: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls._instance is None:
            resemblyzer = _import_resemblyzer()
            cls._instance = resemblyzer.VoiceEncoder("cpu", verbose=False)
        return cls._instance


def speaker_embedding(wav: np.ndarray, sample_rate: int = METRIC_RATE) -> np.ndarray:
    """Resemblyzer (GE2E) d-vector ``(256,)``, L2-normalised, of one utterance."""
    resemblyzer = _import_resemblyzer()
    encoder = _SpeakerEncoder.get()
    wav = np.asarray(wav, np.float32)
    processed = resemblyzer.preprocess_wav(wav, source_sr=sample_rate)
    if processed.size < 4000:  # VAD removed (nearly) everything: embed the raw 16 kHz signal
        from plutok.audio import resample

        processed = resample(wav, sample_rate, 16000)
    return np.asarray(encoder.embed_utterance(processed), np.float32)


def speaker_similarity(reference: np.ndarray, decoded: np.ndarray, sample_rate: int = METRIC_RATE) -> float:
    """Cosine similarity (-1..1, same speaker ~0.8+) of Resemblyzer embeddings."""
    a = speaker_embedding(reference, sample_rate)
    b = speaker_embedding(decoded, sample_rate)
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denominator) if denominator > 0 else float("nan")


def dnsmos(wav: np.ndarray, sample_rate: int = METRIC_RATE) -> dict[str, float]:
    """Non-intrusive DNSMOS P.835 estimate (1..5): keys ``ovrl``, ``sig``, ``bak``, ``p808``."""
    require("onnxruntime", "DNSMOS")
    module = require("speechmos.dnsmos", "DNSMOS (speechmos)")
    if sample_rate != 16000:
        raise ValueError("DNSMOS needs 16 kHz audio")
    result = module.run(np.clip(np.asarray(wav, np.float32), -1.0, 1.0), sr=16000)
    return {
        "ovrl": float(result["ovrl_mos"]),
        "sig": float(result["sig_mos"]),
        "bak": float(result["bak_mos"]),
        "p808": float(result["p808_mos"]),
    }


# --------------------------------------------------------------------------- WER / CER


_APOSTROPHES = frozenset("'’ʼ`´")


def normalize_text(text: str) -> str:
    """Text normaliser applied to references and ASR hypotheses before WER/CER.

    NFKC, lowercase, apostrophes removed (``don't`` -> ``dont``), every other
    punctuation or symbol character replaced by a space, whitespace collapsed.
    Letters, digits and combining marks (Devanagari vowel signs) of any script are kept.
    Numbers are not spelled out: ``21`` and ``twenty one`` differ.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    pieces = []
    for char in text:
        if char in _APOSTROPHES:
            continue
        category = unicodedata.category(char)
        pieces.append(" " if category[0] in "PSZC" else char)
    return " ".join("".join(pieces).split())


@dataclass(frozen=True)
class ErrorCounts:
    """Edit counts of one hypothesis against one reference (sum them for a corpus-level rate)."""

    word_errors: int | None
    words: int | None
    char_errors: int
    chars: int

    @property
    def wer(self) -> float | None:
        """Word error rate, None for languages without spaces or an empty reference."""
        if self.word_errors is None or not self.words:
            return None
        return self.word_errors / self.words

    @property
    def cer(self) -> float | None:
        """Character error rate (None for an empty reference)."""
        return self.char_errors / self.chars if self.chars else None


def _base_language(language: str | None) -> str:
    return (language or "").replace("_", "-").split("-")[0].lower()


def error_counts(reference: str, hypothesis: str, language: str | None = None) -> ErrorCounts:
    """Word and character edit counts after :func:`normalize_text`, capped at the reference length.

    For languages in :data:`SPACELESS_LANGUAGES` word counts are None and spaces are
    dropped before counting characters; elsewhere characters include the single
    spaces between words.
    """
    jiwer = require("jiwer", "WER/CER")
    ref = normalize_text(reference)
    hyp = normalize_text(hypothesis)
    spaceless = _base_language(language) in SPACELESS_LANGUAGES
    if spaceless:
        ref, hyp = ref.replace(" ", ""), hyp.replace(" ", "")
    if not ref:
        return ErrorCounts(None if spaceless else 0, None if spaceless else 0, 0, 0)
    word_errors = words = None
    if not spaceless:
        if hyp:
            out = jiwer.process_words(ref, hyp)
            word_errors = out.substitutions + out.deletions + out.insertions
        else:
            word_errors = len(ref.split())
        words = len(ref.split())
    if hyp:
        chars_out = jiwer.process_characters(ref, hyp)
        char_errors = chars_out.substitutions + chars_out.deletions + chars_out.insertions
    else:
        char_errors = len(ref)
    # A clip can add at most as many errors as it has reference words (characters):
    # otherwise one hallucinated loop of the ASR on one clip (hundreds of inserted
    # words) outweighs every other clip of the corpus.
    if word_errors is not None and words is not None:
        word_errors = min(word_errors, words)
    return ErrorCounts(word_errors, words, min(char_errors, len(ref)), len(ref))
