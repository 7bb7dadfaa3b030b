"""Token shards: exact round trip, planning, resume after a kill, disjoint ranks, failures, lookups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from plutok.errors import AudioError, PlutokError
from plutok.io import shards
from plutok.io.shards import (
    ShardWriter,
    TokenRow,
    find_row,
    plan_shards,
    read_failures,
    read_rows,
    write_token_shards,
)

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

FINGERPRINT = "0123456789abcdef"


def make_row(path: Path | str, seed: int = 0) -> TokenRow:
    """A row with awkward values: float32-inexact speaker values, empty token lists for seed 3."""
    rng = np.random.default_rng(seed)
    tokens = [] if seed == 3 else rng.integers(0, 2**31 - 1, size=5 + seed).tolist()
    return TokenRow(
        path=Path(path).as_posix(),
        duration=0.1 * seed + 1 / 3,
        sample_rate=16000,
        num_samples=2**40 + seed,
        num_codes=7 * seed,
        token_ids=tokens,
        speaker=np.float32(rng.standard_normal(4)).tolist(),
        fingerprint=FINGERPRINT,
    )


def encoder(fail: set[str] = frozenset(), calls: list[list[Path]] | None = None):
    """A stand-in for the model: a row per path, an AudioError for names in ``fail``."""

    def results_for_shard(paths: list[Path]):
        if calls is not None:
            calls.append(list(paths))
        for path in reversed(paths):  # any order: the writer stores rows in plan order
            if path.name in fail:
                yield path, AudioError(f"{path}: not a readable audio file")
            else:
                yield path, make_row(path, seed=int(path.stem[1:]))

    return results_for_shard


def inputs(count: int) -> list[Path]:
    return [Path(f"corpus/f{index}.wav") for index in range(count)]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_round_trip_is_exact(tmp_path, fmt):
    output = tmp_path / f"corpus.{fmt}"
    summary = write_token_shards(encoder(), inputs(5), output, progress=False)
    assert (summary.format, summary.shards, summary.written) == (fmt, 1, 1)
    assert (summary.rows, summary.failed) == (5, 0)
    assert summary.shard_files == [output] and summary.failures_file is None
    expected = [make_row(path, seed=int(path.stem[1:])) for path in inputs(5)]
    assert list(read_rows(output)) == expected
    assert summary.seconds == pytest.approx(sum(row.duration for row in expected))


def test_parquet_and_jsonl_read_back_identically(tmp_path):
    # Speaker values that float32 cannot hold exactly are rounded the same way in both formats.
    row = make_row("a.wav", seed=1)
    row.speaker = [0.1, 1 / 3, -2.5e-8]
    for fmt in ("parquet", "jsonl"):
        write_token_shards(lambda paths: [(paths[0], row)], ["a.wav"], tmp_path / f"t.{fmt}", progress=False)
    parquet, jsonl = list(read_rows(tmp_path / "t.parquet")), list(read_rows(tmp_path / "t.jsonl"))
    assert parquet == jsonl
    assert parquet[0].speaker == np.float32(row.speaker).tolist()


def test_parquet_schema_and_metadata_for_plain_pyarrow(tmp_path):
    output = tmp_path / "out"
    write_token_shards(
        encoder(), inputs(5), output, rows_per_shard=2, progress=False, fingerprint=FINGERPRINT
    )
    table = pq.read_table(output / "tokens-00001.parquet")
    assert table.schema.field("token_ids").type == pa.list_(pa.int32())
    assert table.schema.field("speaker").type == pa.list_(pa.float32())
    assert [str(table.schema.field(name).type) for name in ("sample_rate", "num_samples", "num_codes")] == [
        "int32",
        "int64",
        "int32",
    ]
    metadata = table.schema.metadata
    assert metadata[b"plutok.fingerprint"] == FINGERPRINT.encode()
    assert metadata[b"plutok.version"] and metadata[b"plutok.shard"] == b"1"
    # A whole folder reads as one dataset: the _manifest/_failures sidecars are skipped.
    whole = pq.read_table(output)
    assert sorted(whole.column("path").to_pylist()) == sorted(p.as_posix() for p in inputs(5))


def test_plan_is_sorted_deduplicated_and_cut():
    paths = ["b.wav", "a.wav", Path("c.wav"), "a.wav", "d.wav", "e.wav"]
    plan = plan_shards(paths, rows_per_shard=2)
    assert plan == [[Path("a.wav"), Path("b.wav")], [Path("c.wav"), Path("d.wav")], [Path("e.wav")]]
    assert plan_shards([], 3) == []
    with pytest.raises(PlutokError, match="positive"):
        plan_shards(paths, 0)


def test_shard_names_for_file_and_folder(tmp_path):
    folder = ShardWriter(tmp_path / "out", format="jsonl")
    assert folder.shard_path(0) == tmp_path / "out" / "tokens-00000.jsonl"
    assert folder.failures_path == tmp_path / "out" / "_failures.jsonl"
    single = ShardWriter(tmp_path / "c.parquet", rank=1, world=2)
    assert [single.shard_path(k).name for k in (0, 1, 12)] == [
        "c.parquet",
        "c-00001.parquet",
        "c-00012.parquet",
    ]
    assert single.failures_path.name == "c.parquet.failures-rank1.jsonl"
    with pytest.raises(PlutokError, match="contradicts"):
        ShardWriter(tmp_path / "c.parquet", format="jsonl")
    with pytest.raises(PlutokError, match="rank"):
        ShardWriter(tmp_path / "out", rank=2, world=2)


def test_multi_shard_file_output(tmp_path):
    output = tmp_path / "corpus.jsonl"
    summary = write_token_shards(encoder(), inputs(5), output, rows_per_shard=2, progress=False)
    assert summary.shard_files == [output, tmp_path / "corpus-00001.jsonl", tmp_path / "corpus-00002.jsonl"]
    assert [row.path for row in read_rows(output)] == [p.as_posix() for p in inputs(5)]
    assert len(list(read_rows(tmp_path / "corpus-00002.jsonl"))) == 1  # a numbered shard alone


def test_a_file_reads_only_its_own_corpus(tmp_path):
    """Another corpus's ``tokens-NNNNN`` files beside ``tokens.parquet`` are not its shards."""
    folder = tmp_path / "out"
    write_token_shards(encoder(), inputs(4), folder, rows_per_shard=2, progress=False)  # tokens-0000[01]
    own = [Path(f"mine/f{index}.wav") for index in (7, 8)]
    write_token_shards(encoder(), own, folder / "tokens.parquet", progress=False)
    assert [row.path for row in read_rows(folder / "tokens.parquet")] == [p.as_posix() for p in own]
    with pytest.raises(PlutokError, match="out of range.*2 rows"):
        find_row(folder / "tokens.parquet", row=2)
    with pytest.raises(PlutokError, match="no row for path"):
        find_row(folder / "tokens.parquet", path="corpus/f1.wav")
    assert len(list(read_rows(folder))) == 4  # the folder corpus is still whole
    # A file without a manifest (copied on its own) is read alone.
    lone = tmp_path / "copy" / "tokens.parquet"
    lone.parent.mkdir()
    lone.write_bytes((folder / "tokens.parquet").read_bytes())
    (lone.parent / "tokens-00001.parquet").write_bytes((folder / "tokens-00001.parquet").read_bytes())
    assert [row.path for row in read_rows(lone)] == [p.as_posix() for p in own]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_a_file_name_that_is_not_utf8_is_stored_escaped(tmp_path, fmt):
    """Such a name aborted the whole corpus (manifest hash, row path, failure list)."""
    latin = Path(os.fsdecode(b"corpus/caf\xe9.wav"))
    paths = [*inputs(2), latin, Path(os.fsdecode(b"corpus/\xff.wav"))]

    def results(shard):
        for path in shard:
            if path.name.startswith("\udcff"):
                yield path, AudioError(f"{path}: not a readable audio file")
            else:
                yield path, make_row(path, seed=int(path.stem[1:]) if path.stem[1:].isdigit() else 1)

    output = tmp_path / "out"
    summary = write_token_shards(results, paths, output, format=fmt, progress=False)
    assert (summary.rows, summary.failed) == (3, 1)
    assert find_row(output, path=str(latin)).path == "corpus/caf\\xe9.wav"
    assert find_row(output, path="corpus/caf\\xe9.wav").path == "corpus/caf\\xe9.wav"
    [failure] = read_failures(output)
    assert failure.path == "corpus/\\xff.wav" and failure.message.startswith("corpus/\\xff.wav")
    # The rerun finds the same manifest: nothing is redone.
    assert write_token_shards(results, paths, output, format=fmt, progress=False).skipped == 1


