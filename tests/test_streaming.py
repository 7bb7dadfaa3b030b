"""Streaming decode: chunks yielded as ids arrive, whose concatenation equals one-pass decoding."""

from __future__ import annotations

import numpy as np
import pytest

from plutok.errors import TokenError


def test_stream_concatenation_equals_one_pass(tiny_model, speech_like):
    encoding = tiny_model.encode(speech_like(1.6, seed=4), 16000)
    one_pass, _ = tiny_model.decode_ids(encoding.ids, speaker=encoding.speaker)
    arrived = []

    def ids():
        for token_id in encoding.ids:
            arrived.append(token_id)
            yield token_id

    chunks = []
    for chunk in tiny_model.decode_stream(ids(), speaker=encoding.speaker, chunk_codes=10):
        # Audio comes out before the last id has arrived (it is a stream, not a batch).
        chunks.append((len(arrived), chunk))
    assert chunks[0][0] < len(encoding.ids)
    assert all(chunk.shape[0] == 10 * tiny_model.samples_per_code for _, chunk in chunks[:-1])
    streamed = np.concatenate([chunk for _, chunk in chunks])
    assert streamed.shape == one_pass.shape
    np.testing.assert_allclose(streamed, one_pass, rtol=0, atol=1e-4)


def test_stream_errors(tiny_model):
    speaker = np.zeros(tiny_model.speaker_encoder.speaker_dim, np.float32)
    with pytest.raises(TokenError):
        list(tiny_model.decode_stream(iter([]), speaker=speaker))
    with pytest.raises(TokenError):
        list(tiny_model.decode_stream(iter([10**6]), speaker=speaker))
