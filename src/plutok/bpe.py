"""Byte-pair encoding over VQ code sequences, with HF ``tokenizers``.

Each code is exactly one Unicode character (code ``c`` is ``chr(CODE_CHAR_BASE + c)``),
so a merge can never split a code in two — unlike the original release's
``#12#45`` strings — and codes -> ids -> codes is exact for every sequence.
The saved file is a standard ``tokenizer.json`` (no normaliser, no pre-tokeniser,
no special tokens; every code is in the base alphabet, so there is no unknown token).

:class:`OriginalCodeBPE` reads the original release's ``tokenizer.json`` (codes written
as ``#12#45...``) and gives the same ids as the original; :func:`load_tokenizer` tells
the two kinds apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, trainers

from plutok.errors import ModelError, TokenError
from plutok.files import atomic_path

__all__ = [
    "CODE_CHAR_BASE",
    "MAX_CODEBOOK_SIZE",
    "CodeBPE",
    "OriginalCodeBPE",
    "codes_to_text",
    "load_original_tokenizer",
    "load_tokenizer",
    "original_codes_to_text",
    "text_to_codes",
]

# CJK Unified Ideographs: 20,992 consecutive code points that no tokenizer component touches here.
CODE_CHAR_BASE = 0x4E00
MAX_CODEBOOK_SIZE = 20992
# Highest token id a tokenizer file may use: decoding tables have one slot per id up to the
# highest, so an id of 2**31 in a hostile tokenizer.json would be a 16 GB table.
MAX_TOKEN_ID = (1 << 20) - 1


def codes_to_text(codes: Sequence[int] | np.ndarray) -> str:
    """The one-character-per-code string BPE works on."""
    return "".join(chr(CODE_CHAR_BASE + int(code)) for code in codes)


def text_to_codes(text: str) -> np.ndarray:
    """Inverse of :func:`codes_to_text`: int64 ``(len(text),)``."""
    return np.fromiter((ord(char) - CODE_CHAR_BASE for char in text), dtype=np.int64, count=len(text))


class _CodeTokenizer:
    """What both tokenizer kinds share: checks, code validation, saving and loading.

    Subclasses set up their decoding tables in ``__init__`` after calling ``super().__init__``
    and implement ``encode`` / ``decode``.
    """

    def __init__(self, tokenizer: Tokenizer, codebook_size: int) -> None:
        if not 0 < codebook_size <= MAX_CODEBOOK_SIZE:
            raise ModelError(f"codebook size must be in 1..{MAX_CODEBOOK_SIZE}, got {codebook_size}")
        # Encoding must be a pure function of the codes: no dropout, and nothing that
        # rewrites or splits the text before the merges.
        if getattr(tokenizer.model, "dropout", None):
            raise ModelError("the tokenizer uses BPE dropout, so its ids would change from run to run")
        if tokenizer.normalizer is not None or tokenizer.pre_tokenizer is not None:
            raise ModelError(
                "the tokenizer has a normaliser or pre-tokeniser; code tokenizers must have neither"
            )
        vocab = tokenizer.get_vocab()
        if vocab and max(vocab.values()) > MAX_TOKEN_ID:
            raise ModelError(f"tokenizer has token id {max(vocab.values())}; at most {MAX_TOKEN_ID}")
        self.tokenizer = tokenizer
        self.codebook_size = int(codebook_size)
        self.vocab_size = tokenizer.get_vocab_size()

    def encode(self, codes: Sequence[int] | np.ndarray) -> list[int]:
        raise NotImplementedError

    def decode(self, token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _checked_codes(self, codes: Sequence[int] | np.ndarray) -> np.ndarray:
        """Codes as int64 ``(codes,)``; raises :class:`TokenError` for a code outside the codebook."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1)
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            bad = codes[(codes < 0) | (codes >= self.codebook_size)][0]
            raise TokenError(f"code {int(bad)} is outside the codebook 0..{self.codebook_size - 1}")
        return codes

    def codes_per_token(self, token_ids: Sequence[int]) -> float:
        """Mean number of codes each token stands for."""
        return float(self.decode(token_ids).size / len(token_ids)) if len(token_ids) else 0.0

    def save(self, path: str | Path) -> Path:
        """Write a standard ``tokenizer.json`` atomically."""
        path = Path(path)
        with atomic_path(path) as temporary:
            self.tokenizer.save(str(temporary))
        return path

    @classmethod
    def load(cls, path: str | Path, codebook_size: int):
        """Read a ``tokenizer.json`` (written by :meth:`save`, or the original release's)."""
        return cls(_read_tokenizer(path), codebook_size)


