"""The learned-mel speaker encoder and its training with the decoder (train-codec --speaker)."""

from __future__ import annotations

import copy
import functools
import json

import numpy as np
import pytest
import torch

LEARNED = {"name": "learned-mel", "coefficients": 4, "std_coefficients": 2, "learned_dim": 2, "channels": 8}


@pytest.fixture(name="codec_config", scope="module")
def codec_config_fixture(tiny_content_codec):
    return tiny_content_codec(analysis_frames_per_code=4)


@pytest.fixture(name="schedule")
def schedule_fixture(short_schedule):
    """Few tiny steps at a learning rate that moves the small network visibly."""
    return functools.partial(short_schedule, learning_rate=1e-2)


def _trained_speaker(seed: int = 0):
    """A learned-mel encoder with random (not zero) weights, marked trained."""
    from plutok import registry

    torch.manual_seed(seed)
    speaker = registry.build("speaker", LEARNED)
    torch.nn.init.normal_(speaker.network.project.weight, std=0.5)
    speaker.trained = True
    return speaker


def test_fewer_log_std_coefficients_are_the_leading_ones(speech_like):
    from plutok import registry
    from plutok.errors import ModelError

    wav = speech_like(1.2, seed=4)
    wide = registry.build("speaker", {"name": "mel-statistics", "coefficients": 6})
    narrow = registry.build("speaker", {"name": "mel-statistics", "coefficients": 4, "std_coefficients": 2})
    assert narrow.speaker_dim == 6 and narrow.config()["std_coefficients"] == 2
    # Equal counts leave the key out: the configs (and fingerprints) of older models stay as they were.
    assert "std_coefficients" not in wide.config()
    np.testing.assert_allclose(narrow.narrowed(wide.embed(wav), wide), narrow.embed(wav), rtol=0, atol=1e-5)
    mel = narrow.log_mel(wav)
    restored = narrow.denormalize(narrow.normalize(mel, narrow.embed(wav)), narrow.embed(wav))
    np.testing.assert_allclose(restored, mel, rtol=0, atol=1e-4)
    with pytest.raises(ModelError, match="cannot give"):
        wide.narrowed(narrow.embed(wav), narrow)
    with pytest.raises(ModelError, match="std_coefficients"):
        registry.build("speaker", {"name": "mel-statistics", "coefficients": 4, "std_coefficients": 0})


def test_the_learned_part_follows_the_statistics(speech_like):
    speaker = _trained_speaker()
    wav = speech_like(1.5, seed=5)
    vector = speaker.embed(wav)
    assert vector.shape == (speaker.speaker_dim,) == (8,) and vector.dtype == np.float32
    statistics = speaker.statistics.embed(wav)
    np.testing.assert_array_equal(vector[:6], statistics)
    learned = vector[6:]
    assert np.all(np.abs(learned) < 1) and np.any(np.abs(learned) > 1e-3)
    # Normalisation reads the statistics only: the learned values do not move it.
    mel = speaker.statistics.log_mel(wav)
    other = vector.copy()
    other[6:] = -other[6:]
    np.testing.assert_array_equal(speaker.normalize(mel, vector), speaker.normalize(mel, other))
    np.testing.assert_array_equal(
        speaker.normalize(mel, vector), speaker.statistics.normalize(mel, statistics)
    )
    assert not np.allclose(speaker.embed(speech_like(1.5, seed=6))[6:], learned)


def test_the_network_reads_long_audio_in_blocks_as_in_one_pass():
    from plutok.frontends.mel import ANALYSIS_BLOCK_FRAMES

    speaker = _trained_speaker(seed=1)
    rng = np.random.default_rng(0)
    frames = 2 * ANALYSIS_BLOCK_FRAMES + 37
    normalized = rng.normal(size=(80, frames))
    active = rng.random(frames) > 0.3
    blocked = speaker.learned_values(normalized, active)
    with torch.no_grad():
        network = copy.deepcopy(speaker.network).double()
        whole = network(
            torch.from_numpy(normalized)[None], torch.from_numpy(active.astype(np.float64))[None]
        )[0]
    np.testing.assert_allclose(blocked, whole.numpy(), rtol=0, atol=1e-12)
    assert speaker.network.project.weight.dtype == torch.float32  # left as it was


