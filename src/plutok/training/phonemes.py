"""Phoneme labels for the codec's CTC content objective, from espeak-ng (docs/training.md, ``--ctc-weight``).

Every training source has a transcript and espeak-ng speaks every training language,
so each utterance gets an IPA phoneme sequence. The codec's CTC head
(:class:`~plutok.codec.content.ContentCodec`, ``ctc_weight``) must read that sequence
from the quantised code vectors: a content objective the codes themselves must meet,
where the cosine prediction of Whisper features could be met by smooth averages.

Phonemes come from ``libespeak-ng`` (Debian ``espeak-ng``) through its C API
(``espeak_TextToPhonemes``, IPA with a separator between phonemes), about 0.5 ms per
utterance, so labels for a whole corpus take seconds. Stress marks are dropped (they
are a property of syllables, not sounds the codes must keep), as are espeak-ng's
language-switch markers; length marks stay part of their phoneme. Labels are cached in the feature cache folder
(``phonemes.jsonl``, keyed by the text and language they were made from).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from plutok.corpus.synth import ESPEAK_LANGUAGES
from plutok.errors import ModelError
from plutok.files import atomic_write_text

__all__ = ["Phonemizer", "PhonemeInventory", "phoneme_labels", "LABELS_FILE"]

LABELS_FILE = "phonemes.jsonl"
LABELS_VERSION = 2
_SEPARATOR = "_"
# Stress marks, and espeak-ng's markers that are not sounds: "(en)" where it switches
# language inside a sentence, "-" "^" '"' "." in a few dictionaries, "?" for unknown letters.
_NOT_SOUNDS = re.compile(r"\([a-z-]+\)|[ˈˌ\-^\".?!0-9]")
# espeak.h: espeakCHARS_UTF8, espeakPHONEMES_IPA, separator in bits 8-23; AUDIO_OUTPUT_SYNCHRONOUS.
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
_SYNCHRONOUS = 0x02
_DONT_EXIT = 0x8000


class Phonemizer:
    """IPA phonemes of text through ``libespeak-ng`` (one instance per process: espeak-ng has global state)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            library = ctypes.cdll.LoadLibrary(name)
        except OSError as error:
            raise ModelError(
                "phoneme labels need libespeak-ng (Debian: apt-get install espeak-ng)"
            ) from error
        if library.espeak_Initialize(_SYNCHRONOUS, 0, None, _DONT_EXIT) < 0:
            raise ModelError("libespeak-ng failed to initialise (espeak-ng-data missing?)")
        library.espeak_TextToPhonemes.restype = ctypes.c_char_p
        library.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._library = library
        self._voice: str | None = None

    def phonemes(self, text: str, language: str) -> list[str]:
        """The phonemes of ``text`` (e.g. ``["h", "ə", "l", "oʊ"]``) in the manifest ``language``."""
        voice = ESPEAK_LANGUAGES.get(language)
        if voice is None:
            raise ModelError(f"no espeak-ng voice for language {language!r}")
        if voice != self._voice:
            if self._library.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ModelError(f"espeak-ng has no voice {voice!r}")
            self._voice = voice
        buffer = ctypes.create_string_buffer(text.encode("utf-8"))
        pointer = ctypes.c_void_p(ctypes.addressof(buffer))
        mode = _PHONEMES_IPA | (ord(_SEPARATOR) << 8)
        phonemes: list[str] = []
        # One call per clause; the pointer advances and becomes NULL at the end of the text.
        while pointer.value:
            clause = self._library.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, mode)
            if not clause:
                continue
            for word in _NOT_SOUNDS.sub("", clause.decode("utf-8")).split():
                phonemes.extend(p for p in word.split(_SEPARATOR) if p)
        return phonemes


class PhonemeInventory:
    """Phoneme symbols ↔ CTC class ids; id 0 is the CTC blank, symbols are ``1..len(symbols)``."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = tuple(symbols)
        self._ids = {symbol: index + 1 for index, symbol in enumerate(self.symbols)}

    @classmethod
    def from_sequences(cls, sequences: Iterable[Sequence[str]]) -> PhonemeInventory:
        """Every symbol that occurs, sorted (so the inventory is a function of the data alone)."""
        return cls(sorted({symbol for sequence in sequences for symbol in sequence}))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, phonemes: Sequence[str]) -> list[int]:
        """Class ids of ``phonemes``; symbols outside the inventory are left out."""
        return [self._ids[p] for p in phonemes if p in self._ids]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Symbols of class ids (the blank and unknown ids are left out)."""
        return [self.symbols[i - 1] for i in ids if 0 < i <= len(self.symbols)]


def _key(text: str, language: str) -> str:
    # The version makes labels made under other cleaning rules be redone.
    return hashlib.sha256(f"{LABELS_VERSION}\n{language}\n{text}".encode()).hexdigest()[:16]


def phoneme_labels(
    items: Sequence[tuple[str, str, str]], cache_dir: str | os.PathLike | None = None
) -> dict[str, list[str]]:
    """Phonemes per utterance id for ``(id, text, language)`` items, reusing ``cache_dir/phonemes.jsonl``.

    Utterances without text, or in a language espeak-ng lacks, get no entry.
    """
    path = Path(cache_dir) / LABELS_FILE if cache_dir is not None else None
    known: dict[str, dict] = {}
    if path is not None and path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            known[row["id"]] = row
    phonemizer: Phonemizer | None = None
    labels: dict[str, list[str]] = {}
    changed = False
    for utterance_id, text, language in items:
        if not text.strip() or language not in ESPEAK_LANGUAGES:
            continue
        key = _key(text, language)
        row = known.get(utterance_id)
        if row is None or row["key"] != key:
            phonemizer = phonemizer or Phonemizer()
            row = {"id": utterance_id, "key": key, "phonemes": phonemizer.phonemes(text, language)}
            known[utterance_id] = row
            changed = True
        if row["phonemes"]:
            labels[utterance_id] = list(row["phonemes"])
    if path is not None and changed:
        lines = (json.dumps(row, ensure_ascii=False) for row in known.values())
        atomic_write_text(path, "".join(line + "\n" for line in lines))
    return labels
