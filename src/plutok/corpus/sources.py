"""Real speech the models may be trained on: Debian packages (docs/corpus.md, "Sources and licences").

Each source lists :class:`RealClip` records (file on disk + transcript); files are
found with ``dpkg -L`` so nothing depends on a hard-coded layout beyond what the
packages ship. A source whose package is not installed yields nothing.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["RealClip", "real_clips", "decode", "REAL_PACKAGES"]

REAL_PACKAGES = (
    "festvox-ru",
    "fillets-ng-data",
    "fillets-ng-data-cs",
    "asterisk-core-sounds-en",
    "asterisk-core-sounds-en-g722",
    "asterisk-core-sounds-it",
    "asterisk-core-sounds-it-g722",
    "asterisk-core-sounds-ru",
    "asterisk-core-sounds-ru-g722",
    "pocketsphinx-testdata",
    # real voices added 2026-12 (licences in docs/corpus.md)
    "asterisk-prompt-fr-armelle",
    "asterisk-prompt-es-co",
    "asterisk-prompt-it-menardi-wav",
    "hedgewars-data",
)

# Hedgewars voice packs: the language each pack speaks (heard with Whisper base's language
# detection on 10 lines per pack, then checked by the folder name: ``Russian`` is English with
# a Russian accent, ``Russian_pl`` Polish with one).
HEDGEWARS_VOICES = {
    "British": "en",
    "Classic": "en",
    "Default": "en",
    "Default_es": "es",
    "Default_pl": "pl",
    "Default_ru": "ru",
    "Default_uk": "uk",
    "HillBilly": "en",
    "Mobster": "en",
    "Pirate": "en",
    "Robot": "en",
    "Russian": "en",
    "Russian_pl": "pl",
    "Singer": "en",
    "Surfer": "en",
}


@dataclass(frozen=True)
class RealClip:
    """One recorded utterance shipped by a Debian package."""

    id: str
    language: str
    text: str
    speaker: str
    source: str  # Debian package name
    license: str
    path: Path


def package_files(package: str) -> list[Path]:
    """Files installed by ``package`` (empty if it is not installed)."""
    if shutil.which("dpkg") is None:
        return []
    done = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return []
    return sorted(Path(line) for line in done.stdout.splitlines() if line.startswith("/"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def festvox_ru() -> Iterator[RealClip]:
    files = package_files("festvox-ru")
    prompts = [p for p in files if p.name == "txt.done.data"]
    if not prompts:
        return
    texts = {
        m[1]: m[2].replace("+", "")
        for m in re.finditer(r'\(\s*(\S+)\s+"(.*)"\s*\)', prompts[0].read_text("utf-8"))
    }
    for path in files:
        if path.suffix == ".wav" and path.parent.name == "wav":
            yield RealClip(
                f"festvox-ru-{path.stem}",
                "ru",
                texts.get(path.stem, ""),
                "festvox-ru-nsh",
                "festvox-ru",
                "BSD-like (festvox-ru copyright)",
                path,
            )


_DIALOG = re.compile(
    r'dialogId\("([^"]+)",\s*"[^"]*",\s*"((?:[^"\\]|\\.)*)"\)(?:\s*dialogStr\(\s*"((?:[^"\\]|\\.)*)"\s*\))?'
)


def fillets(language: str) -> Iterator[RealClip]:
    """Fish Fillets NG acted dialogue; speaker = character code in the id (``pot-m-dik`` -> ``m``)."""
    package = "fillets-ng-data-cs" if language == "cs" else "fillets-ng-data"
    files = package_files(package)
    script_root = Path("/usr/share/games/fillets-ng/script")
    for path in files:
        if path.suffix != ".ogg" or path.parent.name != language:
            continue
        level = path.parent.parent.name
        texts: dict[str, str] = {}
        folder = script_root / level
        scripts = sorted(folder.glob(f"*dialogs_{language}.lua")) + sorted(folder.glob("*dialogs_en.lua"))
        for lua in scripts + sorted(folder.glob("*dialogs.lua")):
            for m in _DIALOG.finditer(lua.read_text("utf-8", errors="replace")):
                text = m[3] if language != "en" else m[2]
                if text and m[1] not in texts:
                    texts[m[1]] = text
        parts = path.stem.split("-")
        character = parts[1] if len(parts) > 2 else parts[0] if parts[0] in ("m", "v") else "x"
        yield RealClip(
            f"fillets-{language}-{level}-{path.stem}",
            language,
            texts.get(path.stem, ""),
            f"fillets-{language}-{character}",
            package,
            "GPL-2+ (Fish Fillets NG data)",
            path,
        )


def asterisk(language: str) -> Iterator[RealClip]:
    """Asterisk studio prompts (G.722); text from ``core-sounds-XX.txt.gz``."""
    texts: dict[str, str] = {}
    for doc in package_files(f"asterisk-core-sounds-{language}"):
        if doc.name.startswith("core-sounds-") and doc.suffix == ".gz":
            for line in gzip.open(doc, "rt", encoding="utf-8", errors="replace"):
                key, sep, text = line.partition(":")
                if sep and not line.startswith(";"):
                    texts[key.strip()] = re.sub(r"\([^)]*\)|\[[^]]*\]", "", text).strip()
    package = f"asterisk-core-sounds-{language}-g722"
    for path in package_files(package):
        if path.suffix != ".g722":
            continue
        voice_dir = next(p for p in path.parents if p.parent.name == "sounds")
        key = path.relative_to(voice_dir).with_suffix("").as_posix()
        yield RealClip(
            f"asterisk-{language}-{_slug(key)}",
            language,
            texts.get(key, ""),
            f"asterisk-{voice_dir.name}",
            package,
            "CC-BY-SA-3.0 (Asterisk core sounds, Digium)",
            path,
        )


def pocketsphinx_librivox() -> Iterator[RealClip]:
    files = package_files("pocketsphinx-testdata")
    texts: dict[str, str] = {}
    for path in files:
        if path.name == "transcription" and path.parent.name == "librivox":
            for m in re.finditer(r"<s>(.*?)</s>\s*\((\S+)\)", path.read_text("utf-8")):
                texts[m[2]] = m[1].strip()
    for path in files:
        if path.suffix == ".wav" and path.parent.name == "librivox":
            yield RealClip(
                f"librivox-{path.stem}",
                "en",
                texts.get(path.stem, ""),
                "librivox-austen-reader",
                "pocketsphinx-testdata",
                "Public domain (LibriVox recording)",
                path,
            )


def asterisk_prompts(package: str, language: str, speaker: str, license: str) -> Iterator[RealClip]:
    """Third-party Asterisk prompt sets (8 kHz GSM or WAV); no transcripts ship with them.

    The same file appears under ``sounds/<lang>/digits`` and the ``sounds/digits/<lang>``
    symlink; each recording is listed once, by its real path. ``silence/`` holds no speech.
    """
    seen: set[Path] = set()
    for path in package_files(package):
        if path.suffix not in (".gsm", ".wav") or "silence" in path.parts or not path.is_file():
            continue
        real = path.resolve()
        if real in seen:
            continue
        seen.add(real)
        voice_dir = next(p for p in real.parents if p.parent.name == "sounds")
        key = real.relative_to(voice_dir).with_suffix("").as_posix()
        yield RealClip(f"{speaker}-{_slug(key)}", language, "", speaker, package, license, real)


def hedgewars_voices() -> Iterator[RealClip]:
    """Hedgewars voice packs: short acted game lines, one speaker per pack; no transcripts."""
    for path in package_files("hedgewars-data"):
        if path.suffix != ".ogg" or path.parent.parent.name != "voices":
            continue
        voice = path.parent.name
        language = HEDGEWARS_VOICES.get(voice)
        if language is None:  # a pack this release does not know: its language is unchecked
            continue
        yield RealClip(
            f"hedgewars-{_slug(voice)}-{_slug(path.stem)}",
            language,
            "",
            f"hedgewars-{voice}",
            "hedgewars-data",
            "GFDL-1.3 (Hedgewars sounds, Andrey Korotaev)",
            path,
        )


def real_clips(languages: list[str]) -> list[RealClip]:
    """Every real clip of the training sources in ``languages``, in a fixed order."""
    clips: list[RealClip] = []
    generators = [
        festvox_ru(),
        fillets("cs"),
        fillets("en"),
        asterisk("en"),
        asterisk("it"),
        asterisk("ru"),
        pocketsphinx_librivox(),
        asterisk_prompts(
            "asterisk-prompt-fr-armelle", "fr", "asterisk-fr-armelle", "BSD-like (Michel Gutierrez, 2006)"
        ),
        asterisk_prompts("asterisk-prompt-es-co", "es", "asterisk-es-co", "GPL-2 (asterisk-prompt-es-co)"),
        asterisk_prompts(
            "asterisk-prompt-it-menardi-wav",
            "it",
            "asterisk-it-menardi",
            "CC-BY-SA-3.0 (Marco Menardi and Paola Dal Zot, voip.ammdomus.it)",
        ),
        hedgewars_voices(),
    ]
    for generator in generators:
        clips += [c for c in generator if c.language in languages]
    return clips


# Raw telephone formats libsndfile cannot read: ffmpeg demuxer and the format's sample rate.
_FFMPEG_FORMATS = {".g722": ("g722", 16000), ".gsm": ("gsm", 8000)}


def decode(path: Path) -> tuple[np.ndarray, int]:
    """Read any source file as mono float32 ``(samples,)`` and its rate; G.722 and GSM via ffmpeg."""
    if path.suffix in _FFMPEG_FORMATS:
        demuxer, rate = _FFMPEG_FORMATS[path.suffix]
        if shutil.which("ffmpeg") is None:
            raise RuntimeError(f"ffmpeg is needed to decode {path.suffix} files (apt-get install ffmpeg)")
        done = subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-f", demuxer, "-i", str(path)]
            + ["-f", "s16le", "-ac", "1", "-ar", str(rate), "-"],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg failed on {path}: {done.stderr.decode(errors='replace')[-300:]}")
        return np.frombuffer(done.stdout, dtype="<i2").astype(np.float32) / 32768.0, rate
    wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return wav.mean(axis=1), int(rate)