class CodeBPE(_CodeTokenizer):
    """BPE vocabulary over the codes of one VQ codebook.

    Args:
        tokenizer: a trained HF ``Tokenizer`` whose alphabet is the code characters.
        codebook_size: number of codes ``K``; codes are ``0 .. K-1``.
    """

    def __init__(self, tokenizer: Tokenizer, codebook_size: int) -> None:
        super().__init__(tokenizer, codebook_size)
        vocab = tokenizer.get_vocab()
        # Decoding is a table lookup: id -> the codes its token stands for.
        self._token_codes: list[np.ndarray | None] = [None] * (max(vocab.values()) + 1 if vocab else 0)
        for token, token_id in vocab.items():
            codes = text_to_codes(token)
            if codes.size == 0 or codes.min() < 0 or codes.max() >= self.codebook_size:
                raise ModelError(
                    f"tokenizer token {token!r} (id {token_id}) is not a sequence of codes "
                    f"0..{self.codebook_size - 1}; was it trained for another codebook?"
                )
            self._token_codes[token_id] = codes
        missing = [code for code in range(self.codebook_size) if chr(CODE_CHAR_BASE + code) not in vocab]
        if missing:
            raise ModelError(
                f"tokenizer lacks base tokens for codes {missing[:5]} (and {len(missing)} in all)"
            )

    # -- training -------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        code_sequences: Iterable[np.ndarray],
        codebook_size: int,
        vocab_size: int = 12000,
        min_frequency: int = 2,
        progress: bool = True,
    ) -> CodeBPE:
        """Learn merges from code sequences (an iterator is consumed once, streamed).

        Args:
            code_sequences: int ``(codes,)`` arrays, one per utterance.
            codebook_size: number of codes ``K``.
            vocab_size: final vocabulary size (at least ``K``; merges stop earlier if
                no pair reaches ``min_frequency``).
        """
        if vocab_size < codebook_size:
            raise ModelError(f"vocab size {vocab_size} is smaller than the codebook ({codebook_size})")
        alphabet = [chr(CODE_CHAR_BASE + code) for code in range(codebook_size)]
        tokenizer = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            initial_alphabet=alphabet,
            limit_alphabet=codebook_size,
            show_progress=progress,
            special_tokens=[],
        )

        def texts() -> Iterator[str]:
            for codes in code_sequences:
                codes = np.asarray(codes)
                if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
                    raise TokenError(f"training codes must be in 0..{codebook_size - 1}")
                if codes.size:
                    yield codes_to_text(codes)

        tokenizer.train_from_iterator(texts(), trainer=trainer)
        return cls(tokenizer, codebook_size)

    # -- coding ---------------------------------------------------------------------------
    def encode(self, codes: Sequence[int] | np.ndarray) -> list[int]:
        """Token ids for a code sequence ``(codes,)``; ``[]`` for an empty one."""
        codes = self._checked_codes(codes)
        if codes.size == 0:
            return []
        return list(self.tokenizer.encode(codes_to_text(codes)).ids)

    def decode(self, token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Codes int64 ``(codes,)`` for token ids; raises :class:`TokenError` on unknown ids."""
        pieces = []
        table = self._token_codes
        for token_id in token_ids:
            token_id = int(token_id)
            codes = table[token_id] if 0 <= token_id < len(table) else None
            if codes is None:
                raise TokenError(f"token id {token_id} is not in the vocabulary (0..{self.vocab_size - 1})")
            pieces.append(codes)
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


# -- the original release's tokenizer -------------------------------------------------------
# The original Plutok (github.com/Zengyi-Qin/plutok) wrote each utterance's codes as one
# string ``"#12#45#45..."`` and trained HF tokenizers' BPE on those strings as they are:
# ``Tokenizer(BPE(unk_token="[UNK]"))``, special tokens ``[UNK] [CLS] [SEP] [PAD] [MASK]``
# (ids 0-4), no normaliser, pre-tokeniser, post-processor or decoder. Its alphabet is
# ``#`` and the ten digits, so merges may cut a code in two (``"6#7"``, ``"#1"`` + ``"2"``).
# It encoded with ``PreTrainedTokenizerFast(tokenizer_file=...)(text)["input_ids"]``, which
# is ``Tokenizer.encode(text).ids`` for such a file (no post-processor adds anything).
_ORIGINAL_CODE_TEXT = re.compile(r"(?:#[0-9]+)*")
_ORIGINAL_TOKEN = re.compile(r"[#0-9]+")


def original_codes_to_text(codes: Sequence[int] | np.ndarray) -> str:
    """The original release's string for a code sequence: ``[12, 45]`` -> ``"#12#45"``."""
    return "".join(f"#{int(code)}" for code in codes)


class OriginalCodeBPE(_CodeTokenizer):
    """The original release's BPE over ``#N`` code strings, with :class:`CodeBPE`'s interface.

    Encoding runs the loaded HF tokenizer unchanged on the ``#N`` string, so ids equal
    the original's. Decoding concatenates the token strings and parses the ``#N`` groups,
    so it is exact even where a token holds part of a code.

    Args:
        tokenizer: the original ``tokenizer.json`` as an HF ``Tokenizer``.
        codebook_size: number of codes ``K`` of the VQ-VAE it was trained with (200).
    """

    def __init__(self, tokenizer: Tokenizer, codebook_size: int) -> None:
        super().__init__(tokenizer, codebook_size)
        vocab = tokenizer.get_vocab()
        needed = {"#"} | set("".join(str(code) for code in range(self.codebook_size)))
        missing = sorted(needed - set(vocab))
        if missing:
            raise ModelError(
                f"tokenizer lacks the base tokens {missing}; it is not a tokenizer over '#N' code strings"
            )
        # Token id -> its text, or None for tokens that stand for no code text ([UNK], [PAD], ...).
        self._token_text: list[str | None] = [None] * (max(vocab.values()) + 1)
        self._other_tokens: dict[int, str] = {}
        for token, token_id in vocab.items():
            if _ORIGINAL_TOKEN.fullmatch(token):
                self._token_text[token_id] = token
            else:
                self._other_tokens[token_id] = token

    def encode(self, codes: Sequence[int] | np.ndarray) -> list[int]:
        """Token ids for a code sequence ``(codes,)``: the original's ids; ``[]`` for an empty one."""
        codes = self._checked_codes(codes)
        if codes.size == 0:
            return []
        text = original_codes_to_text(codes)
        ids = list(self.tokenizer.encode(text).ids)
        # A file with a normaliser, pre-tokeniser or unknown characters could lose text:
        # refuse rather than hand out ids that do not decode to these codes.
        if self._text(ids, strict=False) != text:
            raise ModelError(
                "the tokenizer does not reproduce the '#N' code string it is given; ids would be lossy"
            )
        return ids

    def _text(self, token_ids: Iterable[int], strict: bool = True) -> str | None:
        pieces = []
        table = self._token_text
        for token_id in token_ids:
            token_id = int(token_id)
            text = table[token_id] if 0 <= token_id < len(table) else None
            if text is None:
                if not strict:
                    return None
                if token_id in self._other_tokens:
                    raise TokenError(
                        f"token id {token_id} ({self._other_tokens[token_id]}) stands for no codes"
                    )
                raise TokenError(f"token id {token_id} is not in the vocabulary (0..{len(table) - 1})")
            pieces.append(text)
        return "".join(pieces)

    def decode(self, token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Codes int64 ``(codes,)`` for token ids; raises :class:`TokenError` on unknown ids
        or ids whose text is not a run of ``#N`` codes of this codebook."""
        text = self._text(token_ids)
        if not text:
            return np.zeros(0, dtype=np.int64)
        if not _ORIGINAL_CODE_TEXT.fullmatch(text):
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise TokenError(f"token ids spell {shown!r}, which is not a sequence of '#N' codes")
        codes = np.array([int(part) for part in text[1:].split("#")], dtype=np.int64)
        if codes.max() >= self.codebook_size:
            raise TokenError(f"code {int(codes.max())} is outside the codebook 0..{self.codebook_size - 1}")
        return codes


def load_original_tokenizer(path: str | Path, codebook_size: int) -> OriginalCodeBPE:
    """The original release's ``tokenizer.json`` (``#N`` code strings) as an :class:`OriginalCodeBPE`."""
    return OriginalCodeBPE.load(path, codebook_size)


def load_tokenizer(path: str | Path, codebook_size: int) -> CodeBPE | OriginalCodeBPE:
    """Load either kind of ``tokenizer.json``: :class:`OriginalCodeBPE` when its base
    alphabet is ``#`` and digits (the original release), else :class:`CodeBPE`."""
    tokenizer = _read_tokenizer(path)
    if "#" in tokenizer.get_vocab():
        return OriginalCodeBPE(tokenizer, codebook_size)
    return CodeBPE(tokenizer, codebook_size)


def _read_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: tokenizer file missing")
    try:
        return Tokenizer.from_str(path.read_text(encoding="utf-8"))
    except Exception as error:  # tokenizers raises bare Exception subclasses
        raise ModelError(f"{path}: not a readable tokenizer.json ({error})") from None
