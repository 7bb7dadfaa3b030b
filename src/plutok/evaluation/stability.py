"""Token stability: how many codes change when the same speech is shifted or slightly noisy.

A language model trained on the tokens sees the same words as other token sequences when
they move under small changes no listener hears. Two perturbations, for information:

* **shift**: 10 ms of silence before the clip (a quarter of a 40 ms code), so the code grid
  falls elsewhere on the speech;
* **noise**: white noise at 30 dB SNR (seeded per clip).

Codes are compared position by position (both versions have the same number of codes
within one; the extra one is ignored), so the figure is the share of code positions whose
code changed — not BPE tokens, whose positions do not line up.

    python -m plutok.evaluation.stability manifest.jsonl --split dev-unseen --model default [--search]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Stability", "perturbations", "code_stability", "main"]

SHIFT_SECONDS = 0.010
NOISE_SNR_DB = 30.0


def perturbations(wav: np.ndarray, sample_rate: int, seed: int) -> dict[str, np.ndarray]:
    """The perturbed versions of ``wav`` ``(samples,)``: ``shift`` and ``noise``."""
    shift = np.concatenate([np.zeros(round(SHIFT_SECONDS * sample_rate), dtype=wav.dtype), wav])
    power = float(np.mean(np.square(wav, dtype=np.float64)))
    noise = np.random.default_rng(seed).standard_normal(wav.shape[0])
    noisy = wav + np.sqrt(power / 10 ** (NOISE_SNR_DB / 10)) * noise
    return {"shift": shift, "noise": noisy.astype(wav.dtype)}


def changed_share(codes: np.ndarray, other: np.ndarray) -> tuple[int, int]:
    """``(changed, compared)`` code positions; for ``shift``, position i of both is the same time
    within a quarter code."""
    length = min(len(codes), len(other))
    return int(np.count_nonzero(codes[:length] != other[:length])), length


@dataclass(frozen=True)
class Stability:
    """Share of code positions that changed, over all clips, per perturbation."""

    clips: int
    codes: int
    changed: dict[str, float]


def code_stability(model, clips: Sequence[tuple[str, np.ndarray, int]], progress: bool = True) -> Stability:
    """Encode each ``(id, wav, sample_rate)`` clip and its perturbations with ``model`` (a Plutok)."""
    from tqdm import tqdm

    changed = {"shift": 0, "noise": 0}
    compared = {"shift": 0, "noise": 0}
    total = 0
    for clip_id, wav, rate in tqdm(clips, desc="stability", unit="clip", disable=not progress):
        codes, _ = model.encode_codes(wav, rate)
        total += len(codes)
        seed = int.from_bytes(hashlib.sha256(clip_id.encode()).digest()[:4], "little")
        for name, perturbed in perturbations(wav, rate, seed).items():
            other, _ = model.encode_codes(perturbed, rate)
            count, length = changed_share(codes, other)
            changed[name] += count
            compared[name] += length
    return Stability(len(clips), total, {k: changed[k] / max(compared[k], 1) for k in changed})


def main(argv: Sequence[str] | None = None) -> int:
    from plutok.api import Plutok
    from plutok.audio import load_audio
    from plutok.evaluation.paired import parse_where
    from plutok.evaluation.runner import load_dataset

    parser = argparse.ArgumentParser(
        prog="python -m plutok.evaluation.stability",
        description="Share of codes that change when clips are shifted by 10 ms or get 30 dB SNR white noise.",
    )
    parser.add_argument("data", help="manifest.jsonl or folder (as plutok eval reads)")
    parser.add_argument("--split", help="only manifest rows of this split")
    parser.add_argument("--where", metavar="FIELD=V1,V2", help="only rows whose FIELD is one of the values")
    parser.add_argument("--model", default="default", help="bundled name or model folder")
    parser.add_argument("--search", action="store_true", help="encode with code search (plutok.codec.search)")
    parser.add_argument(
        "--search-settings",
        default="",
        metavar="K[,SWEEPS[,FIT[,SPEAKER]]]",
        help="with --search: its settings",
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    utterances = load_dataset(args.data, args.split, None, None, None)
    if args.where:
        try:
            field, values = parse_where(args.where)
        except ValueError as error:
            parser.error(str(error))
        utterances = [u for u in utterances if str(getattr(u, field, None)) in values]
    from plutok.codec.search import CodeSearch

    search = CodeSearch.parse(args.search_settings) if args.search else None
    model = Plutok.from_pretrained(args.model, search=search)
    clips = []
    for utterance in utterances:
        wav, rate = load_audio(utterance.path)
        clips.append((utterance.id, wav, rate))
    result = code_stability(model, clips)
    print(
        f"{args.model}{' with code search' if search else ''}: {result.clips} clips, {result.codes} codes; codes changed: "
        f"shift 10 ms {100 * result.changed['shift']:.1f} %, white noise 30 dB SNR {100 * result.changed['noise']:.1f} %"
    )
    if args.json:
        args.json.write_text(json.dumps(result.__dict__, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
