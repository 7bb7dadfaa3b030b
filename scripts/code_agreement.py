"""Share of codes two models of one codebook make differently from the same audio.

    python scripts/code_agreement.py MODEL_A MODEL_B data/corpus/manifest.jsonl --split dev-unseen

For models whose codes should agree (a decoder swapped with ``assemble --decoder-for``,
a speaker encoder whose statistics normalise the encoder's input differently): the share
of code positions that differ, and of utterances with any difference, per source and in
all. Both models encode every clip of the split; a length difference counts its extra
positions as differing.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from plutok import Plutok
from plutok.audio import load_audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_a")
    parser.add_argument("model_b")
    parser.add_argument("manifest")
    parser.add_argument("--split", default="dev-unseen")
    args = parser.parse_args()
    models = [Plutok.from_pretrained(name) for name in (args.model_a, args.model_b)]
    if models[0].parts.bpe.codebook_size != models[1].parts.bpe.codebook_size:
        raise SystemExit("the models have codebooks of different sizes: their codes do not compare")
    manifest = Path(args.manifest)
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    rows = [row for row in rows if row.get("split") == args.split]
    if not rows:
        raise SystemExit(f"{manifest}: no rows of split {args.split!r}")
    differing: collections.Counter[str] = collections.Counter()
    positions: collections.Counter[str] = collections.Counter()
    changed: collections.Counter[str] = collections.Counter()
    clips: collections.Counter[str] = collections.Counter()
    for row in tqdm(rows, unit="clip"):
        wav, rate = load_audio(manifest.parent / row["path"])
        codes = [np.asarray(model.ids_to_codes(model.encode(wav, rate).ids)) for model in models]
        length = min(len(c) for c in codes)
        extra = abs(len(codes[0]) - len(codes[1]))
        count = int(np.count_nonzero(codes[0][:length] != codes[1][:length])) + extra
        source = row.get("source", "?")
        differing[source] += count
        positions[source] += max(len(c) for c in codes)
        changed[source] += int(count > 0)
        clips[source] += 1
    report = {
        source: {
            "codes_differing": round(differing[source] / positions[source], 4),
            "clips_with_a_difference": f"{changed[source]}/{clips[source]}",
        }
        for source in sorted(clips)
    }
    report["all"] = {
        "codes_differing": round(sum(differing.values()) / sum(positions.values()), 4),
        "clips_with_a_difference": f"{sum(changed.values())}/{sum(clips.values())}",
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
