"""Long audio in bounded memory: every stage of encoding reads the waveform block by block.

With ``chunk_seconds`` the speaker statistics are streamed over log-mel blocks, the
frontend's analysis arrives in blocks and the codec reads one window at a time, so
nothing as long as the recording is built; a file longer than one chunk is not even
held (it is spooled to a temporary file and read back by slices). The tokens and the
speaker vector equal one pass bit for bit. (Peak memory is measured, not
unit-tested: docs/benchmarks.md, "Long audio".)
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from plutok import encode_path
from plutok.api import Plutok
from plutok.audio import SpooledWaveform
from plutok.speaker.mel_statistics import MelStatisticsSpeaker


def _varied_speech(speech_like, seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like pieces of varied loudness (and a near-silent one), ``seconds`` long in all."""
    rng = np.random.default_rng(seed)
    pieces, total = [], 0
    while total < seconds * 16000:
        piece = speech_like(float(rng.uniform(0.5, 2.5)), seed=int(rng.integers(1000)))
        gain = 1e-4 if len(pieces) == 2 else rng.uniform(0.2, 1.5)
        pieces.append((piece * gain).astype(np.float32))
        total += piece.shape[0]
    return np.concatenate(pieces)[: int(seconds * 16000)]


@pytest.mark.parametrize("held_blocks", [0, 2, 10])
def test_streamed_speaker_statistics_equal_the_whole_log_mel(speech_like, monkeypatch, held_blocks):
    """Blocks held between passes or recomputed for each pass: the same vector to the bit."""
    import plutok.frontends.mel as mel
    import plutok.speaker.mel_statistics as statistics

    monkeypatch.setattr(mel, "ANALYSIS_BLOCK_FRAMES", 97)
    monkeypatch.setattr(statistics, "ANALYSIS_BLOCK_FRAMES", 97)
    monkeypatch.setattr(statistics, "_HELD_BLOCKS", held_blocks)
    speaker = MelStatisticsSpeaker(coefficients=16)
    wav = _varied_speech(speech_like, 6.03)
    log_mel = speaker.log_mel(wav)
    assert log_mel.shape[1] > 5 * 97
    np.testing.assert_array_equal(speaker.embed(wav), speaker.from_log_mel(log_mel))


def test_chunked_encoding_never_builds_the_whole_analysis(tiny_model_dir, speech_like, monkeypatch):
    """The codec sees windows of one chunk plus context, and the frontend is never asked
    for the whole utterance's features; the codes are those of one pass."""
    wav = _varied_speech(speech_like, 5.0)
    reference = Plutok.from_pretrained(tiny_model_dir, chunk_seconds=None).encode(wav, 16000)
    chunked = Plutok.from_pretrained(tiny_model_dir, chunk_seconds=0.3)
    codec = chunked.codec
    widths: list[int] = []
    encode = codec.encode
    monkeypatch.setattr(
        codec, "encode", lambda analysis: widths.append(analysis.shape[1]) or encode(analysis)
    )

    def whole_analysis(*args, **kwargs):
        raise AssertionError("the whole analysis was built")

    monkeypatch.setattr(chunked.frontend, "analyze", whole_analysis)
    monkeypatch.setattr(chunked.frontend, "analyze_batch", whole_analysis)
    encoding = chunked.encode(wav, 16000)
    assert encoding.ids == reference.ids
    np.testing.assert_array_equal(encoding.speaker, reference.speaker)
    window = chunked.chunk_codes * codec.analysis_frames_per_code + 2 * codec.encoder_context
    assert len(widths) > 3 and max(widths) <= window


def test_files_long_and_short_keep_their_order_and_codes(tiny_model_dir, speech_like, tmp_path):
    """Long files are encoded on their own, between batches of short ones and errors: the
    results come in input order and equal one-by-one encoding."""
    tok = Plutok.from_pretrained(tiny_model_dir, chunk_seconds=0.5)
    lengths = {"a": 0.4, "b": 3.0, "c": 0.3, "e": 2.2, "f": 0.45}
    paths = []
    for name, seconds in lengths.items():
        sf.write(tmp_path / f"{name}.wav", _varied_speech(speech_like, seconds, seed=len(paths)), 16000)
        paths.append(tmp_path / f"{name}.wav")
    paths.insert(3, tmp_path / "missing.wav")
    streamed = [
        encode_path.streams(tok.parts, int(lengths[p.stem] * 16000), tok.chunk_codes)
        for p in paths
        if p.stem in lengths
    ]
    assert streamed == [False, True, False, True, False]
    results = list(tok.encode_files(paths, progress=False, batch_size=2))
    assert [path for path, _ in results] == paths
    one_pass = Plutok.from_pretrained(tiny_model_dir, chunk_seconds=None)
    for path, result in results:
        if path.stem == "missing":
            assert "no such file" in str(result)
        else:
            assert result.ids == one_pass.encode_file(path).ids, path.name


def _count_spooled_reads(monkeypatch) -> list[int]:
    """Patch :class:`SpooledWaveform` to record the length of every read; reading it whole fails."""
    lengths: list[int] = []
    read = SpooledWaveform.__getitem__

    def recorded(self, index):
        piece = read(self, index)
        lengths.append(piece.shape[0])
        return piece

    def whole(self, *args, **kwargs):
        raise AssertionError("the spooled waveform was read whole")

    monkeypatch.setattr(SpooledWaveform, "__getitem__", recorded)
    monkeypatch.setattr(SpooledWaveform, "__array__", whole)
    monkeypatch.setattr(encode_path, "_PEAK_BLOCK", 4096)  # 1 << 20 would be a whole test file
    return lengths


