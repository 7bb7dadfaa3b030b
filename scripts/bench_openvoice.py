"""CPU speed of the OpenVoice backbone at the published converter size (random weights).

Usage:
    python scripts/bench_openvoice.py [--seconds 10] [--threads 2] [--repeats 3]

Prints, for ``speaker_embedding``, ``features`` and ``synthesize``, the best and
median wall time over the repeats (after one warm-up call) and the real-time
factor (wall time / audio duration). Random weights compute exactly as much as
real ones, so the numbers hold for a real checkpoint.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from plutok.legacy.backbones.openvoice import OpenVoiceBackbone


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio duration")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per function")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    bb = OpenVoiceBackbone.random()  # published sizes: ConverterConfig() defaults
    rng = np.random.default_rng(0)
    n = int(args.seconds * bb.sample_rate)
    t = np.arange(n) / bb.sample_rate
    wav = (0.3 * np.sin(2 * np.pi * 150 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    se = bb.speaker_embedding(wav)
    z = bb.features(wav, se)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"audio: {args.seconds:g} s at {bb.sample_rate} Hz, z_p {z.shape}, repeats {args.repeats}")
    for name, fn in (
        ("speaker_embedding", lambda: bb.speaker_embedding(wav)),
        ("features", lambda: bb.features(wav, se)),
        ("synthesize", lambda: bb.synthesize(z, se)),
    ):
        times = _time(fn, args.repeats)
        best, median = min(times), statistics.median(times)
        print(f"{name:18s} best {best:7.3f} s  median {median:7.3f} s  RTF {median / args.seconds:.3f}")


if __name__ == "__main__":
    main()