def test_resume_after_kill_skips_finished_shards(tmp_path):
    output = tmp_path / "out"

    def killed_in_shard_1(paths):
        if paths[0].name == "f2.wav":
            raise KeyboardInterrupt  # the process dies while shard 1 is being encoded
        yield from encoder()(paths)

    with pytest.raises(KeyboardInterrupt):
        write_token_shards(killed_in_shard_1, inputs(5), output, rows_per_shard=2, progress=False)
    assert sorted(p.name for p in output.glob("tokens-*")) == ["tokens-00000.parquet"]
    # A kill inside pq.write_table would leave a temporary like this: ignored by readers and the rerun.
    (output / ".tokens-00001.parquet.x1y2.part").write_bytes(b"PAR1 half a file")
    calls: list[list[Path]] = []
    summary = write_token_shards(encoder(calls=calls), inputs(5), output, rows_per_shard=2, progress=False)
    assert (summary.skipped, summary.written, summary.rows) == (1, 2, 3)
    assert calls == [inputs(5)[2:4], inputs(5)[4:]]
    assert [row.path for row in read_rows(output)] == [p.as_posix() for p in inputs(5)]
    again = write_token_shards(encoder(calls=calls), inputs(5), output, rows_per_shard=2, progress=False)
    assert (again.skipped, again.written) == (3, 0) and len(calls) == 2


