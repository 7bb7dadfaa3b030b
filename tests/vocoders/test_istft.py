"""The fast iSTFT vocoder: exact STFT pair, chunking, saving, distillation training and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from plutok import registry
from plutok.errors import ModelError
from plutok.vocoders.istft import ISTFTVocoder, ISTFTVocoderSettings, istft_same, stft_same

TINY = ISTFTVocoderSettings(channels=16, blocks=2, expansion=2)


def test_the_stft_pair_is_an_exact_inverse_with_frames_on_the_log_mel_grid():
    window = torch.hann_window(640)
    wave = torch.randn(2, 4800)
    spectrum = stft_same(wave, 640, 160, window)
    assert spectrum.shape == (2, 321, 30)  # one frame per 160 samples, like the log-mel
    torch.testing.assert_close(istft_same(spectrum, 640, 160, window), wave, rtol=0, atol=1e-5)


def test_chunked_synthesis_equals_one_pass_and_has_the_hop_length():
    torch.manual_seed(0)
    vocoder = ISTFTVocoder(TINY)
    log_mel = np.random.default_rng(0).normal(-5, 2, size=(80, 437)).astype(np.float32)
    whole = vocoder.synthesize(log_mel)
    assert whole.shape == (437 * 160,) and np.isfinite(whole).all()
    np.testing.assert_allclose(vocoder.synthesize(log_mel, chunk_frames=100), whole, rtol=0, atol=1e-5)
    with pytest.raises(ModelError, match="expected log-mel"):
        vocoder.synthesize(log_mel[:40])


def test_weights_save_load_and_the_digest_follows_them(tmp_path):
    torch.manual_seed(1)
    vocoder = ISTFTVocoder(TINY)
    vocoder.save_weights(tmp_path)
    loaded = registry.build("vocoder", vocoder.config(), tmp_path)
    assert loaded.weights_digest() == vocoder.weights_digest()
    log_mel = np.full((80, 50), -4.0, dtype=np.float32)
    np.testing.assert_array_equal(loaded.synthesize(log_mel), vocoder.synthesize(log_mel))
    with torch.no_grad():
        loaded.net.head.bias.add_(1.0)
    assert loaded.weights_digest() != vocoder.weights_digest()
    with pytest.raises(ModelError, match="does not match"):
        registry.build("vocoder", {**vocoder.config(), "channels": 32}, tmp_path)


@pytest.fixture(scope="module")
def teacher_set(tmp_path_factory, small_cache):
    from plutok.training.vocoder import build_teacher_set

    root = tmp_path_factory.mktemp("vocoder")
    clips = [
        {"seconds": 0.6 + 0.1 * index, "seed": 30 + index, "kind": "real" if index % 2 else "formant"}
        for index in range(6)
    ]
    small_cache(root, clips, {"name": "log-mel", "normalize_by_speaker": False}, {"name": "mel-statistics"})
    summary = build_teacher_set(root / "cache", root / "teacher", 1.0, 1.0, progress=False)
    assert summary["utterances"] == 6 and summary["added"] == 6
    # Rerunning adds nothing (resumable), other settings are refused.
    assert build_teacher_set(root / "cache", root / "teacher", 1.0, 1.0, progress=False)["added"] == 0
    with pytest.raises(ModelError, match="other settings"):
        build_teacher_set(root / "cache", root / "teacher", 2.0, 1.0, progress=False)
    return root / "teacher"


def test_teacher_waves_are_the_packaged_hifigan_of_the_cached_log_mel(teacher_set):
    from plutok.training.vocoder import TeacherSet
    from plutok.vocoders.hifigan import PackagedHiFiGAN

    teacher = TeacherSet(teacher_set)
    log_mel = np.asarray(teacher.mel(0), dtype=np.float32)
    expected = PackagedHiFiGAN().synthesize(log_mel)
    assert teacher.wave(0).shape == (log_mel.shape[1] * 160,)
    np.testing.assert_allclose(teacher.wave(0), expected, rtol=0, atol=2e-3)  # stored float16


def test_training_resumes_exactly_and_the_vocoder_goes_into_a_model(teacher_set, tmp_path):
    from plutok import Plutok
    from plutok.settings import TrainerConfig
    from plutok.training.assemble import replace_vocoder
    from plutok.training.vocoder import train_vocoder

    schedule = TrainerConfig(
        steps=6, batch_size=2, segment_codes=24, log_every=2, eval_every=6, checkpoint_every=3, warmup_steps=1
    )
    straight, metrics = train_vocoder(teacher_set, tmp_path / "straight", TINY, schedule, dev_utterances=2)
    assert np.isfinite(metrics["dev_loss"]) and "dev_multi_resolution" in metrics
    train_vocoder(
        teacher_set, tmp_path / "killed", TINY, schedule, dev_utterances=2, callback=lambda step, m: step < 4
    )
    assert not (tmp_path / "killed" / "vocoder").exists()
    resumed, _ = train_vocoder(
        teacher_set, tmp_path / "killed", TINY, schedule, resume=True, dev_utterances=2
    )
    for key, tensor in straight.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[key], tensor, rtol=0, atol=1e-6, msg=key)
    config = json.loads((tmp_path / "straight" / "vocoder" / "config.json").read_text())
    assert config["vocoder"]["name"] == "istft-16k"

    default = Plutok.from_pretrained()
    swapped = replace_vocoder(None, tmp_path / "straight" / "vocoder", tmp_path / "model")
    assert swapped.vocoder.name == "istft-16k" and swapped.fingerprint != default.fingerprint
    again = Plutok.from_pretrained(tmp_path / "model")
    assert again.fingerprint == swapped.fingerprint
    ids = default.bpe.encode(np.arange(40) % default.codebook_size)
    wav, rate = again.decode_ids(ids)
    assert rate == 16000 and wav.shape == (40 * 640,) and np.isfinite(wav).all()
