"""Audio augmentation for speaker and channel diversity in the training data.

Every kind maps a mono float32 waveform ``(samples,)`` at :data:`SAMPLE_RATE` Hz and a
seeded ``numpy.random.Generator`` to a new waveform (any length) and the parameters it
drew, so each augmented clip is reproducible from ``(clip id, copy number)`` alone:

=============  ===============================================================================
``pitch``      pitch shift by ±1–4 semitones (``sox pitch``: tempo kept, formants move with it)
``formant``    vocal-tract-length warp of the spectrum by 0.86–1.16 (pitch kept)
``level-eq``   level change (−18…+4 dB, never clipping) and 1–3 random peaking EQ bands (±9 dB)
``reverb``     a synthetic room: exponentially decaying noise, RT60 0.15–0.8 s, 20–80 % wet
``noise``      white, pink or brown noise at 10–30 dB SNR
``telephone``  300–3400 Hz band (4th-order Butterworth) through an 8 kHz sample rate
``codec``      a round trip through GSM 06.10, G.711 µ/A-law, G.722, MP3 16–32 kbit/s or
               Opus 6–12 kbit/s (``ffmpeg``)
=============  ===============================================================================

:func:`augment` applies one or two kinds, voice before room before channel, as a
recording chain would. The codec learns to reconstruct what was heard (the augmented
audio), so the speaker vector has to carry the channel as well as the voice.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from scipy import signal

from plutok.errors import PlutokError

__all__ = ["SAMPLE_RATE", "AUGMENTATIONS", "augment", "augmentation_seed", "augmented_copies", "parse_kinds"]

SAMPLE_RATE = 16000
Augmentation = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, dict[str, Any]]]


def _run(command: list[str], stdin: bytes | None = None) -> bytes:
    tool = command[0]
    if shutil.which(tool) is None:
        raise PlutokError(f"augmentation needs {tool} (apt-get install {tool})")
    done = subprocess.run(command, input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        raise PlutokError(f"{tool} failed: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return done.stdout


def _below_clipping(wav: np.ndarray) -> np.ndarray:
    """float32, scaled down (never clipped) when its peak would pass 0.99: a louder setting
    stays loud without the distortion no real recording chain adds on purpose."""
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    return (wav * (0.99 / peak if peak > 0.99 else 1.0)).astype(np.float32)


def pitch(wav: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    cents = float(rng.choice([-1, 1]) * rng.uniform(100, 400))
    raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-r", str(SAMPLE_RATE), "-c", "1"]
    out = _run(
        ["sox", "-q", *raw, "-", *raw, "-", "pitch", f"{cents:.1f}"],
        np.ascontiguousarray(wav, dtype="<f4").tobytes(),
    )
    return np.frombuffer(out, dtype="<f4").copy(), {"cents": round(cents, 1)}


def formant(wav: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Vocal-tract-length warp (VTLP, Jaitly & Hinton 2013) of the spectral envelope only.

    Per STFT frame, the envelope is the cepstrally smoothed log magnitude (quefrencies below
    1.5 ms, shorter than the 2.5 ms period of a 400 Hz voice, so no harmonic leaks in); it is
    warped along frequency, f -> alpha * f up to a boundary and linearly to Nyquist above it,
    and each bin is scaled by warped / original envelope. Phases and harmonics stay where
    they are, so the pitch is kept.
    """
    alpha = float(rng.uniform(0.86, 1.16))
    n_fft, hop, lifter = 512, 128, 24
    _, _, spectrum = signal.stft(wav, nperseg=n_fft, noverlap=n_fft - hop)
    bins = spectrum.shape[0]
    nyquist = bins - 1
    cepstrum = np.fft.irfft(np.log(np.abs(spectrum) + 1e-6), axis=0)
    cepstrum[lifter:-lifter] = 0.0
    envelope = np.fft.rfft(cepstrum, axis=0).real  # log magnitude, (bins, frames)
    boundary = 0.8 * nyquist * min(alpha, 1.0) / alpha
    warped_boundary = alpha * boundary
    out_freq = np.arange(bins, dtype=np.float64)
    # for each output bin, the envelope bin it takes its level from (the inverse warp)
    source = np.where(
        out_freq <= warped_boundary,
        out_freq / alpha,
        boundary + (out_freq - warped_boundary) * (nyquist - boundary) / (nyquist - warped_boundary),
    )
    source = np.clip(source, 0, nyquist)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, nyquist)
    frac = (source - low)[:, None]
    warped = (1 - frac) * envelope[low] + frac * envelope[high]
    gain = np.exp(np.clip(warped - envelope, -2.3, 2.3))  # at most +-20 dB per bin
    _, out = signal.istft(spectrum * gain, nperseg=n_fft, noverlap=n_fft - hop)
    return _below_clipping(out[: wav.shape[0]]), {"alpha": round(alpha, 3)}


