"""Corpus builder: manifest schema, dev split, text sources, conversion, resumability."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import soundfile as sf

from plutok.corpus import builder, text
from plutok.corpus.sources import RealClip
from plutok.corpus.synth import Voice, espeak_voices, synthesize


def tone(seconds: float, rate: int = 44100, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wav = 0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32)
    return np.stack([wav] * channels, axis=1) if channels > 1 else wav


def fake_job(
    index: int, seconds: float = 1.0, split: str = "train", calls: list | None = None
) -> builder.Job:
    def render() -> tuple[np.ndarray, int]:
        if calls is not None:
            calls.append(index)
        return tone(seconds, 22050), 22050

    return builder.Job(
        f"fake-{index:03d}",
        "en",
        f"Sentence number {index}.",
        f"spk-{index % 3}",
        "unit",
        "CC0",
        "synthetic",
        split,
        "unit",
        render,
    )


def test_render_converts_to_16k_mono_flac(tmp_path):
    job = builder.Job(
        "tone",
        "en",
        "A tone.",
        "spk",
        "unit",
        "CC0",
        "real",
        "train",
        "real",
        lambda: (tone(1.5, 44100, channels=2).mean(axis=1), 44100),
    )
    assert builder.render_job(tmp_path, job) == "rendered"
    info = sf.info(str(tmp_path / job.path))
    assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
    assert info.frames == pytest.approx(1.5 * 16000, abs=2)


def test_clip_safe_levels_kept():
    quiet = builder.to_corpus_audio(np.full(16000, 0.1, np.float32), 16000)
    assert np.allclose(quiet, 0.1)  # not normalised
    loud = builder.to_corpus_audio(np.full(16000, 3.0, np.float32), 16000)
    assert np.abs(loud).max() <= 0.999


def test_short_clips_are_skipped_and_long_ones_split(tmp_path):
    short = builder.Job(
        "short", "en", "", "s", "unit", "CC0", "real", "train", "real", lambda: (tone(0.3), 44100)
    )
    assert builder.render_job(tmp_path, short) == "short"
    assert builder.render_job(tmp_path, short) == "done"  # the marker makes it resumable
    wav = np.random.default_rng(0).standard_normal(16000 * 45).astype(np.float32) * 0.1
    pieces = builder.split_long(wav)
    assert all(len(p) <= 20 * 16000 for p in pieces) and len(pieces) >= 3
    assert np.array_equal(np.concatenate(pieces), wav)


def test_manifest_schema_and_resumability(tmp_path, monkeypatch):
    calls: list[int] = []
    jobs = [fake_job(i, calls=calls, split="dev" if i == 0 else "train") for i in range(5)]
    monkeypatch.setattr(builder, "plan", lambda *args, **kwargs: jobs)
    first = builder.build(tmp_path, ["en"], 5, progress=False)
    assert first["work"] == {"rendered": 5, "stale": 0} and len(calls) == 5
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        assert tuple(row) == builder.MANIFEST_FIELDS
        assert not row["path"].startswith("/") and (tmp_path / row["path"]).is_file()
        assert row["duration"] == pytest.approx(1.0, abs=0.01)
        assert row["split"] in ("train", "dev") and row["kind"] in ("real", "synthetic")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["total"]["clips"] == 5 and summary["total"]["dev_clips"] == 1
    assert "| en |" in builder.format_summary(summary)
    second = builder.build(tmp_path, ["en"], 5, progress=False)
    assert second["work"] == {"done": 5, "stale": 0} and len(calls) == 5  # nothing rendered again
    assert not list(tmp_path.rglob("*.part"))
    monkeypatch.setattr(builder, "plan", lambda *args, **kwargs: jobs[:3])  # e.g. fewer utterances per voice
    third = builder.build(tmp_path, ["en"], 3, progress=False, prune=True)
    assert third["work"] == {"done": 3, "stale_deleted": 2} and third["total"]["clips"] == 3
    assert len(list(tmp_path.rglob("*.flac"))) == 3


def voices() -> list[Voice]:
    return [
        Voice("espeak", f"{lang}+{variant}", lang, "GPL")
        for lang in ("en", "fr", "de")
        for variant in ("m1", "m2", "f1", "f2", "klatt")
    ] + [Voice("flite", "kal", "en", "BSD")]


def test_dev_voices_deterministic_one_per_language():
    chosen = builder.dev_voices(voices())
    shuffled = voices()
    random.Random(1).shuffle(shuffled)
    assert builder.dev_voices(shuffled) == chosen
    assert sorted(v.language for v in chosen) == ["de", "en", "fr"]
    assert all(v.engine == "espeak" for v in chosen)
    japanese = [Voice("kokoro", name, "ja", "Apache-2.0") for name in ("jf_alpha", "jm_kumo", "jf_nezumi")]
    assert len(builder.dev_voices(voices() + japanese)) == 4
    assert builder.dev_voices(japanese) == builder.dev_voices(japanese[::-1])


def test_plan_dev_split_is_speaker_disjoint_for_synthetic(monkeypatch):
    monkeypatch.setattr(
        text,
        "sentences_for",
        lambda lang, extra=(), seed="plutok": [f"{lang} sentence {i}." for i in range(400)],
    )
    clips = [
        RealClip(f"real-{i}", "en", "hi", "reader", "pkg", "PD", f"/nonexistent/{i}.wav") for i in range(400)
    ]
    jobs = builder.plan(["en", "fr", "de"], 20, voices=voices(), clips=clips)
    again = builder.plan(["en", "fr", "de"], 20, voices=voices(), clips=clips)
    assert [(j.id, j.split, j.text) for j in jobs] == [(j.id, j.split, j.text) for j in again]
    synthetic = [j for j in jobs if j.kind == "synthetic"]
    dev_speakers = {j.speaker for j in synthetic if j.split == "dev"}
    train_speakers = {j.speaker for j in synthetic if j.split == "train"}
    assert len(dev_speakers) == 3 and not dev_speakers & train_speakers
    dev_texts = {j.text for j in synthetic if j.split == "dev"}
    assert not dev_texts & {j.text for j in synthetic if j.split == "train"}
    real_dev = [j for j in jobs if j.kind == "real" and j.split == "dev"]
    assert 1 <= len(real_dev) <= builder.DEV_REAL_MAX_PER_LANGUAGE
    assert len({j.id for j in jobs}) == len(jobs)


def test_clean_sentence_filters_code_and_keeps_prose():
    assert text.clean_sentence("the quick brown fox jumps") == "The quick brown fox jumps."
    assert text.clean_sentence("Cannot open file %s for writing") is None
    assert text.clean_sentence("use --force to override this") is None
    assert text.clean_sentence("Two words") is None
    assert text.clean_sentence("Путь к файлу не найден!") == "Путь к файлу не найден!"


def test_text_sources_give_varied_sentences():
    sentences = text.sentences_for("en", extra=["One more sentence from a transcript here."])
    if len(sentences) < 50:
        pytest.skip("no fortune/gettext text installed")
    first = sentences[:200]
    assert len(set(first)) == len(first) and all(s.strip() for s in first)
    assert len({s.split()[0] for s in first}) > 50  # not one template
    assert sentences == text.sentences_for("en", extra=["One more sentence from a transcript here."])


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_espeak_voice_renders():
    voice = espeak_voices(["en"], per_language=2)[1]
    wav, rate = synthesize(voice, "Hello world, this is a test.")
    assert rate > 0 and len(wav) > rate // 2 and np.abs(wav).max() > 0.01


def test_sentence_choice_is_prefix_stable_and_robust_to_new_text():
    pool = [f"Sentence number {i} of the pool." for i in range(2000)]
    short, longer = builder.rank_sentences(pool, "voice", 50), builder.rank_sentences(pool, "voice", 120)
    assert longer[:50] == short and len(set(longer)) == 120
    grown = builder.rank_sentences(pool + [f"A new sentence {i} here." for i in range(40)], "voice", 50)
    assert len(set(grown) & set(short)) >= 40  # new packages displace only a few sentences
    assert builder.rank_sentences(pool, "other voice", 50) != short


def test_cli_parser_defaults(tmp_path):
    import argparse

    from plutok.corpus import configure_parser

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(["build", str(tmp_path), "--languages", "en", "fr", "--skip-install"])
    assert args.corpus_command == "build" and args.languages == ["en", "fr"] and args.skip_install
    assert args.workers == 1 and args.max_utterances_per_voice > 0


def real_clip(clip_id: str, speaker: str, language: str = "en") -> RealClip:
    return RealClip(clip_id, language, "", speaker, "unit", "CC0", "/dev/null")  # type: ignore[arg-type]


def test_unseen_speakers_are_never_trained_on_and_capped_in_dev():
    unseen = sorted(builder.UNSEEN_SPEAKERS)[0]
    clips = [real_clip(f"{unseen}-{i}", unseen) for i in range(builder.DEV_UNSEEN_PER_SPEAKER + 9)]
    clips += [real_clip(f"seen-{i}", "some-seen-speaker") for i in range(300)]
    jobs = builder.plan(["en"], 0, voices=[], clips=clips)
    split_of = {job.id: job.split for job in jobs}
    unseen_splits = [split_of[c.id] for c in clips if c.speaker == unseen]
    assert unseen_splits.count("dev-unseen") == builder.DEV_UNSEEN_PER_SPEAKER
    assert unseen_splits.count("heldout") == 9
    seen_splits = {split_of[c.id] for c in clips if c.speaker != unseen}
    assert seen_splits == {"train", "dev"}
    # adding speakers never turns a clip an older model trained on into a dev clip
    without = builder.plan(["en"], 0, voices=[], clips=[c for c in clips if c.speaker != unseen])
    assert {j.id for j in jobs if j.split == "dev"} <= {j.id for j in without if j.split == "dev"}
    # the choice is a pure function of the ids
    again = builder.plan(["en"], 0, voices=[], clips=list(reversed(clips)))
    assert {j.id: j.split for j in again} == split_of
