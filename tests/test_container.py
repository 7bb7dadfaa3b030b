from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plutok.container import FORMAT_VERSION, MAGIC, PltFile, pack, read_plt, unpack, write_plt
from plutok.errors import ContainerError

FINGERPRINT = bytes(range(8))


def example(ids=(1, 2, 300, 70000)) -> PltFile:
    return PltFile(FINGERPRINT, 16000, 48000, np.linspace(-2, 2, 160).astype(np.float32), list(ids))


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(st.integers(0, 2**31), max_size=300),
    sample_rate=st.integers(1, 2**32 - 1),
    num_samples=st.integers(0, 2**64 - 1),
    speaker=st.lists(st.floats(-1000, 1000, width=16), max_size=300),
)
def test_round_trip_is_exact(ids, sample_rate, num_samples, speaker):
    plt = PltFile(FINGERPRINT, sample_rate, num_samples, np.array(speaker, dtype=np.float32), ids)
    back = unpack(pack(plt), FINGERPRINT)
    assert back.ids == ids and back.sample_rate == sample_rate and back.num_samples == num_samples
    assert np.array_equal(back.speaker, np.array(speaker, dtype=np.float16).astype(np.float32))


def test_header_layout():
    payload = pack(example())
    assert payload[:4] == MAGIC and payload[4] == FORMAT_VERSION and payload[5:13] == FINGERPRINT
    # ids are varints: 1, 2 (1 byte), 300 (2 bytes), 70000 (3 bytes) after the count byte
    assert len(payload) == 4 + 1 + 8 + 4 + 8 + 2 + 320 + 1 + (1 + 1 + 2 + 3) + 4


def test_every_truncation_is_refused():
    payload = pack(example())
    for length in range(len(payload)):
        with pytest.raises(ContainerError):
            unpack(payload[:length])


def test_every_single_byte_corruption_is_refused():
    payload = bytearray(pack(example()))
    for position in range(len(payload)):
        corrupted = bytearray(payload)
        corrupted[position] ^= 0x41
        with pytest.raises(ContainerError):
            unpack(bytes(corrupted), FINGERPRINT)


def test_other_model_and_version_are_refused():
    with pytest.raises(ContainerError, match="another model"):
        unpack(pack(example()), b"\xff" * 8)
    payload = bytearray(pack(example()))
    payload[4] = 99
    with pytest.raises(ContainerError, match="version 99"):
        unpack(bytes(payload))


def test_huge_token_count_does_not_allocate():
    body = bytearray(struct.pack("<4sB8sIQH", MAGIC, 1, FINGERPRINT, 16000, 1, 0))
    body += b"\xff\xff\xff\xff\x0f"  # claims 2**32 - 1 tokens
    body += struct.pack("<I", __import__("zlib").crc32(body))
    with pytest.raises(ContainerError, match="larger than the file"):
        unpack(bytes(body))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_only_raise_container_error(payload):
    try:
        unpack(MAGIC + payload)
    except ContainerError:
        pass


def test_files_are_written_atomically_and_read_back(tmp_path):
    path = write_plt(tmp_path / "a.plt", example())
    assert read_plt(path, FINGERPRINT).ids == example().ids
    assert [p.name for p in tmp_path.iterdir()] == ["a.plt"]
    with pytest.raises(ContainerError, match="no such file"):
        read_plt(tmp_path / "missing.plt")
    (tmp_path / "b.plt").write_bytes(b"RIFF....WAVEfmt ")
    with pytest.raises(ContainerError, match="bad magic"):
        read_plt(tmp_path / "b.plt")
