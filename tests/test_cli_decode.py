"""``plutok decode``: bare ids, voice swap, token-shard rows, many files, safe outputs checked first."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from plutok.api import Plutok
from plutok.cli import main
from plutok.cli.decode import AUDIO_FORMATS, read_ids
from plutok.io.outputs import OUTPUT_FORMATS


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def voiced_model_dir(tiny_model_dir, tmp_path_factory, speech_like) -> Path:
    """The tiny model with a stored default voice (a v1 model: same fingerprint, so the same .plt files)."""
    directory = tmp_path_factory.mktemp("voiced") / "model"
    shutil.copytree(tiny_model_dir, directory)
    tok = Plutok.from_pretrained(tiny_model_dir)
    config = json.loads((directory / "config.json").read_text())
    config["default_speaker"] = tok.encode(speech_like(1.0, seed=7), 16000).speaker.tolist()
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture
def plts(tiny_model, tmp_path, speech_like) -> dict[str, Path]:
    """Three .plt files (two in a subfolder) and a reference voice as audio and as .plt."""
    folder = tmp_path / "plts"
    (folder / "sub").mkdir(parents=True)
    made = {}
    for name, seed in (("a", 1), ("sub/b", 2), ("sub/c", 3)):
        made[name] = tiny_model.save_plt(
            tiny_model.encode(speech_like(0.4, seed=seed), 16000), folder / f"{name}.plt"
        )
    reference = tmp_path / "voice.wav"
    sf.write(reference, speech_like(0.5, sample_rate=22050, seed=11) * 3, 22050, subtype="PCM_16")
    made["voice.wav"] = reference
    made["voice.plt"] = tiny_model.save_plt(tiny_model.encode_file(reference), tmp_path / "voice.plt")
    return made


def test_formats_agree_with_the_writer():
    assert [f".{name}" for name in AUDIO_FORMATS] == list(OUTPUT_FORMATS)


# -- bare ids -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["[4, 5, 6, 7]", "4 5\n6\t7\n", "4, 5, 6, 7", '{"path": "x.wav", "token_ids": [4, 5, 6, 7]}'],
)
def test_id_file_layouts(tmp_path, text, monkeypatch):
    (tmp_path / "ids.txt").write_text(text)
    assert read_ids(str(tmp_path / "ids.txt")) == [4, 5, 6, 7]
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert read_ids("-") == [4, 5, 6, 7]


def test_decode_ids_with_a_voice(tiny_model_dir, tiny_model, plts, tmp_path, capsys, monkeypatch):
    ids = tiny_model.load_plt(plts["a"]).ids
    (tmp_path / "ids.txt").write_text(json.dumps(ids))
    code, out, _ = run(
        ["decode", "--ids", tmp_path / "ids.txt", "--speaker", plts["voice.plt"], "--model", tiny_model_dir],
        capsys,
    )
    assert code == 0
    output = tmp_path / "ids.decoded.wav"  # beside the id file
    assert (
        out.strip()
        == f"{len(ids)} tokens -> 0.40 s at 16000 Hz in the voice of {plts['voice.plt']} -> {output}"
    )
    expected, rate = tiny_model.decode_ids(ids, speaker=plts["voice.plt"])
    written, written_rate = sf.read(output, dtype="float32")
    assert written_rate == rate and written.shape == expected.shape
    np.testing.assert_allclose(written, np.clip(expected, -1, 1), atol=1 / 2**15 + 1e-6)
    # From stdin ("-"): the same audio.
    monkeypatch.setattr("sys.stdin", io.StringIO(" ".join(map(str, ids))))
    argv = ["decode", "--ids", "-", "--speaker", plts["voice.plt"], "-o", tmp_path / "stdin.wav"]
    assert run([*argv, "--model", tiny_model_dir], capsys)[0] == 0
    np.testing.assert_array_equal(sf.read(tmp_path / "stdin.wav")[0], sf.read(output)[0])


def test_decode_ids_default_voice(voiced_model_dir, tiny_model_dir, tmp_path, capsys):
    (tmp_path / "ids.txt").write_text("3 5 7 9 11 13")
    code, _, err = run(["decode", "--ids", tmp_path / "ids.txt", "--model", tiny_model_dir], capsys)
    assert code == 1 and "no default voice; give one with --speaker" in err
    assert not (tmp_path / "ids.decoded.wav").exists()
    code, out, _ = run(["decode", "--ids", tmp_path / "ids.txt", "--model", voiced_model_dir], capsys)
    assert code == 0 and sf.info(tmp_path / "ids.decoded.wav").frames > 0


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 2 99999", "not in the vocabulary"),
        ("1 2 x", "'x' is not a token id"),
        ("[1, 2.5]", "token ids must be integers, got 2.5"),
        ("[1, true]", "token ids must be integers, got true"),
        ("", "no token ids"),
        ("[1, 2", "not valid JSON"),
    ],
)
def test_bad_ids_are_one_line(voiced_model_dir, tmp_path, text, message, capsys):
    (tmp_path / "ids.txt").write_text(text)
    code, _, err = run(["decode", "--ids", tmp_path / "ids.txt", "--model", voiced_model_dir], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("plutok: error:") and message in err
    assert not (tmp_path / "ids.decoded.wav").exists()


def test_ids_options_that_contradict_are_usage_errors(plts, tmp_path, capsys):
    (tmp_path / "ids.txt").write_text("1 2")
    shard_folder = tmp_path / "tokens"
    shard_folder.mkdir()
    (shard_folder / "tokens-00000.jsonl").write_text("")
    for argv, message in [
        (["--ids", tmp_path / "ids.txt", plts["a"]], "--ids decodes token ids on their own"),
        ([], "give .plt file(s), --ids FILE"),
        ([tmp_path / "t.parquet"], "is a token corpus: pick a row"),
        ([shard_folder], "is a token corpus: pick a row"),
        ([plts["a"], plts["sub/b"], "--row", "1"], "give exactly one IN"),
        ([plts["a"], "-o", tmp_path / "x.wav", "--format", "flac"], "--format flac contradicts"),
        ([plts["a"], "--sample-rate", "500000"], "at most 384000 Hz"),
    ]:
        code, _, err = run(["decode", *argv], capsys)
        assert code == 2 and err.startswith("usage: plutok decode") and message in err, err
    with pytest.raises(SystemExit) as exit_info:
        main(["decode", "x.parquet", "--row", "1", "--path", "a.wav"])
    assert exit_info.value.code == 2


# -- voice swap -----------------------------------------------------------------------------------
def test_voice_swap(tiny_model_dir, tiny_model, plts, tmp_path, capsys):
    own = tmp_path / "own.wav"
    assert run(["decode", plts["a"], "-o", own, "--model", tiny_model_dir], capsys)[0] == 0
    swapped = {}
    for kind in ("voice.wav", "voice.plt"):
        target = tmp_path / f"swap-{kind}.wav"
        code, out, _ = run(
            ["decode", plts["a"], "--speaker", plts[kind], "-o", target, "--model", tiny_model_dir], capsys
        )
        assert code == 0 and f"in the voice of {plts[kind]}" in out
        swapped[kind] = sf.read(target)[0]
    # The reference's voice (from its audio or from its .plt) replaces the encoding's own.
    np.testing.assert_array_equal(swapped["voice.wav"], swapped["voice.plt"])
    assert sf.read(own)[0].shape == swapped["voice.wav"].shape
    assert not np.allclose(sf.read(own)[0], swapped["voice.wav"], atol=1e-3)
    expected, _ = tiny_model.decode(tiny_model.load_plt(plts["a"]), speaker=plts["voice.wav"])
    np.testing.assert_allclose(swapped["voice.wav"], np.clip(expected, -1, 1), atol=1 / 2**15 + 1e-6)


def test_bad_reference_voice_is_one_line(tiny_model_dir, plts, tmp_path, capsys):
    code, _, err = run(
        ["decode", plts["a"], "--speaker", tmp_path / "missing.wav", "--model", tiny_model_dir], capsys
    )
    assert code == 1 and "missing.wav: no such file" in err
    assert not (plts["a"].parent / "a.decoded.wav").exists()


# -- many files -----------------------------------------------------------------------------------
def test_many_plt_files_and_folders(tiny_model_dir, plts, tmp_path, capsys):
    folder = plts["a"].parent
    (folder / "sub" / "broken.plt").write_bytes(b"PLTK not really")
    code, out, err = run(["decode", folder, "-o", tmp_path / "out", "--model", tiny_model_dir], capsys)
    assert code == 0  # the broken file is skipped and listed
    assert sorted(
        path.relative_to(tmp_path / "out").as_posix() for path in (tmp_path / "out").rglob("*")
    ) == [
        "a.wav",
        "sub",
        "sub/b.wav",
        "sub/c.wav",
    ]
    assert "decoded 3 files" in out and "real-time factor" in out
    assert "plutok: skipped" in err and "broken.plt" in err
    assert "decoding" in err  # the progress bar
    assert err.strip().splitlines()[-1] == "plutok: warning: 1 of 4 files could not be decoded (listed above)"
    # Files given one by one, default outputs beside them, -q hides the bar.
    (folder / "sub" / "broken.plt").unlink()
    code, _, err = run(
        ["decode", plts["a"], plts["sub/b"], "-q", "--format", "flac", "--model", tiny_model_dir], capsys
    )
    assert code == 0 and "decoding" not in err
    assert (folder / "a.decoded.flac").is_file() and (folder / "sub" / "b.decoded.flac").is_file()


def test_many_files_into_one_named_file_is_refused(plts, tmp_path, capsys):
    code, _, err = run(["decode", plts["a"], plts["sub/b"], "-o", tmp_path / "x.wav"], capsys)
    assert code == 1 and "names one file but there are 2 inputs" in err


# -- safe outputs ---------------------------------------------------------------------------------
@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if a model loads or anything is decoded."""
    calls = []

    def spy(name):
        def refuse(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} ran before the output was checked")

        return refuse

    monkeypatch.setattr(Plutok, "from_pretrained", spy("from_pretrained"))
    monkeypatch.setattr(Plutok, "decode", spy("decode"))
    monkeypatch.setattr(Plutok, "decode_ids", spy("decode_ids"))
    return calls


