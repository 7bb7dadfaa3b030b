"""Stacked frontends: folding, per-member speaker normalisation, and derivation from a feature cache."""

from __future__ import annotations

import numpy as np
import pytest

from plutok import registry
from plutok.errors import ModelError
from plutok.frontends.stack import StackedFrontend, fold_frames, unfold_frames

SLOW_MEL = {"name": "log-mel", "hop_length": 640, "normalize_by_speaker": False}  # 25 frames/s
FAST_MEL = {"name": "log-mel", "normalize_by_speaker": True}  # 100 frames/s, the synthesis log-mel
SPEAKER = {"name": "mel-statistics", "coefficients": 4}


def stacked() -> StackedFrontend:
    return registry.build("frontend", {"name": "stack", "members": [SLOW_MEL, FAST_MEL]})


def test_fold_and_unfold_are_inverse_and_fold_pads_with_zeros():
    features = np.arange(2 * 12, dtype=np.float32).reshape(2, 12)
    folded = fold_frames(features, 4, 3)
    assert folded.shape == (8, 3)
    # Row j * C + c holds channel c of sub-frame j.
    assert folded[1 * 2 + 0, 2] == features[0, 2 * 4 + 1]
    np.testing.assert_array_equal(unfold_frames(folded, 4), features)
    padded = fold_frames(features[:, :10], 4, 3)
    np.testing.assert_array_equal(unfold_frames(padded, 4)[:, :10], features[:, :10])
    assert not unfold_frames(padded, 4)[:, 10:].any()


def test_stack_runs_at_the_first_members_rate(speech_like):
    frontend = stacked()
    assert frontend.frames_per_second == 25 and frontend.factors == [1, 4]
    assert frontend.feature_dim == 80 + 4 * 80
    wav = speech_like(1.03, seed=3)
    analysis = frontend.analyze(wav)
    assert analysis.shape == (frontend.feature_dim, frontend.num_frames(wav.shape[0]))
    rebuilt = registry.build("frontend", frontend.config())
    np.testing.assert_array_equal(rebuilt.analyze(wav), analysis)
    assert frontend.weights_digest() == ""


def test_only_members_that_ask_are_speaker_normalised(speech_like):
    frontend = stacked()
    speaker = registry.build("speaker", SPEAKER)
    wav = speech_like(1.0, seed=4)
    vector = speaker.embed(wav)
    analysis = frontend.analyze(wav)
    normalized = frontend.normalized(analysis, vector, speaker)
    slow, fast = frontend.channel_slices()
    np.testing.assert_array_equal(normalized[slow], analysis[slow])
    expected = speaker.normalize(unfold_frames(analysis[fast], 4), vector)
    np.testing.assert_allclose(unfold_frames(normalized[fast], 4), expected, rtol=0, atol=1e-6)


def test_members_must_share_a_sample_rate_and_whole_rate_ratios():
    with pytest.raises(ModelError, match="whole multiple"):
        registry.build("frontend", {"name": "stack", "members": [FAST_MEL, SLOW_MEL]})
    with pytest.raises(ModelError, match="sample rate"):
        registry.build(
            "frontend", {"name": "stack", "members": [SLOW_MEL, {**FAST_MEL, "sample_rate": 22050}]}
        )
    with pytest.raises(ModelError, match="at least two"):
        registry.build("frontend", {"name": "stack", "members": [SLOW_MEL]})


@pytest.fixture(scope="module")
def cache(tmp_path_factory, small_cache):
    """A cache of the slow log-mel (its 'analysis') and the 100 frames/s log-mel: two utterances."""
    root = tmp_path_factory.mktemp("stack-cache")
    clips = [{"seconds": 1.1 + 0.37 * index, "seed": 20 + index} for index in range(2)]
    return small_cache(root, clips, SLOW_MEL, SPEAKER), [root / f"u{index}.flac" for index in range(2)]


