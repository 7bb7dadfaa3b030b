"""Baselines change audio but keep its length; bitrate accounting of the model system."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from plutok.errors import PlutokError
from plutok.evaluation import baselines


@pytest.mark.skipif(shutil.which("c2enc") is None, reason="codec2 not installed")
@pytest.mark.parametrize("name", ["codec2-3200", "codec2-700C", "codec2-450"])
def test_codec2_round_trip(clip, name):
    system = baselines.make_baseline(name)
    out = system.process(clip)
    assert out.audio.dtype == np.float32
    assert abs(len(out.audio) - len(clip)) <= 16000 * 0.04 * 2  # within two 40 ms frames
    assert not np.allclose(out.audio[: len(clip)], clip[: len(out.audio)], atol=1e-3)
    assert np.abs(out.audio).max() > 0.01  # not silence
    assert out.bits_per_second == system.nominal_bits_per_second


@pytest.mark.skipif(shutil.which("opusenc") is None, reason="opus-tools not installed")
def test_opus_round_trip(clip):
    out = baselines.make_baseline("opus-6k").process(clip)
    assert abs(len(out.audio) - len(clip)) <= 960 and out.bits_per_second == 6000


def test_identity_and_names(clip):
    out = baselines.IdentityBaseline().process(clip)
    np.testing.assert_array_equal(out.audio, clip)
    names = [s.name for s in baselines.parse_baselines("all")]
    assert names == list(baselines.BASELINE_NAMES)
    assert [s.name for s in baselines.parse_baselines("codec2-700c, identity")] == ["codec2-700C", "identity"]
    with pytest.raises(PlutokError, match="unknown baseline"):
        baselines.parse_baselines("mp3-128k")


def test_model_system_bitrate(clip, fake_tokenizer):
    system = baselines.ModelSystem(fake_tokenizer)
    out = system.process(clip)
    duration = len(clip) / 16000
    assert out.num_tokens == out.num_codes == len(clip) // 640
    # 16-token vocabulary -> 4 bits per token, plus 64 speaker bits per utterance.
    assert out.bits_per_second == pytest.approx((out.num_tokens * 4 + 64) / duration)
    assert system.describe()["bits_per_token"] == 4