@pytest.mark.parametrize(
    "output, message",
    [("x.aac", "cannot write '.aac'"), ("noext", "no audio extension"), ("x.plt", "cannot write '.plt'")],
)
def test_output_format_is_checked_before_any_decoding(plts, tmp_path, output, message, no_decoding, capsys):
    (tmp_path / "ids.txt").write_text("1 2 3")
    for source in ([plts["a"]], ["--ids", tmp_path / "ids.txt"]):
        code, _, err = run(["decode", *source, "-o", tmp_path / output], capsys)
        assert code == 1 and message in err, err
    code, _, err = run(["decode", plts["a"], "--format", "wav", "-o", tmp_path / output], capsys)
    assert code == 2 and "contradicts" in err
    assert no_decoding == []


def test_default_output_never_collides(tiny_model_dir, plts, capsys, no_decoding, monkeypatch):
    target = plts["a"].with_name("a.decoded.wav")
    target.write_bytes(b"keep me")
    code, _, err = run(["decode", plts["a"]], capsys)
    assert code == 1 and "a.decoded.wav: exists; pass --force" in err
    assert target.read_bytes() == b"keep me" and no_decoding == []
    monkeypatch.undo()
    assert run(["decode", plts["a"], "--force", "--model", tiny_model_dir], capsys)[0] == 0
    assert sf.info(target).frames > 0