def test_weights_round_trip_and_untrained_encoders_refuse(tmp_path, speech_like):
    from plutok import registry
    from plutok.errors import ModelError

    wav = speech_like(1.0, seed=7)
    with pytest.raises(ModelError, match="no trained weights"):
        registry.build("speaker", LEARNED).embed(wav)
    speaker = _trained_speaker()
    speaker.save_weights(tmp_path)
    loaded = registry.build("speaker", speaker.config(), tmp_path)
    assert (
        loaded.weights_digest()
        == speaker.weights_digest()
        != registry.build("speaker", LEARNED).weights_digest()
    )
    np.testing.assert_array_equal(loaded.embed(wav), speaker.embed(wav))
    with pytest.raises(ModelError, match="weights not found"):
        registry.build("speaker", speaker.config(), tmp_path / "elsewhere")


def test_training_moves_the_network_and_resumes_exactly(raw_mel_cache, codec_config, tmp_path, schedule):
    from plutok.training.codec import train_codec

    straight, metrics = train_codec(
        raw_mel_cache, tmp_path / "straight", codec_config, schedule(), speaker_config=LEARNED
    )
    assert np.isfinite(metrics["dev_mel_l1"])
    saved = json.loads((tmp_path / "straight" / "codec" / "config.json").read_text())
    assert saved["speaker"]["name"] == "learned-mel" and len(saved["default_speaker"]) == 8
    from plutok import registry

    trained = registry.build("speaker", saved["speaker"], tmp_path / "straight" / "codec")
    assert float(trained.network.project.weight.detach().abs().max()) > 0  # zero at the start
    killed_codec, _ = train_codec(
        raw_mel_cache, tmp_path / "killed", codec_config, schedule(), speaker_config=LEARNED,
        callback=lambda step, m: step < 3,
    )  # fmt: skip
    torch.manual_seed(99)
    resumed, _ = train_codec(
        raw_mel_cache, tmp_path / "killed", codec_config, schedule(), resume=True, speaker_config=LEARNED
    )
    for key, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], tensor, rtol=0, atol=1e-6, msg=key)
    again = registry.build("speaker", saved["speaker"], tmp_path / "killed" / "codec")
    for key, tensor in trained.network.state_dict().items():
        torch.testing.assert_close(again.network.state_dict()[key], tensor, rtol=0, atol=1e-6, msg=key)
    checkpoint = sorted((tmp_path / "killed" / "checkpoints").glob("*.json"))[-1]
    assert json.loads(checkpoint.read_text())["objective"]["speaker"]["learned_dim"] == 2


