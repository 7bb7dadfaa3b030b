"""Phoneme labels (espeak-ng) and the codec's CTC content objective."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from plutok.errors import ModelError
from plutok.training.phonemes import LABELS_FILE, PhonemeInventory, phoneme_labels


def _phonemizer():
    from plutok.training.phonemes import Phonemizer

    try:
        return Phonemizer()
    except ModelError as error:
        pytest.skip(str(error))


def test_phonemizer_gives_ipa_without_stress_marks():
    phonemizer = _phonemizer()
    assert phonemizer.phonemes("hello", "en") == ["h", "ə", "l", "oʊ"]
    russian = phonemizer.phonemes("мама, папа.", "ru")  # two clauses: both are read
    assert russian[0] == "m" and "p" in russian
    assert not any("ˈ" in p or "ˌ" in p for p in phonemizer.phonemes("Pronunciation matters.", "en"))
    with pytest.raises(ModelError, match="no espeak-ng voice"):
        phonemizer.phonemes("hello", "xx")


def test_inventory_round_trip_and_unknown_symbols():
    inventory = PhonemeInventory.from_sequences([["b", "a"], ["a", "tʃ"]])
    assert inventory.symbols == ("a", "b", "tʃ") and len(inventory) == 3
    ids = inventory.encode(["tʃ", "a", "q", "b"])
    assert ids == [3, 1, 2]  # 0 is the CTC blank; "q" is not in the inventory
    assert inventory.decode([0, *ids, 9]) == ["tʃ", "a", "b"]


def test_labels_are_cached_and_follow_the_text(tmp_path, monkeypatch):
    _phonemizer()
    items = [("a", "hello", "en"), ("b", "", "en"), ("c", "hello", "ja-unknown")]
    labels = phoneme_labels(items, tmp_path)
    assert labels == {"a": ["h", "ə", "l", "oʊ"]}  # no text / no voice: no entry
    rows = [json.loads(line) for line in (tmp_path / LABELS_FILE).read_text().splitlines()]
    assert [row["id"] for row in rows] == ["a"]

    import plutok.training.phonemes as module

    def unavailable():
        raise AssertionError("espeak-ng must not run for cached labels")

    monkeypatch.setattr(module, "Phonemizer", unavailable)
    assert phoneme_labels(items, tmp_path) == labels
    monkeypatch.undo()
    assert phoneme_labels([("a", "no", "en")], tmp_path)["a"] == ["n", "oʊ"]  # changed text: redone


@pytest.fixture(name="codec_config", scope="module")
def codec_config_fixture(tiny_content_codec):
    """A tiny codec with a CTC head over three phonemes."""
    return tiny_content_codec(
        input_dim=6, output_dim=5, speaker_dim=3, ctc_weight=1.0, phoneme_symbols=["a", "b", "c"]
    )


def _batch(lengths):
    from plutok.codec.base import CodecBatch

    torch.manual_seed(1)
    rows, codes = len(lengths), 10
    labels = torch.zeros(rows, max(1, max(lengths)), dtype=torch.long)
    for row, length in enumerate(lengths):
        labels[row, :length] = torch.arange(length) % 3 + 1
    return CodecBatch(
        torch.randn(rows, 6, codes),
        torch.randn(rows, 5, 4 * codes),
        torch.randn(rows, 3),
        torch.ones(rows, codes),
        labels,
        torch.tensor(lengths),
    )


def test_ctc_loss_only_on_rows_with_labels_and_phonemes_read_back(codec_config):
    from plutok import registry
    from plutok.training.objectives import ContentCodecObjective

    codec = registry.build("codec", codec_config)
    objective = ContentCodecObjective(codec.objective)
    total, metrics = objective(codec, _batch([4, 0]))
    assert "ctc" in metrics and torch.isfinite(metrics["ctc"])
    plain = metrics["mel_l1"] + metrics["gradient"] + metrics["content"] + metrics["quantizer"]
    torch.testing.assert_close(total, plain + metrics["ctc"])
    _, unlabelled = objective(codec, _batch([0, 0]))
    assert "ctc" not in unlabelled
    # 10 codes give 20 CTC frames; the greedy reading uses only the inventory's symbols.
    readings = codec.phonemes_from_codes(torch.randint(0, 16, (2, 10)))
    assert len(readings) == 2 and all(set(r) <= {"a", "b", "c"} for r in readings)


def test_ctc_head_is_saved_with_its_inventory_and_absent_by_default(codec_config, tmp_path):
    from plutok import registry

    codec = registry.build("codec", codec_config)
    codec.save_weights(tmp_path)
    again = registry.build("codec", codec.config(), directory=tmp_path)
    assert again.heads.phoneme_symbols == ("a", "b", "c")
    codes = torch.randint(0, 16, (1, 10))
    assert again.phonemes_from_codes(codes) == codec.phonemes_from_codes(codes)
    plain = {k: v for k, v in codec_config.items() if k not in ("ctc_weight", "phoneme_symbols")}
    config = registry.build("codec", plain).config()
    # Left out at their defaults: the configs (and fingerprints) of models shipped before stay.
    assert "ctc_weight" not in config and "phoneme_symbols" not in config
    with pytest.raises(ModelError, match="no phoneme head"):
        registry.build("codec", plain).phonemes_from_codes(codes)


@pytest.fixture(scope="module")
def texted_cache(tmp_path_factory, small_cache):
    texts = ["hello there", "good morning", "a long sentence about nothing much", "one two", "yes"]
    clips = [
        {"seconds": s, "seed": 20 + i, "split": "dev" if i == 4 else "train", "text": t, "language": "en"}
        for i, (s, t) in enumerate(zip([1.0, 1.2, 2.4, 0.9, 1.0], texts, strict=True))
    ]
    frontend = {"name": "log-mel", "normalize_by_speaker": True}
    return small_cache(
        tmp_path_factory.mktemp("phonemes"), clips, frontend, {"name": "mel-statistics", "coefficients": 4}
    )


def test_segments_get_labels_only_when_they_hold_the_whole_utterance(texted_cache):
    from plutok import registry
    from plutok.training.cache import FeatureCache
    from plutok.training.data import SegmentBatcher

    cache = FeatureCache(texted_cache)
    speaker = registry.build("speaker", cache.config["speaker"])
    train = cache.utterances("train")
    ids = {u.id: [1 + i, 2] for i, u in enumerate(train)}
    short = [u for u in train if u.seconds < 2]
    long = [u for u in train if u.seconds > 2]
    # 10 codes of 16 log-mel frames = 1.6 s segments: the 2.4 s utterance never fits, the others do.
    batch = SegmentBatcher(short, speaker, 10, 16, 4, seed=0, phonemes=ids).sample(6)
    assert batch.phoneme_lengths.tolist() == [2] * 6
    assert {row[1] for row in batch.phonemes.tolist()} == {2}
    batch = SegmentBatcher(long, speaker, 10, 16, 4, seed=0, phonemes=ids).sample(3)
    assert batch.phoneme_lengths.tolist() == [0, 0, 0]
    assert SegmentBatcher(train, speaker, 10, 16, 4).sample(2).phonemes is None


def test_train_codec_with_ctc(texted_cache, codec_config, tmp_path):
    _phonemizer()
    from plutok.training.codec import train_codec
    from plutok.training.trainer import TrainerConfig

    # Dimensions and the inventory come from the cache and its transcripts.
    config = {k: v for k, v in codec_config.items() if k not in ("input_dim", "output_dim", "speaker_dim")}
    config.update(analysis_frames_per_code=4, phoneme_symbols=())
    schedule = TrainerConfig(
        steps=4,
        batch_size=3,
        segment_codes=40,
        log_every=2,
        eval_every=4,
        checkpoint_every=4,
        warmup_steps=1,
        init_batches=1,
    )
    codec, metrics = train_codec(texted_cache, tmp_path / "run", config, schedule)
    assert np.isfinite(metrics["dev_ctc"])
    saved = json.loads((tmp_path / "run" / "codec" / "config.json").read_text())["codec"]
    assert "ʊ" in "".join(saved["phoneme_symbols"]) and saved["ctc_weight"] == 1.0
    assert (texted_cache / LABELS_FILE).is_file()