def test_a_stack_of_cached_streams_is_derived_without_running_a_frontend(cache):
    from plutok.audio import load_audio
    from plutok.training.cache import AnalysisReader, FeatureCache

    directory, paths = cache
    feature_cache = FeatureCache(directory)
    speaker = registry.build("speaker", SPEAKER)
    frontend = stacked()
    reader = AnalysisReader(feature_cache, frontend, speaker)
    for utterance, path in zip(feature_cache.utterances(), paths, strict=True):
        wav, _ = load_audio(path, target_rate=16000)
        direct = frontend.normalized(frontend.analyze(wav, utterance.speaker), utterance.speaker, speaker)
        derived = reader(utterance)
        assert derived.shape == direct.shape == (frontend.feature_dim, reader.frames(utterance))
        # The cache stores float16 (steps of ~0.004 in log-mel units, scaled up by the
        # speaker normalisation): that is the only difference.
        error = np.abs(derived - direct)
        assert error.max() < 0.05 and error.mean() < 5e-3
        np.testing.assert_array_equal(reader(utterance, 3, 9), derived[:, 3:9])


def test_a_stack_that_cannot_be_derived_is_refused(cache):
    from plutok.training.cache import AnalysisReader, FeatureCache

    feature_cache = FeatureCache(cache[0])
    speaker = registry.build("speaker", SPEAKER)
    other = registry.build("frontend", {"name": "stack", "members": [SLOW_MEL, {**FAST_MEL, "n_mels": 40}]})
    with pytest.raises(ModelError, match="neither the cache's frontend nor its log-mel"):
        AnalysisReader(feature_cache, other, speaker)
    with pytest.raises(ModelError, match="holds log-mel features"):
        AnalysisReader(feature_cache, registry.build("frontend", FAST_MEL), speaker)


def test_a_codec_on_a_derived_stack_trains_assembles_and_round_trips(
    cache, tmp_path, speech_like, tiny_content_codec
):
    from plutok import Plutok
    from plutok.settings import TrainerConfig
    from plutok.training.assemble import assemble_model
    from plutok.training.codec import train_codec

    codec = tiny_content_codec(content_dim=80)  # the content head predicts the slow member only
    schedule = TrainerConfig(
        steps=3, batch_size=2, segment_codes=8, log_every=1, eval_every=3, init_batches=1
    )
    stack_config = stacked().config()
    trained, _ = train_codec(
        cache[0], tmp_path / "run", codec, schedule, dev_split="none", frontend_config=stack_config
    )
    assert trained.input_dim == 400 and trained.to_content.out_channels == 80
    model = assemble_model(
        cache[0], tmp_path / "run" / "codec", tmp_path / "model", vocab_size=20, progress=False
    )
    loaded = Plutok.from_pretrained(tmp_path / "model")
    assert loaded.frontend.config() == stack_config and loaded.fingerprint == model.fingerprint
    wav = speech_like(0.9, seed=7)
    encoding = loaded.encode(wav, 16000)
    assert encoding.num_codes == loaded.frontend.num_frames(wav.shape[0])
    decoded, rate = loaded.decode(encoding)
    assert rate == 16000 and decoded.shape == wav.shape and np.isfinite(decoded).all()


@pytest.mark.parametrize("seconds", [0.3, 2.013, 2.56])
def test_blocks_join_to_the_analysis(speech_like, monkeypatch, seconds):
    """Members' blocks of unrelated sizes (7 frames at 25/s and at 100/s) are re-cut at common
    output frames; the last frame is padded as in one pass; the join is bit-identical."""
    import plutok.frontends.mel as mel

    monkeypatch.setattr(mel, "ANALYSIS_BLOCK_FRAMES", 7)
    frontend = stacked()
    wav = speech_like(seconds, seed=6)
    blocks = list(frontend.analysis_blocks(wav))
    assert len(blocks) > 1 or seconds < 1
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), frontend.analyze(wav))
    assert max(block.shape[1] for block in blocks) <= 7
