"""Token shards for LM training: one row per audio file, in parquet or jsonl, sharded and resumable.

Naming scheme (the same rule for a file and a directory output)
-----------------------------------------------------------------
``output`` is a *file* when its name ends in ``.parquet`` or ``.jsonl``, otherwise a
*directory*. Shard ``k`` (0-based, five digits or more) is::

    directory out/          out/tokens-00000.parquet  out/tokens-00001.parquet  ...
    file      corpus.jsonl  corpus.jsonl (k = 0)      corpus-00001.jsonl        ...

so a corpus that fits in one shard (10 000 files by default) is exactly the file the
user named. Next to the shards live two kinds of sidecar file, named ``_NAME`` inside a
directory (pyarrow and most dataset loaders skip ``_``-files, so ``read_table(out)``
works) and ``<output>.NAME`` beside a file output:

* ``manifest.json``: format, shard size and a hash of the whole input list. A rerun with
  other inputs or settings is refused instead of mixing two corpora.
* ``failures.jsonl`` (``failures-rank<r>.jsonl`` under torchrun, one per rank): inputs
  that gave no row, as ``{"path", "message", "shard"}`` lines.
* ``lock``: a file that a run holds an OS lock on (``flock``) while it writes, so a
  second ``plutok encode`` into the same output is refused at once instead of mixing
  two corpora. The lock dies with its process, so a rerun after a kill resumes (the
  killed run's file stays, unlocked); the ranks of one torchrun share it. The last
  holder removes it.

Resuming: inputs are sorted (as strings) and cut into fixed shards, so shard ``k``
always holds the same inputs; rank ``r`` of ``world`` writes the shards with
``k % world == r``. A shard is written atomically once all its inputs are done, so a
shard file that exists is complete: a rerun after a kill skips it and redoes the rest.
The ``.part`` temporaries a kill leaves behind start with ``.`` and are never read.

Row schema (parquet; jsonl has the same keys): ``path`` string, ``duration`` float64
(seconds), ``sample_rate`` int32 (Hz), ``num_samples`` int64, ``num_codes`` int32,
``token_ids`` list<int32>, ``speaker`` list<float32>, ``fingerprint`` string (hex).
Parquet files also carry ``plutok.fingerprint``, ``plutok.version``, ``plutok.shard``
and ``plutok.format`` in their key-value metadata. Speaker values are stored as float32
in both formats, so a row reads back identically from either.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import math
import numbers
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from plutok import __version__
from plutok.encoding import MAX_TOKEN_IDS
from plutok.errors import PlutokError
from plutok.files import atomic_path, atomic_write_text, give_default_permissions

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "DEFAULT_ROWS_PER_SHARD",
    "Failure",
    "ShardFormat",
    "ShardSummary",
    "ShardWriter",
    "TokenRow",
    "find_row",
    "plan_shards",
    "read_failures",
    "read_rows",
    "write_token_shards",
]

ShardFormat = Literal["parquet", "jsonl"]
FORMATS: tuple[str, ...] = ("parquet", "jsonl")
DEFAULT_ROWS_PER_SHARD = 10_000
DIRECTORY_STEM = "tokens"
# Written into every parquet file and manifest: lets a reader tell our shards from other tables.
FORMAT_TAG = "plutok-token-shard/1"
_INT32_MAX = 2**31 - 1
# Longest list a row may hold in each list column, checked before rows become Python lists
# (speaker vectors have a few hundred values; a .plt file allows 4096).
_MAX_LIST_VALUES = {"token_ids": MAX_TOKEN_IDS, "speaker": 4096}
# Rows read from a parquet shard are decoded this many values at a time (about 35 MB).
_VALUES_PER_BATCH = MAX_TOKEN_IDS


@dataclass
class TokenRow:
    """One encoded audio file: what an LM trainer needs, and enough to decode it back."""

    path: str  # the source audio, relative to the corpus root (POSIX separators)
    duration: float  # seconds of source audio
    sample_rate: int  # Hz of the source audio
    num_samples: int  # length of the source audio at ``sample_rate``
    num_codes: int  # codec frames before BPE
    token_ids: list[int]  # BPE token ids, (tokens,)
    speaker: list[float]  # speaker vector, (speaker_dim,), stored as float32
    fingerprint: str  # hex fingerprint of the model that made the tokens


_COLUMNS = tuple(item.name for item in fields(TokenRow))


@dataclass(frozen=True)
class Failure:
    """An input that gave no row, and why (it is listed, never fatal)."""

    path: str
    message: str
    shard: int


@dataclass
class ShardSummary:
    """What one :func:`write_token_shards` call did, for this rank only."""

    output: Path
    format: str
    shards: int = 0  # shards of the whole corpus (all ranks)
    written: int = 0  # shards this call wrote
    skipped: int = 0  # this rank's shards that were already complete
    rows: int = 0  # rows this call wrote
    failed: int = 0  # inputs this call could not turn into rows
    seconds: float = 0.0  # audio duration of the rows written
    shard_files: list[Path] = field(default_factory=list)  # written by this call
    failures_file: Path | None = None  # this rank's failure list, None when nothing ever failed

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings) for ``--json`` output."""
        summary = asdict(self)
        summary["output"] = str(self.output)
        summary["shard_files"] = [str(path) for path in self.shard_files]
        summary["failures_file"] = None if self.failures_file is None else str(self.failures_file)
        return summary


