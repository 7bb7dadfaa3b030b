"""Pilot of a decode-time global-variance post-filter (the over-smoothing lever of the model card).

The codec decoder predicts the speaker-normalised log-mel ``z`` (80 bands x frames), which
L1-type losses make smoother than speech. The post-filter scales each band by a fixed gain,
``z' = g ** alpha * z``, where ``g[b] = std(true z[b]) / std(decoded z[b])`` is measured on
real *train* clips (deviations from each clip's band mean, pooled over clips). It is
pointwise in time, so chunked and streaming decoding would still equal one pass, and it
leaves the tokens alone. This script only measures it: every clip of ``--split`` is decoded
once per ``alpha`` (``0`` = the model as it is) and scored with STOI and speaker similarity
(the evaluation's Resemblyzer, aligned as ``plutok eval`` aligns) and, with ``--asr``, WER
(Whisper-base as in ``plutok eval``; against the clip's transcript, or the ASR transcript of
the original where it has none, as ``--untranscribed asr``; errors capped at the reference's
word count); paired differences per source come at the end. Rows are appended to ``OUT`` (JSONL), so a rerun resumes.

    python scripts/global_variance_pilot.py data/corpus/manifest.jsonl -o data/gv/fast.jsonl \\
        --model fast --alphas 0 1 2

``--save-model DIR`` writes a copy of the model with the post-filter built in (the
registered ``global-variance`` part, gains ``g ** --save-alpha``) and stops: that model's
tokens and token space are the original's, only its decoded sound changes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from plutok.api import Plutok
from plutok.audio import load_audio
from plutok.evaluation import metrics
from plutok.evaluation.runner import load_manifest


def _normalised_log_mels(tok: Plutok, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(wav, speaker, decoded z, true z)``; both z ``(n_mels, frames)`` cut to the same length."""
    wav, _ = load_audio(path, tok.sample_rate)
    encoding = tok.encode(wav, tok.sample_rate)
    codes = tok.ids_to_codes(encoding.ids)
    with torch.inference_mode():
        decoded = tok.parts.codec.decode_long(codes, encoding.speaker, None)
    speaker_encoder = tok.parts.speaker
    true = speaker_encoder.normalize(speaker_encoder.log_mel(wav), encoding.speaker)
    frames = min(decoded.shape[1], true.shape[1])
    return wav, encoding.speaker, decoded, true[:, :frames]


