"""Metrics: perfect on identical audio, poor on noise; alignment; text normaliser and WER/CER."""

from __future__ import annotations

import numpy as np
import pytest

from plutok.errors import PlutokError
from plutok.evaluation import extras, metrics


@pytest.mark.parametrize("lag", [0, 37, -120, 1500])
def test_align_finds_known_lag(clip, lag):
    delayed = np.concatenate([np.zeros(lag, np.float32), clip]) if lag >= 0 else clip[-lag:]
    assert metrics.estimate_lag(clip, delayed, 4000) == lag
    aligned, found = metrics.align(clip, delayed, 4000)
    assert found == lag and aligned.shape == clip.shape
    valid = slice(max(0, -lag), None)  # an advanced signal lost its first -lag samples
    np.testing.assert_allclose(aligned[valid], clip[valid], atol=1e-6)


def test_align_silence_and_length_mismatch(clip):
    aligned, lag = metrics.align(clip, np.zeros(10, np.float32))
    assert lag == 0 and aligned.shape == clip.shape and not aligned.any()


def test_stoi_pesq_identical_vs_noise(clip):
    pytest.importorskip("pystoi")
    pytest.importorskip("pesq")
    noise = np.random.default_rng(0).standard_normal(len(clip)).astype(np.float32) * 0.1
    assert metrics.stoi(clip, clip) == pytest.approx(1.0, abs=1e-6)
    assert metrics.pesq_wb(clip, clip) > 4.4
    assert metrics.stoi(clip, noise) < 0.6
    assert metrics.pesq_wb(clip, noise) < 1.5


def test_speaker_similarity_identical(clip):
    pytest.importorskip("resemblyzer")
    assert metrics.speaker_similarity(clip, clip) == pytest.approx(1.0, abs=1e-4)
    noise = np.random.default_rng(1).standard_normal(len(clip)).astype(np.float32) * 0.1
    assert metrics.speaker_similarity(clip, noise) < 0.9


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("  don't   STOP—now. ", "dont stop now"),
        ("Straße «Ünïcode»", "strasse ünïcode"),
        ("Привет, мир!", "привет мир"),
        ("twenty-one", "twenty one"),
        ("नमस्ते दुनिया।", "नमस्ते दुनिया"),
        ("?!...", ""),
    ],
)
def test_normalize_text(text, expected):
    assert metrics.normalize_text(text) == expected


def test_error_counts_words_and_chars():
    pytest.importorskip("jiwer")
    counts = metrics.error_counts("The cat sat.", "the cat sat")
    assert counts.wer == 0.0 and counts.cer == 0.0
    counts = metrics.error_counts("the cat sat", "the bat")
    assert (counts.word_errors, counts.words) == (2, 3)
    assert counts.char_errors == 5 and counts.chars == 11  # c->b, then " sat" deleted
    empty = metrics.error_counts("one two", "")
    assert empty.wer == 1.0 and empty.cer == 1.0


def test_error_counts_spaceless_language():
    pytest.importorskip("jiwer")
    counts = metrics.error_counts("今日は 良い天気", "今日は良い天気です", language="ja")
    assert counts.wer is None and counts.words is None
    assert (counts.char_errors, counts.chars) == (2, 7)


def test_missing_extra_is_a_clear_error():
    with pytest.raises(PlutokError, match=r"pip install plutok\[eval\]"):
        extras.require("no_such_module_plutok", "a metric")
    with pytest.raises(PlutokError, match="apt-get install"):
        extras.require_tool("no-such-program-plutok", "some-package")


def test_align_finds_the_lag_of_a_signal_with_other_phase(clip):
    """A vocoder's output has its own phase: waveform correlation fails, envelopes do not."""
    rng = np.random.default_rng(0)
    # Same magnitudes per 512-sample frame, random phases: what a vocoder could make of the clip.
    frames = clip[: len(clip) // 512 * 512].reshape(-1, 512)
    phases = np.exp(2j * np.pi * rng.random((frames.shape[0], 257)))
    rephased = np.fft.irfft(np.abs(np.fft.rfft(frames, axis=1)) * phases, 512, axis=1)
    other_phase = rephased.reshape(-1).astype(np.float32)
    delayed = np.concatenate([np.zeros(160, np.float32), other_phase])
    _, found = metrics.align(clip[: other_phase.size], delayed)
    assert abs(found - 160) <= 40  # within 2.5 ms; STOI frames are 25.6 ms
