"""Offline text for the synthetic part of the corpus.

Natural sentences per language come from what a Debian system already holds or
installs from Debian packages:

* ``fortune`` cookie files (``fortunes``, ``fortunes-cs``, ``-de``, ``-es``, ``-it``,
  ``-pl``, ``-ru``, ``-br``, ``-eo``): quotes, proverbs, jokes;
* gettext catalogues under ``/usr/share/locale/<lang>/LC_MESSAGES/*.mo``: the
  translated messages of every installed program (UI sentences in ~100 languages);
* transcripts of the real speech sources (handed in by the builder).

Everything is filtered to plain sentences of 3-30 words, de-duplicated and put in a
seeded, deterministic order, so a build with the same packages gives the same text.
"""

from __future__ import annotations

import gettext
import hashlib
import random
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

__all__ = ["clean_sentence", "split_sentences", "fortune_sentences", "gettext_sentences", "sentences_for"]

FORTUNE_ROOT = Path("/usr/share/games/fortunes")
LOCALE_ROOT = Path("/usr/share/locale")

# language code (ISO 639-1, as used in the manifest) -> fortune sub-directories
FORTUNE_DIRS: dict[str, tuple[str, ...]] = {
    "en": ("",),
    "cs": ("cs",),
    "de": ("de",),
    "es": ("es",),
    "it": ("it",),
    "pl": ("pl",),
    "ru": ("ru",),
    "pt": ("pt", "br", "pt_BR"),
    "eo": ("eo",),
}
# files in the top fortune directory that are not English (fortunes-it, fortunes-br)
NOT_ENGLISH = frozenset(
    {
        "brasil",
        "definizioni",
        "formiche",
        "italia",
        "itatrek",
        "leggi",
        "luttazzi",
        "paolotedeschi",
        "zuse",
        "translate-me",
    }
)
# language code -> gettext locale directories
LOCALE_DIRS: dict[str, tuple[str, ...]] = {"pt": ("pt", "pt_BR"), "zh": ("zh_CN",), "nb": ("nb", "no")}

_FORMAT = re.compile(r"%[-+ #0-9.]*[a-zA-Z]|\{[^}]*\}|\$\{?\w+\}?|<[^>]*>|&\w+;|\\[nt]")
_BAD = re.compile(r"[/\\=_@#|\[\]{}<>*^~`\d]")
_CODE = re.compile(r"--|\(\)|\w[A-Z]{2}|[a-z][A-Z]|\.\w")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])")
# scripts written without spaces between words: length is counted in characters / 2
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")


def clean_sentence(text: str, min_words: int = 3, max_words: int = 30) -> str | None:
    """Return ``text`` as one tidy sentence, or None if it does not look like natural prose.

    Drops format specifiers, markup, code-like strings (paths, ``=``, digits, ``_``,
    options, CamelCase), and strings outside ``min_words``..``max_words`` words
    (Japanese/Chinese, written without spaces: two characters count as a word).
    """
    text = unicodedata.normalize("NFC", text)
    if _FORMAT.search(text) or _CODE.search(text):
        return None  # a message with placeholders or options reads badly once they are removed
    text = text.replace("&", "")
    text = " ".join(text.split()).strip(" -:;,\"'«»“”„")
    if not text or _BAD.search(text):
        return None
    words = [w for w in text.split() if any(ch.isalpha() for ch in w)]
    if _UNSPACED.search(text):
        if re.search(r"[A-Za-z]", text):
            return None  # mixed-script UI strings ("ELF ファイル") read badly
        words = ["x"] * (len(text.replace(" ", "")) // 2)
    if not (min_words <= len(words) <= max_words):
        return None
    letters = sum(ch.isalpha() or unicodedata.category(ch).startswith("M") for ch in text)
    if letters < 0.7 * len(text.replace(" ", "")):
        return None
    if sum(w.isupper() and len(w) > 1 for w in words) > len(words) / 3:  # SHOUTING or acronyms
        return None
    if text[0].isalpha() and text[0].islower():
        text = text[0].upper() + text[1:]
    if text[-1] not in ".!?…。！？":
        text += "。" if _UNSPACED.search(text) else "."
    return text


def split_sentences(block: str) -> list[str]:
    """Split a paragraph into sentences at ``.``/``!``/``?`` followed by white space."""
    return [part for part in _SENTENCE_END.split(" ".join(block.split())) if part]


def _fortune_files(language: str) -> list[Path]:
    files: list[Path] = []
    for sub in FORTUNE_DIRS.get(language, ()):
        folder = FORTUNE_ROOT / sub if sub else FORTUNE_ROOT
        if folder.is_dir():
            files += sorted(
                p
                for p in folder.iterdir()
                if p.is_file()
                and not p.is_symlink()
                and p.suffix not in (".dat", ".u8", ".gz")
                and p.name not in NOT_ENGLISH
            )
    extra = {"it": NOT_ENGLISH - {"brasil", "translate-me"}, "pt": {"brasil"}}.get(language, set())
    files += sorted(FORTUNE_ROOT / name for name in extra if (FORTUNE_ROOT / name).is_file())
    return files


def fortune_sentences(language: str) -> list[str]:
    """Sentences from the installed fortune cookie files of ``language`` (may be empty)."""
    out: list[str] = []
    for path in _fortune_files(language):
        try:
            raw = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for cookie in re.split(r"^%\s*$", raw, flags=re.MULTILINE):
            # attribution lines ("-- Mark Twain") and dialogue markers are not prose
            lines = [ln for ln in cookie.splitlines() if not ln.strip().startswith(("--", "—"))]
            for sentence in split_sentences(" ".join(lines)):
                if (cleaned := clean_sentence(sentence)) is not None:
                    out.append(cleaned)
    return out


def gettext_sentences(language: str) -> list[str]:
    """Translated program messages of ``language`` from the installed ``.mo`` catalogues."""
    out: list[str] = []
    for sub in LOCALE_DIRS.get(language, (language,)):
        folder = LOCALE_ROOT / sub / "LC_MESSAGES"
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.mo")):
            try:
                with path.open("rb") as handle:
                    catalog = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
            except (OSError, UnicodeDecodeError, ValueError):  # unreadable or malformed catalogue
                continue
            for key, message in catalog.items():
                if not key or not isinstance(message, str):
                    continue  # header entry
                for sentence in split_sentences(message):
                    if (cleaned := clean_sentence(sentence)) is not None:
                        out.append(cleaned)
    return out


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:8], "big")


def sentences_for(language: str, extra: Iterable[str] = (), seed: str = "plutok") -> list[str]:
    """All usable sentences for ``language``, de-duplicated, in a deterministic shuffled order.

    Fortunes and ``extra`` (e.g. real transcripts) are interleaved with the gettext
    messages so that the first N sentences already mix registers.
    """
    pools = [
        fortune_sentences(language),
        [c for t in extra if (c := clean_sentence(t))],
        gettext_sentences(language),
    ]
    seen: set[str] = set()
    shuffled: list[list[str]] = []
    for index, pool in enumerate(pools):
        unique = sorted({s for s in pool if s.casefold() not in seen})
        seen.update(s.casefold() for s in unique)
        random.Random(_seed(seed, language, str(index))).shuffle(unique)
        shuffled.append(unique)
    merged: list[str] = []
    for position in range(max((len(p) for p in shuffled), default=0)):
        merged += [pool[position] for pool in shuffled if position < len(pool)]
    return merged