def level_eq(wav: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    bands = []
    spectrum = np.fft.rfft(wav)
    freqs = np.fft.rfftfreq(wav.shape[0], 1 / SAMPLE_RATE)
    log_freq = np.log2(np.maximum(freqs, 20.0))
    gain_db = np.zeros_like(freqs)
    for _ in range(int(rng.integers(1, 4))):
        centre = float(np.exp(rng.uniform(np.log(100), np.log(6000))))
        width = float(rng.uniform(0.3, 1.5))  # octaves (standard deviation of the bump)
        gain = float(rng.uniform(-9, 9))
        gain_db += gain * np.exp(-0.5 * ((log_freq - np.log2(centre)) / width) ** 2)
        bands.append([round(centre), round(width, 2), round(gain, 1)])
    out = np.fft.irfft(spectrum * 10 ** (gain_db / 20), n=wav.shape[0])
    level = float(rng.uniform(-18, 4))
    return _below_clipping(out * 10 ** (level / 20)), {"level_db": round(level, 1), "bands": bands}


def reverb(wav: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    rt60 = float(rng.uniform(0.15, 0.8))
    wet = float(rng.uniform(0.2, 0.8))
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    # -60 dB at rt60; a few ms of pre-delay before the diffuse tail, as in a small room
    tail = rng.standard_normal(t.shape[0]) * np.exp(-6.9078 * t / rt60)
    tail[: int(rng.uniform(0.002, 0.01) * SAMPLE_RATE)] = 0.0
    tail /= np.sqrt(np.sum(tail**2)) + 1e-12
    response = wet * tail
    response[0] += 1.0 - wet
    out = signal.fftconvolve(wav, response)[: wav.shape[0]]
    scale = np.sqrt(np.mean(wav**2) / (np.mean(out**2) + 1e-12))
    return (out * scale).astype(np.float32), {"rt60": round(rt60, 2), "wet": round(wet, 2)}


def noise(wav: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    colour = str(rng.choice(["white", "pink", "brown"]))
    snr_db = float(rng.uniform(10, 30))
    white = rng.standard_normal(wav.shape[0])
    if colour != "white":
        spectrum = np.fft.rfft(white)
        freqs = np.maximum(np.fft.rfftfreq(wav.shape[0], 1 / SAMPLE_RATE), 20.0)
        spectrum /= freqs ** (0.5 if colour == "pink" else 1.0)
        white = np.fft.irfft(spectrum, n=wav.shape[0])
    speech_power = float(np.mean(wav**2)) + 1e-12
    white *= np.sqrt(speech_power / (np.mean(white**2) + 1e-12) / 10 ** (snr_db / 10))
    return _below_clipping(wav + white), {"colour": colour, "snr_db": round(snr_db, 1)}


def telephone(wav: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    sos = signal.butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    narrow = soxr.resample(signal.sosfilt(sos, wav).astype(np.float32), SAMPLE_RATE, 8000)
    return soxr.resample(narrow, 8000, SAMPLE_RATE).astype(np.float32), {"band_hz": [300, 3400]}


# (name, encoder options, container, rate): what ffmpeg writes and reads back
_CODECS = (
    ("gsm", ["-c:a", "libgsm"], "gsm", 8000),
    ("g711-mulaw", ["-c:a", "pcm_mulaw"], "mulaw", 8000),
    ("g711-alaw", ["-c:a", "pcm_alaw"], "alaw", 8000),
    ("g722", ["-c:a", "g722"], "g722", 16000),
    ("mp3-16k", ["-c:a", "libmp3lame", "-b:a", "16k"], "mp3", 16000),
    ("mp3-32k", ["-c:a", "libmp3lame", "-b:a", "32k"], "mp3", 16000),
    ("opus-6k", ["-c:a", "libopus", "-b:a", "6k"], "ogg", 16000),
    ("opus-12k", ["-c:a", "libopus", "-b:a", "12k"], "ogg", 16000),
)


def codec(wav: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    name, options, container, rate = _CODECS[int(rng.integers(len(_CODECS)))]
    raw_in = ["-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1"]
    with tempfile.TemporaryDirectory(prefix="plutok-codec-") as folder:
        coded = Path(folder) / f"coded.{container}"
        _run(
            ["ffmpeg", "-nostdin", "-v", "error", *raw_in, "-i", "-", "-ar", str(rate), *options]
            + ["-f", container, str(coded)],
            np.ascontiguousarray(wav, dtype="<f4").tobytes(),
        )
        # raw telephone formats carry no header: say their rate when reading them back
        rate_in = ["-ar", str(rate)] if container in ("gsm", "mulaw", "alaw") else []
        out = _run(
            ["ffmpeg", "-nostdin", "-v", "error", "-f", container, *rate_in, "-i", str(coded)]
            + ["-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-"]
        )
    return np.frombuffer(out, dtype="<f4").copy(), {"codec": name}


# In recording-chain order: the voice, then the room, then the line and its codec.
AUGMENTATIONS: dict[str, Augmentation] = {
    "pitch": pitch,
    "formant": formant,
    "level-eq": level_eq,
    "reverb": reverb,
    "noise": noise,
    "telephone": telephone,
    "codec": codec,
}


def parse_kinds(spec: str) -> tuple[str, ...]:
    """``"all"`` or a comma-separated list of :data:`AUGMENTATIONS` names, in chain order."""
    names = (
        list(AUGMENTATIONS) if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    )
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown or not names:
        raise PlutokError(
            f"unknown augmentation {', '.join(unknown) or repr(spec)}; choose from {', '.join(AUGMENTATIONS)} or all"
        )
    return tuple(n for n in AUGMENTATIONS if n in names)


def augmentation_seed(clip_id: str, copy: int) -> int:
    """The seed of copy ``copy`` of clip ``clip_id``: the same on every machine and run."""
    return int.from_bytes(hashlib.sha256(f"augment\x00{clip_id}\x00{copy}".encode()).digest()[:8], "big")


def augment(
    wav: np.ndarray, kinds: Sequence[str], seed: int, max_kinds: int = 2
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Apply 1 to ``max_kinds`` of ``kinds`` (drawn with ``seed``), in chain order.

    Args:
        wav: mono float32 ``(samples,)`` at 16 kHz.
        kinds: names from :data:`AUGMENTATIONS`.
        seed: e.g. :func:`augmentation_seed` of the clip.
    Returns:
        The augmented waveform (float32, 16 kHz, roughly the input's length: codecs and pitch
        shifting may add or drop a few milliseconds) and what was applied, in order
        (``[{"kind": "reverb", "rt60": 0.42, "wet": 0.5}, ...]``).
    """
    kinds = parse_kinds(",".join(kinds))
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, min(max_kinds, len(kinds)) + 1))
    chosen = set(rng.choice(len(kinds), size=count, replace=False).tolist())
    applied = []
    out = np.asarray(wav, dtype=np.float32)
    for index, name in enumerate(kinds):
        if index in chosen:
            out, params = AUGMENTATIONS[name](out, rng)
            applied.append({"kind": name, **params})
    return np.nan_to_num(out).astype(np.float32), applied


def augmented_copies(
    items: Sequence[dict[str, Any]], kinds: Sequence[str], copies: int, splits: Sequence[str] = ("train",)
) -> list[dict[str, Any]]:
    """Manifest rows for ``copies`` augmented versions of each row of ``splits``.

    Each copy is the row with ``id`` ``"<id>~aug<k>"`` and an ``augment`` entry (kinds and
    seed) that :func:`plutok.training.cache.fill_cache` applies after reading the audio;
    dev rows are never augmented, so the dev metrics stay on the audio as recorded.
    """
    kinds = parse_kinds(",".join(kinds))
    return [
        {
            **item,
            "id": f"{item['id']}~aug{copy}",
            "augment": {"kinds": list(kinds), "seed": augmentation_seed(item["id"], copy)},
        }
        for item in items
        if item.get("split") in splits
        for copy in range(copies)
    ]