def _check_rows_per_shard(rows_per_shard: int) -> None:
    if not isinstance(rows_per_shard, int) or rows_per_shard < 1:
        raise PlutokError(f"rows per shard must be a positive integer, got {rows_per_shard!r}")


def plan_shards(
    paths: Iterable[str | os.PathLike], rows_per_shard: int = DEFAULT_ROWS_PER_SHARD
) -> list[list[Path]]:
    """Cut the inputs into shards: sorted as strings, duplicates dropped, ``rows_per_shard`` each.

    Deterministic, so every rank and every rerun computes the same plan from the same
    inputs. The last shard may be shorter; no inputs give no shards.
    """
    _check_rows_per_shard(rows_per_shard)
    unique = sorted({str(path) for path in paths})
    return [
        [Path(name) for name in unique[start : start + rows_per_shard]]
        for start in range(0, len(unique), rows_per_shard)
    ]


def _split_output(output: str | os.PathLike) -> tuple[Path, str | None]:
    """``(path, format)`` where format is the file output's format, or None for a directory."""
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".jsonl") and not str(output).endswith(("/", os.sep)):
        if path.is_dir():
            raise PlutokError(
                f"{path}: is a directory; token shard files go inside it, name it without {suffix}"
            )
        return path, suffix[1:]
    if path.exists() and not path.is_dir():
        raise PlutokError(f"{path}: exists and is not a directory; name a folder or a .parquet/.jsonl file")
    return path, None


