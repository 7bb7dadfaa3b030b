"""Build the training corpus: plan every utterance, render what is missing, write the manifest.

Layout of a corpus directory::

    audio/<source>/<speaker>/<id>.flac   16 kHz mono FLAC (PCM_16)
    manifest.jsonl                        one JSON object per clip (see ``MANIFEST_FIELDS``)
    summary.json                          hours per language, real vs synthetic, speakers, dev size

A plan is a fixed list of :class:`Job` s computed from the installed packages and the
options alone, so a rerun plans the same jobs and renders only those whose FLAC is
missing (resumable; each file is written atomically).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from plutok.corpus import sources, synth, text
from plutok.files import atomic_path, atomic_write_text

__all__ = [
    "Job",
    "plan",
    "render_job",
    "build",
    "write_manifest",
    "summarize",
    "format_summary",
    "MANIFEST_FIELDS",
    "SAMPLE_RATE",
    "DEFAULT_LANGUAGES",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MIN_SECONDS = 0.5
MAX_SECONDS = 20.0
DEFAULT_LANGUAGES = (
    "en",
    "ru",
    "cs",
    "it",
    "de",
    "fr",
    "es",
    "pl",
    "pt",
    "fi",
    "nl",
    "sv",
    "ca",
    "hi",
    "ja",
    "uk",
)
MANIFEST_FIELDS = (
    "id",
    "path",
    "language",
    "text",
    "speaker",
    "source",
    "license",
    "duration",
    "split",
    "kind",
)
# dev split (fixed and documented: docs/corpus.md, "Dev split")
DEV_REAL_PER_1000 = 50  # a real clip is dev if sha256("dev", id) % 1000 < 50 (~5 %) ...
DEV_REAL_MAX_PER_LANGUAGE = 15  # ... keeping at most this many (lowest hashes) per language
DEV_SYNTH_PER_LANGUAGE = 12  # utterances rendered for the one held-out voice per language
MANIFEST_EVERY_S = 600.0  # also rewrite manifest.jsonl this often within a stage
# Kokoro runs ~1x real time on a CPU: at most this many sentences per voice and language
KOKORO_MAX_PER_VOICE = 10
DEV_TEXTS_RESERVED = 200  # sentences per language (ranked first for "dev-text") only dev voices read
# Whole real speakers never trained on (docs/corpus.md, "Unseen-speaker dev"): one complete new
# source (the Colombian Spanish prompts), four Hedgewars voice packs (Polish, Ukrainian and two
# English) and Fish Fillets characters other than the two fish, in each of its languages.
UNSEEN_SPEAKERS = frozenset(
    {
        "asterisk-es-co",
        "hedgewars-Default_pl",
        "hedgewars-Default_uk",
        "hedgewars-Mobster",
        "hedgewars-British",
        "fillets-cs-hs",
        "fillets-cs-c",
        "fillets-cs-pap",
        "fillets-en-chob",
        "fillets-en-l",
        "fillets-en-z",
        "fillets-en-7",
    }
)
DEV_UNSEEN_PER_SPEAKER = 16  # clips per unseen speaker in "dev-unseen"; the rest are "heldout"


def stable_hash(*parts: str) -> int:
    """64-bit hash of ``parts`` that is the same on every machine and Python run."""
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:8], "big")


@dataclass(frozen=True)
class Job:
    """One planned clip. ``render`` returns mono float32 ``(samples,)`` and its rate."""

    id: str
    language: str
    text: str
    speaker: str
    source: str
    license: str
    kind: str  # "real" | "synthetic"
    split: str  # "train" | "dev" | "dev-unseen" | "heldout"
    group: str  # stage name, used to order work and checkpoint the manifest
    render: Callable[[], tuple[np.ndarray, int]] = field(compare=False, repr=False)

    @property
    def path(self) -> str:
        """Path of the (first) FLAC relative to the corpus root."""
        return f"audio/{self.source}/{self.speaker}/{self.id}.flac"


def dev_voices(voices: list[synth.Voice]) -> set[synth.Voice]:
    """The held-out synthetic voices: one per language.

    Normally the espeak-ng voice whose variant ranks first by
    ``sha256("espeak-variant", language, variant)``, the same order
    :func:`synth.espeak_voices` takes variants in, so the dev voice stays the same when
    more variants are built; the plain (variant-less) voice is never held out. A
    language without espeak-ng variants (Japanese: Kokoro only) holds out the voice
    with the lowest ``sha256("dev-voice", speaker)``.
    """
    chosen: dict[str, tuple[int, int, synth.Voice]] = {}
    for voice in voices:
        if voice.engine == "espeak" and "+" in voice.name:
            key = (0, stable_hash("espeak-variant", voice.language, voice.name.split("+", 1)[1]))
        elif voice.engine == "espeak":
            continue
        else:
            key = (1, stable_hash("dev-voice", voice.speaker))
        if voice.language not in chosen or key < chosen[voice.language][:2]:
            chosen[voice.language] = (*key, voice)
    return {entry[2] for entry in chosen.values()}


def dev_real_ids(clips: list[sources.RealClip]) -> set[str]:
    """Held-out real clips: hash-selected ~5 %, at most ``DEV_REAL_MAX_PER_LANGUAGE`` per language."""
    by_language: dict[str, list[str]] = defaultdict(list)
    for clip in clips:
        if stable_hash("dev", clip.id) % 1000 < DEV_REAL_PER_1000:
            by_language[clip.language].append(clip.id)
    chosen: set[str] = set()
    for ids in by_language.values():
        chosen |= set(sorted(ids, key=lambda i: stable_hash("dev", i))[:DEV_REAL_MAX_PER_LANGUAGE])
    return chosen


def unseen_splits(clips: list[sources.RealClip]) -> dict[str, str]:
    """Split of every clip of an :data:`UNSEEN_SPEAKERS` speaker: ``dev-unseen`` or ``heldout``.

    Per speaker, the ``DEV_UNSEEN_PER_SPEAKER`` clips with the lowest ``sha256("dev-unseen", id)``
    are evaluated (``dev-unseen``); the others are never trained on nor evaluated (``heldout``),
    so the speaker stays unheard whatever the size of the dev set.
    """
    by_speaker: dict[str, list[str]] = defaultdict(list)
    for clip in clips:
        if clip.speaker in UNSEEN_SPEAKERS:
            by_speaker[clip.speaker].append(clip.id)
    splits: dict[str, str] = {}
    for ids in by_speaker.values():
        ranked = sorted(ids, key=lambda i: stable_hash("dev-unseen", i))
        splits.update({i: "dev-unseen" for i in ranked[:DEV_UNSEEN_PER_SPEAKER]})
        splits.update({i: "heldout" for i in ranked[DEV_UNSEEN_PER_SPEAKER:]})
    return splits


def _mix(values: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of ``values ^ seed``: a cheap, well-spread uint64 hash, vectorised."""
    with np.errstate(over="ignore"):
        z = (values ^ np.uint64(seed)) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sentence_hashes(sentences: list[str]) -> np.ndarray:
    """uint64 ``(len(sentences),)`` content hashes, the input of :func:`rank_sentences`."""
    return np.array([stable_hash("sentence", s) for s in sentences], dtype=np.uint64)


