"""The plutok command as a user runs it: exit codes, messages, files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from plutok.cli import build_parser, main

SUBCOMMANDS = [
    "encode",
    "decode",
    "roundtrip",
    "info",
    "extract",
    "train-vq",
    "train-bpe",
    "cache",
    "train-codec",
    "assemble",
    "export-onnx",
]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: plutok " + command in capsys.readouterr().out


def test_top_level_help_lists_commands():
    help_text = build_parser().format_help()
    for command in SUBCOMMANDS:
        assert command in help_text


def test_encode_decode_roundtrip_files(tiny_model_dir, speech_wav, tmp_path, capsys):
    plt_path = tmp_path / "speech.plt"
    assert main(["encode", str(speech_wav), "-o", str(plt_path), "--model", str(tiny_model_dir)]) == 0
    assert "tokens/s" in capsys.readouterr().out
    out_wav = tmp_path / "decoded.wav"
    assert main(["decode", str(plt_path), "-o", str(out_wav), "--model", str(tiny_model_dir)]) == 0
    original = sf.info(speech_wav)
    decoded = sf.info(out_wav)
    assert decoded.samplerate == 16000
    assert abs(decoded.duration - original.duration) <= 0.01  # within one 10 ms frame

    rt_wav = tmp_path / "rt.wav"
    assert main(["roundtrip", str(speech_wav), "-o", str(rt_wav), "--model", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "tokens/s:" in out and f"output: {rt_wav}" in out
    np.testing.assert_array_equal(sf.read(rt_wav)[0], sf.read(out_wav)[0])  # same tokens, same audio


def test_encode_folder_continues_past_bad_files(tiny_model_dir, speech_wav, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.wav").write_bytes(speech_wav.read_bytes())
    (folder / "broken.wav").write_text("not audio")
    code = main(["encode", str(folder), "-o", str(tmp_path / "out"), "-q", "--model", str(tiny_model_dir)])
    assert code == 0  # bad files are skipped and listed, not fatal
    assert (tmp_path / "out" / "a.plt").is_file() and not (tmp_path / "out" / "broken.plt").exists()
    err = capsys.readouterr().err
    assert "plutok: skipped" in err and "broken.wav" in err
    assert err.strip().splitlines()[-1] == "plutok: warning: 1 of 2 files could not be encoded (listed above)"
    # Nothing usable at all: exit 1.
    (folder / "a.wav").unlink()
    assert (
        main(["encode", str(folder), "-o", str(tmp_path / "out2"), "-q", "--model", str(tiny_model_dir)]) == 1
    )


def test_info_on_model_and_plt(tiny_model_dir, speech_wav, tmp_path, capsys):
    assert main(["info", str(tiny_model_dir), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert (
        facts["frontend"] == "log-mel" and facts["codebook_size"] == 32 and facts["codes_per_second"] == 50.0
    )
    plt_path = tmp_path / "s.plt"
    main(["encode", str(speech_wav), "-o", str(plt_path), "--model", str(tiny_model_dir)])
    capsys.readouterr()
    assert main(["info", str(plt_path), "--json"]) == 0
    facts_plt = json.loads(capsys.readouterr().out)
    assert facts_plt["sample_rate"] == 22050 and facts_plt["tokens"] > 0


def test_info_prints_readable_lines_not_a_dict(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from plutok.cli.info import readable

    facts = {
        "codec": "content",
        "fingerprint": "ab" * 32,
        "description": "word " * 60,
        "trained": {"codec": "plutok train-codec " + "--option value " * 20, "steps": 4000},
    }
    lines = readable(facts, columns=80).splitlines()
    # Every line fits, but for one unbreakable word (a fingerprint stays whole, to copy it).
    assert all(len(line) <= 80 or len(line.split()) == 2 for line in lines)
    assert "ab" * 32 in readable(facts, columns=80)
    assert not any("{" in line for line in lines)  # a dict is shown as indented keys
    assert "trained" in lines and any(
        line.startswith("  codec  plutok train-codec --option") for line in lines
    )
    # A long value goes on under itself, aligned with the first line's value.
    start = next(index for index, line in enumerate(lines) if line.startswith("description  word"))
    assert lines[start + 1].startswith(" " * 13 + "word")
    # The command: a long metadata dict no longer comes out as one line.
    config_path = tiny_model_dir / "config.json"
    directory = tmp_path / "model"
    import shutil

    shutil.copytree(tiny_model_dir, directory)
    config = json.loads(config_path.read_text())
    config["metadata"] = {"trained": {"codec": "x " * 400}, "description": "y " * 300}
    (directory / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["info", str(directory)]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100 and len(out.splitlines()) > 20


def _write(path, payload: bytes):
    path.write_bytes(payload)
    return path


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda tmp: tmp / "missing.wav", "no such file"),
        (lambda tmp: tmp, "directory"),
        (lambda tmp: _write(tmp / "empty.wav", b""), "file is empty"),
        (lambda tmp: _write(tmp / "x.mp3", b"hello, not audio"), "not a readable audio file"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_1(tiny_model_dir, tmp_path, make_input, message):
    target = make_input(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "plutok",
            "roundtrip",
            str(target),
            "-o",
            str(tmp_path / "o.wav"),
            "--model",
            str(tiny_model_dir),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    # The last line is ours (libmpg123 may print its own notes before it).
    last_line = result.stderr.strip().splitlines()[-1]
    assert message in last_line and last_line.startswith("plutok: error:")
    assert not (tmp_path / "o.wav").exists()


def test_corrupt_and_foreign_plt(tiny_model_dir, speech_wav, tmp_path, capsys):
    plt_path = tmp_path / "s.plt"
    main(["encode", str(speech_wav), "-o", str(plt_path), "--model", str(tiny_model_dir)])
    payload = plt_path.read_bytes()
    (tmp_path / "cut.plt").write_bytes(payload[: len(payload) // 2])
    assert main(["decode", str(tmp_path / "cut.plt"), "--model", str(tiny_model_dir)]) == 1
    assert "checksum" in capsys.readouterr().err
    foreign = bytearray(payload)
    foreign[5:13] = b"\x00" * 8
    (tmp_path / "foreign.plt").write_bytes(bytes(foreign))
    assert main(["decode", str(tmp_path / "foreign.plt"), "--model", str(tiny_model_dir)]) == 1
    assert "checksum" in capsys.readouterr().err  # header bytes are covered by the CRC too


def test_missing_model_directory(tmp_path, speech_wav, capsys):
    assert main(["encode", str(speech_wav), "--model", str(tmp_path / "nope")]) == 1
    assert "not a model directory" in capsys.readouterr().err


def test_colliding_output_names_are_refused(tiny_model_dir, speech_wav, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / speech_wav.name).write_bytes(speech_wav.read_bytes())
    code = main(
        [
            "encode",
            str(speech_wav),
            str(other / speech_wav.name),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(tiny_model_dir),
        ]
    )
    assert code == 1
    assert "would both be written to" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_output_naming_an_existing_folder_writes_into_it(tiny_model_dir, speech_wav, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    assert (
        main(["encode", str(speech_wav), "-o", str(tmp_path / "taken"), "--model", str(tiny_model_dir)]) == 0
    )
    assert (tmp_path / "taken" / "speech.plt").is_file()
    assert (tmp_path / "taken" / "keep.txt").read_text() == "x"
    capsys.readouterr()
    # A directory where the one named output file should go gives one line.
    (tmp_path / "taken" / "speech.plt").unlink()
    (tmp_path / "taken" / "speech.plt").mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "plutok",
            "encode",
            str(speech_wav),
            "-o",
            str(tmp_path / "taken"),
            "--model",
            str(tiny_model_dir),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("plutok: error:")
    assert "existing directory" in result.stderr


@pytest.mark.parametrize(
    "error, line",
    [
        (
            ValueError("bad\nvalue"),
            "plutok: error: internal error: ValueError: bad value; rerun with --debug",
        ),
        (MemoryError(), "plutok: error: out of memory"),
    ],
)
def test_an_unexpected_exception_is_one_line(monkeypatch, capsys, error, line):
    from plutok.cli import info

    def broken(args):
        raise error

    monkeypatch.setattr(info, "run", broken)
    monkeypatch.delenv("PLUTOK_DEBUG", raising=False)
    assert main(["info", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1, err
    # The traceback on request: an option before or after the command, or the environment.
    for argv, env in (
        (["--debug", "info", "x"], None),
        (["info", "x", "--debug"], None),
        (["info", "x"], "1"),
    ):
        if env:
            monkeypatch.setenv("PLUTOK_DEBUG", env)
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "in broken" in err
        assert err.splitlines()[-1].startswith(line.split(";")[0])
