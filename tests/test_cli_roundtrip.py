"""``plutok roundtrip``: the report (token rate, bitrate, real-time factors) and its outputs."""

from __future__ import annotations

import re

import soundfile as sf

from plutok.api import Plutok
from plutok.cli import main


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_report_and_default_output(tiny_model_dir, tiny_model, speech_wav, capsys):
    code, out, _ = run(["roundtrip", speech_wav, "--model", tiny_model_dir, "--device", "cpu"], capsys)
    assert code == 0
    target = speech_wav.with_name("speech.decoded.wav")
    assert out.splitlines()[-1] == f"output: {target}"
    encoding = tiny_model.encode_file(speech_wav)
    assert f"tokens: {len(encoding.ids)}\n" in out
    assert f"bitrate: {tiny_model.bitrate(encoding.tokens_per_second, encoding.duration):.0f} bits/s" in out
    factors = re.search(r"real-time factor: encode (\d+\.\d+), decode (\d+\.\d+) \(", out)
    assert factors and float(factors[1]) > 0 and float(factors[2]) > 0
    assert abs(sf.info(target).duration - encoding.duration) <= 0.01
    # The default output is never replaced without --force; a named one may be.
    code, _, err = run(["roundtrip", speech_wav, "--model", tiny_model_dir], capsys)
    assert code == 1 and "speech.decoded.wav: exists; pass --force" in err
    assert run(["roundtrip", speech_wav, "-o", target, "--model", tiny_model_dir], capsys)[0] == 0


def test_outputs_are_checked_first(speech_wav, tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load for a refused output")

    monkeypatch.setattr(Plutok, "from_pretrained", no_model)
    for argv, message in [
        (["-o", tmp_path / "x.aac"], "cannot write '.aac'"),
        (["-o", speech_wav], "overwrite the input"),
        (["-o", tmp_path / "x.wav", "--plt", tmp_path / "x.txt"], "--plt names a .plt file"),
        (["-o", tmp_path / "x.ogg", "--sample-rate", "220000"], "up to 192000 Hz"),  # libvorbis crashed
    ]:
        code, _, err = run(["roundtrip", speech_wav, *argv], capsys)
        assert code == 1 and message in err, err
    code, _, err = run(["roundtrip", speech_wav, "--sample"], capsys)
    assert code == 2 and "give either an input file or --sample" in err


def test_sample_output_goes_to_the_working_folder(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["roundtrip", "--sample", "--plt", "s.plt", "--model", tiny_model_dir], capsys)
    assert code == 0 and out.splitlines()[-1] == "output: sample.decoded.wav"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["s.plt", "sample.decoded.wav"]
