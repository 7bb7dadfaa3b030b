"""Streaming decode: token ids in as they arrive, audio chunks out (``Plutok.decode_stream``).

Each chunk of ``chunk_codes`` codes is decoded from a window holding the codec's
and the vocoder's declared context on both sides, and yielded as soon as the codes
after it (:func:`lookahead_codes`) have arrived; the rest comes when the ids end.
So the concatenation equals one-pass decoding within float noise (< 1e-4, tested).
Latency to first audio and per-chunk cost: docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from plutok import synthesis
from plutok.bpe import CodeBPE
from plutok.encoding import check_ids
from plutok.errors import PlutokError, TokenError
from plutok.model_directory import ModelParts

__all__ = ["DEFAULT_CHUNK_CODES", "decode_stream", "lookahead_codes"]

#: Codes per streamed chunk unless asked otherwise (1 s at 25 codes/s).
DEFAULT_CHUNK_CODES = 25


def lookahead_codes(parts: ModelParts) -> int:
    """Codes beyond a chunk that must have arrived before its audio is final (decoder + vocoder context).

    Twice the vocoder's declared context: HiFi-GAN's declared 32 frames keep chunk seams
    below ~1.1e-4, the doubled margin below 1e-4 (measured on the bundled sample).
    """
    frames_per_code = parts.codec.synthesis_frames_per_code
    return parts.codec.decoder_context + -(-2 * parts.vocoder.context_frames // frames_per_code)


def decode_stream(
    parts: ModelParts, ids: Iterable[int], speaker: np.ndarray, chunk_codes: int = DEFAULT_CHUNK_CODES
) -> Iterator[np.ndarray]:
    """Audio chunks (float32 ``(chunk_codes * samples_per_code,)``, the last shorter) of ``ids``.

    Args:
        parts: the model whose ids these are.
        ids: token ids, consumed lazily (a generator may still be producing them).
        speaker: a checked speaker vector.
        chunk_codes: codes per yielded chunk (latency vs. per-chunk overhead).
    Raises:
        PlutokError: ``chunk_codes`` < 1. TokenError: no ids, unknown ids, or over 24 h.
    """
    if chunk_codes < 1:
        raise PlutokError(f"chunk_codes must be positive, got {chunk_codes}")
    lookahead = lookahead_codes(parts)
    samples_per_code = parts.codec.synthesis_frames_per_code * parts.vocoder.hop_length
    received: list[int] = []
    arrived: list[int] = []  # codes so far (a list: appending id by id stays linear)
    emitted = 0
    # Our own BPE maps each id to fixed codes: convert id by id, and look after every id
    # whether a chunk is final, so audio leaves as soon as the lookahead allows. The
    # original release's tokenizer can end a token inside a code, so its ids are re-read
    # in groups and the last code is never taken as final before the stream ends.
    per_id = isinstance(parts.bpe, CodeBPE)

    def ids_to_codes(ids: Iterable[int]) -> np.ndarray:
        return parts.bpe.decode(check_ids(ids))

    def render(stop: int, available: int) -> np.ndarray:
        begin = max(0, emitted - lookahead)
        end = min(available, stop + lookahead)
        window = np.asarray(arrived[begin:end], dtype=np.int64)
        wav = synthesis.vocoder_waveform(parts, window, speaker, chunk_codes=None)
        first = (emitted - begin) * samples_per_code
        return wav[first : first + (stop - emitted) * samples_per_code]

    for token_id in ids:
        received.append(token_id)
        if per_id:
            arrived.extend(ids_to_codes([token_id]).tolist())
            available = len(arrived)
        else:
            if len(received) % 8:
                continue
            arrived = ids_to_codes(received).tolist()
            available = len(arrived) - 1
        while available - emitted >= chunk_codes + lookahead:
            chunk = render(emitted + chunk_codes, available)
            emitted += chunk_codes
            yield chunk
    arrived = ids_to_codes(received).tolist()
    if not arrived:
        raise TokenError("no token ids to decode (empty token list)")
    synthesis.covered_samples(parts, len(arrived))
    while emitted < len(arrived):
        stop = min(len(arrived), emitted + chunk_codes)
        chunk = render(stop, len(arrived))
        emitted = stop
        yield chunk