def test_output_equal_to_an_input_is_refused(plts, tmp_path, capsys, no_decoding):
    wav_named_plt = tmp_path / "x.wav"
    shutil.copy(plts["a"], wav_named_plt)
    code, _, err = run(["decode", wav_named_plt, "-o", wav_named_plt, "--force"], capsys)
    assert code == 1 and "would overwrite the input" in err
    # The input folder as -o: a.plt -> a.wav is not an input, but a folder of inputs named .wav is.
    assert no_decoding == []


def test_ogg_above_its_rate_limit_is_refused_before_any_decoding(plts, tmp_path, capsys, no_decoding):
    (tmp_path / "ids.txt").write_text("1 2 3")
    for source in ([plts["a"]], ["--ids", tmp_path / "ids.txt"]):
        code, _, err = run(["decode", *source, "--sample-rate", 220000, "-o", tmp_path / "x.ogg"], capsys)
        assert code == 1 and "x.ogg: .ogg audio can be written at up to 192000 Hz" in err, err
    code, _, err = run(["decode", plts["a"], "--format", "ogg", "--sample-rate", 384000], capsys)
    assert code == 1 and "up to 192000 Hz" in err
    assert no_decoding == [] and not list(tmp_path.glob("*.ogg")) and not list(tmp_path.glob(".*.part"))