def test_a_second_writer_into_the_same_output_is_refused(tmp_path):
    """Two runs writing different corpora into one folder at once left one corpus or a mix."""
    output = tmp_path / "out"
    holder = ShardWriter(output, rows_per_shard=2)
    with holder.claim():
        for other in (output, tmp_path / "out/"):
            with pytest.raises(
                PlutokError, match=rf"_lock: another plutok run \(pid {os.getpid()}\) is writing"
            ):
                write_token_shards(encoder(), inputs(3), other, rows_per_shard=2, progress=False)
        with pytest.raises(PlutokError, match="another plutok run"):  # the ranks of a torchrun too
            with ShardWriter(output, rank=1, world=2).claim():
                pass
    assert not output.joinpath("_manifest.json").exists() and not list(output.glob("tokens-*"))
    # Released: the same output is free again, and a file output has its own lock beside it.
    write_token_shards(encoder(), inputs(3), output, rows_per_shard=2, progress=False)
    with ShardWriter(tmp_path / "c.jsonl").claim():
        assert (tmp_path / "c.jsonl.lock").is_file()
    assert not (tmp_path / "c.jsonl.lock").exists()  # the last holder removes it
    # The ranks of one torchrun share the output.
    with ShardWriter(output, rank=0, world=2).claim():
        with ShardWriter(output, rank=1, world=2).claim():
            pass
        assert (output / "_lock").is_file()  # rank 0 still holds it
    assert not (output / "_lock").exists()


def test_a_killed_writer_leaves_the_output_free_to_resume(tmp_path):
    """The lock dies with its process: kill -9 must not leave a lock that refuses the rerun."""
    output = tmp_path / "out"
    script = (
        "import sys\n"
        "from plutok.io.shards import ShardWriter\n"
        f"with ShardWriter({str(output)!r}).claim():\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    source = Path(shards.__file__).parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")])),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(PlutokError, match=rf"another plutok run \(pid {child.pid}\)"):
            write_token_shards(encoder(), inputs(3), output, progress=False)
    finally:
        child.kill()
        child.communicate()
    summary = write_token_shards(encoder(), inputs(3), output, progress=False)
    assert summary.rows == 3


def test_a_file_system_without_locks_still_writes(tmp_path, monkeypatch):
    """Lustre without its flock option answers ENOSYS: the run goes on, guarded by the manifest."""
    import errno
    import fcntl

    def no_locks(handle, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    summary = write_token_shards(encoder(), inputs(3), tmp_path / "out", progress=False)
    assert summary.rows == 3


def test_a_manifest_written_meanwhile_is_never_replaced(tmp_path):
    """Two runs that both found no manifest: the second must check the first's, not overwrite it."""
    output = tmp_path / "out"
    first, second = ShardWriter(output, rows_per_shard=2), ShardWriter(output, rows_per_shard=2, world=2)
    real_is_file = Path.is_file
    raced = []

    def first_begins_meanwhile(path):
        found = real_is_file(path)
        if path == second.manifest_path and not found and not raced:
            raced.append(path)
            first.begin(first.plan(inputs(4)))  # the other run writes its manifest right now
        return found

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "is_file", first_begins_meanwhile)
        with pytest.raises(PlutokError, match="other settings"):
            second.begin(second.plan(inputs(5)))
    assert raced
    assert json.loads(first.manifest_path.read_text())["num_inputs"] == 4
    assert [p.name for p in output.iterdir()] == ["_manifest.json"]


def test_rerun_with_other_inputs_or_settings_is_refused(tmp_path):
    output = tmp_path / "out"
    write_token_shards(encoder(), inputs(4), output, rows_per_shard=2, progress=False)
    with pytest.raises(PlutokError, match="inputs_sha256"):
        write_token_shards(encoder(), inputs(5), output, rows_per_shard=2, progress=False)
    with pytest.raises(PlutokError, match="rows_per_shard"):
        write_token_shards(encoder(), inputs(4), output, rows_per_shard=3, progress=False)
    foreign = tmp_path / "foreign.parquet"
    foreign.write_bytes(b"not ours")
    with pytest.raises(PlutokError, match="manifest"):
        write_token_shards(encoder(), inputs(2), foreign, progress=False)


