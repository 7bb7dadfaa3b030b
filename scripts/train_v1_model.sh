#!/usr/bin/env bash
# Rebuild the bundled v1 model (src/plutok/assets/v1) from nothing but Debian/PyPI packages.
# Every step is resumable: rerun the script after an interruption.
#
#   bash scripts/train_v1_model.sh [WORK_DIR]      (default WORK_DIR: data/)
#
# Settings below are the ones the bundled model was trained with (docs/default-model.md).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-data}
DOWNSAMPLE=${DOWNSAMPLE:-4}
CODEBOOK=${CODEBOOK:-1024}
STEPS=${STEPS:-6000}
VOCAB=${VOCAB:-12000}
SPEAKER_COEFFICIENTS=${SPEAKER_COEFFICIENTS:-16}
run=${RUN:-$work/runs/ds${DOWNSAMPLE}-k${CODEBOOK}}

# 1. Corpus (the training sources of docs/corpus.md only; manifest with a fixed dev split).
[ -f "$work/corpus/manifest.jsonl" ] || plutok corpus build "$work/corpus"
# The bundled model v1 was trained on the real speech + espeak-ng part of the corpus
# (what existed when its training started): 17,057 clips, 17.1 h, 14 languages.
manifest=$work/corpus/manifest-v1.jsonl
python - "$work/corpus/manifest.jsonl" "$manifest" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
keep = [row for row in rows if row["kind"] == "real" or row["source"] == "espeak-ng"]
open(sys.argv[2], "w", encoding="utf-8").write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))
PY
python scripts/dev_eval_subset.py "$manifest" "$work/corpus/dev-eval.jsonl" 3

# 2. Features: normalised 80-bin log-mel + per-utterance speaker statistics.
plutok extract "$manifest" --split train -o "$work/features/train" \
    --speaker-coefficients "$SPEAKER_COEFFICIENTS" -q
plutok extract "$manifest" --split dev -o "$work/features/dev" \
    --speaker-coefficients "$SPEAKER_COEFFICIENTS" -q

# 3. VQ-VAE (resumes from $run/vq/checkpoints when interrupted).
plutok train-vq "$work/features/train" --dev "$work/features/dev" -o "$run/vq" \
    --downsample "$DOWNSAMPLE" --codebook-size "$CODEBOOK" --steps "$STEPS" \
    --batch-size 16 --segment-frames 128 --learning-rate 5e-4 --seed 0 --resume
# Weights rounded to float16 values: the bundled file is half the size, and the
# BPE below is trained on the codes of exactly the model that ships.
python -c "import sys; from plutok.legacy.vqvae import VQVAE; VQVAE.load(sys.argv[1]).round_to_half().save(sys.argv[1])" "$run/vq"

# 4. BPE over the training codes, and the complete model directory.
plutok train-bpe "$work/features/train" --vqvae "$run/vq" -o "$run/model" --vocab-size "$VOCAB" -q \
    --description "Plutok default: mel backbone, VQ-VAE ds=$DOWNSAMPLE K=$CODEBOOK, BPE $VOCAB"

echo "model: $run/model  (bundle with: rm -rf src/plutok/assets/v1 && cp -r $run/model src/plutok/assets/v1)"
