"""Run systems over an evaluation set, score every utterance, aggregate.

Layout of ``out_dir``::

    partial/<system>.jsonl     one scored utterance per line, appended as it finishes (resume point)
    partial/reference.jsonl    ASR transcript and DNSMOS of each reference
    audio/<system>/<id>.wav    first few decoded utterances (and audio/reference/), for listening
    results.json, report.md, *.png   written by :mod:`plutok.evaluation.report`

A killed run loses at most the utterance in progress: rerunning the same command
skips what ``partial/`` already holds (unless ``resume=False``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plutok.audio import find_files, load_audio, write_audio
from plutok.errors import PlutokError
from plutok.evaluation import metrics as M
from plutok.evaluation.baselines import System

__all__ = [
    "ALL_METRICS",
    "Utterance",
    "load_manifest",
    "load_folder",
    "load_dataset",
    "evaluate",
    "aggregate",
    "code_entropy_bits",
]

ALL_METRICS = ("asr", "stoi", "pesq", "speaker", "dnsmos")
SYNTHETIC_HINTS = ("espeak", "festival", "flite", "piper", "kokoro", "mbrola", "tts", "synth")


@dataclass(frozen=True)
class Utterance:
    """One evaluation item. ``kind`` is ``"real"``, ``"synthetic"`` or None (unknown)."""

    id: str
    path: Path
    language: str
    text: str
    split: str | None = None
    source: str | None = None
    speaker: str | None = None
    kind: str | None = None


def _kind(record: dict[str, Any]) -> str | None:
    kind = record.get("kind")
    if kind in ("real", "synthetic"):
        return str(kind)
    if "synthetic" in record:
        return "synthetic" if record["synthetic"] else "real"
    source = str(record.get("source") or "").lower()
    if source:
        return "synthetic" if any(hint in source for hint in SYNTHETIC_HINTS) else "real"
    return None


def load_manifest(
    path: str | os.PathLike, split: str | None = None, limit: int | None = None, kind: str | None = None
) -> list[Utterance]:
    """Read a JSONL manifest (fields ``path``, ``language``, ``text``; optional ``id``, ``split``,
    ``source``, ``speaker``, ``kind``/``synthetic``). Relative paths are relative to the manifest's folder.
    ``split`` and ``kind`` (``real``/``synthetic``) keep only matching rows.

    Raises:
        PlutokError: unreadable file, a line that is not a JSON object, or a missing required field.
    """
    path = Path(path)
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PlutokError(f"{path}: cannot read manifest ({error})") from None
    items: list[Utterance] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise PlutokError(f"{path}:{number}: not a JSON object")
        missing = [key for key in ("path", "language", "text") if key not in record]
        if missing:
            raise PlutokError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
        if split is not None and record.get("split") != split:
            continue
        if kind is not None and _kind(record) != kind:
            continue
        audio = Path(record["path"])
        items.append(
            Utterance(
                id=str(record.get("id") or audio.stem),
                path=audio if audio.is_absolute() else path.parent / audio,
                language=str(record["language"]),
                text=str(record["text"]),
                split=record.get("split"),
                source=record.get("source"),
                speaker=None if record.get("speaker") is None else str(record["speaker"]),
                kind=_kind(record),
            )
        )
        if limit is not None and len(items) >= limit:
            break
    return items


def load_folder(
    folder: str | os.PathLike, language: str | None = None, limit: int | None = None
) -> list[Utterance]:
    """Audio files under ``folder`` (recursive, sorted) with the transcript in ``<stem>.txt`` beside each.

    Files without a transcript get empty text (no WER/CER for them).
    """
    folder = Path(folder)
    files = find_files(folder)
    items = []
    for audio in files[: limit if limit is not None else None]:
        text_file = audio.with_suffix(".txt")
        text = text_file.read_text("utf-8").strip() if text_file.exists() else ""
        relative = audio.relative_to(folder).with_suffix("")
        items.append(Utterance(id=str(relative), path=audio, language=language or "", text=text))
    return items


def load_dataset(
    source: str | os.PathLike,
    split: str | None = None,
    limit: int | None = None,
    language: str | None = None,
    kind: str | None = None,
) -> list[Utterance]:
    """A manifest file or a folder of audio (+ ``.txt``); raises PlutokError when it yields nothing."""
    source = Path(source)
    if source.is_dir():
        items = load_folder(source, language, limit)
    elif source.is_file():
        items = load_manifest(source, split, limit, kind)
    else:
        raise PlutokError(f"{source}: no such manifest or folder")
    if not items:
        detail = f" with split {split!r}" if split and not source.is_dir() else ""
        raise PlutokError(f"{source}: no utterances{detail}")
    return items


# --------------------------------------------------------------------------- per-utterance scoring


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:120] or "utt"


class _JsonlLog:
    """Append-only JSONL keyed by utterance id, with a header that must match to resume."""

    def __init__(self, path: Path, header: dict[str, Any], resume: bool) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume and path.exists():
            lines = path.read_text("utf-8").splitlines()
            try:
                first = json.loads(lines[0]) if lines else None
            except ValueError:
                first = None
            if isinstance(first, dict) and first.get("_header") == header:
                for line in lines[1:]:
                    try:
                        row = json.loads(line)
                    except ValueError:  # a line cut by a kill: redo that utterance
                        continue
                    if isinstance(row, dict) and "id" in row:
                        self.rows[str(row["id"])] = row
                self._rewrite(header)
                return
        self._rewrite(header)

    def _rewrite(self, header: dict[str, Any]) -> None:
        text = json.dumps({"_header": header}) + "\n"
        text += "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows.values())
        from plutok.files import atomic_write_text

        atomic_write_text(self.path, text)

    def append(self, row: dict[str, Any]) -> None:
        self.rows[str(row["id"])] = row
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.floating):
        return _clean(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def _asr_fields(prefix: str, text: str, hypothesis: str, language: str) -> dict[str, Any]:
    counts = M.error_counts(text, hypothesis, language)
    return {
        f"{prefix}hypothesis": hypothesis,
        f"{prefix}word_errors": counts.word_errors,
        f"{prefix}words": counts.words,
        f"{prefix}char_errors": counts.char_errors,
        f"{prefix}chars": counts.chars,
        f"{prefix}wer": counts.wer,
        f"{prefix}cer": counts.cer,
    }


def evaluate(
    utterances: Sequence[Utterance],
    systems: Sequence[System],
    out_dir: str | os.PathLike,
    *,
    metrics: Iterable[str] = ALL_METRICS,
    transcriber_factory: Callable[[], Any] | None = None,
    asr_cache_path: str | os.PathLike | None = None,
    resume: bool = True,
    keep_audio: int = 3,
    progress: bool = True,
    text_from_reference: bool = False,
) -> dict[str, Any]:
    """Score every system on every utterance; returns ``{"systems", "references", "utterances", "errors"}``.

    Args:
        utterances: the evaluation set.
        systems: model and/or baselines.
        out_dir: working/output directory (see module docstring).
        metrics: subset of :data:`ALL_METRICS`.
        transcriber_factory: builds the ASR (default :class:`plutok.evaluation.asr.Transcriber`).
        asr_cache_path: JSON cache of reference transcripts (default in the user cache dir).
        resume: reuse rows already in ``out_dir/partial`` from the same settings.
        keep_audio: decoded wavs kept per system (for spectrograms and listening).
        progress: show tqdm bars on stderr.
        text_from_reference: utterances without a transcript are scored against the ASR's
            transcript of their reference audio, so their WER is the *dWER* (words the ASR
            hears differently after coding; the reference's own WER is then 0). Without it
            they get no WER. Sources with no transcripts (prompt sets, game voice packs)
            need it.
    """
    from tqdm import tqdm

    metrics = tuple(m for m in ALL_METRICS if m in set(metrics))
    unknown = set(metrics) - set(ALL_METRICS)
    if unknown:
        raise PlutokError(f"unknown metric(s) {sorted(unknown)}; known: {', '.join(ALL_METRICS)}")
    out = Path(out_dir)
    (out / "partial").mkdir(parents=True, exist_ok=True)
    ids = [u.id for u in utterances]
    if len(set(ids)) != len(ids):
        raise PlutokError("utterance ids are not unique in the evaluation set")
    kept = set(ids[:keep_audio])
    errors: list[dict[str, str]] = []

    transcriber = None
    cache = None
    if "asr" in metrics:
        from plutok.evaluation.asr import Transcriber, TranscriptCache, cache_root

        transcriber = (transcriber_factory or Transcriber)()
        cache = TranscriptCache(asr_cache_path or cache_root() / "asr_references.json")

    audio_cache: dict[str, np.ndarray] = {}
    texts = {u.id: u.text for u in utterances}

    def reference(utt: Utterance) -> np.ndarray | None:
        if utt.id not in audio_cache:
            try:
                audio_cache[utt.id] = load_audio(utt.path, M.METRIC_RATE)[0]
            except PlutokError as error:
                errors.append({"id": utt.id, "system": "reference", "error": str(error)})
                return None
        return audio_cache[utt.id]

    # References: ASR transcript (cached by file hash) and DNSMOS, once per utterance.
    ref_log = _JsonlLog(out / "partial" / "reference.jsonl", {"metrics": list(metrics)}, resume)
    for utt in tqdm(utterances, desc="reference", disable=not progress, unit="utt"):
        if utt.id in ref_log.rows:
            if text_from_reference and not utt.text.strip() and "hypothesis" in ref_log.rows[utt.id]:
                texts[utt.id] = ref_log.rows[utt.id]["hypothesis"]
            continue
        wav = reference(utt)
        if wav is None:
            continue
        row: dict[str, Any] = {"id": utt.id, "duration": len(wav) / M.METRIC_RATE}
        if transcriber is not None and cache is not None:
            key = cache.key(utt.path, utt.language)
            hypothesis = cache.get(key)
            if hypothesis is None:
                hypothesis = transcriber.transcribe(wav, utt.language)
                cache.put(key, hypothesis)
            if text_from_reference and not utt.text.strip():
                texts[utt.id] = hypothesis
                row["text_source"] = "reference-asr"
            row.update(_asr_fields("", texts[utt.id], hypothesis, utt.language))
        if "dnsmos" in metrics:
            row.update({f"dnsmos_{k}": v for k, v in M.dnsmos(wav).items()})
        if utt.id in kept:
            write_audio(out / "audio" / "reference" / f"{_safe_name(utt.id)}.wav", wav, M.METRIC_RATE)
        ref_log.append({k: _clean(v) for k, v in row.items()})

    results: dict[str, list[dict[str, Any]]] = {}
    for system in systems:
        header = {"system": system.describe(), "metrics": list(metrics)}
        log = _JsonlLog(out / "partial" / f"{_safe_name(system.name)}.jsonl", header, resume)
        for utt in tqdm(utterances, desc=system.name, disable=not progress, unit="utt"):
            if utt.id in log.rows:
                continue
            wav = reference(utt)
            if wav is None:
                continue
            try:
                result = system.process(wav)
            except PlutokError as error:
                errors.append({"id": utt.id, "system": system.name, "error": str(error)})
                continue
            duration = len(wav) / M.METRIC_RATE
            aligned, lag = M.align(wav, result.audio)
            row = {
                "id": utt.id,
                "duration": duration,
                "bits_per_second": result.bits_per_second,
                "num_tokens": result.num_tokens,
                "num_codes": result.num_codes,
                "tokens_per_second": None if result.num_tokens is None else result.num_tokens / duration,
                "codes_per_second": None if result.num_codes is None else result.num_codes / duration,
                "encode_seconds": result.encode_seconds,
                "decode_seconds": result.decode_seconds,
                "lag_ms": 1000.0 * lag / M.METRIC_RATE,
                "output_samples": int(len(result.audio)),
                **result.extra,
            }
            if result.codes is not None:
                row["code_counts"] = {
                    str(k): int(v) for k, v in sorted(Counter(result.codes.tolist()).items())
                }
            if "stoi" in metrics:
                row["stoi"] = M.stoi(wav, aligned)
            if "pesq" in metrics:
                row["pesq"] = M.pesq_wb(wav, aligned)
            if "speaker" in metrics:
                row["speaker_similarity"] = M.speaker_similarity(wav, aligned)
            if "dnsmos" in metrics:
                row.update({f"dnsmos_{k}": v for k, v in M.dnsmos(result.audio).items()})
            if transcriber is not None:
                row.update(
                    _asr_fields(
                        "", texts[utt.id], transcriber.transcribe(result.audio, utt.language), utt.language
                    )
                )
            if utt.id in kept:
                write_audio(
                    out / "audio" / _safe_name(system.name) / f"{_safe_name(utt.id)}.wav",
                    result.audio,
                    M.METRIC_RATE,
                )
            log.append({k: _clean(v) for k, v in row.items()})
        results[system.name] = [log.rows[i] for i in ids if i in log.rows]
    return {
        "systems": [s.describe() for s in systems],
        "utterances": [
            {**{k: v for k, v in asdict(u).items() if k != "path"}, "path": str(u.path)} for u in utterances
        ],
        "references": [ref_log.rows[i] for i in ids if i in ref_log.rows],
        "rows": results,
        "errors": errors,
        "metrics": list(metrics),
    }


# --------------------------------------------------------------------------- aggregation


def code_entropy_bits(counts: Counter | dict[Any, int]) -> float:
    """Empirical unigram entropy (bits per code) of a code histogram."""
    values = np.array([v for v in counts.values() if v > 0], dtype=np.float64)
    if values.size == 0:
        return float("nan")
    p = values / values.sum()
    return float(-(p * np.log2(p)).sum())


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def _ratio(rows: list[dict[str, Any]], num: str, den: str) -> float | None:
    pairs = [(r[num], r[den]) for r in rows if r.get(num) is not None and r.get(den)]
    total = sum(d for _, d in pairs)
    return sum(n for n, _ in pairs) / total if total else None


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    duration = sum(r["duration"] for r in rows)
    out: dict[str, Any] = {"utterances": len(rows), "hours": duration / 3600.0}
    if not rows or duration <= 0:
        return out
    if all(r.get("bits_per_second") is not None for r in rows):
        out["bits_per_second"] = sum(r["bits_per_second"] * r["duration"] for r in rows) / duration
    if all(r.get("num_tokens") is not None for r in rows):
        out["tokens_per_second"] = sum(r["num_tokens"] for r in rows) / duration
        out["codes_per_second"] = sum(r["num_codes"] for r in rows) / duration
        counts: Counter = Counter()
        for r in rows:
            counts.update({k: v for k, v in (r.get("code_counts") or {}).items()})
        bits_per_code = code_entropy_bits(counts)
        out["code_entropy_bits_per_code"] = bits_per_code
        out["code_entropy_bits_per_second"] = bits_per_code * out["codes_per_second"]
        out["codes_per_token"] = (
            out["codes_per_second"] / out["tokens_per_second"] if out["tokens_per_second"] else None
        )
    out["wer"] = _ratio(rows, "word_errors", "words")
    out["cer"] = _ratio(rows, "char_errors", "chars")
    for key in (
        "stoi",
        "pesq",
        "speaker_similarity",
        "dnsmos_ovrl",
        "dnsmos_sig",
        "dnsmos_bak",
        "dnsmos_p808",
    ):
        value = _mean(rows, key)
        if value is not None:
            out[key] = value
    if any("encode_seconds" in r for r in rows):
        out["encode_rtf"] = sum(r.get("encode_seconds", 0.0) for r in rows) / duration
        out["decode_rtf"] = sum(r.get("decode_seconds", 0.0) for r in rows) / duration
    return {k: _clean(v) for k, v in out.items()}


def aggregate(evaluation: dict[str, Any]) -> dict[str, Any]:
    """Per system (and ``reference``): totals over all, per language and per kind (real/synthetic)."""
    meta = {u["id"]: u for u in evaluation["utterances"]}
    tables: dict[str, dict[str, Any]] = {}
    named = {"reference": evaluation["references"], **evaluation["rows"]}
    for name, rows in named.items():
        groups: dict[str, Any] = {"all": _summary(rows), "language": {}, "kind": {}}
        for field in ("language", "kind"):
            values = sorted({str(meta[r["id"]].get(field)) for r in rows if meta[r["id"]].get(field)})
            for value in values:
                subset = [r for r in rows if str(meta[r["id"]].get(field)) == value]
                groups[field][value] = _summary(subset)
        tables[name] = groups
    # WER - reference WER per group: what the system adds to the ASR's own error on the originals.
    reference = tables.get("reference")
    for name, groups in tables.items():
        if name == "reference" or reference is None:
            continue
        pairs = [(groups["all"], reference["all"])]
        for field in ("language", "kind"):
            pairs += [(summary, reference[field].get(value, {})) for value, summary in groups[field].items()]
        for summary, base in pairs:
            for key in ("wer", "cer"):
                if summary.get(key) is not None and base.get(key) is not None:
                    summary[f"{key}_minus_reference"] = summary[key] - base[key]
    return tables
