from __future__ import annotations

import numpy as np
import pytest

from plutok.errors import AudioError, ModelError
from plutok.legacy.backbones import MelBackbone, backbone_from_config
from plutok.legacy.backbones.mel import slaney_mel_filterbank


@pytest.fixture(scope="module")
def backbone() -> MelBackbone:
    return MelBackbone()


def test_filterbank_is_slaney():
    filters = slaney_mel_filterbank(16000, 1024, 80, 0.0, 8000.0)
    assert filters.shape == (80, 513) and filters.min() >= 0
    peaks = filters.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0)  # centres rise with the filter index
    # Slaney scale is linear below 1 kHz (66.67 Hz per mel): 0..8 kHz is 45.25 mel, so the low
    # filters are 45.25 / 81 mel = 37.2 Hz = 2.38 FFT bins apart.
    np.testing.assert_allclose(np.diff(peaks[1:12]).mean(), 2.38, atol=0.15)
    # Slaney area normalisation: each filter integrates (in Hz) to about 1.
    areas = filters.sum(axis=1) * (16000 / 1024)
    np.testing.assert_allclose(areas[5:], 1.0, rtol=0.1)


def test_frame_count_and_shapes(backbone, speech_like):
    wav = speech_like(1.0)
    features, speaker = backbone.analyze(wav)
    assert features.shape == (80, 100) and speaker.shape == (160,)
    assert backbone.frames_per_second == 100.0
    np.testing.assert_allclose(backbone.features(wav, backbone.speaker_embedding(wav)), features)


def test_features_do_not_depend_on_gain(backbone, speech_like):
    wav = speech_like(1.0)
    quiet, speaker_quiet = backbone.analyze(0.25 * wav)
    loud, speaker_loud = backbone.analyze(wav)
    # The level moved into the speaker vector (up to the 1e-9 magnitude floor in quiet bins).
    np.testing.assert_allclose(quiet, loud, atol=1e-2)
    # A gain adds log(4) to every bin of the mean: only the DC coefficient of its DCT moves.
    shift = speaker_loud[:80] - speaker_quiet[:80]
    np.testing.assert_allclose(shift[0], np.log(4.0) * np.sqrt(80), atol=1e-2)
    np.testing.assert_allclose(shift[1:], 0.0, atol=1e-2)


def test_smoothed_speaker_vector(speech_like):
    smooth = MelBackbone(speaker_coefficients=12)
    wav = speech_like(1.0)
    features, speaker = smooth.analyze(wav)
    assert speaker.shape == (24,) and smooth.speaker_dim == 24
    log_mel = smooth.log_mel(wav)
    np.testing.assert_allclose(smooth.denormalize(features, speaker), log_mel, atol=1e-4)
    # A smoothed mean still centres the features roughly (they are not exactly zero-mean).
    assert abs(float(features.mean())) < 0.5


def test_normalisation_is_invertible(backbone, speech_like):
    wav = speech_like(0.5)
    log_mel = backbone.log_mel(wav)
    speaker = backbone.speaker_embedding(wav)
    np.testing.assert_allclose(
        backbone.denormalize(backbone.normalize(log_mel, speaker), speaker), log_mel, atol=1e-4
    )


def test_silence_gives_finite_features(backbone):
    features, speaker = backbone.analyze(np.zeros(16000, np.float32))
    assert np.isfinite(features).all() and np.isfinite(speaker).all()


def test_errors(backbone, speech_like):
    with pytest.raises(AudioError, match="too short"):
        backbone.log_mel(np.zeros(100, np.float32))
    with pytest.raises(ModelError, match="speaker vector"):
        backbone.features(speech_like(0.2), np.zeros(10, np.float32))


def test_config_round_trip(backbone):
    rebuilt = backbone_from_config(backbone.config())
    assert isinstance(rebuilt, MelBackbone) and rebuilt.config() == backbone.config()


@pytest.mark.slow
def test_copy_synthesis_keeps_length_and_spectrum(backbone, speech_like):
    wav = speech_like(1.0)
    features, speaker = backbone.analyze(wav)
    out = backbone.synthesize(features, speaker)
    assert out.shape == (16000,) and out.dtype == np.float32
    # Re-analysing the vocoder output gives back nearly the same log-mel.
    error = np.abs(backbone.log_mel(out) - backbone.log_mel(wav))
    assert np.median(error) < 0.5
