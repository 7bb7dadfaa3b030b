"""The adversarial term of train-codec: a discriminator trained beside the codec, resumable, decoder-only on frozen codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(name="codec_config", scope="module")
def codec_config_fixture(tiny_content_codec):
    return tiny_content_codec(analysis_frames_per_code=4)


def _adversarial(**changes):
    from plutok.settings import AdversarialSettings

    return AdversarialSettings(**{"weight": 1.0, "channels": 4, "warmup_steps": 2, **changes})


def test_the_discriminator_gives_one_verdict_per_patch():
    from plutok.training.adversarial import MelPatchDiscriminator

    discriminator = MelPatchDiscriminator(channels=4)
    verdicts, features = discriminator(torch.randn(2, 80, 400))
    # Bins are halved three times, frames twice: one verdict per ~8 bins x 4 frames of stride.
    assert verdicts.shape == (2, 1, 10, 100)
    assert [tuple(f.shape[1:2]) for f in features] == [(4,), (8,), (16,), (16,)]


def test_settings_are_checked_and_off_by_default():
    from plutok.errors import ModelError
    from plutok.settings import AdversarialSettings

    assert not AdversarialSettings().enabled and AdversarialSettings(weight=0.1).enabled
    with pytest.raises(ModelError, match="weight"):
        AdversarialSettings(weight=-1.0)
    with pytest.raises(ModelError, match="channels"):
        AdversarialSettings(channels=0)
    with pytest.raises(ModelError, match="learning_rate"):
        AdversarialSettings(learning_rate=0.0)


def test_padding_frames_do_not_reach_the_discriminator(codec_config):
    """Decoded frames past a clip's end are replaced by the target's: the loss ignores them."""
    from plutok import registry
    from plutok.training.adversarial import AdversarialObjective
    from plutok.training.objectives import Objective

    class Fixed(Objective):
        def __init__(self, decoded, target, mask):
            self.last_synthesis = (decoded, target, mask)

        def __call__(self, model, batch):
            return self.last_synthesis[0].sum() * 0, {}

    torch.manual_seed(0)
    target = torch.randn(1, 80, 40)
    mask = torch.ones(1, 40)
    mask[:, 30:] = 0
    model = registry.build("codec", {**codec_config, "input_dim": 80, "output_dim": 80, "speaker_dim": 8})
    model.train()
    losses = []
    for padding_value in (0.0, 100.0):
        decoded = torch.randn(1, 80, 40, generator=torch.Generator().manual_seed(1))
        decoded[..., 30:] = padding_value
        decoded.requires_grad_(True)
        objective = AdversarialObjective(Fixed(decoded, target, mask), _adversarial(warmup_steps=0))
        torch.manual_seed(2)
        objective.discriminator = type(objective.discriminator)(4)
        loss, metrics = objective(model, None)
        loss.backward()
        assert torch.all(decoded.grad[..., 30:] == 0)
        losses.append(float(loss.detach()))
    assert losses[0] == losses[1]


def test_resume_after_a_kill_equals_one_run(mel_cache, codec_config, tmp_path, short_schedule):
    from plutok.training.codec import train_codec

    adversarial = _adversarial()
    straight, metrics = train_codec(
        mel_cache, tmp_path / "straight", codec_config, short_schedule(), adversarial=adversarial
    )
    # Only the discriminator learns in the warm-up steps; the decoder feels the term after.
    history = json.loads((tmp_path / "straight" / "history.json").read_text())
    assert all("discriminator_true" in entry for entry in history)
    assert [("adversarial" in entry) for entry in history[:4]] == [False, False, True, True]
    assert np.isfinite(metrics["feature_matching"]) and np.isfinite(metrics["dev_mel_l1"])
    killed, _ = train_codec(
        mel_cache,
        tmp_path / "killed",
        codec_config,
        short_schedule(),
        adversarial=adversarial,
        callback=lambda step, m: step < 3,
    )
    torch.manual_seed(123)
    resumed, _ = train_codec(
        mel_cache, tmp_path / "killed", codec_config, short_schedule(), resume=True, adversarial=adversarial
    )
    for key, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], tensor, rtol=0, atol=1e-6, msg=key)
    checkpoint = sorted((tmp_path / "killed" / "checkpoints").glob("*.json"))[-1]
    assert json.loads(checkpoint.read_text())["objective"]["adversarial"]["weight"] == 1.0


def test_a_checkpoint_of_other_training_terms_is_refused(mel_cache, codec_config, tmp_path, short_schedule):
    from plutok.errors import ModelError
    from plutok.training.codec import train_codec

    train_codec(
        mel_cache, tmp_path / "run", codec_config, short_schedule(), callback=lambda step, m: step < 3
    )
    with pytest.raises(ModelError, match="other training terms"):
        train_codec(
            mel_cache,
            tmp_path / "run",
            codec_config,
            short_schedule(),
            resume=True,
            adversarial=_adversarial(),
        )


def test_on_frozen_codes_only_the_decoder_changes(mel_cache, codec_config, tmp_path, short_schedule):
    from plutok.training.codec import train_codec

    base, _ = train_codec(mel_cache, tmp_path / "base", codec_config, short_schedule(steps=2))
    tuned, metrics = train_codec(
        mel_cache,
        tmp_path / "tuned",
        codec_config,
        short_schedule(steps=4, init_batches=0),
        init_from=tmp_path / "base" / "codec",
        freeze_codes=True,
        adversarial=_adversarial(warmup_steps=1),
    )
    assert "adversarial" in metrics
    analysis = torch.randn(2, base.input_dim, 40)
    assert torch.equal(base.encode_tensor(analysis), tuned.encode_tensor(analysis))
    codes = base.encode_tensor(analysis)
    assert not torch.equal(base.decode_tensor(codes, None), tuned.decode_tensor(codes, None))
    # Training-only: the saved codec's config is that of a run without the term.
    assert tuned.config() == base.config()


def test_train_codec_cli_passes_the_adversarial_settings(mel_cache, tmp_path, monkeypatch, capsys):
    from plutok.cli import main
    from plutok.settings import AdversarialSettings
    from plutok.training import codec

    with pytest.raises(SystemExit):
        main(["train-codec", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--adversarial-weight",
        "--adversarial-feature-matching-weight",
        "--adversarial-warmup-steps",
    ):
        assert option in text
    given = {}

    def train_codec(*args, **kwargs):
        given.update(kwargs)
        return None, {}

    monkeypatch.setattr(codec, "train_codec", train_codec)
    options = [
        "--adversarial-weight",
        "0.5",
        "--adversarial-warmup-steps",
        "7",
        "--adversarial-learning-rate",
        "1e-3",
    ]
    assert (
        main(
            ["train-codec", str(mel_cache), "-o", str(tmp_path / "run"), "--learning-rate", "5e-4", *options]
        )
        == 0
    )
    assert given["adversarial"] == AdversarialSettings(weight=0.5, warmup_steps=7, learning_rate=1e-3)
    main(["train-codec", str(mel_cache), "-o", str(tmp_path / "run")])
    assert not given["adversarial"].enabled  # off unless asked for


def test_a_step_with_overflowed_audio_leaves_the_discriminator_alone():
    # An fp16 step whose decoded log-mel overflowed (the loss scaler skips the codec's step)
    # must not put inf/NaN into the discriminator.
    from plutok.training.adversarial import AdversarialObjective
    from plutok.training.objectives import Objective

    objective = AdversarialObjective(Objective(), _adversarial())
    before = {k: v.clone() for k, v in objective.discriminator.state_dict().items()}
    decoded = torch.randn(2, 80, 40)
    decoded[0, 3, 5] = float("inf")
    objective._pair = (decoded, torch.randn(2, 80, 40))
    assert objective.after_step(None) == {"discriminator_skipped": 1.0}
    for key, tensor in objective.discriminator.state_dict().items():
        assert torch.equal(tensor, before[key]), key
    objective._pair = (torch.randn(2, 80, 40), torch.randn(2, 80, 40))
    assert "discriminator_true" in objective.after_step(None)
    assert any(not torch.equal(t, before[k]) for k, t in objective.discriminator.state_dict().items())
