"""Audio input/output: read files or arrays, validate, mix to mono, resample.

Everything that enters Plutok passes through :func:`prepare_waveform`, so the
input checks (empty, NaN/inf, wrong shape) live in one place.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from plutok.encoding import check_duration
from plutok.errors import AudioError
from plutok.files import atomic_path

__all__ = [
    "MAX_INPUT_RATE",
    "MIN_INPUT_RATE",
    "check_input_rate",
    "load_audio",
    "load_audio_stream",
    "prepare_waveform",
    "write_audio",
    "resample",
    "AUDIO_EXTENSIONS",
    "find_files",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au")
# Files are read and resampled in blocks of this many source samples (per channel).
_READ_BLOCK = 1 << 18
# Input sample rates accepted, in Hz. Below 4 kHz no speech band is left (telephone
# audio is 8 kHz), and the rate is what turns a file's sample count into seconds: a
# header claiming 1 Hz made an 86 KB file 12 h of audio to resample. 384 kHz is the
# highest rate recorders write (DXD) and the highest output rate decode accepts.
MIN_INPUT_RATE = 4000
MAX_INPUT_RATE = 384_000


def check_input_rate(sample_rate: object, what: str = "sample rate") -> int:
    """``sample_rate`` as an int in ``MIN_INPUT_RATE..MAX_INPUT_RATE`` Hz, else :class:`AudioError`.

    A bool is not a rate (``encode(wav, True)`` would be 1 Hz), nor is a float.
    """
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, (int, np.integer)):
        raise AudioError(f"{what} must be an integer in Hz, got {sample_rate!r}")
    if not MIN_INPUT_RATE <= sample_rate <= MAX_INPUT_RATE:
        raise AudioError(f"{what} must be in {MIN_INPUT_RATE}..{MAX_INPUT_RATE} Hz, got {sample_rate}")
    return int(sample_rate)


def find_files(folder: str | os.PathLike, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[Path]:
    """Files below ``folder`` (recursive, sorted) whose extension is one of ``extensions`` (any case).

    Hidden files (``.name``, e.g. the ``._x.wav`` that macOS leaves) are skipped.
    """
    lowered = tuple(extension.lower() for extension in extensions)
    return sorted(
        path
        for path in Path(folder).rglob("*")
        if path.suffix.lower() in lowered and path.is_file() and not path.name.startswith(".")
    )


def resample(wav: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample a mono float32 waveform ``(samples,)`` from ``source_rate`` to ``target_rate`` Hz."""
    if source_rate == target_rate:
        return wav
    return soxr.resample(wav, source_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


# The data size streaming writers put in a WAV header when the length is not known yet
# (ffmpeg writing to a pipe): not a promise of that many bytes.
_WAV_UNKNOWN_SIZE = 0xFFFFFFFF


def _check_wav_length(path: Path) -> None:
    """Refuse a RIFF/WAVE file whose ``data`` chunk declares more bytes than the file holds.

    libsndfile reads such a file silently up to where it ends (a FLAC cut short fails to
    decode); a cut-off recording must not become tokens as if it were whole.

    Raises:
        AudioError: the file ends before the audio its header declares.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return  # not plain WAV (RF64, W64, another format): libsndfile checks it
        position = 12
        while position + 8 <= size:
            handle.seek(position)
            chunk = handle.read(8)
            declared = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                present = size - position - 8
                if declared > present and declared != _WAV_UNKNOWN_SIZE:
                    raise AudioError(
                        f"{path}: truncated WAV file: its header declares {declared} bytes of audio, "
                        f"the file holds {present}"
                    )
                return
            position += 8 + declared + (declared & 1)  # chunks are padded to an even size


def _to_float(wav: np.ndarray) -> np.ndarray:
    if np.issubdtype(wav.dtype, np.integer):
        info = np.iinfo(wav.dtype)
        if info.min == 0:  # unsigned PCM (8-bit wav) is offset binary
            midpoint = (info.max + 1) / 2
            return ((wav.astype(np.float64) - midpoint) / midpoint).astype(np.float32)
        return (wav.astype(np.float64) / -float(info.min)).astype(np.float32)
    if np.issubdtype(wav.dtype, np.floating):
        return wav.astype(np.float32, copy=False)
    if wav.dtype == np.bool_:
        raise AudioError("audio array has boolean dtype; expected int or float samples")
    raise AudioError(f"audio array has unsupported dtype {wav.dtype}; expected int or float samples")


def prepare_waveform(wav: np.ndarray, sample_rate: int, target_rate: int | None = None) -> np.ndarray:
    """Validate an audio array and turn it into mono float32 at ``target_rate``.

    Args:
        wav: ``(samples,)`` or ``(samples, channels)`` (as soundfile reads a file); int PCM
            (scaled to [-1, 1]) or float; a torch tensor on the CPU works too. A 2-D array
            is always ``(samples, channels)``, never guessed: one with more channels than
            samples is refused, since it is a ``(channels, samples)`` array (pass ``wav.T``)
            or a batch of clips (``Plutok.encode_batch``), and averaging it would be wrong.
        sample_rate: rate of ``wav`` in Hz.
        target_rate: rate to resample to, or None to keep ``sample_rate``.
    Returns:
        float32 ``(samples,)``.
    Raises:
        AudioError: empty array, more than 2 dimensions, more channels than samples,
            NaN/inf samples, a sample rate that is not an int in
            ``MIN_INPUT_RATE..MAX_INPUT_RATE``, over 24 h of audio.
    """
    wav = np.asarray(wav)
    sample_rate = check_input_rate(sample_rate)
    if wav.ndim == 0 or wav.size == 0:
        raise AudioError("audio is empty (zero samples)")
    if wav.ndim > 2:
        raise AudioError(f"audio must be 1-D (samples,) or 2-D (samples, channels); got shape {wav.shape}")
    if wav.ndim == 2 and wav.shape[1] > wav.shape[0]:
        raise AudioError(
            f"2-D audio is (samples, channels), and shape {wav.shape} has more channels than samples: "
            "pass wav.T for a (channels, samples) array, or encode_batch for a batch of clips"
        )
    # Before any copy or resampling, which both scale with the length.
    check_duration(wav.shape[0] / sample_rate, AudioError, "audio is too long:")
    wav = _to_float(wav)
    if not np.all(np.isfinite(wav)):
        bad = int(np.count_nonzero(~np.isfinite(wav)))
        raise AudioError(f"audio contains {bad} NaN or infinite samples")
    if wav.ndim == 2:
        wav = wav.mean(axis=1)
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if target_rate is not None:
        wav = resample(wav, sample_rate, int(target_rate))
    return wav


def load_audio(path: str | os.PathLike, target_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file (wav, flac, ogg, mp3, ...) as mono float32.

    Args:
        path: file that soundfile/libsndfile can decode.
        target_rate: resample to this rate in Hz; None keeps the file's rate.
    Returns:
        ``(wav, sample_rate)`` with ``wav`` float32 ``(samples,)``.
    Raises:
        AudioError: missing path, a directory, an empty or non-audio file, bad samples.
    """
    wav, sample_rate, _ = load_audio_stream(path, target_rate)
    return wav, int(target_rate or sample_rate)


def load_audio_stream(path: str | os.PathLike, target_rate: int | None = None) -> tuple[np.ndarray, int, int]:
    """Read an audio file block by block: mix each block to mono and resample it on the fly.

    Only the mono result at ``target_rate`` is ever held in full, never the file's
    channels or its rate (a 1 h 48 kHz stereo file would be 1.4 GB as float32); the
    samples equal :func:`load_audio` on the whole file (soxr streams exactly).

    Returns:
        ``(wav, source_rate, source_samples)``: float32 ``(samples,)`` at ``target_rate``
        (or the file's rate), the file's rate in Hz and its length in samples at that rate.
    Raises:
        AudioError: missing path, a directory, an empty or non-audio file, NaN/inf samples,
            a rate outside ``MIN_INPUT_RATE..MAX_INPUT_RATE`` or a header claiming over 24 h
            (both refused before anything is allocated).
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, expected an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty")
    _check_wav_length(path)
    try:
        # Bytes, not str: soundfile encodes a str name strictly as UTF-8, so a file whose
        # name is not UTF-8 (decoded with surrogate escapes) could not be opened.
        with sf.SoundFile(os.fsencode(path)) as handle:
            source_rate = check_input_rate(handle.samplerate, f"{path}: sample rate")
            if handle.frames < 2**62:
                check_duration(handle.frames / source_rate, AudioError, f"{path}: header claims")
            rate = int(target_rate or source_rate)
            stream = (
                None
                if rate == source_rate
                else soxr.ResampleStream(source_rate, rate, 1, dtype="float32", quality="HQ")
            )
            expected = max(0, handle.frames) if handle.frames < 2**62 else 0
            output = np.empty(int(np.ceil(expected * rate / source_rate)) + 16, dtype=np.float32)
            filled = source_samples = bad = 0
            extra: list[np.ndarray] = []
            while True:
                block = handle.read(_READ_BLOCK, dtype="float32", always_2d=True)
                last = block.shape[0] < _READ_BLOCK
                source_samples += block.shape[0]
                # A length the header did not state is bounded while reading.
                check_duration(source_samples / source_rate, AudioError, f"{path}: more than")
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                bad += int(np.count_nonzero(~np.isfinite(mono)))
                if bad:
                    if last:
                        break
                    continue
                if stream is not None:
                    mono = stream.resample_chunk(np.ascontiguousarray(mono), last=last)
                room = min(mono.shape[0], output.shape[0] - filled)
                output[filled : filled + room] = mono[:room]
                filled += room
                if room < mono.shape[0]:
                    extra.append(mono[room:].copy())
                if last:
                    break
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioError(f"{path}: not a readable audio file ({error})") from None
    if source_samples == 0:
        raise AudioError(f"{path}: audio has zero samples")
    if bad:
        raise AudioError(f"{path}: audio contains {bad} NaN or infinite samples")
    wav = np.concatenate([output[:filled], *extra]) if extra else output[:filled]
    return wav, source_rate, source_samples


def write_audio(path: str | os.PathLike, wav: np.ndarray, sample_rate: int) -> Path:
    """Write a mono float waveform ``(samples,)`` atomically (temp file, then rename).

    The format follows the extension (wav is written as 16-bit PCM, flac as 16-bit).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".").upper() or "WAV"
    if fmt not in sf.available_formats():
        raise AudioError(f"{path}: cannot write audio with extension {path.suffix!r}")
    with atomic_path(path) as temporary:
        sf.write(str(temporary), np.clip(wav, -1.0, 1.0), sample_rate, format=fmt, subtype="PCM_16")
    return path
