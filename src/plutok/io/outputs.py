"""Safe output paths and audio writing for the CLI: refuse before any work, never clobber an input.

Rules of :func:`resolve_outputs` (``-o`` is the user's output argument):

* ``-o`` is a *folder* when it ends with ``/`` (or the OS separator) or is an existing
  directory, for one input or many: each output is ``FOLDER/<input stem><extension>``
  (or, with ``names``, a relative path such as ``FOLDER/spk1/<stem><extension>``).
* Otherwise ``-o`` names *one file*; it is refused for several inputs. A file the user
  named may be overwritten (they asked for it by name, as ``cp`` and ``sox`` do).
* Without ``-o`` each output sits beside its input as ``<stem><suffix><extension>``
  (``talk.wav`` -> ``talk.decoded.wav``). Outputs the user did not name never replace
  an existing file unless ``force``.
* An output that is one of the inputs (same resolved path, through symlinks or hard
  links too) is always refused, ``force`` or not; so is an output that is another file
  the command reads (``protected``: a ``--speaker`` reference), and two inputs mapping to
  the same output (``a.wav`` and ``a.flac`` into one folder).
* The extension must be writable by the installed libsndfile (:func:`check_output_format`).

Output formats (:data:`OUTPUT_FORMATS`): ``.wav`` and ``.flac`` are 16-bit PCM (plenty
for decoded speech, and what every player reads; float WAV would double the size for no
audible gain), ``.ogg`` is Vorbis and ``.mp3`` is MPEG layer III. Samples are clipped to
[-1, 1] for every format (PCM would wrap, the lossy encoders need it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from plutok.audio import resample
from plutok.errors import AudioError, PlutokError
from plutok.files import atomic_path

__all__ = [
    "MAX_OUTPUT_RATES",
    "MP3_SAMPLE_RATES",
    "OUTPUT_FORMATS",
    "WrittenAudio",
    "check_output_format",
    "check_output_rate",
    "is_folder_output",
    "resolve_outputs",
    "supported_output_extensions",
    "write_audio_checked",
]

# extension -> (libsndfile format, subtype)
OUTPUT_FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}
# The only rates MPEG-1/2/2.5 layer III can carry, in Hz.
MP3_SAMPLE_RATES: tuple[int, ...] = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
# Highest rate each format is written at, in Hz, where it is below the CLI's 384 kHz. libvorbis
# tunes its encoder for rates up to 192 kHz; above that libsndfile 1.2.2 + libvorbis 1.3
# crash the process writing Vorbis (measured: 200 kHz works, 210 kHz and 220 kHz segfault),
# so 192 kHz, the highest standard rate, is the limit. Mp3 is resampled instead (_mp3_rate).
MAX_OUTPUT_RATES: dict[str, int] = {".ogg": 192_000}


def _writable(format_name: str, subtype: str) -> bool:
    # Older libsndfile builds (< 1.1) have no MP3, and some distributions build without Vorbis.
    return format_name in sf.available_formats() and subtype in sf.available_subtypes(format_name)


def supported_output_extensions() -> list[str]:
    """The extensions of :data:`OUTPUT_FORMATS` that this installation can write."""
    return [extension for extension, spec in OUTPUT_FORMATS.items() if _writable(*spec)]


def check_output_format(path: str | os.PathLike) -> tuple[str, str]:
    """``(format, subtype)`` for writing ``path``, chosen by its extension (case-insensitive).

    Call it before any encoding or decoding work, so a typo fails at once.

    Raises:
        AudioError: no extension, an unknown one, or one the installed libsndfile cannot write.
    """
    path = Path(path)
    extension = path.suffix.lower()
    works = ", ".join(supported_output_extensions())
    if not extension:
        raise AudioError(
            f"{path}: no audio extension; name a file such as {path.name}.wav, "
            f"or end the name with '/' for a folder (writable: {works})"
        )
    if extension not in OUTPUT_FORMATS:
        raise AudioError(f"{path}: cannot write {extension!r} audio; writable formats here: {works}")
    spec = OUTPUT_FORMATS[extension]
    if not _writable(*spec):
        raise AudioError(
            f"{path}: this libsndfile ({sf.__libsndfile_version__}) cannot write {extension}; "
            f"writable formats here: {works}"
        )
    return spec


def check_output_rate(path: str | os.PathLike, sample_rate: int) -> None:
    """Refuse a rate the format of ``path`` cannot be written at (:data:`MAX_OUTPUT_RATES`).

    Call it before any decoding work when the rate is known (``--sample-rate``).

    Raises:
        AudioError: ``sample_rate`` above the format's limit.
    """
    path = Path(path)
    limit = MAX_OUTPUT_RATES.get(path.suffix.lower())
    if limit is not None and sample_rate > limit:
        raise AudioError(
            f"{path}: {path.suffix.lower()} audio can be written at up to {limit} Hz, not {sample_rate} Hz; "
            f"choose a lower --sample-rate or another format"
        )


def is_folder_output(output: str) -> bool:
    """Whether ``-o output`` means a folder: it ends with a separator or is an existing directory."""
    separators = tuple(sep for sep in ("/", os.sep, os.altsep) if sep)
    return output.endswith(separators) or Path(output).is_dir()


def _identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of an existing file: equal for hard links and bind mounts too."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def resolve_outputs(
    inputs: list[Path],
    output: str | None,
    suffix: str,
    default_extension: str,
    force: bool = False,
    names: Sequence[str | os.PathLike] | None = None,
    check_format: Callable[[Path], object] | None = None,
    protected: Sequence[str | os.PathLike] = (),
) -> list[Path]:
    """Output path for each input, refusing every unsafe case before any work (rules in the module docstring).

    Args:
        inputs: the input files, in the order the outputs are returned.
        output: the user's ``-o`` (a folder or one file), or None.
        suffix: inserted before the extension of outputs placed beside their inputs
            (``".decoded"``), so they cannot replace the input.
        default_extension: extension of outputs the user did not name (``".wav"``; the dot is optional).
        force: allow replacing existing files the user did not name. Never allows
            writing over an input.
        names: where each input goes inside a folder ``-o``, as a relative path whose
            extension is replaced (``spk1/a.flac`` -> ``FOLDER/spk1/a.wav``), to mirror
            an input folder's layout; default each input's file name.
        check_format: called with every output path before anything else; raises for a
            format that cannot be written. Default :func:`check_output_format` (audio).
        protected: other files the command reads (a ``--speaker`` reference); no output may
            replace them, exactly as no output may replace an input.
    Returns:
        One output path per input.
    Raises:
        PlutokError: no inputs, one-file ``-o`` for several inputs, an output that is an
            input, two inputs mapping to one output, an existing output without ``force``,
            an output that is a directory.
        AudioError: an extension that cannot be written (see :func:`check_output_format`).
    """
    if not inputs:
        raise PlutokError("no input files")
    extension = default_extension if default_extension.startswith(".") else f".{default_extension}"
    inputs = [Path(path) for path in inputs]
    named = output is not None and not is_folder_output(output)
    if named:
        if len(inputs) > 1:
            raise PlutokError(
                f"-o {output} names one file but there are {len(inputs)} inputs; "
                f"end it with '/' to write them into a folder"
            )
        outputs = [Path(output)]
    elif output is not None:
        folder = Path(output)
        if folder.exists() and not folder.is_dir():
            raise PlutokError(f"-o {output}: {folder} is a file, not a folder")
        relative = [Path(name) for name in names] if names is not None else [Path(p.name) for p in inputs]
        if len(relative) != len(inputs):
            raise ValueError(f"{len(relative)} names for {len(inputs)} inputs")
        for name in relative:
            if name.is_absolute() or ".." in name.parts:
                raise ValueError(f"output name {name} must be a relative path inside the folder")
        outputs = [folder / name.parent / f"{name.stem}{extension}" for name in relative]
    else:
        outputs = [path.with_name(f"{path.stem}{suffix}{extension}") for path in inputs]

    # Sets, not pairwise samefile(): a corpus can have tens of thousands of inputs.
    read = [*inputs, *(Path(path) for path in protected)]
    by_path = {path.resolve(): path for path in read}
    by_identity = {identity: path for path in read if (identity := _identity(path)) is not None}
    seen: dict[Path, Path] = {}
    for source, target in zip(inputs, outputs, strict=True):
        (check_format or check_output_format)(target)
        identity = _identity(target)
        clash = by_path.get(target.resolve()) or (by_identity.get(identity) if identity else None)
        if clash is not None:
            raise PlutokError(f"{target}: output would overwrite the input {clash}; choose another output")
        key = target.resolve()
        if key in seen:
            raise PlutokError(
                f"{seen[key]} and {source} would both be written to {target}; use separate folders"
            )
        seen[key] = source
        if target.is_dir():
            raise PlutokError(f"{target}: output is an existing directory")
        if target.exists() and not named and not force:
            raise PlutokError(
                f"{target}: exists; pass --force to overwrite it, or choose another output with -o"
            )
    return outputs


@dataclass(frozen=True)
class WrittenAudio:
    """What :func:`write_audio_checked` wrote."""

    path: Path
    sample_rate: int  # Hz actually written (differs from the request only for mp3)
    samples: int  # at ``sample_rate``
    format: str
    subtype: str

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


def _mp3_rate(sample_rate: int) -> int:
    """The smallest mp3 rate at or above ``sample_rate`` (48 kHz above that): never lowers quality."""
    return next((rate for rate in MP3_SAMPLE_RATES if rate >= sample_rate), MP3_SAMPLE_RATES[-1])


def write_audio_checked(path: str | os.PathLike, wav: np.ndarray, sample_rate: int) -> WrittenAudio:
    """Write a mono waveform atomically, in the format its extension names.

    Args:
        path: output file; the extension picks format and subtype (:data:`OUTPUT_FORMATS`).
        wav: float ``(samples,)`` in [-1, 1] (clipped to that range).
        sample_rate: Hz. An mp3 at a rate MPEG cannot carry (e.g. 20 kHz) is resampled
            to the next higher mp3 rate (48 kHz above 48 kHz); the duration is kept.
    Returns:
        :class:`WrittenAudio`, with the rate actually written.
    Raises:
        AudioError: unsupported extension, empty or non-1-D audio, NaN/inf samples, bad rate
            (also a rate above the format's :data:`MAX_OUTPUT_RATES`).
    """
    path = Path(path)
    format_name, subtype = check_output_format(path)
    wav = np.asarray(wav)
    if wav.ndim != 1 or wav.size == 0:
        raise AudioError(
            f"{path}: expected mono audio (samples,) with at least one sample, got shape {wav.shape}"
        )
    if not np.issubdtype(wav.dtype, np.floating):
        raise AudioError(f"{path}: expected float samples in [-1, 1], got dtype {wav.dtype}")
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"{path}: sample rate must be a positive integer in Hz, got {sample_rate!r}")
    sample_rate = int(sample_rate)
    check_output_rate(path, sample_rate)  # before the encoder: libvorbis crashes above its limit
    samples = np.ascontiguousarray(wav, dtype=np.float32)
    if format_name == "MP3" and sample_rate not in MP3_SAMPLE_RATES:
        target = _mp3_rate(sample_rate)
        samples = resample(samples, sample_rate, target)
        sample_rate = target
    samples = np.clip(samples, -1.0, 1.0)
    try:
        with atomic_path(path) as temporary:
            sf.write(str(temporary), samples, sample_rate, format=format_name, subtype=subtype)
    except (sf.LibsndfileError, RuntimeError, ValueError) as error:
        raise AudioError(f"{path}: could not write {format_name} audio ({error})") from None
    return WrittenAudio(path, sample_rate, int(samples.shape[0]), format_name, subtype)
