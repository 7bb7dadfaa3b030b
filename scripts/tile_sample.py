"""Write a long test recording: the bundled sample tiled with random gains (docs/benchmarks.md, "Long audio").

    python scripts/tile_sample.py --minutes 120 -o /tmp/long120.flac

Each repetition of ``src/plutok/assets/sample.flac`` gets a gain drawn from 0.3..1.0
(seeded), so the speaker statistics' loudness gate sees a varied level; the file
is written block by block (16 kHz 16-bit FLAC), never held in memory whole.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "plutok" / "assets" / "sample.flac"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    speech, rate = sf.read(SAMPLE, dtype="float32")
    if speech.ndim > 1:
        speech = speech.mean(axis=1)
    rng = np.random.default_rng(args.seed)
    total = int(args.minutes * 60 * rate)
    with sf.SoundFile(args.output, "w", rate, 1, format="FLAC", subtype="PCM_16") as handle:
        written = 0
        while written < total:
            piece = speech[: total - written] * np.float32(rng.uniform(0.3, 1.0))
            handle.write(piece)
            written += piece.shape[0]


if __name__ == "__main__":
    main()