def test_a_long_file_is_never_held_whole(tiny_model_dir, speech_like, tmp_path, monkeypatch):
    """A file longer than one chunk is spooled to disk and every stage (speaker statistics,
    frontend, silence check) reads it a block at a time; the tokens are those of one pass."""
    import plutok.frontends.mel as mel
    import plutok.speaker.mel_statistics as statistics

    monkeypatch.setattr(mel, "ANALYSIS_BLOCK_FRAMES", 97)
    monkeypatch.setattr(statistics, "ANALYSIS_BLOCK_FRAMES", 97)
    monkeypatch.setattr(statistics, "_HELD_BLOCKS", 2)  # recompute the log-mel for each pass
    wav = _varied_speech(speech_like, 12.0, seed=7)
    path = tmp_path / "long.wav"
    sf.write(path, wav, 16000, subtype="FLOAT")
    reference = Plutok.from_pretrained(tiny_model_dir, chunk_seconds=None).encode_file(path)
    lengths = _count_spooled_reads(monkeypatch)
    [(_, encoding)] = Plutok.from_pretrained(tiny_model_dir, chunk_seconds=0.5).encode_files(
        [path], progress=False
    )
    assert encoding.ids == reference.ids
    np.testing.assert_array_equal(encoding.speaker, reference.speaker)
    assert encoding.num_samples == wav.shape[0] and encoding.silent == reference.silent
    assert len(lengths) > 20 and max(lengths) < wav.shape[0] // 8


@pytest.mark.slow
def test_default_model_chunked_encoding_equals_one_pass(speech_like):
    """The default model (Whisper + log-mel stack): chunks shorter than, equal to and longer
    than a Whisper window, and a length that is no whole number of frames (end padding)."""
    pytest.importorskip("ctranslate2")
    try:
        one_pass = Plutok.from_pretrained(chunk_seconds=None)
    except Exception as error:  # the Whisper weights' packages are missing
        pytest.skip(f"default model unavailable: {error}")
    wav = _varied_speech(speech_like, 45.37, seed=3)  # 1135 frames: the last log-mel frames padded
    reference = one_pass.encode(wav, 16000)
    assert len(reference.ids) > 100
    for chunk_seconds in (1.3, 8.0, 30.0):
        chunked = Plutok.from_pretrained(chunk_seconds=chunk_seconds)
        encoding = chunked.encode(wav, 16000)
        assert encoding.ids == reference.ids, chunk_seconds
        np.testing.assert_array_equal(encoding.speaker, reference.speaker)


@pytest.mark.slow
def test_default_model_reads_a_long_file_by_windows(speech_like, tmp_path, monkeypatch):
    """The default model (Whisper windows, log-mel blocks, the stack re-cutting both) on a
    spooled file: read by slices only, and the tokens of one pass."""
    pytest.importorskip("ctranslate2")
    import plutok.frontends.mel as mel
    import plutok.speaker.mel_statistics as statistics

    try:
        one_pass = Plutok.from_pretrained(chunk_seconds=None)
    except Exception as error:  # the Whisper weights' packages are missing
        pytest.skip(f"default model unavailable: {error}")
    monkeypatch.setattr(mel, "ANALYSIS_BLOCK_FRAMES", 1000)  # 10 s log-mel blocks
    monkeypatch.setattr(statistics, "ANALYSIS_BLOCK_FRAMES", 1000)
    wav = _varied_speech(speech_like, 61.3, seed=8)
    path = tmp_path / "long.flac"
    sf.write(path, wav, 16000)
    reference = one_pass.encode_file(path)
    lengths = _count_spooled_reads(monkeypatch)
    [(_, encoding)] = Plutok.from_pretrained(chunk_seconds=8.0).encode_files([path], progress=False)
    assert encoding.ids == reference.ids
    np.testing.assert_array_equal(encoding.speaker, reference.speaker)
    assert len(lengths) > 10 and max(lengths) < wav.shape[0] // 4


@pytest.mark.slow
@pytest.mark.parametrize("compute_type", ["int8", "float32"])
def test_whisper_blocks_join_to_the_analysis(speech_like, monkeypatch, compute_type):
    """One window per block against all four windows in one batch: the same features."""
    pytest.importorskip("ctranslate2")
    import plutok.frontends.whisper as whisper

    frontend = whisper.WhisperEncoderFrontend(whisper.WhisperSettings(compute_type=compute_type))
    try:
        frontend.weights_digest()
    except Exception as error:
        pytest.skip(f"Whisper base weights unavailable: {error}")
    wav = _varied_speech(speech_like, 27.31, seed=4)
    reference = frontend.analyze(wav)  # 4 windows in one batch
    monkeypatch.setattr(whisper, "_BLOCK_WINDOWS", 1)
    blocks = list(frontend.analysis_blocks(wav))
    assert len(blocks) == 4
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), reference)


@pytest.mark.parametrize("stft_frames", [1000, 7])
def test_spectrum_in_pieces_equals_one_call(speech_like, monkeypatch, stft_frames):
    """The log-mel takes its spectrum a few frames at a time (bounded transients): the same
    values as one STFT call per block, bit for bit (so tokens do not change)."""
    import plutok.frontends.mel as mel

    wav = _varied_speech(speech_like, 61.7, seed=5)  # one full block and a partial one
    log_mel = mel.LogMel()
    monkeypatch.setattr(mel, "_STFT_FRAMES", 10**9)
    reference = log_mel(wav)
    monkeypatch.setattr(mel, "_STFT_FRAMES", stft_frames)
    np.testing.assert_array_equal(log_mel(wav), reference)
