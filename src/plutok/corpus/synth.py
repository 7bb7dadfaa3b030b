"""Synthetic voices: espeak-ng (voices x variants), flite, Festival, Piper, Kokoro.

Each engine lists the voices it can offer *on this machine* (missing tools or
voices are skipped, not fatal) and renders one sentence to a float32 waveform.
All engines run as subprocesses or in-process ONNX sessions on the CPU.
"""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["Voice", "espeak_voices", "flite_voices", "festival_voices", "synthesize", "available_voices"]


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an engine plus the engine's voice name and settings."""

    engine: str  # espeak | flite | festival | piper | kokoro
    name: str  # engine-specific voice id, e.g. "fr+m3" or "kal16"
    language: str  # ISO 639-1 code used in the manifest
    license: str
    encoding: str = "utf-8"  # text encoding the engine expects (Festival voices)
    rate: int = 0  # espeak words per minute; 0 = engine default
    pitch: int = 0  # espeak pitch 0-99; 0 = engine default

    @property
    def speaker(self) -> str:
        """Stable, file-system-safe speaker id, e.g. ``espeak-fr-m3``."""
        return f"{self.engine}-{re.sub(r'[^A-Za-z0-9]+', '-', self.name).strip('-')}"


ESPEAK_LICENSE = "GPL-3.0-or-later (espeak-ng output)"
FLITE_LICENSE = "flite (BSD-like, CMU)"
FESTIVAL_LICENSE = "Festival voice licence (free, see /usr/share/doc/<voice package>/copyright)"

# manifest language -> espeak-ng voice name
ESPEAK_LANGUAGES: dict[str, str] = {
    "en": "en-us",
    "ru": "ru",
    "cs": "cs",
    "it": "it",
    "de": "de",
    "fr": "fr",
    "es": "es",
    "pl": "pl",
    "pt": "pt-br",
    "fi": "fi",
    "nl": "nl",
    "sv": "sv",
    "eo": "eo",
    "tr": "tr",
    "hu": "hu",
    "uk": "uk",
    "el": "el",
    "ro": "ro",
    "da": "da",
    "nb": "nb",
    "hi": "hi",
    "ca": "ca",
    "bg": "bg",
    "hr": "hr",
    "sk": "sk",
    "lt": "lt",
    "id": "id",
    "vi": "vi",
}
# flite voice -> nothing else needed, all American English
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
# Festival voice (without "voice_") -> (language, text encoding)
FESTIVAL_VOICES: dict[str, tuple[str, str]] = {
    "kal_diphone": ("en", "latin-1"),
    "ked_diphone": ("en", "latin-1"),
    "cmu_us_slt_arctic_hts": ("en", "latin-1"),
    "lp_diphone": ("it", "latin-1"),
    "pc_diphone": ("it", "latin-1"),
    "suo_fi_lj_diphone": ("fi", "latin-1"),
    "hy_fi_mv_diphone": ("fi", "latin-1"),
    "czech_dita": ("cs", "iso-8859-2"),
    "czech_krb": ("cs", "iso-8859-2"),
    "czech_machac": ("cs", "iso-8859-2"),
    "czech_ph": ("cs", "iso-8859-2"),
    "upc_ca_ona_hts": ("ca", "latin-1"),
    "msu_ru_nsh_clunits": ("ru", "utf-8"),
}


def _hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:8], "big")


@functools.lru_cache(maxsize=1)
def _espeak_variants() -> tuple[str, ...]:
    if shutil.which("espeak-ng") is None:
        return ()
    out = subprocess.run(
        ["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=False
    ).stdout
    names = []
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5:
            names.append(fields[4].split("/")[-1])
    return tuple(sorted(set(names)))


def espeak_voices(languages: list[str], per_language: int = 6) -> list[Voice]:
    """``per_language`` espeak-ng voices per language: the plain voice plus hash-chosen variants.

    Each gets its own hash-chosen speaking rate (140-185 wpm) and pitch (30-70), so
    the voices differ even where two variants sound alike.
    """
    variants = _espeak_variants()
    if not variants:
        return []
    voices: list[Voice] = []
    for language in languages:
        base = ESPEAK_LANGUAGES.get(language)
        if base is None:
            continue
        ranked = sorted(variants, key=lambda v, lang=language: _hash("espeak-variant", lang, v))
        for variant in [""] + ranked[: per_language - 1]:
            key = _hash("espeak-prosody", language, variant)
            name = f"{base}+{variant}" if variant else base
            voices.append(
                Voice(
                    "espeak", name, language, ESPEAK_LICENSE, rate=140 + key % 46, pitch=30 + (key >> 8) % 41
                )
            )
    return voices


def flite_voices() -> list[Voice]:
    if shutil.which("flite") is None:
        return []
    listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False).stdout.split()
    return [Voice("flite", v, "en", FLITE_LICENSE) for v in FLITE_VOICES if v in listed]


@functools.lru_cache(maxsize=1)
def _festival_installed() -> frozenset[str]:
    if shutil.which("text2wave") is None:
        return frozenset()
    found = set()
    for root in (Path("/usr/share/festival/voices"),):
        if root.is_dir():
            found |= {p.name for p in root.glob("*/*") if p.is_dir()}
    return frozenset(found)


def festival_voices(languages: list[str]) -> list[Voice]:
    installed = _festival_installed()
    return [
        Voice("festival", name, language, FESTIVAL_LICENSE, encoding=encoding)
        for name, (language, encoding) in FESTIVAL_VOICES.items()
        if language in languages and name in installed
    ]


def available_voices(languages: list[str], espeak_per_language: int = 6) -> list[Voice]:
    """All voices of all engines present on this machine for ``languages``, in a fixed order."""
    from plutok.corpus import neural  # local import: optional heavy dependencies

    return (
        espeak_voices(languages, espeak_per_language)
        + [v for v in flite_voices() if v.language in languages]
        + festival_voices(languages)
        + neural.piper_voices(languages)
        + neural.kokoro_voices(languages)
    )


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return wav.mean(axis=1), int(rate)


def synthesize(voice: Voice, text: str) -> tuple[np.ndarray, int]:
    """Render ``text`` with ``voice``; returns mono float32 ``(samples,)`` and its sample rate.

    Raises:
        RuntimeError: the engine failed or produced no audio.
    """
    if voice.engine in ("piper", "kokoro"):
        from plutok.corpus import neural

        return neural.synthesize(voice, text)
    with tempfile.TemporaryDirectory(prefix="plutok-tts-") as folder:
        out = Path(folder) / "out.wav"
        if voice.engine == "espeak":
            command = [
                "espeak-ng",
                "-v",
                voice.name,
                "-s",
                str(voice.rate),
                "-p",
                str(voice.pitch),
                "-w",
                str(out),
                text,
            ]
        elif voice.engine == "flite":
            command = ["flite", "-voice", voice.name, "-t", text, "-o", str(out)]
        elif voice.engine == "festival":
            source = Path(folder) / "in.txt"
            source.write_bytes(text.encode(voice.encoding, errors="ignore"))
            command = ["text2wave", "-eval", f"(voice_{voice.name})", str(source), "-o", str(out)]
        else:
            raise ValueError(f"unknown engine {voice.engine!r}")
        done = subprocess.run(command, capture_output=True, timeout=120, check=False)
        if done.returncode != 0 or not out.exists() or out.stat().st_size < 100:
            raise RuntimeError(
                f"{voice.engine} {voice.name} failed: {done.stderr.decode(errors='replace')[-300:]}"
            )
        return _read_wav(out)
