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


@pytest.fixture(scope="module")
def mel_cache(tmp_path_factory, small_cache):
    clips = [
        {"seconds": 1.0 + 0.3 * index, "seed": 10 + index, "split": "train" if index < 4 else "dev"}
        for index in range(5)
    ]
    frontend = {"name": "log-mel", "normalize_by_speaker": True}
    return small_cache(
        tmp_path_factory.mktemp("trainer"), clips, frontend, {"name": "mel-statistics", "coefficients": 4}
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