def test_output_equal_to_the_speaker_reference_is_refused(plts, tmp_path, capsys, no_decoding):
    voice = plts["voice.wav"]
    before = voice.read_bytes()
    link = tmp_path / "link.wav"
    link.symlink_to(voice)
    (tmp_path / "ids.txt").write_text("1 2 3")
    corpus = tmp_path / "tokens.jsonl"
    corpus.write_text("")  # never read: the output is refused first
    for target in (voice, link):
        for source in ([plts["a"]], ["--ids", tmp_path / "ids.txt"], [corpus, "--row", "0"]):
            code, _, err = run(["decode", *source, "--speaker", voice, "-o", target, "--force"], capsys)
            assert code == 1 and "would overwrite the input" in err, err
    # Folder mode: plts/sub/b.plt -> OUT/b.wav, and the reference is OUT/b.wav.
    folder = tmp_path / "out"
    folder.mkdir()
    shutil.copy(voice, folder / "b.wav")
    code, _, err = run(
        ["decode", plts["sub/b"], plts["a"], "--speaker", folder / "b.wav", "-o", folder, "--force"], capsys
    )
    assert code == 1 and "would overwrite the input" in err, err
    assert voice.read_bytes() == before and (folder / "b.wav").read_bytes() == before
    assert no_decoding == []


def test_output_folder_for_one_input(tiny_model_dir, plts, tmp_path, capsys):
    code, out, _ = run(["decode", plts["a"], "-o", f"{tmp_path / 'new'}/", "--model", tiny_model_dir], capsys)
    assert code == 0 and (tmp_path / "new" / "a.wav").is_file()
    (tmp_path / "existing").mkdir()
    code, out, _ = run(
        ["decode", plts["a"], "-o", tmp_path / "existing", "--format", "ogg", "--model", tiny_model_dir],
        capsys,
    )
    assert code == 0 and sf.info(tmp_path / "existing" / "a.ogg").format == "OGG"


@pytest.mark.parametrize("extension", sorted(OUTPUT_FORMATS))
def test_each_output_format(tiny_model_dir, plts, tmp_path, extension, capsys):
    from plutok.io.outputs import supported_output_extensions

    if extension not in supported_output_extensions():
        pytest.skip(f"this libsndfile cannot write {extension}")
    target = tmp_path / f"out{extension}"
    assert run(["decode", plts["sub/b"], "-o", target, "--model", tiny_model_dir], capsys)[0] == 0
    assert sf.info(target).format == OUTPUT_FORMATS[extension][0]


