"""One encoded utterance (:class:`Encoding`) and every check a decoder needs on it."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from plutok.catalog import retired_model
from plutok.container import PltFile, read_plt
from plutok.errors import ContainerError, TokenError

__all__ = [
    "MAX_DURATION_SECONDS",
    "MAX_TOKEN_IDS",
    "SPEAKER_BITS_PER_VALUE",
    "UNKNOWN_FINGERPRINT",
    "Encoding",
    "bits_per_token",
    "check_duration",
    "check_ids",
    "check_made_by",
    "read_encoding",
]

# Longest audio an Encoding or .plt file may describe (and that encode accepts).
# Decoding allocates the output waveform up front, so a hostile header must not be
# able to ask for more.
MAX_DURATION_SECONDS = 24 * 3600
# Most token ids one encoding may carry: 24 h at 100 codes a second (Plutok models make
# 25 to 50, and BPE only shortens). Readers of ids (token corpora, --ids files) check
# lengths against it before building lists: a 3 KB Parquet file held 50 million ids.
MAX_TOKEN_IDS = MAX_DURATION_SECONDS * 100
# Speaker vectors are stored as float16 in .plt files: 16 bits per value.
SPEAKER_BITS_PER_VALUE = 16
# The fingerprint of an Encoding built by hand: unknown, so not checked.
UNKNOWN_FINGERPRINT = b"\0" * 8


def check_made_by(found: bytes, accepted: Collection[bytes], ours: bytes, what: str) -> None:
    """:class:`ContainerError` ``WHAT was made by another model (...)`` unless ``found`` is in ``accepted``.

    ``found``, ``ours``: 8-byte fingerprint prefixes (``ours``: the model's token space).
    """
    if found in accepted:
        return
    retired = retired_model(found)
    if retired is not None:  # say which release still decodes it
        raise ContainerError(
            f"{what} was made by {retired.describe()}, which this Plutok no longer ships; "
            f"{retired.where_to_decode()}"
        )
    raise ContainerError(
        f"{what} was made by another model (fingerprint {found.hex()}, this model's is {ours.hex()})"
    )


def check_duration(seconds: float, error: type[Exception], what: str) -> None:
    """Raise ``error`` when ``seconds`` exceeds :data:`MAX_DURATION_SECONDS`; ``what`` names the thing."""
    if seconds > MAX_DURATION_SECONDS:
        raise error(
            f"{what} {seconds / 3600:.1f} h of audio; at most {MAX_DURATION_SECONDS // 3600} h per encoding (split it)"
        )


def bits_per_token(vocab_size: int) -> int:
    """Bits of a fixed-width token id for a vocabulary: ``ceil(log2(vocab_size))``."""
    return max(1, int(np.ceil(np.log2(vocab_size))))


def check_ids(ids: object) -> list[int]:
    """Token ids as a list of Python ints; anything that is not an integer is a :class:`TokenError`."""
    checked = []
    for token_id in ids:  # type: ignore[attr-defined]
        if isinstance(token_id, (bool, np.bool_)) or not isinstance(token_id, (int, np.integer)):
            raise TokenError(f"token ids must be integers, got {token_id!r}")
        checked.append(int(token_id))
    return checked


@dataclass
class Encoding:
    """One encoded utterance.

    Attributes:
        ids: BPE token ids.
        speaker: float32 ``(speaker_dim,)`` speaker vector (timbre, channel).
        sample_rate: Hz of the input audio.
        num_samples: input length in samples at ``sample_rate`` (decoding restores it).
        num_codes: codes behind ``ids`` (before BPE).
        silent: the input was digital silence (peak below -80 dBFS).
        fingerprint: 8-byte prefix of the token space of the model that made it (see
            :func:`plutok.model_directory.token_space`); all zero (the default) when unknown, and
            then not checked by :meth:`~plutok.api.Plutok.decode`.
    """

    ids: list[int]
    speaker: np.ndarray
    sample_rate: int
    num_samples: int
    num_codes: int
    silent: bool = False
    fingerprint: bytes = field(default=UNKNOWN_FINGERPRINT, repr=False)

    @property
    def duration(self) -> float:
        """Seconds of input audio."""
        return self.num_samples / self.sample_rate

    @property
    def tokens_per_second(self) -> float:
        return len(self.ids) / self.duration

    @property
    def codes_per_second(self) -> float:
        return self.num_codes / self.duration

    def to_plt(self) -> PltFile:
        return PltFile(self.fingerprint, self.sample_rate, self.num_samples, self.speaker, list(self.ids))

    def check(self) -> None:
        """Raise :class:`TokenError` for what no model can decode: no ids, a bad rate or length, over 24 h."""
        if len(self.ids) == 0:
            raise TokenError("no token ids to decode (empty token list)")
        if len(self.ids) > MAX_TOKEN_IDS:
            raise TokenError(f"{len(self.ids)} token ids; at most {MAX_TOKEN_IDS} per encoding (24 h)")
        if (
            isinstance(self.sample_rate, (bool, np.bool_))
            or not isinstance(self.sample_rate, (int, np.integer))
            or self.sample_rate <= 0
        ):
            raise TokenError(f"encoding has a bad sample rate {self.sample_rate!r}")
        if not isinstance(self.num_samples, (int, np.integer)) or self.num_samples < 0:
            raise TokenError(f"encoding has a bad length {self.num_samples!r}")
        check_duration(self.num_samples / self.sample_rate, TokenError, "the encoding claims")

    def check_covered(
        self, num_codes: int, covered_samples: int, model_rate: int, tolerance_samples: int
    ) -> int:
        """The stated length at ``model_rate`` Hz; :class:`TokenError` when the codes cover other than that.

        ``covered_samples``: what the ``num_codes`` codes behind the ids decode to at
        ``model_rate``; the stated length must be within ``tolerance_samples`` of it.
        """
        target = int(round(int(self.num_samples) * model_rate / int(self.sample_rate)))
        if abs(covered_samples - target) > tolerance_samples:
            raise TokenError(
                f"the encoding claims {target / model_rate:.2f} s of audio but its "
                f"{num_codes} codes cover {covered_samples / model_rate:.2f} s"
            )
        return target


def read_encoding(
    path: str | os.PathLike,
    accepted: Collection[bytes],
    ours: bytes,
    speaker_dim: int,
    codes_of: Callable[[Sequence[int]], np.ndarray],
) -> Encoding:
    """An :class:`Encoding` from a ``.plt`` file made by a model of this token space.

    ``accepted``: the fingerprint prefixes the model reads (``ours``, its token space,
    is named in the error); ``codes_of``: the model's BPE decoding (ids -> codes), which
    also rejects unknown ids.
    Raises:
        ContainerError: missing, truncated or corrupt file, a file from another model, a
            speaker vector of the wrong size, or a header claiming more than 24 h of audio.
        TokenError: token ids outside the model's vocabulary.
    """
    plt = read_plt(path)
    check_made_by(plt.fingerprint, accepted, ours, f"{path}: .plt file")
    check_duration(plt.num_samples / plt.sample_rate, ContainerError, f"{path}: header claims")
    if plt.speaker.shape[0] != speaker_dim:
        raise ContainerError(
            f"{path}: speaker vector has {plt.speaker.shape[0]} values; this model uses {speaker_dim}"
        )
    try:
        codes = codes_of(plt.ids)
    except TokenError as error:
        raise TokenError(f"{path}: {error}") from None
    return Encoding(
        ids=plt.ids,
        speaker=plt.speaker,
        sample_rate=plt.sample_rate,
        num_samples=plt.num_samples,
        num_codes=int(codes.shape[0]),
        fingerprint=plt.fingerprint,
    )
