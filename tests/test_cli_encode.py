"""``plutok encode``: .plt files and token shards through the CLI (rows, resume, ranks, failures, batching)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from plutok.api import Plutok
from plutok.cli import main
from plutok.io.shards import ShardWriter, read_failures, read_rows


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def corpus(tmp_path, speech_like) -> Path:
    """Five short files in two speaker folders (different rates and lengths), and one broken file."""
    root = tmp_path / "corpus"
    for index, (folder, rate) in enumerate(
        [("spk1", 16000), ("spk1", 22050), ("spk2", 16000), ("spk2", 44100)]
    ):
        path = root / folder / f"utt{index}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, speech_like(0.3 + 0.1 * index, sample_rate=rate, seed=index), rate, subtype="PCM_16")
    sf.write(root / "top.flac", speech_like(0.5, seed=9), 16000)
    (root / "spk2" / "broken.wav").write_text("not audio")
    (root / "notes.txt").write_text("ignored: not an audio extension")
    return root


GOOD = ["spk1/utt0.wav", "spk1/utt1.wav", "spk2/utt2.wav", "spk2/utt3.wav", "top.flac"]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_corpus_to_one_shard_file(tiny_model_dir, tiny_model, corpus, tmp_path, fmt, capsys):
    output = tmp_path / f"tokens.{fmt}"
    code, out, err = run(["encode", corpus, "-o", output, "-q", "--model", tiny_model_dir], capsys)
    assert code == 0  # one bad file is listed, not fatal
    assert f"wrote 1 of 1 {fmt} shard: 5 rows" in out
    assert err.strip().splitlines()[-1] == (
        f"plutok: warning: 1 input(s) gave no row; they are listed in {output}.failures.jsonl"
    )
    rows = list(read_rows(output))
    assert [row.path for row in rows] == GOOD  # relative to the corpus folder, sorted
    for row in rows:
        expected = tiny_model.encode_file(corpus / row.path)
        assert row.token_ids == expected.ids
        np.testing.assert_array_equal(np.float32(row.speaker), expected.speaker)
        assert (row.sample_rate, row.num_samples, row.num_codes) == (
            expected.sample_rate,
            expected.num_samples,
            expected.num_codes,
        )
        assert row.duration == pytest.approx(expected.duration)
        assert row.fingerprint == tiny_model.fingerprint
    [failure] = read_failures(output)
    assert failure.path == "spk2/broken.wav" and "not a readable audio file" in failure.message


def test_parquet_reads_without_plutok(tiny_model_dir, corpus, tmp_path, capsys):
    import pyarrow.parquet as pq

    output = tmp_path / "tokens.parquet"
    assert run(["encode", corpus, "-o", output, "-q", "--model", tiny_model_dir], capsys)[0] == 0
    table = pq.read_table(output)
    assert table.column_names == [
        "path",
        "duration",
        "sample_rate",
        "num_samples",
        "num_codes",
        "token_ids",
        "speaker",
        "fingerprint",
    ]
    assert table.num_rows == 5 and table.schema.metadata[b"plutok.format"] == b"plutok-token-shard/1"


def test_several_shards_resume_after_a_kill(tiny_model_dir, corpus, tmp_path, monkeypatch, capsys):
    output = tmp_path / "tokens"
    argv = ["encode", corpus, "-o", f"{output}/", "--format", "parquet", "--rows-per-shard", "2", "-q"]
    code, out, _ = run([*argv, "--model", tiny_model_dir], capsys)
    assert code == 0 and "wrote 3 of 3 parquet shards: 5 rows" in out
    shards = sorted(path.name for path in output.iterdir())
    assert shards == [
        "_failures.jsonl",
        "_manifest.json",
        "tokens-00000.parquet",
        "tokens-00001.parquet",
        "tokens-00002.parquet",
    ]
    complete = [row.path for row in read_rows(output)]

    # A kill during shard 1: it is missing, the others are complete. The rerun only encodes shard 1.
    (output / "tokens-00001.parquet").unlink()
    encoded: list[Path] = []
    original = Plutok.encode_files

    def spy(self, paths, *args, **kwargs):
        paths = list(paths)
        encoded.extend(paths)
        return original(self, paths, *args, **kwargs)

    monkeypatch.setattr(Plutok, "encode_files", spy)
    code, out, _ = run([*argv, "--model", tiny_model_dir], capsys)
    assert code == 0 and "wrote 1 of 3 parquet shards, 2 done before: 1 row" in out
    assert sorted(path.name for path in encoded) == ["broken.wav", "utt2.wav"]  # shard 1 only
    assert [row.path for row in read_rows(output)] == complete

    # Everything done: nothing is encoded, and shard 1's failure is still reported.
    encoded.clear()
    code, out, err = run([*argv, "--model", tiny_model_dir], capsys)
    assert (code, encoded) == (0, []) and "wrote 0 of 3" in out and "1 input(s) gave no row" in err

    # Other settings on the same output are refused, not mixed in.
    argv[argv.index("--rows-per-shard") + 1] = "3"
    code, _, err = run([*argv, "--model", tiny_model_dir], capsys)
    assert code == 1 and "other settings" in err


def test_a_second_encode_into_a_busy_output_is_one_line(tiny_model_dir, corpus, tmp_path, capsys):
    output = tmp_path / "tokens"
    argv = ["encode", corpus, "-o", f"{output}/", "--format", "parquet", "-q", "--model", tiny_model_dir]
    with ShardWriter(output).claim():  # another plutok encode writing there right now
        code, _, err = run(argv, capsys)
    assert code == 1 and err.count("\n") == 1 and "_lock: another plutok run" in err, err
    assert not list(output.glob("tokens-*"))
    assert run(argv, capsys)[0] == 0 and len(list(read_rows(output))) == 5


def test_torchrun_ranks_write_disjoint_shards(tiny_model_dir, corpus, tmp_path, monkeypatch, capsys):
    output = tmp_path / "tokens.jsonl"
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        code, out, _ = run(
            ["encode", corpus, "-o", output, "--rows-per-shard", "2", "-q", "--model", tiny_model_dir], capsys
        )
        assert code == 0 and out.startswith(f"rank {rank}/2: wrote {2 - rank} of 3 jsonl shards")
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("tokens")) == [
        "tokens-00001.jsonl",
        "tokens-00002.jsonl",
        "tokens.jsonl",
        "tokens.jsonl.failures-rank1.jsonl",
        "tokens.jsonl.manifest.json",
    ]
    # Rank 0 wrote shards 0 and 2, rank 1 shard 1 (with the broken file): every good file once.
    assert [row.path for row in read_rows(output)] == GOOD
    assert [item.shard for item in read_failures(output)] == [1]


def test_batched_encoding_equals_one_by_one(tiny_model_dir, tiny_model, corpus, tmp_path, capsys):
    outputs = {}
    for batch in (1, 3, 8):
        output = tmp_path / f"b{batch}.jsonl"
        argv = ["encode", corpus, "-o", output, "--batch-size", batch, "-q", "--device", "cpu"]
        assert run([*argv, "--model", tiny_model_dir], capsys)[0] == 0
        outputs[batch] = list(read_rows(output))
    assert outputs[1] == outputs[3] == outputs[8]
    # ... and equal to the API one file at a time, and to encode_files in batches.
    singles = {name: tiny_model.encode_file(corpus / name).ids for name in GOOD}
    assert {row.path: row.token_ids for row in outputs[3]} == singles
    batched = dict(tiny_model.encode_files([corpus / name for name in GOOD], progress=False, batch_size=4))
    assert {path.relative_to(corpus).as_posix(): enc.ids for path, enc in batched.items()} == singles


def test_several_folders_keep_apart(tiny_model_dir, corpus, tmp_path, capsys):
    output = tmp_path / "t.jsonl"
    code, _, _ = run(
        ["encode", corpus / "spk1", corpus / "spk2", "-o", output, "-q", "--model", tiny_model_dir], capsys
    )
    assert code == 0
    assert [row.path for row in read_rows(output)] == [
        "spk1/utt0.wav",
        "spk1/utt1.wav",
        "spk2/utt2.wav",
        "spk2/utt3.wav",
    ]


def test_all_inputs_bad_exits_1(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.wav").write_text("nope")
    code, _, err = run(
        ["encode", folder, "-o", tmp_path / "t.jsonl", "-q", "--model", tiny_model_dir], capsys
    )
    assert code == 1 and "1 input(s) gave no row" in err


def test_shard_options_are_checked(tiny_model_dir, speech_wav, tmp_path, capsys):
    cases = [
        (["--format", "jsonl", "-o", tmp_path / "t.parquet"], "--format jsonl contradicts"),
        (["--format", "parquet"], "token shards need -o"),
        (["--rows-per-shard", "5", "-o", tmp_path / "x.plt"], "--rows-per-shard is for token shards"),
        (["-o", tmp_path / "t.parquet", "--force"], "--force is for .plt outputs"),
    ]
    for extra, message in cases:
        code, _, err = run(["encode", speech_wav, *extra, "--model", tiny_model_dir], capsys)
        assert code == 2 and message in err and err.startswith("usage: plutok encode"), err


def test_bad_numbers_and_devices_are_usage_errors(speech_wav, capsys):
    for extra in (["--rows-per-shard", "0"], ["--batch-size", "x"], ["--device", "tpu"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["encode", str(speech_wav), *extra])
        assert exit_info.value.code == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_cuda_without_a_gpu_is_one_line(tiny_model_dir, speech_wav, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run(
        ["encode", speech_wav, "-o", tmp_path / "x.plt", "--device", "cuda", "--model", tiny_model_dir],
        capsys,
    )
    assert code == 1 and err.strip() == "plutok: error: --device cuda: no CUDA GPU is visible to torch"
    # auto falls back to the CPU.
    assert (
        run(
            ["encode", speech_wav, "-o", tmp_path / "x.plt", "--device", "auto", "--model", tiny_model_dir],
            capsys,
        )[0]
        == 0
    )


# -- .plt outputs ---------------------------------------------------------------------------------
def test_default_plt_output_never_overwrites(tiny_model_dir, speech_wav, capsys):
    target = speech_wav.with_suffix(".plt")
    assert run(["encode", speech_wav, "--model", tiny_model_dir], capsys)[0] == 0
    assert target.is_file()
    before = target.read_bytes()
    target.write_bytes(b"mine")
    code, _, err = run(["encode", speech_wav, "--model", tiny_model_dir], capsys)
    assert code == 1 and "exists; pass --force" in err and target.read_bytes() == b"mine"
    assert run(["encode", speech_wav, "--force", "--model", tiny_model_dir], capsys)[0] == 0
    assert target.read_bytes() == before
    # A file the user names is theirs to replace.
    assert run(["encode", speech_wav, "-o", target, "--model", tiny_model_dir], capsys)[0] == 0


def test_plt_outputs_are_checked_before_work(tiny_model_dir, speech_wav, tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load for a refused output")

    monkeypatch.setattr(Plutok, "from_pretrained", no_model)
    code, _, err = run(["encode", speech_wav, "-o", tmp_path / "x.wav", "--model", tiny_model_dir], capsys)
    assert code == 1 and "encode writes .plt files" in err
    # Audio misnamed .plt: its default output would be itself.
    odd = tmp_path / "odd.plt"
    odd.write_bytes(speech_wav.read_bytes())
    code, _, err = run(["encode", odd, "--force", "--model", tiny_model_dir], capsys)
    assert code == 1 and "overwrite the input" in err
    code, _, err = run(["encode", speech_wav, speech_wav.parent, "-o", tmp_path / "one.plt"], capsys)
    assert code == 1 and "names one file but there are" in err


def test_folder_of_plt_files_mirrors_the_input(tiny_model_dir, corpus, tmp_path, capsys):
    out = tmp_path / "plts"
    code, out_text, _ = run(
        ["encode", corpus, "-o", out, "-q", "--batch-size", "2", "--model", tiny_model_dir], capsys
    )
    assert code == 0 and "encoded 5 files" in out_text and "real-time factor" in out_text
    assert sorted(path.relative_to(out).as_posix() for path in out.rglob("*.plt")) == [
        "spk1/utt0.plt",
        "spk1/utt1.plt",
        "spk2/utt2.plt",
        "spk2/utt3.plt",
        "top.plt",
    ]
    # A rerun refuses to replace what it did not name (the folder, not the files) without --force.
    code, _, err = run(["encode", corpus, "-o", out, "-q", "--model", tiny_model_dir], capsys)
    assert code == 1 and "exists; pass --force" in err
    assert run(["encode", corpus, "-o", out, "-q", "--force", "--model", tiny_model_dir], capsys)[0] == 0


def test_info_json_of_encoded_plt(tiny_model_dir, speech_wav, tmp_path, capsys):
    run(["encode", speech_wav, "-o", tmp_path / "s.plt", "--model", tiny_model_dir], capsys)
    code, out, _ = run(["info", tmp_path / "s.plt", "--json"], capsys)
    assert code == 0 and json.loads(out)["tokens"] > 0
