"""Fuzzing the readers of untrusted input: ``.plt`` files and token ids.

Every malformed input must end in the documented exception — :class:`ContainerError`
for the file, :class:`TokenError` for ids (and for encodings that cannot be decoded) —
never another exception, a hang or a huge allocation. Limits that keep allocation
bounded: a ``.plt`` token count is checked against the file size, the speaker vector
has at most 4096 values, and a header or token list describing more than
``MAX_DURATION_SECONDS`` (24 h) is refused before any audio is allocated; a header
whose length disagrees with what its tokens cover by more than about one code is
refused too (so a 1-token file cannot ask for an hour of padding).

Runs are bounded with ``settings(max_examples=..., deadline=...)``; the whole module
takes well under a minute.
"""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plutok.container import MAGIC, PltFile, pack, unpack, write_plt
from plutok.errors import ContainerError, TokenError
from plutok.tokenizer import MAX_DURATION_SECONDS, Encoding

FAST = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

u8 = st.integers(0, 2**8 - 1)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@st.composite
def plausible_payloads(draw) -> bytes:
    """Bytes with a well-formed header and a valid CRC, so fuzzing reaches the body parser."""
    header = struct.pack(
        "<4sB8sIQH",
        MAGIC,
        draw(st.sampled_from([1, 1, 1, draw(u8)])),
        draw(st.binary(min_size=8, max_size=8)),
        draw(u32),
        draw(u64),
        draw(st.one_of(st.integers(0, 300), u16)),
    )
    return with_crc(header + draw(st.binary(max_size=600)))


@FAST
@given(plausible_payloads())
def test_unpack_only_raises_container_error(payload):
    try:
        plt = unpack(payload)
    except ContainerError:
        return
    assert len(plt.ids) <= len(payload) and plt.speaker.shape[0] <= 4096  # nothing larger than the file


@FAST
@given(st.binary(max_size=400), st.integers(0, 399))
def test_mutated_valid_files_are_refused_or_identical(noise, position):
    payload = bytearray(pack(PltFile(bytes(8), 16000, 32000, np.zeros(32, np.float32), list(range(50)))))
    position %= len(payload)
    payload[position : position + len(noise)] = noise
    try:
        plt = unpack(bytes(payload))
    except ContainerError:
        return
    assert plt.ids == list(range(50))  # only a no-op mutation can pass the CRC here


@st.composite
def plt_contents(draw, vocab_size: int, speaker_dim: int) -> PltFile:
    ids = draw(
        st.lists(st.one_of(st.integers(0, vocab_size + 3), st.integers(0, 2**34)), min_size=0, max_size=12)
    )
    speaker = draw(
        st.one_of(
            st.just(np.zeros(speaker_dim, np.float32)),
            st.lists(st.floats(width=16, allow_nan=True), min_size=speaker_dim, max_size=speaker_dim).map(
                lambda values: np.array(values, np.float32)
            ),
            st.lists(st.floats(-3, 3, width=16), max_size=8).map(lambda values: np.array(values, np.float32)),
        )
    )
    sample_rate = draw(st.one_of(st.sampled_from([8000, 16000, 44100]), st.integers(1, 2**32 - 1)))
    num_samples = draw(st.one_of(st.integers(0, 16000), u64))
    return PltFile(bytes(8), sample_rate, num_samples, speaker, ids)


@SLOW
@given(data=st.data())
def test_load_plt_and_decode_fail_only_with_documented_errors(tiny_model, tmp_path, data):
    plt = data.draw(plt_contents(tiny_model.vocab_size, tiny_model.speaker_encoder.speaker_dim))
    plt = PltFile(tiny_model.fingerprint_bytes, plt.sample_rate, plt.num_samples, plt.speaker, plt.ids)
    path = write_plt(tmp_path / "fuzz.plt", plt)
    started = time.perf_counter()
    try:
        encoding = tiny_model.load_plt(path)
        wav, rate = tiny_model.decode(encoding)
    except (ContainerError, TokenError):
        return
    finally:
        assert time.perf_counter() - started < 60
    # Decoding succeeded: the header was sane and the output has the stated length.
    assert wav.shape[0] == round(plt.num_samples * rate / plt.sample_rate) <= MAX_DURATION_SECONDS * rate
    assert np.all(np.isfinite(wav))


@SLOW
@given(ids=st.lists(st.one_of(st.integers(-(2**70), 2**70), st.integers(-3, 120)), max_size=30))
def test_decode_of_arbitrary_ids_raises_token_error_or_works(tiny_model, ids):
    speaker = np.zeros(tiny_model.speaker_encoder.speaker_dim, np.float32)
    # The length that valid ids would cover, so consistent encodings get through to synthesis.
    try:
        codes = tiny_model.ids_to_codes(ids)
    except TokenError:
        codes = np.zeros(len(ids), np.int64)
    encoding = Encoding(ids, speaker, 16000, max(1, codes.shape[0]) * 320, codes.shape[0])
    try:
        wav, _ = tiny_model.decode(encoding)
    except TokenError:
        return
    assert all(0 <= token_id < tiny_model.vocab_size for token_id in ids)
    assert wav.shape[0] == encoding.num_samples


@FAST
@given(ids=st.lists(st.integers(-(2**70), 2**70), max_size=200))
def test_bpe_decode_raises_token_error_or_gives_valid_codes(tiny_model, ids):
    try:
        codes = tiny_model.bpe.decode(ids)
    except TokenError:
        assert any(not 0 <= token_id < tiny_model.vocab_size for token_id in ids)
        return
    assert codes.dtype == np.int64 and (codes.size == 0 or 0 <= codes.min() <= codes.max() < 32)


@pytest.mark.parametrize("num_samples", [2**60, 2**64 - 1, MAX_DURATION_SECONDS * 16000 + 1])
def test_huge_lengths_are_refused_without_allocating(tiny_model, tmp_path, num_samples):
    plt = PltFile(tiny_model.fingerprint_bytes, 16000, num_samples, np.zeros(160, np.float32), [1, 2])
    path = write_plt(tmp_path / "huge.plt", plt)
    with pytest.raises(ContainerError, match="at most 24 h"):
        tiny_model.load_plt(path)
    encoding = Encoding([1, 2], np.zeros(160, np.float32), 16000, num_samples, 2)
    with pytest.raises(TokenError, match="at most 24 h"):
        tiny_model.decode(encoding)


def test_many_tokens_beyond_24_hours_are_refused(tiny_model):
    # 24 h + at 50 codes/s would be 4.3 M codes: refused from the code count, before the VQ-VAE.
    codes_needed = MAX_DURATION_SECONDS * 50 + 50
    base_ids = tiny_model.bpe.encode(np.zeros(1000, np.int64))
    ids = base_ids * (codes_needed // 1000 + 1)
    encoding = Encoding(ids, np.zeros(160, np.float32), 16000, 1000, len(ids))
    with pytest.raises(TokenError, match="at most 24 h"):
        tiny_model.decode(encoding)