def test_ranks_write_disjoint_shards_covering_everything(tmp_path):
    output = tmp_path / "out"
    summaries = [
        write_token_shards(
            encoder({"f4.wav"}), inputs(7), output, rows_per_shard=2, rank=r, world=2, progress=False
        )
        for r in (0, 1)
    ]
    names = [sorted(path.name for path in summary.shard_files) for summary in summaries]
    assert names == [
        ["tokens-00000.parquet", "tokens-00002.parquet"],
        ["tokens-00001.parquet", "tokens-00003.parquet"],
    ]
    paths = [row.path for row in read_rows(output)]
    assert sorted(paths) == sorted(p.as_posix() for p in inputs(7) if p.name != "f4.wav")
    assert len(paths) == len(set(paths))
    assert summaries[0].failures_file == output / "_failures-rank0.jsonl"
    assert summaries[1].failures_file is None
    assert [item.path for item in read_failures(output)] == ["corpus/f4.wav"]


def test_failures_are_listed_not_fatal_and_survive_resume(tmp_path):
    output = tmp_path / "c.parquet"
    bad_row = make_row("corpus/f1.wav", seed=1)
    bad_row.speaker = [float("nan")] * 4

    def results(paths):
        for path in paths:
            if path.name == "f0.wav":
                yield path, AudioError(f"{path}: audio has zero samples")
            elif path.name == "f1.wav":
                yield path, bad_row
            elif path.name != "f2.wav":  # f2 gets no result at all
                yield path, make_row(path, seed=int(path.stem[1:]))

    summary = write_token_shards(results, inputs(5), output, rows_per_shard=3, progress=False)
    assert (summary.rows, summary.failed) == (2, 3)
    lines = [json.loads(line) for line in (tmp_path / "c.parquet.failures.jsonl").read_text().splitlines()]
    assert [(line["path"], line["shard"]) for line in lines] == [
        ("corpus/f0.wav", 0),
        ("corpus/f1.wav", 0),
        ("corpus/f2.wav", 0),
    ]
    assert "zero samples" in lines[0]["message"] and "NaN" in lines[1]["message"]
    assert "no result" in lines[2]["message"]
    # Redo shard 1 only: shard 0's failures must still be listed afterwards.
    (tmp_path / "c-00001.parquet").unlink()
    write_token_shards(results, inputs(5), output, rows_per_shard=3, progress=False)
    assert len(read_failures(output)) == 3
    with pytest.raises(PlutokError, match="zero samples"):
        find_row(output, path="f0.wav")


def test_an_all_failed_shard_is_written_empty(tmp_path):
    output = tmp_path / "out"
    summary = write_token_shards(encoder({"f0.wav", "f1.wav"}), inputs(2), output, progress=False)
    assert (summary.written, summary.rows, summary.failed) == (1, 0, 2)
    assert list(read_rows(output)) == []
    assert pq.read_table(output / "tokens-00000.parquet").num_rows == 0


def test_find_row_by_index_and_path(tmp_path):
    output = tmp_path / "out"
    write_token_shards(encoder(), inputs(5), output, format="jsonl", rows_per_shard=2, progress=False)
    assert find_row(output, row=3) == make_row("corpus/f3.wav", seed=3)
    assert find_row(output, row=0).path == "corpus/f0.wav"
    assert find_row(output, path="./corpus/f4.wav") == make_row("corpus/f4.wav", seed=4)
    with pytest.raises(PlutokError, match="out of range.*5 rows"):
        find_row(output, row=5)
    with pytest.raises(PlutokError, match="non-negative"):
        find_row(output, row=-1)
    with pytest.raises(PlutokError, match="no row for path"):
        find_row(output, path="corpus/missing.wav")
    with pytest.raises(PlutokError, match="either"):
        find_row(output)


def test_readers_refuse_what_is_not_a_token_shard(tmp_path):
    with pytest.raises(PlutokError, match="no such"):
        list(read_rows(tmp_path / "absent.parquet"))
    with pytest.raises(PlutokError, match="no token shards"):
        list(read_rows(tmp_path))
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), other)
    with pytest.raises(PlutokError, match="not a token shard"):
        find_row(other, row=0)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(PlutokError, match="not a readable parquet"):
        list(read_rows(garbage))
    lines = tmp_path / "lines.jsonl"
    lines.write_text('{"path": "a.wav"}\n')
    with pytest.raises(PlutokError, match="lines.jsonl:1: not a token shard row"):
        list(read_rows(lines))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PlutokError, match="expected a .parquet or .jsonl"):
        list(read_rows(tmp_path / "notes.txt"))
