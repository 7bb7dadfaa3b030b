"""Streaming decode: latency to the first audio, cost per chunk, equality with one-pass decode.

    python scripts/bench_streaming.py [--model fast] [--seconds 14.2] [--chunk-codes 25]

The bundled sample is tiled to ``--seconds`` and encoded; its ids are fed to
``Plutok.decode_stream`` all at once (so the numbers are compute, not waiting for a
language model). Reported: the codes and tokens that must have arrived before the
first chunk comes out, the compute time until then, the mean compute per chunk (and
per second of audio), and the largest difference from ``decode_ids`` of all ids.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from plutok import Plutok
from plutok.audio import load_audio
from plutok.model_directory import default_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="model directory or bundled name (default: the default)"
    )
    parser.add_argument("--seconds", type=float, default=14.2)
    parser.add_argument("--chunk-codes", type=int, default=25)
    args = parser.parse_args()
    model = Plutok.from_pretrained(args.model)
    wav, rate = load_audio(default_model_path().parent / "sample.flac", model.sample_rate)
    wav = np.resize(wav, int(args.seconds * rate))
    encoding = model.encode(wav, rate)
    speaker = encoding.speaker
    whole, _ = model.decode_ids(encoding.ids, speaker=speaker)
    model.decode_ids(encoding.ids[:50], speaker=speaker)  # warm-up
    started = time.perf_counter()
    chunks, times = [], []
    for chunk in model.decode_stream(encoding.ids, speaker=speaker, chunk_codes=args.chunk_codes):
        times.append(time.perf_counter() - started)
        chunks.append(chunk)
    streamed = np.concatenate(chunks)
    first_codes = args.chunk_codes + model.stream_lookahead_codes()
    codes_per_token = encoding.num_codes / len(encoding.ids)
    per_chunk = float(np.mean(np.diff(times))) if len(times) > 1 else times[0]
    chunk_seconds = args.chunk_codes / model.codes_per_second
    print(
        json.dumps(
            {
                "model": args.model or "default",
                "vocoder": model.vocoder.name,
                "audio_seconds": args.seconds,
                "chunks": len(chunks),
                "first_chunk_after_codes": first_codes,
                "first_chunk_after_tokens": round(first_codes / codes_per_token),
                "first_chunk_compute_s": round(times[0], 3),
                "per_chunk_compute_s": round(per_chunk, 3),
                "compute_per_audio_second": round(per_chunk / chunk_seconds, 3),
                "max_abs_difference_from_one_pass": float(
                    np.abs(streamed - whole[: streamed.shape[0]]).max()
                ),
                "same_length": streamed.shape[0] == whole.shape[0],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
