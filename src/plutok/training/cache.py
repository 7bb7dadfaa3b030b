"""Feature cache for codec training: frontend features computed once, memory-mapped float16.

Layout of a cache directory (append-only, so a growing corpus only adds work)::

    cache.json            the parts' configs (frontend, mel target, speaker encoder) -- a
                          cache made with other settings is refused
    <stream>.f16          per stream ("analysis", "mel"): the frames of every utterance,
                          frame-major ``(T, C)`` float16, one utterance after another
    index.jsonl           one row per utterance: id, language, split, kind, text, seconds,
                          speaker vector, and per stream ``[offset_frames, frames]``;
                          written after its frames, so a killed run loses at most the
                          utterance it was writing (the stream files are cut back to the
                          last indexed frame on resume)
    failures.jsonl        inputs that could not be read, with the reason

``mel`` is the raw log-mel (synthesis target before speaker normalisation);
``analysis`` is the frontend's output.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plutok.errors import ModelError, PlutokError
from plutok.files import atomic_write_text
from plutok.frontends.base import Frontend
from plutok.frontends.mel import LogMel
from plutok.speaker.base import SpeakerEncoder

__all__ = ["AnalysisReader", "CachedUtterance", "FeatureCache", "fill_cache", "folder_rows", "iter_manifest"]

CONFIG_FILE = "cache.json"
INDEX_FILE = "index.jsonl"
FAILURES_FILE = "failures.jsonl"
STREAMS = ("analysis", "mel")


@dataclass(frozen=True)
class CachedUtterance:
    """One cached utterance: metadata, speaker vector and memory-mapped ``(C, T)`` views."""

    id: str
    language: str
    split: str
    kind: str
    text: str
    seconds: float
    speaker: np.ndarray
    analysis: np.ndarray  # (C_in, T_in) float16 view
    mel: np.ndarray  # (n_mels, T_out) float16 view


class FeatureCache:
    """Read side of a cache directory (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        config_path = self.directory / CONFIG_FILE
        if not config_path.is_file():
            raise ModelError(f"{self.directory}: not a feature cache (no {CONFIG_FILE})")
        self.config = json.loads(config_path.read_text(encoding="utf-8"))
        self.rows = read_index(self.directory / INDEX_FILE)
        self._maps = {}
        for stream in STREAMS:
            path = self.directory / f"{stream}.f16"
            dim = self.config[f"{stream}_dim"]
            if path.stat().st_size:
                self._maps[stream] = np.memmap(path, dtype=np.float16, mode="r").reshape(-1, dim)
            else:
                self._maps[stream] = np.zeros((0, dim), dtype=np.float16)

    def __len__(self) -> int:
        return len(self.rows)

    def utterances(self, split: str | None = None) -> list[CachedUtterance]:
        """Every cached utterance (of ``split`` when given), in index order."""
        return [self._utterance(row) for row in self.rows if split is None or row["split"] == split]

    def _utterance(self, row: dict[str, Any]) -> CachedUtterance:
        views = {}
        for stream in STREAMS:
            offset, frames = row[stream]
            views[stream] = self._maps[stream][offset : offset + frames].T
        return CachedUtterance(
            id=row["id"],
            language=row.get("language", ""),
            split=row.get("split", ""),
            kind=row.get("kind", ""),
            text=row.get("text", ""),
            seconds=float(row["seconds"]),
            speaker=np.asarray(row["speaker"], dtype=np.float32),
            analysis=views["analysis"],
            mel=views["mel"],
        )


class AnalysisReader:
    """A frontend's analysis features of cached utterances, normalised as the codec reads them.

    For the cache's own frontend these are the cached ``analysis`` frames. A
    :class:`~plutok.frontends.stack.StackedFrontend` whose members are each the
    cache's frontend or a ``log-mel`` frontend with the cached mel settings is
    derived from the cached streams (no frontend runs again): training a codec on
    Whisper + log-mel needs no second cache. ``speaker`` may be another encoder than the
    cache's (``train-codec --speaker``, vectors derived from the cached ones): features the
    frontend normalises by speaker are then normalised by it, which cached ``analysis``
    frames normalised at caching time cannot be (refused; a stack of a ``log-mel`` member is
    derived from the cached log-mel instead).
    """

    def __init__(self, cache: FeatureCache, frontend: Frontend, speaker: SpeakerEncoder) -> None:
        from plutok import registry
        from plutok.frontends.stack import StackedFrontend

        self.frontend, self.speaker = frontend, speaker
        cached = cache.config["frontend"]
        if frontend.config() == cached:
            if (
                frontend.normalize_by_speaker
                and registry.build("speaker", cache.config["speaker"]).config() != speaker.config()
            ):
                raise ModelError(
                    f"the cache at {cache.directory} holds {cached['name']} features normalised by its own "
                    f"speaker vectors, not by {speaker.config()['name']}'s; train on a 'stack' frontend "
                    "derived from its log-mel, or cache again with --speaker"
                )
            self.streams = None
            return
        if not isinstance(frontend, StackedFrontend):
            raise ModelError(
                f"the cache at {cache.directory} holds {cached['name']} features, not {frontend.name}; "
                "cache them with 'plutok cache --frontend'"
            )
        self.streams = []
        for member in frontend.members:
            config = member.config()
            if config == cached and not member.normalize_by_speaker:
                self.streams.append("analysis")
            elif (
                config.get("name") == "log-mel"
                and {key: config.get(key) for key in cache.config["mel"]} == cache.config["mel"]
            ):
                self.streams.append("mel")
            else:
                raise ModelError(
                    f"stack member {config} is neither the cache's frontend nor its log-mel; "
                    "cache the stacked frontend itself"
                )

    def frames(self, utterance: CachedUtterance) -> int:
        """Analysis frames of the whole utterance."""
        if self.streams is None:
            return utterance.analysis.shape[1]
        stream = getattr(utterance, self.streams[0])
        return -(-stream.shape[1] // self.frontend.factors[0])

    def __call__(self, utterance: CachedUtterance, begin: int = 0, end: int | None = None) -> np.ndarray:
        """float32 ``(C_in, <= end - begin)`` frames ``begin:end`` of ``utterance`` (to its end if ``None``)."""
        end = self.frames(utterance) if end is None else min(end, self.frames(utterance))
        if self.streams is None:
            return np.asarray(utterance.analysis[:, begin:end], dtype=np.float32)
        pieces = [
            np.asarray(getattr(utterance, stream)[:, begin * factor : end * factor], dtype=np.float32)
            for stream, factor in zip(self.streams, self.frontend.factors, strict=True)
        ]
        stacked = self.frontend.stack(pieces)[:, : end - begin]
        return self.frontend.normalized(stacked, utterance.speaker, self.speaker)


def read_index(path: Path) -> list[dict[str, Any]]:
    """The JSON rows of an append-only index; a last line cut by a kill ends the list."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is redone
    return rows


def _cache_config(frontend: Frontend, speaker: SpeakerEncoder, log_mel: LogMel) -> dict[str, Any]:
    return {
        "frontend": frontend.config(),
        "frontend_weights_sha256": frontend.weights_digest(),
        "speaker": speaker.config(),
        "mel": {key: getattr(log_mel.settings, key) for key in log_mel.settings.__dataclass_fields__},
        "analysis_dim": frontend.feature_dim,
        "mel_dim": log_mel.settings.n_mels,
    }


def fill_cache(
    directory: str | os.PathLike,
    utterances: Sequence[Any],
    frontend: Frontend,
    speaker: SpeakerEncoder,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, int]:
    """Add every utterance not yet cached (resumable; see the module docstring).

    Args:
        utterances: objects with ``id``, ``path`` and optionally ``language``,
            ``split``, ``text``, ``kind`` (:class:`plutok.legacy.features.Utterance` or manifest rows).
        frontend: the analysis frontend; ``speaker``: the speaker encoder (its log-mel
            is also the cached synthesis target).
    Returns:
        ``{"added": n, "skipped": n, "failed": n}``.
    """
    from tqdm import tqdm

    from plutok.audio import load_audio
    from plutok.training import augment

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    log_mel = speaker.log_mel if hasattr(speaker, "log_mel") else LogMel()
    config = _cache_config(frontend, speaker, log_mel)
    config_path = directory / CONFIG_FILE
    if config_path.is_file():
        if json.loads(config_path.read_text(encoding="utf-8")) != config:
            raise PlutokError(f"{directory}: cache was made with other settings; use another directory")
    else:
        atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    rows = read_index(directory / INDEX_FILE)
    done = {row["id"] for row in rows}
    ends = {stream: 0 for stream in STREAMS}
    for row in rows:
        for stream in STREAMS:
            ends[stream] = max(ends[stream], row[stream][0] + row[stream][1])
    # Cut back what a killed run wrote after its last index row, and the index itself.
    atomic_write_text(directory / INDEX_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    files = {}
    for stream in STREAMS:
        path = directory / f"{stream}.f16"
        handle = open(path, "ab")
        handle.truncate(ends[stream] * config[f"{stream}_dim"] * 2)
        handle.seek(0, os.SEEK_END)
        files[stream] = handle
    todo = [u for u in utterances if _get(u, "id") not in done]
    counts = {"added": 0, "skipped": len(utterances) - len(todo), "failed": 0}
    index = open(directory / INDEX_FILE, "a", encoding="utf-8")
    failures = open(directory / FAILURES_FILE, "a", encoding="utf-8")
    try:
        bar = tqdm(total=len(todo), desc="caching features", unit="clip", disable=not progress)
        for first in range(0, len(todo), batch_size):
            batch, waves = [], []
            for item in todo[first : first + batch_size]:
                try:
                    wav, _ = load_audio(_get(item, "path"), target_rate=frontend.sample_rate)
                    if _get(item, "augment"):
                        wav, applied = augment.augment(wav, item["augment"]["kinds"], item["augment"]["seed"])
                        item = {**item, "augmentation": applied}
                    if wav.shape[0] < 2 * frontend.sample_rate // 10:
                        raise PlutokError("shorter than 0.2 s")
                except PlutokError as error:
                    failures.write(json.dumps({"id": _get(item, "id"), "error": str(error)}) + "\n")
                    counts["failed"] += 1
                    continue
                batch.append(item)
                waves.append(wav)
            speakers = [speaker.embed(wav) for wav in waves]
            analyses = frontend.analyze_batch(waves, speakers)
            for item, wav, vector, analysis in zip(batch, waves, speakers, analyses, strict=False):
                mel = log_mel(wav)
                analysis = frontend.normalized(analysis, vector, speaker)
                row = {
                    "id": _get(item, "id"),
                    "language": _get(item, "language"),
                    "split": _get(item, "split"),
                    "kind": _get(item, "kind"),
                    "text": _get(item, "text"),
                    "seconds": wav.shape[0] / frontend.sample_rate,
                    "speaker": [float(v) for v in vector],
                }
                if _get(item, "augmentation"):
                    row["augmentation"] = item["augmentation"]
                for stream, frames in (("analysis", analysis), ("mel", mel)):
                    files[stream].write(np.ascontiguousarray(frames.T, dtype=np.float16).tobytes())
                    row[stream] = [ends[stream], int(frames.shape[1])]
                    ends[stream] += int(frames.shape[1])
                for handle in files.values():
                    handle.flush()
                index.write(json.dumps(row, ensure_ascii=False) + "\n")
                index.flush()
                counts["added"] += 1
            bar.update(len(todo[first : first + batch_size]))
        bar.close()
    finally:
        for handle in (*files.values(), index, failures):
            handle.close()
    return counts


def _get(item: Any, key: str) -> str:
    value = item.get(key, "") if isinstance(item, dict) else getattr(item, key, "")
    return "" if value is None else value


def iter_manifest(
    path: str | os.PathLike, splits: Sequence[str] = ("train", "dev")
) -> Iterator[dict[str, Any]]:
    """Rows of a corpus ``manifest.jsonl`` with absolute paths, for :func:`fill_cache`.

    Every row needs ``path``; rows whose ``split`` is not in ``splits`` are left out.
    Raises :class:`PlutokError` (one line) on a row that is not a JSON object with a
    ``path``, and when rows exist but none is of ``splits`` (a manifest without
    ``split`` would otherwise cache nothing and leave training with no data).
    """
    path = Path(path)
    if path.is_dir():
        raise PlutokError(f"{path}: a folder, not a manifest (folder_rows reads a folder of audio)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PlutokError(f"{path}: cannot read the manifest ({error})") from None
    rows, found = [], {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row_path = row["path"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise PlutokError(
                f"{path}:{number}: bad manifest row (needs a JSON object with 'path'; {error!r})"
            ) from None
        split = row.get("split")
        found[split] = found.get(split, 0) + 1
        if split in splits:
            row["path"] = str(row_path if Path(row_path).is_absolute() else path.parent / row_path)
            rows.append(row)
    if found and not rows:
        seen = ", ".join(
            f"{count} {'without split' if split is None else repr(split)}" for split, count in found.items()
        )
        raise PlutokError(
            f"{path}: no row of split {' or '.join(map(repr, splits))} ({seen}); give each row a "
            "'split', or cache the folder of audio (a dev split is then chosen for you)"
        )
    yield from rows


#: Share of a folder's clips :func:`folder_rows` holds out as ``dev``.
DEV_FRACTION = 0.05


def folder_rows(folder: str | os.PathLike, dev_fraction: float = DEV_FRACTION) -> list[dict[str, Any]]:
    """Manifest rows for every audio file below ``folder``, with a deterministic dev split.

    The id is the path relative to ``folder`` without its extension. A file is ``dev``
    when the SHA-256 of its relative path, read as a fraction of 2**256, is below
    ``dev_fraction`` (so adding files moves no other between splits); with two or more
    files and none below (fewer than ~20 files), the file of the smallest hash is
    ``dev``. ``kind`` is ``real`` (what a user's recordings are;
    :attr:`TrainerConfig.real_weight`).
    Raises :class:`PlutokError` when the folder holds no audio file.
    """
    import hashlib

    from plutok.audio import AUDIO_EXTENSIONS, find_files

    folder = Path(folder)
    files = find_files(folder)
    if not files:
        raise PlutokError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
    rows = []
    for file in files:
        relative = file.relative_to(folder).as_posix()
        digest = int.from_bytes(hashlib.sha256(relative.encode()).digest(), "big") / 2**256
        rows.append(
            {
                "id": str(Path(relative).with_suffix("").as_posix()),
                "path": str(file),
                "kind": "real",
                "split": "train",
                "_hash": digest,
            }
        )
    chosen = [row for row in rows if row["_hash"] < dev_fraction]
    if not chosen and len(rows) >= 2:
        chosen = [min(rows, key=lambda row: row["_hash"])]
    for row in chosen:
        row["split"] = "dev"
    for row in rows:
        del row["_hash"]
    return rows


def _main() -> None:  # pragma: no cover - exercised by the cache CLI test
    import argparse

    import torch

    from plutok import registry

    parser = argparse.ArgumentParser(description="fill a feature cache from a corpus manifest")
    parser.add_argument("manifest")
    parser.add_argument("out")
    parser.add_argument(
        "--frontend",
        default='{"name": "whisper-encoder", "compute_type": "float32"}',
        help="frontend config (JSON)",
    )
    parser.add_argument("--speaker", default='{"name": "mel-statistics", "coefficients": 16}')
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frontend = registry.build("frontend", json.loads(args.frontend))
    if hasattr(frontend, "threads"):
        frontend.threads = args.threads
    speaker = registry.build("speaker", json.loads(args.speaker))
    started = time.time()
    print(
        fill_cache(args.out, list(iter_manifest(args.manifest)), frontend, speaker),
        f"{time.time() - started:.0f} s",
    )


if __name__ == "__main__":
    _main()
