"""Output paths for the CLI: folders, collisions, inputs never overwritten, formats checked first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from plutok.errors import AudioError, PlutokError
from plutok.io import outputs
from plutok.io.outputs import (
    OUTPUT_FORMATS,
    check_output_format,
    check_output_rate,
    resolve_outputs,
    supported_output_extensions,
    write_audio_checked,
)


@pytest.fixture
def audio(tmp_path) -> list[Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    paths = [folder / "a.wav", folder / "b.flac"]
    for path in paths:
        path.write_bytes(b"input")  # contents do not matter: nothing here reads them
    return paths


def test_default_output_sits_beside_the_input(audio):
    assert resolve_outputs(audio, None, ".decoded", ".wav") == [
        audio[0].parent / "a.decoded.wav",
        audio[1].parent / "b.decoded.wav",
    ]
    assert resolve_outputs(audio[:1], None, ".decoded", "flac")[0].name == "a.decoded.flac"


def test_default_output_never_overwrites_without_force(audio):
    existing = audio[0].parent / "a.decoded.wav"
    existing.write_bytes(b"keep me")
    with pytest.raises(PlutokError, match="exists.*--force"):
        resolve_outputs(audio, None, ".decoded", ".wav")
    assert resolve_outputs(audio, None, ".decoded", ".wav", force=True)[0] == existing
    assert existing.read_bytes() == b"keep me"  # resolving never touches files


@pytest.mark.parametrize("trailing", ["/", os.sep])
def test_folder_with_trailing_slash_for_one_input(audio, tmp_path, trailing):
    target = str(tmp_path / "new") + trailing  # does not exist yet: the slash makes it a folder
    assert resolve_outputs(audio[:1], target, ".decoded", ".wav") == [tmp_path / "new" / "a.wav"]


def test_existing_folder_without_slash_for_many_inputs(audio, tmp_path):
    (tmp_path / "out").mkdir()
    assert resolve_outputs(audio, str(tmp_path / "out"), ".decoded", ".wav") == [
        tmp_path / "out" / "a.wav",
        tmp_path / "out" / "b.wav",
    ]
    (tmp_path / "out" / "b.wav").write_bytes(b"old")
    with pytest.raises(PlutokError, match="b.wav: exists"):
        resolve_outputs(audio, str(tmp_path / "out"), ".decoded", ".wav")


def test_one_file_output_for_many_inputs_is_refused(audio, tmp_path):
    with pytest.raises(PlutokError, match="names one file but there are 2 inputs.*'/'"):
        resolve_outputs(audio, str(tmp_path / "x.wav"), ".decoded", ".wav")


def test_named_file_may_be_overwritten_and_sets_the_format(audio, tmp_path):
    named = tmp_path / "mine.flac"
    named.write_bytes(b"old")
    assert resolve_outputs(audio[:1], str(named), ".decoded", ".wav") == [named]


def test_two_inputs_into_one_output_are_refused(tmp_path):
    inputs = [tmp_path / "a.wav", tmp_path / "a.flac"]
    with pytest.raises(PlutokError, match="both be written to .*a.wav"):
        resolve_outputs(inputs, str(tmp_path / "out") + "/", ".decoded", ".wav")


def test_output_equal_to_an_input_is_always_refused(audio, tmp_path):
    with pytest.raises(PlutokError, match="overwrite the input"):
        resolve_outputs(audio[:1], str(audio[0]), ".decoded", ".wav", force=True)
    # The input folder as -o maps a.wav onto itself.
    with pytest.raises(PlutokError, match="overwrite the input"):
        resolve_outputs(audio, str(audio[0].parent), ".decoded", ".wav", force=True)
    # Through a symlink and a hard link to the input.
    link = tmp_path / "link.wav"
    link.symlink_to(audio[0])
    with pytest.raises(PlutokError, match="overwrite the input"):
        resolve_outputs(audio[:1], str(link), ".decoded", ".wav", force=True)
    hard = tmp_path / "hard.wav"
    os.link(audio[0], hard)
    with pytest.raises(PlutokError, match="overwrite the input"):
        resolve_outputs(audio[:1], str(hard), ".decoded", ".wav", force=True)
    # A symlinked folder that is the input folder.
    alias = tmp_path / "alias"
    alias.symlink_to(audio[0].parent, target_is_directory=True)
    with pytest.raises(PlutokError, match="overwrite the input"):
        resolve_outputs(audio[:1], str(alias) + "/", ".decoded", ".wav", force=True)


def test_output_equal_to_a_protected_file_is_always_refused(audio, tmp_path):
    """A file the command reads besides its inputs (a --speaker reference) is never replaced."""
    voice = tmp_path / "voice.wav"
    voice.write_bytes(b"reference")
    link = tmp_path / "link.wav"
    link.symlink_to(voice)
    hard = tmp_path / "hard.wav"
    os.link(voice, hard)
    for target in (voice, link, hard):
        with pytest.raises(PlutokError, match="overwrite the input .*voice.wav"):
            resolve_outputs(audio[:1], str(target), ".decoded", ".wav", force=True, protected=[voice])
    # Protected through a symlink, the real file named as output.
    with pytest.raises(PlutokError, match="overwrite the input"):
        resolve_outputs(audio[:1], str(voice), ".decoded", ".wav", force=True, protected=[link])
    # A folder -o where an input's output lands on the reference.
    reference = tmp_path / "a.wav"
    reference.write_bytes(b"reference")
    with pytest.raises(PlutokError, match="overwrite the input"):
        resolve_outputs(audio, str(tmp_path), ".decoded", ".wav", force=True, protected=[reference])
    assert voice.read_bytes() == b"reference" and reference.read_bytes() == b"reference"


def test_format_is_refused_before_any_work(audio, tmp_path):
    with pytest.raises(AudioError, match="cannot write '.aac'.*\\.wav"):
        resolve_outputs(audio[:1], str(tmp_path / "x.aac"), ".decoded", ".wav")
    with pytest.raises(AudioError, match="no audio extension"):
        resolve_outputs(audio[:1], str(tmp_path / "noext"), ".decoded", ".wav")
    with pytest.raises(AudioError, match="cannot write"):
        resolve_outputs(audio, None, ".decoded", ".aac")
    assert check_output_format("X.WAV") == ("WAV", "PCM_16")
    with pytest.raises(PlutokError, match="no input files"):
        resolve_outputs([], None, ".decoded", ".wav")


def test_a_format_this_libsndfile_lacks_is_refused_clearly(monkeypatch):
    monkeypatch.setattr(outputs.sf, "available_formats", lambda: {"WAV": "", "FLAC": ""})
    monkeypatch.setattr(outputs.sf, "available_subtypes", lambda fmt=None: {"PCM_16": ""})
    assert supported_output_extensions() == [".wav", ".flac"]
    with pytest.raises(AudioError, match="cannot write .mp3; writable formats here: .wav, .flac"):
        check_output_format("x.mp3")


@pytest.mark.parametrize("extension", sorted(OUTPUT_FORMATS))
@pytest.mark.parametrize("rate", [16000, 24000])
def test_each_format_round_trips_duration_and_rate(tmp_path, extension, rate):
    if extension not in supported_output_extensions():
        pytest.skip(f"this libsndfile cannot write {extension}")
    samples = int(0.25 * rate)
    wav = 0.3 * np.sin(2 * np.pi * 220 * np.arange(samples) / rate)
    wav[10] = 4.0  # out of range: clipped, not wrapped
    written = write_audio_checked(tmp_path / f"out{extension}", wav, rate)
    info = sf.info(str(written.path))
    assert (info.samplerate, written.sample_rate, written.samples) == (rate, rate, samples)
    assert info.format == OUTPUT_FORMATS[extension][0]
    assert info.frames == pytest.approx(samples, abs=0.01 * rate)  # lossy codecs may pad a little
    back, _ = sf.read(str(written.path), dtype="float32")
    if extension in (".wav", ".flac"):
        np.testing.assert_allclose(back, np.clip(wav, -1, 1), atol=1 / 2**15)
    else:  # lossy codecs ring a little around the clipped spike, but it was 1.0, not 4.0
        assert back.max() < 1.5
    assert not list(tmp_path.glob(".*.part"))


def test_mp3_at_a_rate_mpeg_lacks_is_resampled(tmp_path):
    if ".mp3" not in supported_output_extensions():
        pytest.skip("this libsndfile cannot write mp3")
    wav = np.zeros(5000, np.float32)  # 0.25 s at 20 kHz
    written = write_audio_checked(tmp_path / "x.mp3", wav, 20000)
    assert written.sample_rate == 22050 and sf.info(str(written.path)).samplerate == 22050
    assert written.seconds == pytest.approx(0.25, abs=1e-3)


def test_ogg_above_the_vorbis_limit_is_refused_not_a_crash(tmp_path):
    """libsndfile's Vorbis writer segfaults above ~200 kHz: a child process shows a crash as a status."""
    if ".ogg" not in supported_output_extensions():
        pytest.skip("this libsndfile cannot write ogg")
    target = tmp_path / "x.ogg"
    script = (
        "import sys, numpy as np\n"
        "from plutok.errors import AudioError\n"
        "from plutok.io.outputs import write_audio_checked\n"
        "try:\n"
        f"    write_audio_checked({str(target)!r}, np.zeros(22000, np.float32), 220000)\n"
        "except AudioError as error:\n"
        "    sys.exit(str(error))\n"
    )
    source = Path(outputs.__file__).parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "up to 192000 Hz, not 220000 Hz" in done.stderr
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(AudioError, match="up to 192000 Hz"):
        check_output_rate("x.OGG", 192001)
    check_output_rate("x.ogg", 192000)
    check_output_rate("x.flac", 384000)


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def fail(path, *args, **kwargs):
        Path(path).write_bytes(b"half")
        raise RuntimeError("Error : disk full")

    monkeypatch.setattr(outputs.sf, "write", fail)
    with pytest.raises(AudioError, match="could not write"):
        write_audio_checked(tmp_path / "x.ogg", np.zeros(10, np.float32), 16000)
    assert list(tmp_path.iterdir()) == []


def test_bad_audio_is_refused_and_nothing_is_written(tmp_path):
    target = tmp_path / "x.wav"
    with pytest.raises(AudioError, match="NaN"):
        write_audio_checked(target, np.array([0.0, np.nan], np.float32), 16000)
    with pytest.raises(AudioError, match="mono"):
        write_audio_checked(target, np.zeros((2, 10), np.float32), 16000)
    with pytest.raises(AudioError, match="at least one sample"):
        write_audio_checked(target, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="sample rate"):
        write_audio_checked(target, np.zeros(10, np.float32), 0)
    with pytest.raises(AudioError, match="cannot write"):
        write_audio_checked(tmp_path / "x.aac", np.zeros(10, np.float32), 16000)
    assert list(tmp_path.iterdir()) == []
