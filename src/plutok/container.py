"""The ``.plt`` file: a small versioned binary container for one encoded utterance.

Layout (all integers little-endian)::

    magic            4 bytes   b"PLTK"
    format version   u8        1
    fingerprint      8 bytes   first 8 bytes of the model's SHA-256 fingerprint
    sample rate      u32       Hz of the original input
    num samples      u64       original length, in samples at that rate
    speaker dim      u16       number of speaker values
    speaker          dim x f16 speaker vector, float16
    num tokens       varint
    token ids        varints   unsigned LEB128
    crc32            u32       of every byte before it

Readers refuse unknown versions, a wrong fingerprint (a file made by another
model), truncation and corruption (CRC) with :class:`~plutok.errors.ContainerError`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plutok.catalog import retired_model
from plutok.errors import ContainerError
from plutok.files import atomic_write_bytes

__all__ = ["MAGIC", "FORMAT_VERSION", "PltFile", "pack", "unpack", "read_plt", "write_plt"]

MAGIC = b"PLTK"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sB8sIQH")
_CRC = struct.Struct("<I")
# A varint of a token id never needs more than this many bytes (ids < 2**35).
_MAX_VARINT_BYTES = 5
# Bound what a hostile header can make us allocate.
_MAX_SPEAKER_DIM = 4096


@dataclass(frozen=True)
class PltFile:
    """Contents of a ``.plt`` file.

    Attributes:
        fingerprint: 8-byte model fingerprint prefix the file was made with.
        sample_rate: Hz of the original input audio.
        num_samples: original length in samples at ``sample_rate``.
        speaker: float32 ``(speaker_dim,)`` (stored as float16).
        ids: token ids.
    """

    fingerprint: bytes
    sample_rate: int
    num_samples: int
    speaker: np.ndarray
    ids: list[int]


def _write_varint(value: int, out: bytearray) -> None:
    if value < 0:
        raise ContainerError(f"token id {value} is negative")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _read_varint(payload: bytes, position: int) -> tuple[int, int]:
    value = 0
    for shift_index in range(_MAX_VARINT_BYTES):
        if position >= len(payload):
            raise ContainerError("truncated .plt file (token ids end early)")
        byte = payload[position]
        position += 1
        value |= (byte & 0x7F) << (7 * shift_index)
        if not byte & 0x80:
            return value, position
    raise ContainerError("corrupt .plt file (varint too long)")


def pack(plt: PltFile) -> bytes:
    """Serialise a :class:`PltFile` to bytes."""
    if len(plt.fingerprint) != 8:
        raise ContainerError("fingerprint must be 8 bytes")
    speaker = np.asarray(plt.speaker, dtype="<f2").reshape(-1)
    out = bytearray(
        _HEADER.pack(MAGIC, FORMAT_VERSION, plt.fingerprint, plt.sample_rate, plt.num_samples, speaker.size)
    )
    out += speaker.tobytes()
    _write_varint(len(plt.ids), out)
    for token_id in plt.ids:
        _write_varint(int(token_id), out)
    out += _CRC.pack(zlib.crc32(out))
    return bytes(out)


def unpack(payload: bytes, expected_fingerprint: bytes | None = None) -> PltFile:
    """Parse bytes from :func:`pack`; raises :class:`ContainerError` on anything malformed."""
    if len(payload) < 4 or payload[:4] != MAGIC:
        raise ContainerError("not a .plt file (bad magic bytes)")
    if len(payload) < _HEADER.size + _CRC.size:
        raise ContainerError("truncated .plt file (header incomplete)")
    _, version, fingerprint, sample_rate, num_samples, speaker_dim = _HEADER.unpack_from(payload)
    if version != FORMAT_VERSION:
        raise ContainerError(
            f".plt format version {version} is not supported (this Plutok reads {FORMAT_VERSION})"
        )
    body, (stored_crc,) = payload[: -_CRC.size], _CRC.unpack_from(payload, len(payload) - _CRC.size)
    if zlib.crc32(body) != stored_crc:
        raise ContainerError("corrupt or truncated .plt file (checksum mismatch)")
    if expected_fingerprint is not None and fingerprint != expected_fingerprint:
        retired = retired_model(fingerprint)
        if retired is not None:
            raise ContainerError(
                f".plt file was made by {retired.describe()}, which this Plutok no longer ships; "
                f"{retired.where_to_decode()}"
            )
        raise ContainerError(
            f".plt file was made by another model (fingerprint {fingerprint.hex()}, "
            f"this model is {expected_fingerprint.hex()})"
        )
    if sample_rate == 0:
        raise ContainerError("corrupt .plt file (sample rate 0)")
    position = _HEADER.size
    if speaker_dim > _MAX_SPEAKER_DIM or position + 2 * speaker_dim > len(body):
        raise ContainerError("corrupt .plt file (speaker vector does not fit)")
    speaker = np.frombuffer(body, dtype="<f2", count=speaker_dim, offset=position).astype(np.float32)
    position += 2 * speaker_dim
    num_tokens, position = _read_varint(body, position)
    if num_tokens > len(body) - position:  # every id takes at least one byte
        raise ContainerError("corrupt .plt file (token count larger than the file)")
    ids = []
    for _ in range(num_tokens):
        token_id, position = _read_varint(body, position)
        ids.append(token_id)
    if position != len(body):
        raise ContainerError("corrupt .plt file (trailing bytes after the token ids)")
    return PltFile(fingerprint, sample_rate, num_samples, speaker, ids)


def write_plt(path: str | Path, plt: PltFile) -> Path:
    """Write a ``.plt`` file atomically."""
    return atomic_write_bytes(path, pack(plt))


def read_plt(path: str | Path, expected_fingerprint: bytes | None = None) -> PltFile:
    """Read a ``.plt`` file; ``expected_fingerprint`` refuses files from other models."""
    path = Path(path)
    if not path.is_file():
        raise ContainerError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        return unpack(path.read_bytes(), expected_fingerprint)
    except ContainerError as error:
        raise ContainerError(f"{path}: {error}") from None
