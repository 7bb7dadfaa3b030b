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
Ranks (torchrun) take disjoint shards (``k % world == rank``); within a rank,
``workers`` local processes take that rank's shards one at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plutok.audio import find_files, load_audio
from plutok.errors import ModelError, PlutokError
from plutok.files import atomic_path, atomic_write_text
from plutok.legacy.backbones import Backbone, backbone_from_config

__all__ = [
    "Utterance",
    "ExtractSummary",
    "FeatureStore",
    "list_inputs",
    "extract_corpus",
    "merge_failures",
    "prepare_output",
    "remove_partial_files",
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

    @classmethod
    def total(cls, summaries: Iterable[ExtractSummary]) -> ExtractSummary:
        """The sum of several ranks' summaries."""
        result = cls()
        for summary in summaries:
            result.processed += summary.processed
            result.skipped += summary.skipped
            result.failed += summary.failed
            result.seconds += summary.seconds
        return result


def list_inputs(source: str | os.PathLike, split: str | None = None) -> list[Utterance]:
    """Utterances of a folder (audio files, recursively) or a ``manifest.jsonl``.

    Manifest rows need ``path`` (relative to the manifest's folder or absolute) and
    may have ``id``, ``language``, ``split``, ``text``. ``split`` filters rows.
    Returns them sorted by id; ids must be unique.
    """
    source = Path(source)
    utterances: list[Utterance] = []
    if source.is_dir():
        for path in find_files(source):
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
            features, speaker = backbone.analyze(wav)
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


def _output_config(utterances: Sequence[Utterance], backbone: Backbone, shard_size: int) -> dict[str, Any]:
    return {
        "backbone": backbone.config(),
        "feature_dim": backbone.feature_dim,
        "speaker_dim": backbone.speaker_dim,
        "frames_per_second": backbone.frames_per_second,
        "shard_size": shard_size,
        "num_inputs": len(utterances),
        # Shard k must hold the same utterances on every run: a changed input list is refused.
        "inputs_sha256": hashlib.sha256(
            "\n".join(f"{utterance.id}\t{utterance.path}" for utterance in utterances).encode()
        ).hexdigest(),
    }


def _read_config(config_path: Path) -> dict[str, Any]:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PlutokError(f"{config_path}: corrupt extraction config ({error})") from None
    if not isinstance(config, dict):
        raise PlutokError(f"{config_path}: not an extraction config")
    return config


def _check_output_config(output: Path, config: dict[str, Any]) -> bool:
    """True when ``output`` already holds ``extract.json`` with these settings; raises when they differ."""
    config_path = output / EXTRACT_CONFIG
    if not config_path.is_file():
        return False
    existing = _read_config(config_path)
    if "inputs_sha256" not in existing:  # written before inputs were hashed: compare the rest
        config = {key: value for key, value in config.items() if key != "inputs_sha256"}
    if existing != config:
        raise PlutokError(
            f"{output} holds an extraction with other settings (backbone, shard size or inputs differ); "
            "use a new output folder"
        )
    return True


def prepare_output(
    utterances: Sequence[Utterance], backbone: Backbone, output: str | os.PathLike, shard_size: int = 256
) -> None:
    """Create ``output`` with ``extract.json`` and the backbone weights (or check an existing one).

    Under ``torchrun`` rank 0 calls this before the others start (then a barrier), so
    no rank writes shards into a folder whose settings were never recorded.
    """
    output = Path(output)
    (output / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    config = _output_config(utterances, backbone, shard_size)
    if not _check_output_config(output, config):
        backbone.save_weights(output)  # before the config: extract.json implies the weights exist
        atomic_write_text(output / EXTRACT_CONFIG, json.dumps(config, indent=2, sort_keys=True) + "\n")


# One backbone per worker process, built by the pool initializer.
_WORKER: dict[str, Any] = {}


def _worker_init(backbone: Backbone, threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    _WORKER["backbone"] = backbone


def _worker_shard(
    utterances: Sequence[Utterance], shard_dir: str, index: int, min_frames: int
) -> tuple[int, int, float, list[dict[str, str]]]:
    result = _extract_shard(_WORKER["backbone"], utterances, Path(shard_dir), index, min_frames)
    return (index, *result)


def extract_corpus(
    utterances: Sequence[Utterance],
    backbone: Backbone,
    output: str | os.PathLike,
    shard_size: int = 256,
    rank: int = 0,
    world_size: int = 1,
    min_frames: int = 4,
    progress: bool = True,
    workers: int = 1,
    on_shard: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Extract features and speaker vectors for ``utterances`` into ``output``.

    Each of ``world_size`` ranks calls this with its ``rank`` and takes shards
    ``k % world_size == rank``; shards whose index exists are skipped. With
    ``workers > 1`` the rank's shards are spread over that many local processes
    (each with its own copy of ``backbone`` and ``cpu_count // workers`` torch threads).
    Unreadable or too-short inputs are listed in the shard index as failed (and in
    ``failures.jsonl`` by :func:`merge_failures`); they never stop the run.
    ``on_shard(written)`` runs after each shard this call finished (``written`` so
    far); tests use it to kill a run between shards.
    Returns this rank's :class:`ExtractSummary`.
    """
    from tqdm import tqdm

    if shard_size < 1 or workers < 1:
        raise PlutokError(f"shard size and workers must be at least 1, got {shard_size} and {workers}")
    output = Path(output)
    shard_dir = output / SHARD_DIR
    if rank == 0:
        prepare_output(utterances, backbone, output, shard_size)
    else:
        shard_dir.mkdir(parents=True, exist_ok=True)
        _check_output_config(output, _output_config(utterances, backbone, shard_size))
    summary = ExtractSummary()
    shard_count = (len(utterances) + shard_size - 1) // shard_size
    todo: list[int] = []
    for index in range(rank, shard_count, world_size):
        if (shard_dir / f"{_shard_name(index)}.jsonl").is_file():
            summary.skipped += len(utterances[index * shard_size : (index + 1) * shard_size])
        else:
            todo.append(index)
    bar = tqdm(
        total=len(todo),
        desc=f"extract (rank {rank})" if world_size > 1 else "extract",
        unit="shard",
        disable=not progress,
    )

    def account(processed: int, seconds: float, failures: list[dict[str, str]]) -> None:
        summary.processed += processed
        summary.failed += len(failures)
        summary.seconds += seconds
        bar.update(1)
        bar.set_postfix(hours=f"{summary.hours:.2f}", failed=summary.failed)

    def shard_of(index: int) -> Sequence[Utterance]:
        return utterances[index * shard_size : (index + 1) * shard_size]

    workers = min(workers, len(todo)) or 1
    if workers == 1:
        for written, index in enumerate(todo, start=1):
            account(*_extract_shard(backbone, shard_of(index), shard_dir, index, min_frames))
            if on_shard is not None:
                on_shard(written)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        threads = max(1, (os.cpu_count() or 1) // workers)
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(backbone, threads),
        )
        try:
            futures = [
                pool.submit(_worker_shard, list(shard_of(index)), str(shard_dir), index, min_frames)
                for index in todo
            ]
            for written, future in enumerate(as_completed(futures), start=1):
                _, processed, seconds, failures = future.result()
                account(processed, seconds, failures)
                if on_shard is not None:
                    on_shard(written)
        except BrokenProcessPool:
            raise PlutokError(
                "an extraction worker died (killed, or out of memory?); finished shards are kept, "
                "run the same command again to resume"
            ) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    return summary


def merge_failures(output: str | os.PathLike) -> list[dict[str, str]]:
    """Collect the failed inputs of every finished shard into ``failures.jsonl``; returns them."""
    output = Path(output)
    failures = [row for row in FeatureStore(output).index_rows(include_failed=True) if row.get("failed")]
    atomic_write_text(
        output / FAILURES_FILE, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in failures)
    )
    return failures


def remove_partial_files(output: str | os.PathLike) -> int:
    """Delete the ``*.part`` leftovers of killed runs; returns how many. Call only when no run is writing."""
    removed = 0
    for leftover in (Path(output) / SHARD_DIR).glob(".*.part"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


class FeatureStore:
    """Read access to an extraction directory (lazy: one shard file open at a time)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        config_path = self.directory / EXTRACT_CONFIG
        if not config_path.is_file():
            raise PlutokError(f"{self.directory}: not a feature extraction folder (no {EXTRACT_CONFIG})")
        self.config: dict[str, Any] = _read_config(config_path)
        self.shard_indexes = sorted((self.directory / SHARD_DIR).glob("shard-*.jsonl"))
        try:
            expected = (self.config["num_inputs"] + self.config["shard_size"] - 1) // self.config[
                "shard_size"
            ]
        except (KeyError, TypeError) as error:
            raise PlutokError(f"{config_path}: not a valid extraction config ({error})") from None
        self.complete = len(self.shard_indexes) == expected
        self.expected_shards = expected

    def require_complete(self) -> None:
        """Raise unless every shard is finished (train on a half-done extraction only on purpose)."""
        if not self.complete:
            raise PlutokError(
                f"{self.directory}: extraction is unfinished ({len(self.shard_indexes)} of "
                f"{self.expected_shards} shards); rerun 'plutok extract' with the same arguments to finish it"
            )

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
        self,
        split: str | None = None,
        language: str | None = None,
        dtype: type | np.dtype = np.float32,
        part: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
        """Yield ``(row, features (C, T), speaker (speaker_dim,))``, streaming shard by shard.

        ``features`` have ``dtype`` (float32 by default; float16 is how they are stored and
        takes half the memory). ``part=(i, n)`` keeps every ``n``-th matching utterance
        starting at the ``i``-th: the ``n`` parts are disjoint and together are everything
        (one part per training rank).
        """
        from safetensors import safe_open

        position, count = part
        if not 0 <= position < count:
            raise ValueError(f"part must be (i, n) with 0 <= i < n, got {part}")
        matched = -1
        for index_path in self.shard_indexes:
            rows = [json.loads(line) for line in index_path.read_text(encoding="utf-8").splitlines()]
            rows = [
                row
                for row in rows
                if not row.get("failed")
                and (split is None or row.get("split") == split)
                and (language is None or row.get("language") == language)
            ]
            mine = []
            for row in rows:
                matched += 1
                if matched % count == position:
                    mine.append(row)
            if not mine:
                continue
            with safe_open(str(index_path.with_suffix(".safetensors")), framework="numpy") as handle:
                for row in mine:
                    features = handle.get_tensor(row["id"]).astype(dtype, copy=False)
                    speaker = handle.get_tensor(f"{row['id']}/speaker")
                    yield row, features, speaker

    def load_features(
        self, split: str | None = None, dtype: type | np.dtype = np.float32, part: tuple[int, int] = (0, 1)
    ) -> list[np.ndarray]:
        """All feature arrays ``(C, T)`` of a split (or of its ``part``, see :meth:`iter_utterances`) in memory.

        Memory: 1 h of 80-dim features at 100 frames/s is 58 MB in float16, 115 MB in float32.
        """
        return [features for _, features, _ in self.iter_utterances(split=split, dtype=dtype, part=part)]
