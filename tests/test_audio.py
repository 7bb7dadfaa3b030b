from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from plutok.audio import SpooledWaveform, load_audio, load_audio_stream, prepare_waveform, write_audio
from plutok.errors import AudioError


def test_int16_is_scaled_to_unit_range():
    wav = np.array([-32768, 0, 16384], dtype=np.int16)
    assert prepare_waveform(wav, 16000).tolist() == [-1.0, 0.0, 0.5]


def test_uint8_is_offset_binary():
    wav = np.array([0, 128, 255], dtype=np.uint8)
    np.testing.assert_allclose(prepare_waveform(wav, 8000), [-1.0, 0.0, 127 / 128])


def test_float64_and_multichannel_are_mixed_to_mono_float32():
    stereo = np.stack([np.ones(100), -np.ones(100) * 0.5], axis=1)  # (samples, channels)
    mono = prepare_waveform(stereo, 16000)
    assert mono.dtype == np.float32 and mono.shape == (100,)
    np.testing.assert_allclose(mono, 0.25)


def test_2d_audio_is_samples_by_channels_never_a_guess():
    """A (channels, samples) array or a batch of clips is refused, not averaged into one clip."""
    two_clips = np.stack([np.ones(100), -np.ones(100)])  # (2, 100): averaged, it would be silence
    with pytest.raises(AudioError, match=r"\(samples, channels\).*wav\.T.*encode_batch"):
        prepare_waveform(two_clips, 16000)
    # The soundfile layout, any number of channels up to the number of samples.
    np.testing.assert_allclose(prepare_waveform(two_clips.T, 16000), 0.0)
    assert prepare_waveform(np.ones((8, 8)), 16000).shape == (8,)


@pytest.mark.parametrize("rate", [8000, 44100, 192000])
def test_resampling_keeps_duration(rate):
    wav = np.sin(np.linspace(0, 200, rate)).astype(np.float32)  # one second
    assert abs(prepare_waveform(wav, rate, 16000).shape[0] - 16000) <= 1


@pytest.mark.parametrize(
    "wav, message",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.array([0.0, np.nan]), "NaN"),
        (np.array([0.0, np.inf]), "NaN or infinite"),
        (np.zeros((2, 2, 2)), "shape"),
        (np.array([True, False]), "boolean"),
    ],
)
def test_bad_arrays_raise_audio_error(wav, message):
    with pytest.raises(AudioError, match=message):
        prepare_waveform(wav, 16000)


def test_bad_sample_rate():
    with pytest.raises(AudioError, match="sample rate"):
        prepare_waveform(np.zeros(10), 0)


def test_bad_files(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "text.wav").write_text("this is not audio at all " * 20)
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(tmp_path / "text.wav")


def test_read_write_round_trip_flac_with_resampling(tmp_path):
    wav = (0.5 * np.sin(np.arange(8000) / 5)).astype(np.float32)
    path = write_audio(tmp_path / "tone.flac", wav, 8000)
    assert sf.info(path).samplerate == 8000
    loaded, rate = load_audio(path)
    assert rate == 8000 and np.max(np.abs(loaded - wav)) < 1e-4
    resampled, rate = load_audio(path, target_rate=16000)
    assert rate == 16000 and abs(resampled.shape[0] - 16000) <= 1
    assert not list(tmp_path.glob("*.part"))  # atomic write left no temporary file


def _wav_bytes(tmp_path, samples: int = 4000, **extra) -> bytes:
    path = tmp_path / "whole.wav"
    sf.write(path, 0.1 * np.ones(samples, np.float32), 16000, subtype="PCM_16", **extra)
    return path.read_bytes()