def band_gains(tok: Plutok, manifest: Path, clips: int) -> np.ndarray:
    """Per-band ``std(true) / std(decoded)`` ``(n_mels,)`` over ``clips`` real train clips (chosen by hash)."""
    train = sorted(
        load_manifest(manifest, split="train", kind="real"),
        key=lambda utterance: hashlib.sha256(("gv:" + utterance.id).encode()).hexdigest(),
    )[:clips]
    true_energy = decoded_energy = 0.0
    for utterance in tqdm(train, desc="gains", unit="clip"):
        _, _, decoded, true = _normalised_log_mels(tok, utterance.path)
        decoded = decoded[:, : true.shape[1]]
        true_energy = true_energy + np.square(true - true.mean(axis=1, keepdims=True)).sum(axis=1)
        decoded_energy = decoded_energy + np.square(decoded - decoded.mean(axis=1, keepdims=True)).sum(axis=1)
    return np.sqrt(true_energy / decoded_energy).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path, help="corpus manifest.jsonl")
    parser.add_argument("-o", "--out", type=Path, required=True, help="rows (JSONL); the gains go beside it")
    parser.add_argument("--model", default="fast", help="bundled name or model folder (default: fast)")
    parser.add_argument("--split", default="dev-unseen", help="clips scored (default: dev-unseen)")
    parser.add_argument("--train-clips", type=int, default=150, help="real train clips for the gains")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 1.0], help="gain exponents tried")
    parser.add_argument("--limit", type=int, default=None, help="first N clips of the split only")
    parser.add_argument("--asr", action="store_true", help="also WER (needs plutok[eval]'s faster-whisper)")
    parser.add_argument("--save-model", type=Path, default=None, metavar="DIR", help="write the model with the post-filter")
    parser.add_argument("--save-alpha", type=float, default=1.0, help="gain exponent of --save-model (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    tok = Plutok.from_pretrained(args.model, chunk_seconds=None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    gain_path = args.out.with_suffix(".gains.npy")
    if not gain_path.exists():
        np.save(gain_path, band_gains(tok, args.manifest, args.train_clips))
    gains = np.load(gain_path)[:, None]
    print("gains per band:", " ".join(f"{g:.3f}" for g in gains[:, 0]))
    if args.save_model is not None:
        from plutok.postfilters.global_variance import GlobalVariancePostfilter

        tok.parts.postfilter = GlobalVariancePostfilter(gains[:, 0] ** args.save_alpha)
        tok.parts.metadata = {
            **tok.parts.metadata,
            "postfilter_trained": {
                "command": "python scripts/global_variance_pilot.py " + " ".join(sys.argv[1:]),
                "train_clips": args.train_clips,
                "alpha": args.save_alpha,
            },
        }
        model = Plutok(tok.parts)  # its fingerprint now covers the post-filter
        model.save(args.save_model)
        print(f"saved {args.save_model} (fingerprint {model.fingerprint[:16]}, token space {model.token_space[:16]})")
        return

    transcriber = None
    if args.asr:
        from plutok.evaluation.asr import Transcriber

        transcriber = Transcriber()
    done = {json.loads(line)["id"] for line in args.out.read_text().splitlines()} if args.out.exists() else set()
    scored = load_manifest(args.manifest, split=args.split, limit=args.limit)
    with args.out.open("a") as sink:
        for utterance in tqdm([u for u in scored if u.id not in done], desc="decode", unit="clip"):
            wav, speaker, decoded, _ = _normalised_log_mels(tok, utterance.path)
            result = {"id": utterance.id, "source": utterance.source}
            language = utterance.language
            if transcriber is not None:
                text = utterance.text.strip() or transcriber.transcribe(wav, language)
            for alpha in args.alphas:
                features = tok.parts.speaker.denormalize(decoded * gains**alpha, speaker)
                audio = tok.parts.vocoder.synthesize(features, speaker, chunk_frames=None)[: wav.shape[0]]
                aligned, _ = metrics.align(wav, audio)
                result[f"stoi@{alpha:g}"] = metrics.stoi(wav, aligned)
                result[f"speaker_similarity@{alpha:g}"] = metrics.speaker_similarity(wav, aligned)
                if transcriber is not None and text:
                    wer = metrics.error_counts(text, transcriber.transcribe(aligned, language), language).wer
                    if wer is not None:  # None for languages written without spaces
                        result[f"wer@{alpha:g}"] = 100.0 * wer
            sink.write(json.dumps(result) + "\n")
            sink.flush()

    results = [json.loads(line) for line in args.out.read_text().splitlines()]
    print("| source | metric | alpha | clips | alpha 0 | B - A | standard error |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for source in sorted({str(r["source"]) for r in results}):
        group = [r for r in results if str(r["source"]) == source]
        for metric in ("stoi", "speaker_similarity", "wer"):
            scored_rows = [r for r in group if f"{metric}@0" in r]
            for alpha in args.alphas:
                if alpha == 0 or not scored_rows or f"{metric}@{alpha:g}" not in scored_rows[0]:
                    continue
                base = np.array([r[f"{metric}@0"] for r in scored_rows])
                delta = np.array([r[f"{metric}@{alpha:g}"] for r in scored_rows]) - base
                error = delta.std(ddof=1) / np.sqrt(len(delta)) if len(delta) > 1 else float("nan")
                print(
                    f"| {source} | {metric} | {alpha:g} | {len(scored_rows)} | {base.mean():.3f} "
                    f"| {delta.mean():+.4f} | {error:.4f} |"
                )


if __name__ == "__main__":
    main()