# -- token-shard rows -----------------------------------------------------------------------------
@pytest.fixture
def shard(tiny_model_dir, tmp_path, speech_like, capsys) -> tuple[Path, Path]:
    """A parquet token corpus of five files, and the corpus folder."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index in range(5):
        sf.write(
            corpus / f"f{index}.wav", speech_like(0.3 + 0.05 * index, seed=index), 16000, subtype="PCM_16"
        )
    output = tmp_path / "tokens.parquet"
    assert run(["encode", corpus, "-o", output, "-q", "--model", tiny_model_dir], capsys)[0] == 0
    return output, corpus


def test_decode_one_row(tiny_model_dir, tiny_model, shard, plts, tmp_path, capsys):
    output, corpus = shard
    code, out, _ = run(
        ["decode", output, "--row", 3, "--speaker", plts["voice.wav"], "--model", tiny_model_dir], capsys
    )
    assert code == 0
    target = tmp_path / "tokens-row3.decoded.wav"
    assert str(target) in out
    encoding = tiny_model.encode_file(corpus / "f3.wav")
    expected, rate = tiny_model.decode(encoding, speaker=plts["voice.wav"])
    written, written_rate = sf.read(target, dtype="float32")
    assert written_rate == rate
    np.testing.assert_allclose(written, np.clip(expected, -1, 1), atol=1 / 2**15 + 1e-6)
    # By source path, in its own voice, into a named file.
    code, _, _ = run(
        ["decode", output, "--path", "f3.wav", "-o", tmp_path / "f3.wav", "--model", tiny_model_dir], capsys
    )
    assert code == 0
    own, _ = tiny_model.decode(encoding)
    np.testing.assert_allclose(
        sf.read(tmp_path / "f3.wav", dtype="float32")[0], np.clip(own, -1, 1), atol=1e-4
    )


def test_bad_rows_are_one_line(tiny_model_dir, shard, tmp_path, capsys):
    output, _ = shard
    code, _, err = run(["decode", output, "--row", 5, "--model", tiny_model_dir], capsys)
    assert code == 1 and "row 5 is out of range (it has 5 rows)" in err
    code, _, err = run(["decode", output, "--path", "nope.wav", "--model", tiny_model_dir], capsys)
    assert code == 1 and "no row for path 'nope.wav'" in err
    # A row made by another model is refused, not decoded into noise.
    from dataclasses import asdict

    from plutok.io.shards import read_rows

    rows = [asdict(row) | {"fingerprint": "ab" * 32} for row in read_rows(output)]
    (tmp_path / "foreign.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, _, err = run(["decode", tmp_path / "foreign.jsonl", "--row", 0, "--model", tiny_model_dir], capsys)
    assert code == 1 and "was made by another model" in err and "--model" in err


def test_stream_writes_raw_pcm_to_stdout_equal_to_one_pass(
    tiny_model_dir, tiny_model, speech_wav, tmp_path, capfdbinary
):
    encoding = tiny_model.encode_file(speech_wav)
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps(encoding.ids))
    speaker = tmp_path / "voice.plt"
    tiny_model.save_plt(encoding, speaker)
    code = main(
        [
            "decode",
            "--ids",
            str(ids_file),
            "--speaker",
            str(speaker),
            "--stream",
            "-o",
            "-",
            "--model",
            str(tiny_model_dir),
        ]
    )
    captured = capfdbinary.readouterr()
    assert code == 0 and b"16-bit PCM" in captured.err
    streamed = np.frombuffer(captured.out, dtype="<i2").astype(np.float32) / 32767
    one_pass, _ = tiny_model.decode_ids(encoding.ids, speaker=encoding.speaker)
    assert streamed.shape == one_pass.shape
    np.testing.assert_allclose(streamed, np.clip(one_pass, -1, 1), rtol=0, atol=2 / 32767)


def test_stream_needs_ids_and_stdout(tiny_model_dir, tmp_path, capsys):
    ids_file = tmp_path / "ids.json"
    ids_file.write_text("[1, 2, 3]")
    assert (
        main(["decode", "--ids", str(ids_file), "--stream", "-o", "x.wav", "--model", str(tiny_model_dir)])
        == 2
    )
    assert "--stream" in capsys.readouterr().err


def test_stream_from_stdin_writes_audio_before_the_last_id(voiced_model_dir, speech_like):
    """Ids piped slowly into ``--ids - --stream``: audio comes out while the pipe is still open."""
    import os
    import select
    import subprocess
    import sys

    model = Plutok.from_pretrained(voiced_model_dir)
    ids = model.encode(speech_like(1.5, seed=5), 16000).ids
    chunk_codes = 10
    # The shortest prefix of ids after which the first chunk is final.
    needed = chunk_codes + model.stream_lookahead_codes()
    first = next(n for n in range(1, len(ids) + 1) if len(model.ids_to_codes(ids[:n])) >= needed)
    assert first < len(ids)
    source = str(Path(__file__).resolve().parents[1] / "src")
    process = subprocess.Popen(
        [sys.executable, "-m", "plutok", "decode", "--ids", "-", "--stream", "-o", "-"]
        + ["--chunk-codes", str(chunk_codes), "--model", str(voiced_model_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": source},
    )
    try:
        # One id per write, flushed, the last one with its separator: nothing is closed yet.
        for token_id in ids[:first]:
            process.stdin.write(f"{token_id}\n".encode())
            process.stdin.flush()
        # Guard against a hang, not a speed test: model loading and decoding take seconds.
        readable, _, _ = select.select([process.stdout], [], [], 300)
        assert readable, "no audio before the last id was written"
        early = os.read(process.stdout.fileno(), 1 << 20)
        assert len(early) > 0 and process.poll() is None
        process.stdin.write(" ".join(map(str, ids[first:])).encode())
        process.stdin.close()
        rest, err = process.stdout.read(), process.stderr.read()
        assert process.wait(timeout=300) == 0, err.decode()
    finally:
        process.kill()
    streamed = np.frombuffer(early + rest, dtype="<i2").astype(np.float32) / 32767
    one_pass, _ = model.decode_ids(ids)
    assert streamed.shape == one_pass.shape
    np.testing.assert_allclose(streamed, np.clip(one_pass, -1, 1), rtol=0, atol=2 / 32767)
    assert f"{len(ids)} tokens" in err.decode()


def test_stream_ids_reads_ids_as_they_arrive():
    """:func:`stream_ids` yields an id once its separator is in, without waiting for the end."""
    import os

    from plutok.cli.decode import stream_ids
    from plutok.errors import TokenError

    read_end, write_end = os.pipe()
    try:
        ids = stream_ids(read_end)
        os.write(write_end, b"12 3")
        assert next(ids) == 12  # "3" may go on ("34"): not yet
        os.write(write_end, b"4,\n5\n")
        assert [next(ids), next(ids)] == [34, 5]
        os.write(write_end, b"6")
        os.close(write_end)
        write_end = -1
        assert list(ids) == [6]
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    for payload, message in ((b"1 x 2", "'x' is not a token id"), (b" \n", "no token ids")):
        read_end, write_end = os.pipe()
        os.write(write_end, payload)
        os.close(write_end)
        with pytest.raises(TokenError, match=message):
            list(stream_ids(read_end))
        os.close(read_end)
    read_end, write_end = os.pipe()
    os.write(write_end, b' {"token_ids": [7, 8]}')
    os.close(write_end)
    assert list(stream_ids(read_end)) == [7, 8]
    os.close(read_end)


def test_long_decodes_show_progress_on_stderr(
    tiny_model, tiny_model_dir, tmp_path, capsys, monkeypatch, speech_like
):
    """One long input gets a bar over the vocoder's chunks (here every input counts as long); -q hides it."""
    import plutok.cli.decode as decode_command

    path = tiny_model.save_plt(tiny_model.encode(speech_like(0.5, seed=9), 16000), tmp_path / "a.plt")
    monkeypatch.setattr(decode_command, "LONG_DECODE_SECONDS", 0.0)
    argv = [path, "-o", tmp_path / "a.wav", "--model", tiny_model_dir, "--force"]
    code, _, err = run(["decode", *argv], capsys)
    assert code == 0 and "decoding 0 s" in err and "1/1" in err
    code, _, err = run(["decode", *argv, "-q"], capsys)
    assert code == 0 and "decoding" not in err
