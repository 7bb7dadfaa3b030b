"""The codec Trainer: resuming after a kill gives exactly the weights of an uninterrupted run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(name="codec_config", scope="module")
def codec_config_fixture(tiny_content_codec):
    return tiny_content_codec(
        analysis_frames_per_code=4,  # log-mel at 100 frames/s in, 25 codes/s
        quantizer={"name": "vq", "codebook_size": 16, "dim": 4, "dead_code_steps": 2},  # resets happen
    )


def _schedule(**changes):
    from plutok.training.trainer import TrainerConfig

    values = dict(
        steps=8,
        batch_size=3,
        segment_codes=12,
        log_every=2,
        eval_every=4,
        checkpoint_every=4,
        warmup_steps=2,
        init_batches=2,
    )
    values.update(changes)
    return TrainerConfig(**values)


def test_resume_after_a_kill_equals_one_run(mel_cache, codec_config, tmp_path):
    from plutok.training.codec import train_codec

    torch.manual_seed(0)
    straight, _ = train_codec(mel_cache, tmp_path / "straight", codec_config, _schedule())
    torch.manual_seed(0)
    # The callback is the kill switch: stop after step 4 (its checkpoint is written first).
    killed, _ = train_codec(
        mel_cache, tmp_path / "killed", codec_config, _schedule(), callback=lambda step, m: step < 4
    )
    assert not (tmp_path / "killed" / "codec").exists()
    checkpoints = sorted((tmp_path / "killed" / "checkpoints").glob("*.json"))
    assert [json.loads(p.read_text())["step"] for p in checkpoints] == [4]
    torch.manual_seed(123)  # a resumed run must not depend on the global RNG
    resumed, metrics = train_codec(mel_cache, tmp_path / "killed", codec_config, _schedule(), resume=True)
    for key, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], tensor, rtol=0, atol=1e-6, msg=key)
    assert "dev_mel_l1" in metrics and np.isfinite(metrics["dev_loss"])
    # No pickles: checkpoints are safetensors + JSON.
    assert {p.suffix for p in (tmp_path / "killed" / "checkpoints").iterdir()} == {".json", ".safetensors"}


def test_train_codec_cli_defaults_come_from_the_dataclasses(capsys):
    from plutok.cli import main
    from plutok.codec.content import ContentCodecSettings
    from plutok.training.trainer import TrainerConfig

    with pytest.raises(SystemExit):
        main(["train-codec", "--help"])
    text = capsys.readouterr().out
    assert f"(default: {TrainerConfig().learning_rate})" in text
    assert f"(default: {ContentCodecSettings().channels})" in text and "--quantizer JSON" in text


def test_bf16_autocast_trains_and_keeps_the_quantizer_in_float32(mel_cache, codec_config, tmp_path):
    from plutok.training.codec import train_codec

    torch.manual_seed(0)
    codec, metrics = train_codec(
        mel_cache, tmp_path / "bf16", codec_config, _schedule(steps=4, precision="bf16")
    )
    assert np.isfinite(metrics["dev_loss"]) and np.isfinite(metrics["loss"])
    latent = torch.randn(2, 4, 6, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = codec.quantizer(latent)
    assert output.quantized.dtype == torch.float32


def test_precision_and_schedule_are_checked():
    from plutok.errors import ModelError, PlutokError
    from plutok.training.trainer import autocast_dtype

    with pytest.raises(ModelError, match="precision"):
        _schedule(precision="fp8")
    with pytest.raises(ModelError, match="log_every"):
        _schedule(log_every=0)
    with pytest.raises(PlutokError, match="CUDA"):
        autocast_dtype("fp16", torch.device("cpu"))
    assert autocast_dtype("auto", torch.device("cpu")) is None


def test_band_envelope_loss_scores_stoi_band_amplitudes():
    from plutok.training.objectives import band_envelope_loss, third_octave_bands

    bands = third_octave_bands(80)
    # STOI's 15 bands from 150 Hz to 4.3 kHz: every one holds a bin of the 80-bin mel, and
    # nothing from 4.3 kHz up (bins 64-79 of 80) counts.
    assert bands.shape == (15, 80) and bool((bands.sum(dim=1) > 0).all())
    assert float(bands[:, 64:].sum()) == 0 and float(bands[:, 63].sum()) > 0
    torch.manual_seed(0)
    target = torch.randn(2, 80, 120)
    mask = torch.ones(2, 120)
    scale, offset = torch.full((2, 80, 1), 0.5), torch.full((2, 80, 1), -2.0)

    def loss(prediction, wanted=target, frame_mask=mask):
        return float(band_envelope_loss(prediction, wanted, frame_mask, scale, offset, bands))

    assert loss(target) == pytest.approx(0.0, abs=1e-5)
    # A gain (a constant in log magnitude) does not change a correlation.
    assert loss(target + 1.0 / 0.5) == pytest.approx(0.0, abs=1e-5)
    wrong = loss(target.flip(-1))
    assert 0.3 < wrong < 1.7
    # What is above 4.3 kHz, and frames 40 dB below the loudest, do not count.
    high = target.clone()
    high[:, 64:] = torch.randn(2, 16, 120)
    assert loss(high) == pytest.approx(0.0, abs=1e-5)
    quiet = target.clone()
    quiet[..., 60:] -= 40.0  # 40 / 0.5 * 0.5 = 20 nepers: far below -40 dB
    wrong_when_quiet = quiet.clone()
    wrong_when_quiet[..., 80:] = wrong_when_quiet[..., 80:].flip(-1)
    assert loss(wrong_when_quiet, quiet) == pytest.approx(0.0, abs=1e-5)
    padded = mask.clone()
    padded[:, 60:] = 0
    assert loss(target.flip(-1), frame_mask=padded) > 0.3
    assert loss(target.flip(-1), frame_mask=torch.zeros(2, 120)) == 0


def test_envelope_loss_scores_the_shape_of_band_trajectories():
    from plutok.training.objectives import ENVELOPE_FRAMES, envelope_loss

    torch.manual_seed(0)
    target = torch.randn(2, 5, 90)
    mask = torch.ones(2, 90)
    assert float(envelope_loss(target, target, mask)) == pytest.approx(0.0, abs=1e-6)
    # Level and scale do not matter, only the shape: that is what L1 does not score.
    assert float(envelope_loss(0.5 * target + 3.0, target, mask)) == pytest.approx(0.0, abs=1e-5)
    assert float(envelope_loss(-target, target, mask)) == pytest.approx(2.0, abs=1e-5)
    unrelated = float(envelope_loss(torch.randn(2, 5, 90), target, mask))
    assert 0.5 < unrelated < 1.5
    # Silence (normalised level near -3) and padding are left out: only the speech half counts.
    silent = target.clone()
    silent[..., 45:] = -3.0 + 0.1 * torch.randn(2, 5, 45)
    wrong_in_silence = silent.clone()
    wrong_in_silence[..., 60:] = -wrong_in_silence[..., 60:]
    assert float(envelope_loss(wrong_in_silence, silent, mask)) == pytest.approx(0.0, abs=1e-5)
    padded = mask.clone()
    padded[:, 45:] = 0
    assert float(envelope_loss(-target, target, padded)) == pytest.approx(2.0, abs=1e-5)
    assert (
        float(envelope_loss(target[..., : ENVELOPE_FRAMES - 1], -target[..., : ENVELOPE_FRAMES - 1], mask))
        == 0
    )


def test_fine_tuning_the_decoder_keeps_the_codes(mel_cache, codec_config, tmp_path, speech_like):
    from plutok.errors import ModelError
    from plutok.training.codec import train_codec

    torch.manual_seed(0)
    base, _ = train_codec(mel_cache, tmp_path / "base", codec_config, _schedule(steps=4))
    tuned_config = {**codec_config, "envelope_weight": 1.0}
    tuned, metrics = train_codec(
        mel_cache,
        tmp_path / "tuned",
        tuned_config,
        _schedule(steps=4),
        init_from=tmp_path / "base" / "codec",
        freeze_codes=True,
    )
    assert "envelope" in metrics and np.isfinite(metrics["dev_envelope"])
    before, after = base.state_dict(), tuned.state_dict()
    for key in before:
        # The standardisation buffers are fixed by training data, never trained.
        fixed = key.startswith(("encoder", "to_latent", "quantizer", "analysis_", "speaker_"))
        assert torch.equal(before[key], after[key]) == fixed, key
    analysis = torch.randn(2, base.input_dim, 40)
    assert torch.equal(base.encode_tensor(analysis), tuned.encode_tensor(analysis))
    codes = base.encode_tensor(analysis)
    assert not torch.equal(base.decode_tensor(codes, None), tuned.decode_tensor(codes, None))
    # The loss weight is saved when it is used, and left out at 0 (fingerprints of old models).
    assert tuned.config()["envelope_weight"] == 1.0 and "envelope_weight" not in base.config()
    with pytest.raises(ModelError, match="init_from"):
        train_codec(mel_cache, tmp_path / "fresh", codec_config, _schedule(steps=1), freeze_codes=True)
    _swap_decoder_keeps_the_token_ids(mel_cache, tmp_path, speech_like(1.5, seed=3))
    with pytest.raises(ModelError, match="no codec.safetensors"):
        train_codec(mel_cache, tmp_path / "none", codec_config, _schedule(steps=1), init_from=tmp_path)


def _swap_decoder_keeps_the_token_ids(mel_cache, tmp_path, wav):
    """``replace_decoder``: the tuned decoder in the base model, same token ids, new fingerprint."""
    from plutok.api import Plutok
    from plutok.errors import ModelError
    from plutok.training.assemble import assemble_model, replace_decoder
    from plutok.training.codec import train_codec

    base = assemble_model(mel_cache, tmp_path / "base" / "codec", tmp_path / "base-model", 24, progress=False)
    replace_decoder(tmp_path / "base-model", tmp_path / "tuned" / "codec", tmp_path / "tuned-model", {"n": 1})
    tuned = Plutok.from_pretrained(tmp_path / "tuned-model")
    ids = base.encode(wav, 16000).ids
    assert tuned.encode(wav, 16000).ids == ids
    assert tuned.fingerprint != base.fingerprint and tuned.parts.metadata["n"] == 1
    speaker = base.encode(wav, 16000).speaker
    assert not np.allclose(base.decode_ids(ids, speaker)[0], tuned.decode_ids(ids, speaker)[0])
    codec_config = json.loads((tmp_path / "base" / "codec" / "config.json").read_text())["codec"]
    train_codec(mel_cache, tmp_path / "other", codec_config, _schedule(steps=2, seed=5))
    with pytest.raises(ModelError, match="other codes"):
        replace_decoder(tmp_path / "base-model", tmp_path / "other" / "codec", tmp_path / "x")
    # Codes that moved keep the base model's BPE with bpe_from: same vocabulary and voice.
    kept = assemble_model(
        mel_cache,
        tmp_path / "other" / "codec",
        tmp_path / "kept",
        24,
        progress=False,
        bpe_from=tmp_path / "base-model",
    )
    assert kept.parts.bpe.tokenizer.to_str() == base.parts.bpe.tokenizer.to_str()
    assert kept.parts.default_speaker == base.parts.default_speaker and kept.fingerprint != base.fingerprint


@pytest.mark.parametrize(
    "changes, new_parts",
    [
        (
            {"decoder_blocks": 2, "upsampled_blocks": 3},
            ["decoder.blocks.1", "upsampled.blocks.1", "upsampled.blocks.2"],
        ),
        ({"ctc_weight": 0.3, "phoneme_symbols": ["a", "b"]}, ["phoneme", "phoneme_in", "to_phonemes"]),
    ],
    ids=["grown-decoder", "new-phoneme-head"],
)
def test_new_parts_start_from_the_saved_codecs_output(tiny_content_codec, tmp_path, changes, new_parts):
    """Added decoder blocks start as the identity and a new CTC head fresh: same decoded output."""
    from plutok import registry
    from plutok.errors import ModelError
    from plutok.training.codec import start_from

    torch.manual_seed(0)
    dims = {"input_dim": 6, "output_dim": 5, "speaker_dim": 3}
    small = registry.build("codec", tiny_content_codec(**dims))
    small.save_weights(tmp_path)
    grown = registry.build("codec", tiny_content_codec(**dims, **changes))
    assert start_from(grown, tmp_path / "codec.safetensors") == new_parts
    codes, speaker = torch.randint(0, 16, (2, 9)), torch.randn(2, 3)
    torch.testing.assert_close(grown.decode_tensor(codes, speaker), small.decode_tensor(codes, speaker))
    wider = registry.build("codec", tiny_content_codec(**dims, channels=24))
    with pytest.raises(ModelError, match="cannot start this codec: .*wrong shapes"):
        start_from(wider, tmp_path / "codec.safetensors")


def test_a_codec_grows_its_codebook_from_a_saved_one(mel_cache, codec_config, tmp_path):
    """``init_from`` a codec with fewer codes: everything else loads, k-means starts the new codebook."""
    from plutok.errors import ModelError
    from plutok.training.codec import train_codec

    torch.manual_seed(0)
    base, _ = train_codec(mel_cache, tmp_path / "base", codec_config, _schedule(steps=2))
    size = codec_config["quantizer"]["codebook_size"]
    grown_config = {
        **codec_config,
        "quantizer": {**codec_config["quantizer"], "codebook_size": 2 * size},
        "band_envelope_weight": 1.0,
    }
    grown, metrics = train_codec(
        mel_cache, tmp_path / "grown", grown_config, _schedule(steps=1), init_from=tmp_path / "base" / "codec"
    )
    assert grown.quantizer.codebook.shape[0] == 2 * size
    assert np.isfinite(metrics["band_envelope"]) and np.isfinite(metrics["dev_band_envelope"])
    assert grown.config()["band_envelope_weight"] == 1.0 and "band_envelope_weight" not in base.config()
    # One step at the schedule's first learning rate barely moves the encoder; its k-means
    # codebook is not a copy of the saved one.
    assert torch.allclose(grown.encoder.encoder_in.weight, base.encoder.encoder_in.weight, atol=1e-2)
    assert not torch.allclose(grown.quantizer.codebook[:size], base.quantizer.codebook)
    with pytest.raises(ModelError, match="cannot change the number of codes"):
        train_codec(
            mel_cache,
            tmp_path / "frozen",
            grown_config,
            _schedule(steps=1),
            init_from=tmp_path / "base" / "codec",
            freeze_codes=True,
        )


def test_the_real_weight_favours_real_speech_in_the_draw(tmp_path, small_cache):
    from plutok import registry
    from plutok.training.cache import FeatureCache
    from plutok.training.data import SegmentBatcher

    clips = [{"seconds": 1.0, "seed": 1, "kind": "real"}, {"seconds": 1.0, "seed": 2, "kind": "synthetic"}]
    frontend = {"name": "log-mel", "normalize_by_speaker": True}
    cache = FeatureCache(
        small_cache(tmp_path, clips, frontend, {"name": "mel-statistics", "coefficients": 4})
    )
    speaker = registry.build("speaker", cache.config["speaker"])
    train = cache.utterances("train")
    real = torch.from_numpy(next(u for u in train if u.kind == "real").speaker)

    def real_share(kind_weights):
        batch = SegmentBatcher(train, speaker, 5, 4, 4, seed=0, kind_weights=kind_weights).sample(400)
        return float((batch.speaker == real).all(dim=1).float().mean())

    # Equal lengths: half the rows without a mix, three quarters when real counts 3 times.
    assert 0.43 < real_share(None) < 0.57
    assert 0.68 < real_share({"real": 3.0}) < 0.82
    from plutok.errors import ModelError
    from plutok.training.trainer import TrainerConfig

    with pytest.raises(ModelError, match="real_weight"):
        TrainerConfig(real_weight=0.0)


def test_the_seed_alone_fixes_the_run(mel_cache, codec_config, tmp_path):
    # train-codec --seed 0 twice gave different weights: the initialisation drew from
    # whatever state the global generators were in.
    import random

    from plutok.training.codec import train_codec

    runs = []
    for index, seed in enumerate((0, 0, 1)):
        torch.manual_seed(100 + index)  # other global states before every run
        np.random.seed(200 + index)
        random.seed(300 + index)
        codec, _ = train_codec(
            mel_cache, tmp_path / f"run{index}", codec_config, _schedule(steps=2, seed=seed)
        )
        runs.append(codec.state_dict())
    for key, tensor in runs[0].items():
        torch.testing.assert_close(runs[1][key], tensor, rtol=0, atol=0, msg=key)
    assert any(not torch.equal(runs[2][key], tensor) for key, tensor in runs[0].items())