def test_truncated_wav_is_refused_like_a_truncated_flac(tmp_path):
    whole = _wav_bytes(tmp_path)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: len(whole) // 2])  # a copy or download that stopped half way
    with pytest.raises(
        AudioError, match=r"cut.wav: truncated WAV file: its header declares 8000 bytes of audio"
    ):
        load_audio(cut)
    # Chunks before the audio (LIST, as sox and DAWs write) are walked, not mistaken for it.
    listed = tmp_path / "listed.wav"
    info = b"LIST" + (5).to_bytes(4, "little") + b"INFO!" + b"\0"  # odd size, padded
    listed.write_bytes(whole[:36] + info + whole[36:])
    assert load_audio(listed)[0].shape == (4000,)
    listed.write_bytes(whole[:36] + info + whole[36:-2])
    with pytest.raises(AudioError, match="truncated WAV"):
        load_audio(listed)
    flac = tmp_path / "cut.flac"
    sf.write(flac, 0.1 * np.ones(16000, np.float32), 16000)
    flac.write_bytes(flac.read_bytes()[:-200])
    with pytest.raises(AudioError):
        load_audio(flac)


def test_wav_of_unknown_length_from_a_pipe_is_read(tmp_path):
    """A streaming writer puts 0xFFFFFFFF as the data size: that is no truncation."""
    whole = _wav_bytes(tmp_path)
    streamed = tmp_path / "streamed.wav"
    assert whole[36:40] == b"data"
    streamed.write_bytes(whole[:40] + (0xFFFFFFFF).to_bytes(4, "little") + whole[44:])
    assert load_audio(streamed)[0].shape == (4000,)


def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
    name = os.fsdecode(b"caf\xe9.wav")  # Latin-1 bytes on disk, as old archives have
    path = tmp_path / name
    try:
        path.write_bytes(_wav_bytes(tmp_path))
    except (UnicodeEncodeError, OSError):
        pytest.skip("this file system only takes UTF-8 names")
    wav, rate = load_audio(path)
    assert rate == 16000 and wav.shape == (4000,)


def test_a_long_file_is_spooled_with_the_same_samples(tmp_path):
    """Where ``spool_if`` says so the waveform goes to a temporary file: the same samples as
    held in memory (stereo 44.1 kHz, resampled on the way), read back by any slice."""
    rng = np.random.default_rng(5)
    stereo = (rng.standard_normal((44100 * 3 + 17, 2)) * 0.1).astype(np.float32)
    path = tmp_path / "long.flac"
    sf.write(path, stereo, 44100)
    held, rate, samples = load_audio_stream(path, 16000)
    spooled, spooled_rate, spooled_samples = load_audio_stream(path, 16000, spool_if=lambda n: n > 16000)
    assert isinstance(held, np.ndarray) and isinstance(spooled, SpooledWaveform)
    assert (rate, samples) == (spooled_rate, spooled_samples) == (44100, stereo.shape[0])
    assert spooled.shape == held.shape and len(spooled) == held.shape[0] and spooled.ndim == 1
    for index in (slice(None), slice(100, 20000), slice(-513, None), slice(40000, 90000), slice(7, 7)):
        piece = spooled[index]
        assert piece.dtype == np.float32
        np.testing.assert_array_equal(piece, held[index])
    np.testing.assert_array_equal(np.asarray(spooled), held)
    with pytest.raises(TypeError):
        spooled[5]
    with pytest.raises(TypeError):
        spooled[::2]
    # Under the limit (or with none) the file is held as before.
    assert isinstance(load_audio_stream(path, 16000, spool_if=lambda n: n > 10**6)[0], np.ndarray)
    spooled.close()


def test_spooling_without_room_is_one_clear_error(tmp_path, monkeypatch):
    """A full temporary folder is an AudioError naming TMPDIR, not an OSError traceback."""
    import plutok.audio as audio

    class FullDisk:
        def write(self, data):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    monkeypatch.setattr(audio.tempfile, "TemporaryFile", lambda **kwargs: FullDisk())
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(32000, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="TMPDIR.*No space left"):
        load_audio_stream(path, 16000, spool_if=lambda n: n > 100)
    # A temporary folder that does not exist: the same one line.
    monkeypatch.undo()
    monkeypatch.setattr(audio.tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(AudioError, match="TMPDIR"):
        load_audio_stream(path, 16000, spool_if=lambda n: n > 100)