def _row_problem(row: TokenRow, fingerprint: str | None) -> str | None:
    """Why ``row`` cannot be stored, or None: a bad row becomes a listed failure, not a crash."""
    try:
        tokens = np.asarray(row.token_ids, dtype=np.int64)
        speaker = np.asarray(row.speaker, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as error:
        return f"row for {row.path} has token ids or a speaker vector that are not numbers ({error})"
    if tokens.ndim != 1 or speaker.ndim != 1:
        return f"row for {row.path}: token_ids and speaker must be flat lists"
    for name, values in (("token_ids", tokens), ("speaker", speaker)):
        if values.size > _MAX_LIST_VALUES[name]:
            return f"row for {row.path} has {values.size} {name.replace('_', ' ')}; at most {_MAX_LIST_VALUES[name]}"
    if tokens.size and (tokens.min() < 0 or tokens.max() > _INT32_MAX):
        return f"row for {row.path} has token ids outside 0..{_INT32_MAX}"
    if not np.all(np.isfinite(speaker)) or np.any(np.abs(speaker) > np.finfo(np.float32).max):
        return f"row for {row.path} has a NaN, infinite or out-of-float32 speaker value"
    if not (isinstance(row.duration, numbers.Real) and math.isfinite(row.duration) and row.duration >= 0):
        return f"row for {row.path} has a bad duration {row.duration!r}"
    for name in ("sample_rate", "num_samples", "num_codes"):
        value = getattr(row, name)
        limit = 2**63 - 1 if name == "num_samples" else _INT32_MAX
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= limit:
            return f"row for {row.path} has a bad {name} {value!r}"
    if not isinstance(row.path, str) or not isinstance(row.fingerprint, str):
        return f"row for {row.path}: path and fingerprint must be strings"
    if fingerprint is not None and row.fingerprint != fingerprint:
        return f"row for {row.path} was made by model {row.fingerprint}, expected {fingerprint}"
    return None


def _storable(path: str) -> str:
    """``path`` as UTF-8 text can hold it: a file name that is not UTF-8 (its bytes decoded with
    surrogate escapes, as Python does) keeps those bytes as ``\\xNN`` escapes (``caf\\xe9.wav``)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _canonical(row: TokenRow) -> TokenRow:
    """The row exactly as it reads back: plain ints, speaker rounded to float32, a UTF-8 path."""
    return TokenRow(
        path=_storable(row.path),
        duration=float(row.duration),
        sample_rate=int(row.sample_rate),
        num_samples=int(row.num_samples),
        num_codes=int(row.num_codes),
        token_ids=[int(token) for token in row.token_ids],
        speaker=np.asarray(row.speaker, dtype=np.float32).tolist(),
        fingerprint=row.fingerprint,
    )


def _require_pyarrow() -> Any:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet
    except ImportError:
        raise PlutokError("parquet token shards need pyarrow: pip install pyarrow (or use jsonl)") from None
    return pyarrow


def _schema(pa: Any) -> pa.Schema:
    return pa.schema(
        [
            ("path", pa.string()),
            ("duration", pa.float64()),
            ("sample_rate", pa.int32()),
            ("num_samples", pa.int64()),
            ("num_codes", pa.int32()),
            ("token_ids", pa.list_(pa.int32())),
            ("speaker", pa.list_(pa.float32())),
            ("fingerprint", pa.string()),
        ]
    )


def _list_array(pa: Any, values: list[list[Any]], dtype: Any, value_type: Any) -> pa.Array:
    # From flat values + offsets: much faster than from nested Python lists for 10k-row shards.
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([len(items) for items in values], dtype=np.int64)
    flat = (
        np.concatenate([np.asarray(items, dtype=dtype) for items in values]) if values else np.zeros(0, dtype)
    )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, type=value_type))


def _write_parquet(path: Path, rows: list[TokenRow], index: int, fingerprint: str) -> None:
    pa = _require_pyarrow()
    import pyarrow.parquet as pq

    metadata = {
        "plutok.format": FORMAT_TAG,
        "plutok.fingerprint": fingerprint,
        "plutok.version": __version__,
        "plutok.shard": str(index),
    }
    schema = _schema(pa).with_metadata(metadata)
    columns = [
        pa.array([row.path for row in rows], pa.string()),
        pa.array([row.duration for row in rows], pa.float64()),
        pa.array([row.sample_rate for row in rows], pa.int32()),
        pa.array([row.num_samples for row in rows], pa.int64()),
        pa.array([row.num_codes for row in rows], pa.int32()),
        _list_array(pa, [row.token_ids for row in rows], np.int32, pa.int32()),
        _list_array(pa, [row.speaker for row in rows], np.float32, pa.float32()),
        pa.array([row.fingerprint for row in rows], pa.string()),
    ]
    table = pa.Table.from_arrays(columns, schema=schema)
    with atomic_path(path) as temporary:
        pq.write_table(table, str(temporary))


def _write_jsonl(path: Path, rows: list[TokenRow]) -> None:
    # allow_nan=False: rows were checked finite, and NaN is not JSON other readers accept.
    lines = [json.dumps(asdict(row), ensure_ascii=False, allow_nan=False) + "\n" for row in rows]
    atomic_write_text(path, "".join(lines))


class ShardWriter:
    """Writes the shards of one token corpus (see the module docstring for the layout).

    Call :meth:`begin` with the full plan (from :func:`plan_shards`, identical on every
    rank), then :meth:`write_shard` for each index in :meth:`my_shards` that is not
    :meth:`is_complete`. :func:`write_token_shards` does all of this.

    Args:
        output: a ``.parquet``/``.jsonl`` file (shard 0; later shards beside it) or a directory.
        format: ``"parquet"`` or ``"jsonl"``; None takes it from a file output's
            extension, and parquet for a directory. A format that contradicts the
            extension is refused.
        rows_per_shard: inputs per shard (rows are fewer when some inputs fail).
        rank, world: this process's place under torchrun (see ``plutok.distributed.env_context``).
        fingerprint: hex fingerprint of the model; when given it is recorded in the
            manifest (a rerun with another model is refused) and rows from another model
            are listed as failures.
    """

    def __init__(
        self,
        output: str | os.PathLike,
        format: ShardFormat | None = None,
        rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
        rank: int = 0,
        world: int = 1,
        fingerprint: str | None = None,
    ) -> None:
        _check_rows_per_shard(rows_per_shard)
        if not isinstance(world, int) or not isinstance(rank, int) or world < 1 or not 0 <= rank < world:
            raise PlutokError(f"rank must be in 0..world-1 with world >= 1, got rank {rank} of {world}")
        self.output, file_format = _split_output(output)
        if format is not None and format not in FORMATS:
            raise PlutokError(f"unknown token shard format {format!r}; choose parquet or jsonl")
        if file_format is not None and format is not None and format != file_format:
            raise PlutokError(f"{self.output}: format {format} contradicts the .{file_format} extension")
        self.format: str = format or file_format or "parquet"
        if self.format == "parquet":
            _require_pyarrow()
        self.is_directory = file_format is None
        self.rows_per_shard = rows_per_shard
        self.rank = rank
        self.world = world
        self.fingerprint = fingerprint
        self.failures: list[Failure] = []  # of this rank's complete shards (earlier runs included)
        self._plan: list[list[Path]] | None = None

    # -- names ---------------------------------------------------------------------------------
    def shard_path(self, index: int) -> Path:
        """Where shard ``index`` goes: ``DIR/tokens-00007.EXT``, or ``FILE`` (0) / ``STEM-00007.EXT``."""
        if self.is_directory:
            return self.output / f"{DIRECTORY_STEM}-{index:05d}.{self.format}"
        if index == 0:
            return self.output
        return self.output.with_name(f"{self.output.stem}-{index:05d}{self.output.suffix}")

    def sidecar(self, name: str) -> Path:
        """``DIR/_NAME`` or ``FILE.NAME``."""
        return _sidecar(self.output, self.is_directory, name)

    @property
    def manifest_path(self) -> Path:
        return self.sidecar("manifest.json")

    @property
    def lock_path(self) -> Path:
        return self.sidecar("lock")

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Hold the output for this run: refused while another run writes to it (see the module docstring).

        Alone, the lock is exclusive; the ranks of one torchrun (``world > 1``) share it,
        and a run of another size is refused.

        Raises:
            PlutokError: another run holds the output.
        """
        try:
            import fcntl
        except ImportError:  # no flock (Windows): the manifest check alone guards the output
            yield
            return
        lock = self.lock_path
        lock.parent.mkdir(parents=True, exist_ok=True)
        mode = fcntl.LOCK_EX if self.world == 1 else fcntl.LOCK_SH
        while True:
            handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(handle, 32, 0).decode("ascii", "replace").strip()
                os.close(handle)
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise PlutokError(
                    f"{lock}: another plutok run{who} is writing to {self.output}; "
                    "wait for it to finish or choose another output"
                ) from None
            except OSError as error:
                os.close(handle)
                if error.errno not in _NO_FLOCK:
                    raise
                # A file system without flock (Lustre mounted without it, some FUSE): the
                # manifest, created only where none exists, still keeps corpora apart.
                yield
                return
            except BaseException:
                os.close(handle)
                raise
            # The holder before us may have removed the file after we opened it: then the
            # lock we got is on a file nobody else will see; take the one at ``lock`` again.
            if _same_file(handle, lock):
                break
            os.close(handle)
        try:
            if self.world == 1:
                os.ftruncate(handle, 0)
                os.pwrite(handle, f"{os.getpid()}\n".encode("ascii"), 0)
            yield
        finally:
            try:
                # Only the last holder removes the file (a rank that still shares it keeps it).
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                lock.unlink(missing_ok=True)
            except OSError:
                pass
            os.close(handle)  # releases the lock

    @property
    def failures_path(self) -> Path:
        """This rank's failure list (``failures.jsonl`` alone, ``failures-rank<r>.jsonl`` under torchrun)."""
        return self.sidecar("failures.jsonl" if self.world == 1 else f"failures-rank{self.rank}.jsonl")

    # -- planning ------------------------------------------------------------------------------
    def plan(self, paths: Iterable[str | os.PathLike]) -> list[list[Path]]:
        """:func:`plan_shards` with this writer's shard size."""
        return plan_shards(paths, self.rows_per_shard)

    def my_shards(self, plan: Sequence[Sequence[Path]]) -> list[int]:
        """Indices of the shards this rank writes: ``k % world == rank``."""
        return list(range(self.rank, len(plan), self.world))

    def is_complete(self, index: int) -> bool:
        """A shard file exists only once it is complete (it is renamed into place whole)."""
        return self.shard_path(index).is_file()

    def _manifest(self, plan: Sequence[Sequence[Path]]) -> dict[str, Any]:
        names = "\n".join(str(path) for shard in plan for path in shard)
        return {
            "kind": FORMAT_TAG,
            "format": self.format,
            "rows_per_shard": self.rows_per_shard,
            "num_inputs": sum(len(shard) for shard in plan),
            "num_shards": len(plan),
            "inputs_sha256": hashlib.sha256(names.encode("utf-8", "surrogateescape")).hexdigest(),
            "fingerprint": self.fingerprint,
            "plutok_version": __version__,
        }

    def begin(self, plan: Sequence[Sequence[Path]]) -> None:
        """Check (or write) the manifest and load the failures of shards already complete.

        Every rank may call this at once: the manifest is the same on every rank and
        written atomically, so concurrent writes are harmless.
        """
        manifest = self._manifest(plan)
        created = False
        if not self.manifest_path.is_file():
            stray = next((self.shard_path(k) for k in range(len(plan)) if self.shard_path(k).exists()), None)
            if stray is not None:
                raise PlutokError(
                    f"{stray} exists but has no {self.manifest_path.name} beside it (not written by plutok?); "
                    "remove it or choose another output"
                )
            # Never replaces a manifest another run wrote meanwhile: that one is then checked.
            text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            created = _create_new_file(self.manifest_path, text)
        if not created:
            try:
                existing = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise PlutokError(f"{self.manifest_path}: corrupt token shard manifest ({error})") from None
            # A newer plutok may finish a corpus an older one started; everything else must match.
            differ = sorted(
                key
                for key in manifest
                if key != "plutok_version"
                and (not isinstance(existing, dict) or existing.get(key) != manifest[key])
            )
            if differ:
                raise PlutokError(
                    f"{self.output} holds token shards made with other settings ({', '.join(differ)} differ); "
                    "use another output, or delete the old shards to start over"
                )
        mine_done = {index for index in self.my_shards(plan) if self.is_complete(index)}
        # Any earlier run's lists count (its world size may have differed); incomplete shards are redone.
        self.failures = [
            item for item in _load_failures(self.output, self.is_directory) if item.shard in mine_done
        ]
        self._plan = [list(shard) for shard in plan]

    # -- writing -------------------------------------------------------------------------------
    def write_shard(
        self,
        index: int,
        results: Iterable[tuple[str | os.PathLike, TokenRow | PlutokError]],
        on_result: Callable[[], None] | None = None,
    ) -> tuple[list[TokenRow], list[Failure]]:
        """Collect the results for shard ``index`` and write the shard atomically.

        ``results`` holds ``(input path, TokenRow or PlutokError)`` pairs in any order;
        rows are stored in plan order. An error, a row that cannot be stored, or an input
        with no result becomes a :class:`Failure`. The failure list is written before the
        shard, so a kill in between only makes the rerun redo this shard.

        Returns:
            ``(rows written, failures of this shard)``.
        Raises:
            ValueError: a result for a path that is not an input of this shard, or twice.
        """
        if self._plan is None:
            raise RuntimeError("call ShardWriter.begin(plan) before write_shard")
        if index % self.world != self.rank or not 0 <= index < len(self._plan):
            raise ValueError(f"shard {index} is not one of rank {self.rank}'s shards")
        inputs = [str(path) for path in self._plan[index]]
        expected = set(inputs)
        collected: dict[str, TokenRow | PlutokError] = {}
        for path, result in results:
            key = str(path)
            if key not in expected:
                raise ValueError(f"got a result for {path}, which is not an input of shard {index}")
            if key in collected:
                raise ValueError(f"got two results for {path}")
            if not isinstance(result, (TokenRow, PlutokError)):
                raise TypeError(
                    f"result for {path} must be a TokenRow or a PlutokError, not {type(result).__name__}"
                )
            collected[key] = result
            if on_result is not None:
                on_result()
        rows: list[TokenRow] = []
        failures: list[Failure] = []
        # The shard's fingerprint: the model's when known, else its first row's (all must agree).
        fingerprint = self.fingerprint
        for key in inputs:
            result = collected.get(key)
            if result is None:
                failures.append(Failure(key, "the encoder returned no result for this input", index))
                continue
            if isinstance(result, PlutokError):
                failures.append(Failure(key, str(result), index))
                continue
            problem = _row_problem(result, fingerprint)
            if problem is not None:
                failures.append(Failure(key, problem, index))
                continue
            fingerprint = result.fingerprint
            rows.append(_canonical(result))
        self.failures = [item for item in self.failures if item.shard != index] + failures
        if self.failures or self.failures_path.exists():
            _write_failures(self.failures_path, self.failures)
        if self.format == "parquet":
            _write_parquet(self.shard_path(index), rows, index, fingerprint or "")
        else:
            _write_jsonl(self.shard_path(index), rows)
        return rows, failures


# What flock() fails with on a file system that has no locks (not "held by another").
_NO_FLOCK = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


def _same_file(handle: int, path: Path) -> bool:
    """Whether the open file ``handle`` is the file at ``path`` now."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(handle)
    return (status.st_dev, status.st_ino) == (opened.st_dev, opened.st_ino)


def _create_new_file(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` whole, unless ``path`` exists (then False; it is left as it is)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    temporary = Path(name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        give_default_permissions(temporary)
        try:
            os.link(temporary, path)  # atomic, and fails where path exists (os.replace would not)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: the lock still keeps runs apart
            if path.exists():
                return False
            os.replace(temporary, path)
        return True
    finally:
        temporary.unlink(missing_ok=True)


def _sidecar(output: Path, is_directory: bool, name: str) -> Path:
    return output / f"_{name}" if is_directory else output.with_name(f"{output.name}.{name}")


def _write_failures(path: Path, failures: Sequence[Failure]) -> None:
    ordered = sorted(failures, key=lambda item: (item.shard, item.path))
    lines = (
        json.dumps(
            {
                key: _storable(value) if isinstance(value, str) else value
                for key, value in asdict(item).items()
            },
            ensure_ascii=False,
        )
        for item in ordered
    )
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def _load_failures(output: Path, is_directory: bool) -> list[Failure]:
    base = _sidecar(output, is_directory, "failures")
    files = sorted(base.parent.glob(f"{glob.escape(base.name)}*.jsonl")) if base.parent.is_dir() else []
    found: dict[tuple[int, str], Failure] = {}
    for path in files:
        if not re.fullmatch(re.escape(base.name) + r"(-rank\d+)?\.jsonl", path.name):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                item = Failure(str(entry["path"]), str(entry["message"]), int(entry["shard"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise PlutokError(f"{path}:{number}: not a token shard failure line") from None
            found[(item.shard, item.path)] = item
    return sorted(found.values(), key=lambda item: (item.shard, item.path))


def write_token_shards(
    results_for_shard: Callable[[list[Path]], Iterable[tuple[Path, TokenRow | PlutokError]]],
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    format: ShardFormat | None = None,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
    fingerprint: str | None = None,
) -> ShardSummary:
    """Encode a corpus into token shards: plan, skip finished shards, write the rest, list failures.

    Args:
        results_for_shard: called once per shard still to write with its inputs (sorted);
            yields ``(input, TokenRow or PlutokError)`` for each (e.g. encodes them with
            the model). It is never called for complete shards.
        paths: every input of the corpus, on every rank (the plan sorts them).
        output, format, rows_per_shard, rank, world, fingerprint: see :class:`ShardWriter`.
        progress: show a tqdm bar over this rank's files.
    Returns:
        This rank's :class:`ShardSummary`.
    Raises:
        PlutokError: another run is writing to ``output`` (:meth:`ShardWriter.claim`), or
            ``output`` holds another corpus.
    """
    writer = ShardWriter(output, format, rows_per_shard, rank, world, fingerprint)
    with writer.claim():
        return _write_claimed(writer, results_for_shard, paths, progress)


def _write_claimed(
    writer: ShardWriter,
    results_for_shard: Callable[[list[Path]], Iterable[tuple[Path, TokenRow | PlutokError]]],
    paths: Sequence[str | os.PathLike],
    progress: bool,
) -> ShardSummary:
    """:func:`write_token_shards` once the output is held."""
    from tqdm import tqdm

    rank, world = writer.rank, writer.world
    plan = writer.plan(paths)
    writer.begin(plan)
    summary = ShardSummary(output=writer.output, format=writer.format, shards=len(plan))
    todo = []
    for index in writer.my_shards(plan):
        if writer.is_complete(index):
            summary.skipped += 1
        else:
            todo.append(index)
    bar = tqdm(
        total=sum(len(plan[index]) for index in todo),
        desc=f"tokens (rank {rank})" if world > 1 else "tokens",
        unit="file",
        disable=not progress,
    )
    try:
        for index in todo:
            rows, failures = writer.write_shard(
                index, results_for_shard(list(plan[index])), on_result=lambda: bar.update(1)
            )
            summary.written += 1
            summary.rows += len(rows)
            summary.failed += len(failures)
            summary.seconds += sum(row.duration for row in rows)
            summary.shard_files.append(writer.shard_path(index))
            bar.set_postfix(rows=summary.rows, failed=summary.failed)
    finally:
        bar.close()
    if writer.failures_path.exists():
        summary.failures_file = writer.failures_path
    return summary


# -- reading -----------------------------------------------------------------------------------
def _shard_files(source: str | os.PathLike) -> tuple[list[Path], Path, bool]:
    """The shard files of ``source`` in shard order, with the corpus output path and its kind."""
    path = Path(source)
    if path.is_dir():
        pattern = re.compile(rf"{DIRECTORY_STEM}-(\d{{5,}})\.(parquet|jsonl)")
        found = [(m, p) for p in path.iterdir() if (m := pattern.fullmatch(p.name)) and p.is_file()]
        if not found:
            raise PlutokError(
                f"{path}: no token shards ({DIRECTORY_STEM}-NNNNN.parquet or .jsonl) in this folder"
            )
        if len({m.group(2) for m, _ in found}) > 1:
            raise PlutokError(
                f"{path}: holds both parquet and jsonl token shards; keep one format per folder"
            )
        return [p for m, p in sorted(found, key=lambda item: int(item[0].group(1)))], path, True
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".jsonl"):
        if not path.exists():
            raise PlutokError(f"{path}: no such file or folder")
        raise PlutokError(
            f"{path}: not a token shard (expected a .parquet or .jsonl file, or a folder of them)"
        )
    # A file output is shard 0 of a corpus whose later shards sit beside it as STEM-NNNNN.EXT.
    # Only its manifest says how many there are: another corpus's files can match that name
    # (a folder corpus ``out/`` writes ``out/tokens-00001.parquet`` beside ``out/tokens.parquet``).
    shards = _file_corpus_shards(path)
    pattern = re.compile(rf"{re.escape(path.stem)}-(\d{{5,}}){re.escape(path.suffix)}")
    siblings = []
    if shards > 1 and path.parent.is_dir():
        siblings = [(m, p) for p in path.parent.iterdir() if (m := pattern.fullmatch(p.name)) and p.is_file()]
    files = ([path] if path.is_file() else []) + [
        p for m, p in sorted(siblings, key=lambda item: int(item[0].group(1))) if int(m.group(1)) < shards
    ]
    if not files:
        raise PlutokError(f"{path}: no such file")
    return files, path, False


def _file_corpus_shards(path: Path) -> int:
    """How many shards the file corpus ``path`` has, by its manifest; 1 without one (a lone file)."""
    manifest_path = _sidecar(path, False, "manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 1
    if not isinstance(manifest, dict) or manifest.get("kind") != FORMAT_TAG:
        return 1
    shards = manifest.get("num_shards")
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise PlutokError(f"{manifest_path}: corrupt token shard manifest (num_shards {shards!r})")
    return shards


def _parquet_file(path: Path) -> Any:
    _require_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as error:
        raise PlutokError(f"{path}: not a readable parquet file ({error})") from None
    missing = [name for name in _COLUMNS if name not in handle.schema_arrow.names]
    if missing:
        raise PlutokError(f"{path}: not a token shard (no column {', '.join(missing)})")
    return handle


def _check_list_columns(path: Path, handle: Any) -> int:
    """Rows per batch for ``handle``'s row groups; :class:`PlutokError` for lists past their bound.

    From the file's metadata alone, before anything is decoded: a row group whose list
    column holds more values than its rows may (a 3 KB file held 50 million ids in one
    row) is refused, and batches are cut so that one holds about ``_VALUES_PER_BATCH``.
    """
    import pyarrow as pa

    for name in _MAX_LIST_VALUES:
        kind = handle.schema_arrow.field(name).type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
            raise PlutokError(f"{path}: not a token shard (column {name} is {kind}, not a list)")
    metadata, batch_rows = handle.metadata, 1024
    for group_index in range(metadata.num_row_groups):
        group = metadata.row_group(group_index)
        for column_index in range(group.num_columns):
            column = group.column(column_index)
            name = column.path_in_schema.split(".")[0]
            bound = _MAX_LIST_VALUES.get(name)
            if bound is None or column.num_values <= 0:
                continue
            if column.num_values > bound * max(1, group.num_rows):
                raise PlutokError(
                    f"{path}: {column.num_values} {name} values in {group.num_rows} row(s); "
                    f"at most {bound} per row"
                )
            mean = column.num_values / max(1, group.num_rows)
            batch_rows = min(batch_rows, max(1, int(_VALUES_PER_BATCH // max(1.0, mean))))
    return batch_rows


def _check_batch(path: Path, batch: Any) -> None:
    """Every list cell of ``batch`` within its bound (from the offsets, before :meth:`to_pylist`)."""
    import pyarrow.compute as pc

    for name, bound in _MAX_LIST_VALUES.items():
        lengths = batch.column(name).value_lengths()
        longest = pc.max(lengths).as_py() if len(lengths) else None
        if longest is not None and longest > bound:
            raise PlutokError(f"{path}: a row has {longest} {name} values; at most {bound}")


def _checked_row(path: Path | str, item: dict[str, Any]) -> TokenRow:
    """A :class:`TokenRow` from a stored cell dict; cells of the wrong type are a :class:`PlutokError`."""
    row = TokenRow(**{name: item[name] for name in _COLUMNS})
    problem = _row_problem(row, None)
    if problem is None and isinstance(row.token_ids, list):
        # numpy would take "1" for 1; a stored id is an integer (JSON has no other check).
        if any(isinstance(token, bool) or not isinstance(token, int) for token in row.token_ids):
            problem = f"row for {row.path} has token ids that are not integers"
    if problem is not None:
        raise PlutokError(f"{path}: not a valid token shard: {problem}")
    return row


def _read_parquet(path: Path) -> Iterator[TokenRow]:
    import pyarrow as pa

    handle = _parquet_file(path)
    batch_rows = _check_list_columns(path, handle)
    try:
        for batch in handle.iter_batches(batch_size=batch_rows, columns=list(_COLUMNS)):
            _check_batch(path, batch)
            for item in batch.to_pylist():
                yield _checked_row(path, item)
    except pa.ArrowException as error:
        raise PlutokError(f"{path}: corrupt token shard ({error})") from None


# Most commas a JSONL row may hold: one between list values, a few between fields, and
# any in the path. Counted before the line is parsed (a row of 50 million ids would be
# gigabytes as Python lists); lines longer than any such row are not read whole.
_MAX_JSONL_COMMAS = sum(_MAX_LIST_VALUES.values()) + 4096
_MAX_JSONL_LINE = 12 * _MAX_JSONL_COMMAS


def _read_jsonl(path: Path) -> Iterator[TokenRow]:
    with path.open(encoding="utf-8") as handle:
        number = 0
        while line := handle.readline(_MAX_JSONL_LINE + 1):
            number += 1
            if not line.strip():
                continue
            if len(line) > _MAX_JSONL_LINE or line.count(",") > _MAX_JSONL_COMMAS:
                raise PlutokError(
                    f"{path}:{number}: row too long (at most {MAX_TOKEN_IDS} token ids per row)"
                )
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise PlutokError(f"{path}:{number}: not JSON ({error.msg})") from None
            except (ValueError, RecursionError) as error:  # 5,000-digit numbers, deep nesting
                raise PlutokError(
                    f"{path}:{number}: not a token shard row ({type(error).__name__})"
                ) from None
            if not isinstance(item, dict) or any(name not in item for name in _COLUMNS):
                raise PlutokError(f"{path}:{number}: not a token shard row (needs {', '.join(_COLUMNS)})")
            yield _checked_row(f"{path}:{number}", item)


def _read_file(path: Path) -> Iterator[TokenRow]:
    try:
        yield from (_read_parquet(path) if path.suffix.lower() == ".parquet" else _read_jsonl(path))
    except UnicodeDecodeError:
        raise PlutokError(f"{path}: not a token shard (not UTF-8 text)") from None


def _count_rows(path: Path) -> int:
    if path.suffix.lower() == ".parquet":
        return int(_parquet_file(path).metadata.num_rows)
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def read_rows(source: str | os.PathLike) -> Iterator[TokenRow]:
    """Every row of a token corpus, in shard order then plan (sorted path) order.

    ``source`` is a directory of ``tokens-NNNNN`` shards, or a ``.parquet``/``.jsonl``
    file: that file and, when its manifest (``FILE.manifest.json``) says the corpus has
    more shards, the ``STEM-NNNNN`` shards beside it; a file without a manifest (a
    numbered shard, a copied file) is read alone. Shards not written yet are simply absent.

    Raises:
        PlutokError: no shards there, a file that is not a token shard, mixed formats.
    """
    files, _, _ = _shard_files(source)
    for path in files:
        yield from _read_file(path)


def read_failures(source: str | os.PathLike) -> list[Failure]:
    """The failure lists of a token corpus (every rank's), sorted by shard then path."""
    path = Path(source)
    return _load_failures(path, path.is_dir())


def _same_path(first: str, second: str) -> bool:
    return first == second or PurePath(first).as_posix() == PurePath(second).as_posix()


def _failed_input(failure: str, wanted: str) -> bool:
    # Failures name the input as the caller passed it (often with the corpus root in front).
    failure, wanted = PurePath(failure).as_posix(), PurePath(wanted).as_posix()
    return failure == wanted or failure.endswith("/" + wanted)


def find_row(source: str | os.PathLike, row: int | None = None, path: str | None = None) -> TokenRow:
    """One row of a token corpus: by global 0-based ``row`` index (shard order), or by source ``path``.

    Raises:
        PlutokError: neither or both given, index out of range, path not in the corpus
            (with the failure message when that input failed), or not a token corpus.
    """
    if (row is None) == (path is None):
        raise PlutokError("give either a row index or a source path")
    files, output, is_directory = _shard_files(source)
    if row is not None:
        if not isinstance(row, (int, np.integer)) or isinstance(row, bool) or row < 0:
            raise PlutokError(f"row index must be a non-negative integer, got {row!r}")
        start = 0
        for file in files:
            count = _count_rows(file)
            if row < start + count:
                for position, item in enumerate(_read_file(file)):
                    if position == row - start:
                        return item
            start += count
        raise PlutokError(f"{source}: row {row} is out of range (it has {start} rows)")
    assert path is not None
    path = _storable(path)  # as the rows store a name that is not UTF-8
    for file in files:
        for item in _read_file(file):
            if _same_path(item.path, path):
                return item
    failed = next(
        (item for item in _load_failures(output, is_directory) if _failed_input(item.path, path)), None
    )
    reason = f"; it failed: {failed.message}" if failed is not None else ""
    raise PlutokError(f"{source}: no row for path {path!r}{reason}")