def rank_sentences(sentences: list[str], key: str, count: int, hashes: np.ndarray | None = None) -> list[str]:
    """The ``count`` sentences with the lowest ``hash(key, sentence)``, in that order.

    Each sentence's rank depends only on itself and ``key``, so the choice is
    prefix-stable (a larger ``count`` extends it, keeping every clip already made) and
    nearly unchanged when packages add or remove text (only the sentences that enter
    or leave the pool move).
    """
    if not sentences:
        return []
    if hashes is None:
        hashes = sentence_hashes(sentences)
    order = np.argsort(_mix(hashes, stable_hash(key)), kind="stable")[:count]
    return [sentences[i] for i in order]


def plan(
    languages: list[str],
    max_per_voice: int,
    espeak_per_language: int = 10,
    voices: list[synth.Voice] | None = None,
    clips: list[sources.RealClip] | None = None,
) -> list[Job]:
    """All jobs for ``languages``: every real clip, then ``max_per_voice`` sentences per voice."""
    clips = sources.real_clips(languages) if clips is None else clips
    voices = synth.available_voices(languages, espeak_per_language) if voices is None else voices
    jobs: list[Job] = []
    # The seen-speaker dev is chosen over all clips, as before the unseen split existed, so a
    # clip that an older model trained on never becomes a dev clip (new clips only displace).
    held_out = dev_real_ids(clips)
    unseen = unseen_splits(clips)
    for clip in clips:
        jobs.append(
            Job(
                clip.id,
                clip.language,
                clip.text,
                clip.speaker,
                clip.source,
                clip.license,
                "real",
                unseen.get(clip.id, "dev" if clip.id in held_out else "train"),
                "real",
                lambda path=clip.path: sources.decode(path),
            )
        )
    transcripts: dict[str, list[str]] = defaultdict(list)
    for clip in clips:
        transcripts[clip.language].append(clip.text)
    dev_set = dev_voices(voices)
    pools = {lang: text.sentences_for(lang, transcripts[lang]) for lang in languages}
    dev_pools: dict[str, list[str]] = {}
    train_pools: dict[str, list[str]] = {}
    train_hashes: dict[str, np.ndarray] = {}
    for voice in voices:
        pool = pools.get(voice.language, [])
        if len(pool) < 20:
            log.warning(
                "too little text for %s (%d sentences); skipping %s", voice.language, len(pool), voice.speaker
            )
            continue
        reserved = min(DEV_TEXTS_RESERVED, len(pool) // 5)
        if voice.language not in dev_pools:
            dev_pools[voice.language] = rank_sentences(pool, "dev-text", reserved)
            held = set(dev_pools[voice.language])
            train_pools[voice.language] = [s for s in pool if s not in held]
            train_hashes[voice.language] = sentence_hashes(train_pools[voice.language])
        if voice in dev_set:
            chosen = dev_pools[voice.language][: min(max_per_voice, DEV_SYNTH_PER_LANGUAGE)]
            split = "dev"
        else:
            count = min(max_per_voice, KOKORO_MAX_PER_VOICE) if voice.engine == "kokoro" else max_per_voice
            chosen = rank_sentences(
                train_pools[voice.language],
                f"voice-text\x00{voice.speaker}\x00{voice.language}",
                count,
                train_hashes[voice.language],
            )
            split = "train"
        source = {"espeak": "espeak-ng"}.get(voice.engine, voice.engine)
        for sentence in chosen:
            if "%" in sentence:  # "%%" escapes of printf messages slip through the text filter
                continue
            digest = hashlib.sha256(sentence.encode()).hexdigest()[:12]
            jobs.append(
                Job(
                    f"{voice.speaker}-{voice.language}-{digest}",
                    voice.language,
                    sentence,
                    voice.speaker,
                    source,
                    voice.license,
                    "synthetic",
                    split,
                    voice.engine,
                    lambda v=voice, s=sentence: synth.synthesize(v, s),
                )
            )
    return jobs


def to_corpus_audio(wav: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz, scaled down only if it would clip."""
    wav = np.nan_to_num(np.asarray(wav, dtype=np.float32))
    if rate != SAMPLE_RATE:
        wav = soxr.resample(wav, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    peak = float(np.abs(wav).max(initial=0.0))
    if peak > 0.999:
        wav = wav * (0.999 / peak)
    return wav


def split_long(wav: np.ndarray, max_seconds: float = MAX_SECONDS) -> list[np.ndarray]:
    """Cut ``wav`` into pieces of at most ``max_seconds``, each cut at the quietest 20 ms
    frame of the second half of the allowed span."""
    limit = int(max_seconds * SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    hop = SAMPLE_RATE // 50
    while len(wav) > limit:
        window = wav[limit // 2 : limit]
        frames = len(window) // hop
        energy = (window[: frames * hop].reshape(frames, hop) ** 2).mean(axis=1)
        cut = limit // 2 + int(np.argmin(energy)) * hop + hop // 2
        pieces.append(wav[:cut])
        wav = wav[cut:]
    pieces.append(wav)
    return pieces


def _piece_paths(root: Path, job: Job, count: int) -> list[Path]:
    main = root / job.path
    if count == 1:
        return [main]
    return [main] + [main.with_name(f"{job.id}_p{i:02d}.flac") for i in range(1, count)]


def render_job(root: Path, job: Job) -> str:
    """Render ``job`` into ``root`` unless done; returns "done", "rendered", "short" or "failed".

    A clip longer than ``MAX_SECONDS`` becomes ``<id>.flac`` plus ``<id>_pNN.flac``; the
    first piece is written last, so its presence means the whole clip is done.
    """
    main = root / job.path
    skip_marker = main.with_suffix(".short")
    if main.exists() or skip_marker.exists():
        return "done"
    try:
        wav, rate = job.render()
    except Exception as error:  # noqa: BLE001 - one bad clip must not stop a long build
        log.warning("%s: %s", job.id, error)
        return "failed"
    wav = to_corpus_audio(wav, rate)
    if len(wav) < MIN_SECONDS * SAMPLE_RATE:
        with atomic_path(skip_marker) as temporary:
            temporary.write_text("shorter than 0.5 s\n")
        return "short"
    pieces = split_long(wav)
    for piece, path in reversed(list(zip(pieces, _piece_paths(root, job, len(pieces)), strict=True))):
        with atomic_path(path) as temporary:
            sf.write(str(temporary), piece, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return "rendered"


def manifest_rows(root: Path, jobs: list[Job]) -> list[dict]:
    """Manifest rows for every job whose audio exists; pieces of split clips get ``_pNN`` ids and no text."""
    rows = []
    for job in jobs:
        main = root / job.path
        if not main.exists():
            continue
        paths = [main] + sorted(main.parent.glob(f"{job.id}_p[0-9][0-9].flac"))
        for index, path in enumerate(paths):
            row = {
                "id": job.id if index == 0 else path.stem,
                "path": path.relative_to(root).as_posix(),
                "language": job.language,
                "text": job.text if len(paths) == 1 else "",
                "speaker": job.speaker,
                "source": job.source,
                "license": job.license,
                "duration": round(sf.info(str(path)).frames / SAMPLE_RATE, 3),
                "split": job.split,
                "kind": job.kind,
            }
            rows.append(row)
    return rows


def write_manifest(root: Path, jobs: list[Job]) -> list[dict]:
    """Write ``manifest.jsonl`` (atomically) from the audio that exists; returns its rows."""
    rows = manifest_rows(root, jobs)
    atomic_write_text(
        root / "manifest.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )
    return rows


def summarize(rows: list[dict]) -> dict:
    """Hours per language (real / synthetic / dev), speakers per language, and totals."""
    languages: dict[str, dict] = {}
    for row in rows:
        entry = languages.setdefault(
            row["language"],
            {
                "real_h": 0.0,
                "synthetic_h": 0.0,
                "dev_h": 0.0,
                "clips": 0,
                "dev_clips": 0,
                "unseen_h": 0.0,
                "unseen_clips": 0,
                "speakers": set(),
                "real_speakers": set(),
                "train_real_speakers": set(),
            },
        )
        hours = row["duration"] / 3600
        entry["real_h" if row["kind"] == "real" else "synthetic_h"] += hours
        entry["clips"] += 1
        entry["speakers"].add(row["speaker"])
        if row["kind"] == "real":
            entry["real_speakers"].add(row["speaker"])
            if row["split"] == "train":
                entry["train_real_speakers"].add(row["speaker"])
        if row["split"] == "dev":
            entry["dev_h"] += hours
            entry["dev_clips"] += 1
        elif row["split"] == "dev-unseen":
            entry["unseen_h"] += hours
            entry["unseen_clips"] += 1
    out = {}
    for language, entry in sorted(languages.items()):
        out[language] = {
            k: round(v, 3) if isinstance(v, float) else v
            for k, v in entry.items()
            if k not in ("speakers", "real_speakers", "train_real_speakers")
        }
        for key in ("speakers", "real_speakers", "train_real_speakers"):
            out[language][key] = len(entry[key])
    total = {
        k: round(sum(v[k] for v in out.values()), 3)
        for k in ("real_h", "synthetic_h", "dev_h", "clips", "dev_clips", "unseen_h", "unseen_clips")
    }
    total["speakers"] = len({r["speaker"] for r in rows})
    total["real_speakers"] = len({r["speaker"] for r in rows if r["kind"] == "real"})
    total["train_real_speakers"] = len(
        {r["speaker"] for r in rows if r["kind"] == "real" and r["split"] == "train"}
    )
    total["languages"] = len(out)
    return {"languages": out, "total": total}


def format_summary(summary: dict) -> str:
    """The summary as a Markdown table (also what the CLI prints)."""
    lines = [
        "| language | real h | synthetic h | total h | speakers (real, real in train) | clips "
        "| dev clips | dev min | unseen dev clips | unseen dev min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for language, s in list(summary["languages"].items()) + [("**all**", summary["total"])]:
        lines.append(
            f"| {language} | {s['real_h']:.2f} | {s['synthetic_h']:.2f} | {s['real_h'] + s['synthetic_h']:.2f} "
            f"| {s['speakers']} ({s['real_speakers']}, {s['train_real_speakers']}) | {s['clips']} "
            f"| {s['dev_clips']} | {s['dev_h'] * 60:.1f} | {s['unseen_clips']} | {s['unseen_h'] * 60:.1f} |"
        )
    return "\n".join(lines)


def build(
    root: Path,
    languages: list[str],
    max_per_voice: int,
    workers: int = 1,
    espeak_per_language: int = 10,
    progress: bool = True,
    prune: bool = False,
) -> dict:
    """Render every planned clip missing under ``root``; rewrite the manifest after each stage
    (and every ``MANIFEST_EVERY_S`` seconds within one).

    Audio under ``root/audio`` that the plan no longer names (left by a build with other
    options or other packages) is counted as ``stale`` in the summary, and deleted if ``prune``.
    """
    root.mkdir(parents=True, exist_ok=True)
    jobs = plan(languages, max_per_voice, espeak_per_language)
    counts: dict[str, int] = defaultdict(int)
    groups: list[str] = list(dict.fromkeys(job.group for job in jobs))
    bar = tqdm(total=len(jobs), desc="corpus", unit="clip", disable=not progress, mininterval=2.0, miniters=1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for group in groups:
            todo = [job for job in jobs if job.group == group]
            bar.set_postfix_str(group)
            checkpoint = time.monotonic()
            for status in pool.map(lambda job: render_job(root, job), todo):
                counts[status] += 1
                bar.update()
                if time.monotonic() - checkpoint > MANIFEST_EVERY_S:  # slow stages: checkpoint too
                    write_manifest(root, jobs)
                    checkpoint = time.monotonic()
            write_manifest(root, jobs)
    bar.close()
    rows = write_manifest(root, jobs)
    planned = {row["path"] for row in rows} | {job.path for job in jobs}
    planned |= {str(Path(job.path).with_suffix(".short")) for job in jobs}
    stale = [
        p
        for p in (root / "audio").rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() not in planned
    ]
    if prune:
        for path in stale:
            path.unlink()
    summary = summarize(rows)
    summary["work"] = dict(counts)
    summary["work"]["stale_deleted" if prune else "stale"] = len(stale)
    summary["settings"] = {
        "languages": languages,
        "max_utterances_per_voice": max_per_voice,
        "espeak_voices_per_language": espeak_per_language,
        "sample_rate": SAMPLE_RATE,
    }
    atomic_write_text(root / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
