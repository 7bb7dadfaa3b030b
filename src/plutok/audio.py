"""Audio input/output: read files or arrays, validate, mix to mono, resample.

Everything that enters Plutok passes through :func:`prepare_waveform`, so the
input checks (empty, NaN/inf, wrong shape) live in one place.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

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
    "SpooledWaveform",
    "as_waveform",
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


class SpooledWaveform:
    """A mono float32 waveform kept in an unnamed temporary file instead of in memory.

    What :func:`load_audio_stream` returns for a file its ``spool_if`` picks:
    the encode path reads it back a window at a time (``waveform[begin:end]``), so memory
    holds a few windows of it, never the whole (230 MB per hour at 16 kHz). The file is
    created already deleted (:func:`tempfile.TemporaryFile`, in ``TMPDIR``), so nothing is
    left on disk when the object is dropped or the process is killed.

    It offers what the encode path uses of a 1-D array: ``shape``, ``ndim``, ``dtype``,
    ``len()`` and slices of step 1, which return a new float32 ``ndarray``.
    ``np.asarray(spooled)`` reads the whole waveform into memory.
    """

    ndim = 1
    dtype = np.dtype(np.float32)

    def __init__(self, handle: BinaryIO, num_samples: int) -> None:
        self._handle = handle
        self._num_samples = num_samples

    @property
    def shape(self) -> tuple[int]:
        return (self._num_samples,)

    def __len__(self) -> int:
        return self._num_samples

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice):
            raise TypeError(f"a spooled waveform is read by slices, not by {type(index).__name__}")
        begin, end, step = index.indices(self._num_samples)
        if step != 1:
            raise TypeError("a spooled waveform is read by slices of step 1")
        samples = np.empty(max(0, end - begin), dtype="<f4")
        buffer, done = memoryview(samples).cast("B"), 0
        while done < buffer.nbytes:
            read = os.preadv(self._handle.fileno(), [buffer[done:]], begin * 4 + done)
            if read == 0:
                raise AudioError("the spooled waveform ended early (its temporary file was cut)")
            done += read
        return samples.astype(np.float32, copy=False)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def close(self) -> None:
        """Release the temporary file (also done when the object is garbage-collected)."""
        self._handle.close()


class _InMemory:
    """Where :func:`load_audio_stream` puts the samples of a file held in memory."""

    def __init__(self, expected: int) -> None:
        # Sized by the header; a file longer than its header says grows by extra pieces.
        self._output = np.empty(expected + 16, dtype=np.float32)
        self._filled = 0
        self._extra: list[np.ndarray] = []

    def write(self, samples: np.ndarray) -> None:
        room = min(samples.shape[0], self._output.shape[0] - self._filled)
        self._output[self._filled : self._filled + room] = samples[:room]
        self._filled += room
        if room < samples.shape[0]:
            self._extra.append(samples[room:].copy())

    def result(self) -> np.ndarray:
        head = self._output[: self._filled]
        return np.concatenate([head, *self._extra]) if self._extra else head


class _Spool:
    """Where :func:`load_audio_stream` puts the samples of a file spooled to disk."""

    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            self._handle = tempfile.TemporaryFile(prefix="plutok-spool-")
        except OSError as error:
            raise self._error(error) from None
        self._count = 0

    def _error(self, error: OSError) -> AudioError:
        return AudioError(
            f"{self._path}: cannot spool the waveform to a temporary file in "
            f"{tempfile.gettempdir()} (set TMPDIR to a writable folder with room, ~230 MB per "
            f"hour of audio): {error.strerror or error}"
        )

    def write(self, samples: np.ndarray) -> None:
        try:
            self._handle.write(np.ascontiguousarray(samples, dtype="<f4").tobytes())
        except OSError as error:
            self._handle.close()
            raise self._error(error) from None
        self._count += samples.shape[0]

    def result(self) -> SpooledWaveform:
        self._handle.flush()
        return SpooledWaveform(self._handle, self._count)


def load_audio_stream(
    path: str | os.PathLike, target_rate: int | None = None, spool_if: Callable[[int], bool] | None = None
) -> tuple[np.ndarray | SpooledWaveform, int, int]:
    """Read an audio file block by block: mix each block to mono and resample it on the fly.

    Only the mono result at ``target_rate`` is ever held in full, never the file's
    channels or its rate (a 1 h 48 kHz stereo file would be 1.4 GB as float32); the
    samples equal :func:`load_audio` on the whole file (soxr streams exactly). A file
    for whose length at ``target_rate`` (from its header) ``spool_if`` is true is not
    held at all: its samples go to a temporary file and come back as a
    :class:`SpooledWaveform` (same values), so that encoding it needs memory for a chunk,
    not for the recording.

    Returns:
        ``(wav, source_rate, source_samples)``: float32 ``(samples,)`` at ``target_rate``
        (or the file's rate; an ``ndarray`` or a :class:`SpooledWaveform`), the file's rate
        in Hz and its length in samples at that rate.
    Raises:
        AudioError: missing path, a directory, an empty or non-audio file, NaN/inf samples,
            a rate outside ``MIN_INPUT_RATE..MAX_INPUT_RATE`` or a header claiming over 24 h
            (both refused before anything is allocated), no room to spool.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, expected an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty")
    _check_wav_length(path)
    sink: _InMemory | _Spool | None = None
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
            expected = (
                int(np.ceil(max(0, handle.frames) * rate / source_rate)) if handle.frames < 2**62 else 0
            )
            spool = spool_if is not None and spool_if(expected)
            sink = _Spool(path) if spool else _InMemory(expected)
            source_samples = bad = 0
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
                sink.write(mono)
                if last:
                    break
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioError(f"{path}: not a readable audio file ({error})") from None
    if source_samples == 0:
        raise AudioError(f"{path}: audio has zero samples")
    if bad:
        raise AudioError(f"{path}: audio contains {bad} NaN or infinite samples")
    return sink.result(), source_rate, source_samples


def as_waveform(wav: Any) -> np.ndarray | SpooledWaveform:
    """``wav`` as a float32 ``(samples,)`` array, or unchanged if it is a :class:`SpooledWaveform`.

    For the stages that read long audio by slices (log-mel blocks, Whisper windows, the
    speaker statistics), so that a spooled waveform is never read whole.
    """
    if isinstance(wav, SpooledWaveform):
        return wav
    return np.asarray(wav, dtype=np.float32)


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
