"""Feature extraction over a corpus into sharded, resumable files (training stage 1).

Layout of an extraction directory (scales to millions of utterances: one pair of
files per shard, not one file per utterance)::

    extract.json                  backbone config, feature_dim, shard size, sources
    shards/shard-00000.safetensors  per utterance: "<id>" features float16 (C, T),
                                    "<id>/speaker" float32 (speaker_dim,)
    shards/shard-00000.jsonl      one row per utterance of the shard (id, path, language,
                                  split, frames, seconds) -- written last, marks the shard done
    failures.jsonl                inputs that could not be used, with the reason

Inputs are sorted by id and cut into fixed shards, so shard ``k`` always holds the
same utterances; a rerun skips shards whose index exists, and every file is
written atomically, so a killed run never leaves a partial shard that looks done.
Ranks (torchrun) and local workers take disjoint shards (``k % world == rank``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plutok.audio import AUDIO_EXTENSIONS, load_audio
from plutok.backbones import Backbone, backbone_from_config
from plutok.errors import ModelError, PlutokError
from plutok.files import atomic_path, atomic_write_text

__all__ = [
    "Utterance",
    "ExtractSummary",
    "FeatureStore",
    "list_inputs",
    "extract_corpus",
]

EXTRACT_CONFIG = "extract.json"
SHARD_DIR = "shards"
FAILURES_FILE = "failures.jsonl"


@dataclass(frozen=True)
class Utterance:
    """One input of a corpus: an audio file and what the manifest says about it."""

    id: str
    path: str
    language: str = ""
    split: str = ""
    text: str = ""


@dataclass
class ExtractSummary:
    """What an extraction run did (this rank only, unless merged)."""

    processed: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


def list_inputs(source: str | os.PathLike, split: str | None = None) -> list[Utterance]:
    """Utterances of a folder (audio files, recursively) or a ``manifest.jsonl``.

    Manifest rows need ``path`` (relative to the manifest's folder or absolute) and
    may have ``id``, ``language``, ``split``, ``text``. ``split`` filters rows.
    Returns them sorted by id; ids must be unique.
    """
    source = Path(source)
    utterances: list[Utterance] = []
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
                relative = path.relative_to(source).with_suffix("").as_posix()
                utterances.append(Utterance(id=relative, path=str(path)))
    elif source.is_file():
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                path = Path(row["path"])
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise PlutokError(f"{source}:{number}: bad manifest row ({error})") from None
            if split is not None and row.get("split", "") != split:
                continue
            full = path if path.is_absolute() else source.parent / path
            utterances.append(
                Utterance(
                    id=str(row.get("id") or path.with_suffix("").as_posix()),
                    path=str(full),
                    language=str(row.get("language", "")),
                    split=str(row.get("split", "")),
                    text=str(row.get("text", "")),
                )
            )
    else:
        raise PlutokError(f"{source}: no such folder or manifest")
    utterances.sort(key=lambda utterance: utterance.id)
    ids = [utterance.id for utterance in utterances]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i, j in zip(ids, ids[1:], strict=False) if i == j)
        raise PlutokError(f"{source}: utterance id {duplicate!r} appears more than once")
    return utterances


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def _extract_shard(
    backbone: Backbone, utterances: Sequence[Utterance], shard_dir: Path, index: int, min_frames: int
) -> tuple[int, float, list[dict[str, str]]]:
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    seconds = 0.0
    for utterance in utterances:
        try:
            wav, _ = load_audio(utterance.path, backbone.sample_rate)
            if wav.shape[0] < min_frames * backbone.hop_length:
                raise PlutokError(f"too short: {wav.shape[0] / backbone.sample_rate:.3f} s")
            analyze = getattr(backbone, "analyze", None)
            if analyze is not None:
                features, speaker = analyze(wav)
            else:
                speaker = backbone.speaker_embedding(wav)
                features = backbone.features(wav, speaker)
        except PlutokError as error:
            failures.append({"id": utterance.id, "path": utterance.path, "error": str(error)})
            continue
        tensors[utterance.id] = np.ascontiguousarray(features, dtype=np.float16)
        tensors[f"{utterance.id}/speaker"] = np.ascontiguousarray(speaker, dtype=np.float32)
        duration = wav.shape[0] / backbone.sample_rate
        seconds += duration
        rows.append({**asdict(utterance), "frames": int(features.shape[1]), "seconds": round(duration, 4)})
    name = _shard_name(index)
    with atomic_path(shard_dir / f"{name}.safetensors") as temporary:
        save_file(tensors, str(temporary))
    # The index is written last: its presence is what marks the shard complete.
    index_rows = [json.dumps(row, ensure_ascii=False) for row in rows]
    index_rows += [json.dumps({"failed": True, **failure}, ensure_ascii=False) for failure in failures]
    atomic_write_text(shard_dir / f"{name}.jsonl", "".join(line + "\n" for line in index_rows))
    return len(rows), seconds, failures


def extract_corpus(
    utterances: Sequence[Utterance],
    backbone: Backbone,
    output: str | os.PathLike,
    shard_size: int = 256,
    rank: int = 0,
    world_size: int = 1,
    min_frames: int = 4,
    progress: bool = True,
) -> ExtractSummary:
    """Extract features and speaker vectors for ``utterances`` into ``output``.

    Each of ``world_size`` ranks calls this with its ``rank`` and takes shards
    ``k % world_size == rank``. Unreadable or too-short inputs are listed in the
    shard index as failed (and in ``failures.jsonl`` by :func:`merge_failures`).
    """
    from tqdm import tqdm

    output = Path(output)
    shard_dir = output / SHARD_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "backbone": backbone.config(),
        "feature_dim": backbone.feature_dim,
        "speaker_dim": backbone.speaker_dim,
        "frames_per_second": backbone.frames_per_second,
        "shard_size": shard_size,
        "num_inputs": len(utterances),
    }
    config_path = output / EXTRACT_CONFIG
    if config_path.is_file():
        existing = json.loads(config_path.read_text(encoding="utf-8"))
        if existing != config:
            raise PlutokError(
                f"{output} holds an extraction with other settings (backbone, shard size or inputs differ); "
                "use a new output folder"
            )
    elif rank == 0:
        backbone.save_weights(output)  # before the config: extract.json implies the weights exist
        atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    summary = ExtractSummary()
    shard_count = (len(utterances) + shard_size - 1) // shard_size
    mine = [index for index in range(shard_count) if index % world_size == rank]
    bar = tqdm(
        mine,
        desc=f"extract (rank {rank})" if world_size > 1 else "extract",
        unit="shard",
        disable=not progress,
    )
    for index in bar:
        shard = utterances[index * shard_size : (index + 1) * shard_size]
        if (shard_dir / f"{_shard_name(index)}.jsonl").is_file():
            summary.skipped += len(shard)
            continue
        processed, seconds, failures = _extract_shard(backbone, shard, shard_dir, index, min_frames)
        summary.processed += processed
        summary.failed += len(failures)
        summary.seconds += seconds
        bar.set_postfix(hours=f"{summary.hours:.2f}", failed=summary.failed)
    return summary


def merge_failures(output: str | os.PathLike) -> list[dict[str, str]]:
    """Collect the failed inputs of every finished shard into ``failures.jsonl``; returns them."""
    output = Path(output)
    failures = [row for row in FeatureStore(output).index_rows(include_failed=True) if row.get("failed")]
    atomic_write_text(
        output / FAILURES_FILE, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in failures)
    )
    return failures


class FeatureStore:
    """Read access to an extraction directory (lazy: one shard file open at a time)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        config_path = self.directory / EXTRACT_CONFIG
        if not config_path.is_file():
            raise PlutokError(f"{self.directory}: not a feature extraction folder (no {EXTRACT_CONFIG})")
        self.config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
        self.shard_indexes = sorted((self.directory / SHARD_DIR).glob("shard-*.jsonl"))
        expected = (self.config["num_inputs"] + self.config["shard_size"] - 1) // self.config["shard_size"]
        self.complete = len(self.shard_indexes) == expected

    def backbone(self) -> Backbone:
        """The backbone the features were extracted with."""
        try:
            return backbone_from_config(self.config["backbone"], self.directory)
        except KeyError as error:
            raise ModelError(f"{self.directory}: extract.json lacks {error}") from None

    def index_rows(self, include_failed: bool = False) -> Iterator[dict[str, Any]]:
        """Index rows of every finished shard, in shard order (``shard`` key added)."""
        for index_path in self.shard_indexes:
            for line in index_path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                if row.get("failed") and not include_failed:
                    continue
                yield {**row, "shard": index_path.stem}

    def __len__(self) -> int:
        return sum(1 for _ in self.index_rows())

    def iter_utterances(
        self, split: str | None = None, language: str | None = None
    ) -> Iterator[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
        """Yield ``(row, features float32 (C, T), speaker (speaker_dim,))``, streaming shard by shard."""
        from safetensors import safe_open

        for index_path in self.shard_indexes:
            rows = [json.loads(line) for line in index_path.read_text(encoding="utf-8").splitlines()]
            rows = [
                row
                for row in rows
                if not row.get("failed")
                and (split is None or row.get("split") == split)
                and (language is None or row.get("language") == language)
            ]
            if not rows:
                continue
            with safe_open(str(index_path.with_suffix(".safetensors")), framework="numpy") as handle:
                for row in rows:
                    features = handle.get_tensor(row["id"]).astype(np.float32)
                    speaker = handle.get_tensor(f"{row['id']}/speaker")
                    yield row, features, speaker

    def load_features(self, split: str | None = None) -> list[np.ndarray]:
        """All feature arrays ``(C, T)`` of a split in memory (for corpora that fit)."""
        return [features for _, features, _ in self.iter_utterances(split=split)]