def test_a_learned_speaker_on_frozen_codes_goes_into_the_model(
    raw_mel_cache, codec_config, tmp_path, speech_like, schedule
):
    from plutok.api import Plutok
    from plutok.errors import ModelError
    from plutok.training.assemble import assemble_model, replace_decoder
    from plutok.training.codec import train_codec

    train_codec(raw_mel_cache, tmp_path / "base", codec_config, schedule(steps=3))
    base = assemble_model(
        raw_mel_cache, tmp_path / "base" / "codec", tmp_path / "base-model", 24, progress=False
    )
    train_codec(
        raw_mel_cache, tmp_path / "tuned", codec_config, schedule(steps=3, init_batches=0),
        init_from=tmp_path / "base" / "codec", freeze_codes=True, speaker_config=LEARNED,
    )  # fmt: skip
    with pytest.raises(ModelError, match="its own speaker encoder"):
        assemble_model(raw_mel_cache, tmp_path / "tuned" / "codec", tmp_path / "x", 24, progress=False)
    # With a kept BPE the run assembles on its own: its speaker encoder and its default voice.
    kept = assemble_model(
        raw_mel_cache, tmp_path / "tuned" / "codec", tmp_path / "kept", 24, progress=False,
        bpe_from=tmp_path / "base-model",
    )  # fmt: skip
    run = json.loads((tmp_path / "tuned" / "codec" / "config.json").read_text())
    assert kept.parts.speaker.name == "learned-mel" and kept.parts.default_speaker == run["default_speaker"]
    replace_decoder(tmp_path / "base-model", tmp_path / "tuned" / "codec", tmp_path / "tuned-model")
    tuned = Plutok.from_pretrained(tmp_path / "tuned-model")
    wav = speech_like(1.5, seed=8)
    encoding = tuned.encode(wav, 16000)
    # This codec reads the plain log-mel: the codes, and so the ids, are the base model's.
    assert encoding.ids == base.encode(wav, 16000).ids == kept.encode(wav, 16000).ids
    np.testing.assert_array_equal(kept.encode(wav, 16000).speaker, encoding.speaker)
    assert tuned.parts.speaker.name == "learned-mel" and encoding.speaker.shape == (8,)
    assert len(tuned.parts.default_speaker) == 8
    assert tuned.token_space != base.token_space
    audio, rate = tuned.decode(encoding)
    assert rate == 16000 and np.all(np.isfinite(audio)) and abs(len(audio) - len(wav)) <= 320
    in_default_voice, _ = tuned.decode_ids(encoding.ids)
    assert np.all(np.isfinite(in_default_voice)) and abs(len(in_default_voice) - len(audio)) <= 640
    _export_decodes_as_the_library(tuned, encoding)


def _export_decodes_as_the_library(model, encoding):
    """The ONNX decode graph de-normalises with the statistics part and conditions on the whole vector."""
    from plutok.api import Plutok
    from plutok.export import decode_graph
    from plutok.model_directory import load_model_parts

    parts = model.parts
    parts.vocoder = load_model_parts("fast").vocoder  # the graph's vocoder
    library, _ = Plutok(parts, chunk_seconds=None).decode_ids(encoding.ids, encoding.speaker)
    codes = torch.from_numpy(np.asarray(model.ids_to_codes(encoding.ids), dtype=np.int64))[None]
    with torch.no_grad():
        graph = decode_graph(parts)(codes, torch.from_numpy(encoding.speaker)[None])[0].numpy()
    np.testing.assert_allclose(graph[: len(library)], library, rtol=0, atol=1e-4)


def test_cached_features_normalised_by_another_speaker_are_refused(
    mel_cache, codec_config, tmp_path, schedule
):
    from plutok.errors import ModelError
    from plutok.training.codec import train_codec

    with pytest.raises(ModelError, match="normalised by its own"):
        train_codec(mel_cache, tmp_path / "run", codec_config, schedule(steps=1), speaker_config=LEARNED)
    wider = {**LEARNED, "coefficients": 6}
    with pytest.raises(ModelError, match="cannot give"):
        train_codec(mel_cache, tmp_path / "run", codec_config, schedule(steps=1), speaker_config=wider)


def test_train_codec_cli_passes_the_speaker(raw_mel_cache, tmp_path, monkeypatch):
    from plutok.cli import main
    from plutok.training import codec

    given = {}

    def train_codec(*args, **kwargs):
        given.update(kwargs)
        return None, {}

    monkeypatch.setattr(codec, "train_codec", train_codec)
    assert (
        main(
            ["train-codec", str(raw_mel_cache), "-o", str(tmp_path / "run"), "--speaker", json.dumps(LEARNED)]
        )
        == 0
    )
    assert given["speaker_config"] == LEARNED
    main(["train-codec", str(raw_mel_cache), "-o", str(tmp_path / "run")])
    assert given["speaker_config"] is None
