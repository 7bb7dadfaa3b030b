"""ASR from codes: what Whisper's decoder reads from a v2 model's codes, without any audio.

    python scripts/asr_from_codes.py MODEL_DIR data/corpus/manifest.jsonl [--kind real] [--split dev]

For each clip: Whisper's transcript of (a) its own encoder output of the original audio
pooled to 25 frames/s (the frontend's features, the ceiling), and (b) the codec's content
prediction from the codes (``ContentCodec.content_features``), both repeated to the 50
frames/s Whisper's decoder expects. WER/CER with the evaluation's normalisation and
per-clip cap (plutok.evaluation.metrics.error_counts); prints one JSON summary.
For a codec with a CTC phoneme head (``ctc_weight``) also (c) the phoneme error rate
of its greedy reading of the codes (``ContentCodec.phonemes_from_codes``) against
espeak-ng's phonemes of the transcript (the training labels), capped per clip too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from plutok.api import Plutok
from plutok.audio import load_audio
from plutok.evaluation.asr import Transcriber
from plutok.evaluation.metrics import error_counts


def _phoneme_reader(codec):
    """``(codes, text, language) -> (reference phonemes, phonemes read from the codes)``, or None."""
    symbols = getattr(getattr(codec, "settings", None), "phoneme_symbols", ())
    if not symbols:
        return None
    from plutok.training.phonemes import PhonemeInventory, Phonemizer

    phonemizer, inventory = Phonemizer(), PhonemeInventory(symbols)

    def read(codes, text, language):
        reference = inventory.decode(inventory.encode(phonemizer.phonemes(text, language)))
        with torch.inference_mode():
            return reference, codec.phonemes_from_codes(torch.from_numpy(codes)[None])[0]

    return read


def _edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Substitutions + deletions + insertions between two symbol sequences."""
    import jiwer

    if not hypothesis:
        return len(reference)
    # jiwer counts over space-separated words: one word per phoneme symbol.
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return out.substitutions + out.deletions + out.insertions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("manifest")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--kind", default="real")
    parser.add_argument("--out", default=None, help="also write per-clip rows (JSONL)")
    args = parser.parse_args()
    tok = Plutok.from_pretrained(args.model)
    asr = Transcriber(threads=1)
    manifest = Path(args.manifest)
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("split") == args.split and r.get("kind") == args.kind and r.get("text")]
    totals = {name: [0, 0, 0, 0] for name in ("features", "codes")}
    phonemes = _phoneme_reader(tok.codec)
    phoneme_totals = [0, 0]
    per_clip = []
    for row in rows:
        wav, _ = load_audio(manifest.parent / row["path"], target_rate=tok.sample_rate)
        speaker = tok.speaker_encoder.embed(wav)
        analysis = tok.frontend.analyze(wav, speaker)
        codes = tok.codec.encode(tok.frontend.normalized(analysis, speaker, tok.speaker_encoder))
        with torch.inference_mode():
            predicted = tok.codec.content_features(torch.from_numpy(codes)[None])[0].numpy()
        # The content head predicts the Whisper channels, which come first in a stacked frontend.
        features = analysis[: predicted.shape[0]]
        result = {"id": row["id"], "language": row["language"]}
        for name, frames in (("features", features), ("codes", predicted)):
            text = asr.transcribe_encoder_output(np.repeat(frames, 2, axis=1), row["language"])
            counts = error_counts(row["text"], text, row["language"])
            result[name] = text
            for index, value in enumerate(
                (counts.word_errors, counts.words, counts.char_errors, counts.chars)
            ):
                totals[name][index] += value or 0
        if phonemes is not None:
            reference, read = phonemes(codes, row["text"], row["language"])
            errors = _edit_distance(reference, read)
            phoneme_totals[0] += min(errors, len(reference))
            phoneme_totals[1] += len(reference)
            result["phonemes"] = " ".join(read)
        per_clip.append(result)
    summary = {
        name: {"wer": t[0] / max(1, t[1]), "cer": t[2] / max(1, t[3]), "clips": len(rows)}
        for name, t in totals.items()
    }
    if phonemes is not None:
        summary["phonemes_from_codes"] = {
            "per": phoneme_totals[0] / max(1, phoneme_totals[1]),
            "clips": len(rows),
        }
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in per_clip), encoding="utf-8"
        )


if __name__ == "__main__":
    main()
