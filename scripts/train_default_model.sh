#!/usr/bin/env bash
# Rebuild the bundled default model (v2.6) from nothing but Debian/PyPI packages.
# Every step is resumable: rerun the script after an interruption.
#
#   bash scripts/train_default_model.sh [WORK_DIR]      (default WORK_DIR: data/)
#
# Settings below are the ones the bundled model was trained with (docs/default-model.md).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-data}
CODEBOOK=${CODEBOOK:-1024}
CONTENT_WEIGHT=${CONTENT_WEIGHT:-1.0}
STEPS=${STEPS:-4000}
LONG_STEPS=${LONG_STEPS:-8000}
FINAL_CODEBOOK=${FINAL_CODEBOOK:-4096}
FINAL_STEPS=${FINAL_STEPS:-2000}
V25_CODEBOOK=${V25_CODEBOOK:-8192}
VOCAB=${VOCAB:-16384}
THREADS=${THREADS:-2}
run=${RUN:-$work/runs/v2-mel}
# The codec reads Whisper-base features and the speaker-normalised log-mel, stacked at 25
# frames/s; both come from the one cache below (the log-mel part is derived from it).
FRONTEND='{"name": "stack", "members": [
  {"name": "whisper-encoder", "compute_type": "int8", "context_seconds": 1.0, "pool": 2, "window_seconds": 10.0},
  {"name": "log-mel", "normalize_by_speaker": true, "fmax": 8000.0, "fmin": 0.0, "hop_length": 160,
   "n_fft": 1024, "n_mels": 80, "sample_rate": 16000, "win_length": 640}]}'

# 1. Corpus (the training sources of docs/corpus.md only; manifest with a fixed dev split).
[ -f "$work/corpus/manifest.jsonl" ] || plutok corpus build "$work/corpus"

# The bundled model was trained on every row except the Kokoro voices (that build stage
# was stopped for time in the training session); keep it so to reproduce it exactly.
manifest=$work/corpus/manifest-v2.jsonl
python - "$work/corpus/manifest.jsonl" "$manifest" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
keep = [row for row in rows if row["source"] != "kokoro"]
open(sys.argv[2], "w", encoding="utf-8").write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))
PY

# 2. Frontend features once: Whisper-base encoder (int8, 25 frames/s) + log-mel + speaker vector,
#    float16, memory-mapped; reruns add only what is missing.
plutok cache "$manifest" -o "$work/cache/whisper25" --threads "$THREADS" -q

# 3. The codec (resumes from $run/checkpoints when interrupted), in two phases as the
#    bundled v2.2 was: 4,000 steps (= v2.1), then resumed with an 8,000-step schedule
#    (the learning rate restarts at the cosine's midpoint and decays again).
for steps in "$STEPS" "$LONG_STEPS"; do
  plutok train-codec "$work/cache/whisper25" -o "$run" --threads "$THREADS" \
      --frontend "$FRONTEND" --content-dim 512 \
      --quantizer "{\"name\": \"vq\", \"codebook_size\": $CODEBOOK, \"dim\": 16}" --content-weight "$CONTENT_WEIGHT" \
      --steps "$steps" --batch-size 16 --segment-codes 100 --learning-rate 1e-3 --warmup-steps 300 \
      --eval-every 500 --log-every 50 --checkpoint-every 250 --seed 0 --resume
done

# 4. v2.4: the whole codec trained on from v2.2's weights with a codebook of 4,096 codes
#    (a k-means over v2.2's encoder latents starts it), the envelope and band-envelope
#    terms, and real speech drawn 5 times as often per second: a fresh 3e-4 schedule, seed 1.
#    (v2.3 was this run with 1,024 codes, the envelope term only and --real-weight 1.)
plutok train-codec "$work/cache/whisper25" -o "$run-final" --threads "$THREADS" \
    --frontend "$FRONTEND" --content-dim 512 \
    --quantizer "{\"name\": \"vq\", \"codebook_size\": $FINAL_CODEBOOK, \"dim\": 16}" --content-weight "$CONTENT_WEIGHT" \
    --init-from "$run/codec" --init-batches 40 --envelope-weight 1.0 --band-envelope-weight 1.0 --real-weight 5.0 \
    --steps "$FINAL_STEPS" --batch-size 16 --segment-codes 100 --learning-rate 3e-4 --warmup-steps 100 \
    --eval-every 500 --log-every 50 --checkpoint-every 250 --seed 1 --resume

# 5. v2.5: v2.4 trained on with 8,192 codes (k-means over v2.4's encoder latents) and real
#    speech drawn 8 times as often, 2,000 steps (seed 2); then 1,500 steps with the content
#    prediction weighted 3 (codebook kept, fresh schedule to 2e-4, seed 3).
#    (The bundled v2.5 started from the bundled v2.4's float16-rounded weights,
#    --init-from src/plutok/assets/v2.4, a folder bundled up to 0.6.0, e.g. at commit
#    ce0d166; here phase 4's own checkpoint starts it.)
plutok train-codec "$work/cache/whisper25" -o "$run-v25" --threads "$THREADS" \
    --frontend "$FRONTEND" --content-dim 512 \
    --quantizer "{\"name\": \"vq\", \"codebook_size\": $V25_CODEBOOK, \"dim\": 16}" --content-weight "$CONTENT_WEIGHT" \
    --init-from "$run-final/codec" --init-batches 40 --envelope-weight 1.0 --band-envelope-weight 1.0 --real-weight 8.0 \
    --steps 2000 --batch-size 16 --segment-codes 100 --learning-rate 3e-4 --warmup-steps 100 \
    --eval-every 500 --log-every 50 --checkpoint-every 250 --seed 2 --resume
plutok train-codec "$work/cache/whisper25" -o "$run-v25-content3" --threads "$THREADS" \
    --frontend "$FRONTEND" --content-dim 512 \
    --quantizer "{\"name\": \"vq\", \"codebook_size\": $V25_CODEBOOK, \"dim\": 16}" --content-weight 3.0 \
    --init-from "$run-v25/codec" --envelope-weight 1.0 --band-envelope-weight 1.0 --real-weight 8.0 \
    --steps 1500 --batch-size 16 --segment-codes 100 --learning-rate 2e-4 --warmup-steps 100 \
    --eval-every 500 --log-every 50 --checkpoint-every 250 --seed 3 --resume

# 6. v2.5: weights rounded to float16 values, BPE over the training codes, the model directory.
plutok assemble "$work/cache/whisper25" "$run-v25-content3/codec" -o "$run/model-v25" --vocab-size "$VOCAB" \
    --description "Plutok default v2.5: Whisper-base encoder + log-mel -> content codec (VQ $V25_CODEBOOK, 25 codes/s) -> log-mel -> HiFi-GAN; BPE $VOCAB"

# 7. v2.6: float32 Whisper features (the same tokens under every CPU's kernels; int8 features
#    change ~4 % of the codes between CPUs) and the real speech of the new sources, with whole
#    speakers held out (split dev-unseen/heldout of the corpus). The real train + dev clips,
#    at most 120 per speaker (those with the lowest sha256("pilot:" + id)), are cached with the
#    Whisper frontend in float32; v2.5 is trained on from there for 1,000 steps (seed 4), and
#    keeps v2.5's BPE and default voice (--bpe-from: the 1.5 h set is too small for a BPE).
#    (The bundled v2.6 started from the bundled v2.5, --init-from default in the 0.6 release.)
python - "$work/corpus/manifest.jsonl" "$work/corpus/manifest-v26.jsonl" <<'PY'
import collections, hashlib, json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
real = [r for r in rows if r["kind"] == "real"]
keep = [r for r in real if r["split"] == "dev"]
by_speaker = collections.defaultdict(list)
for row in real:
    if row["split"] == "train":
        by_speaker[row["speaker"]].append(row)
for clips in by_speaker.values():
    clips.sort(key=lambda r: hashlib.sha256(("pilot:" + r["id"]).encode()).hexdigest())
    keep += clips[:120]
open(sys.argv[2], "w", encoding="utf-8").write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))
PY
FRONTEND_F32=${FRONTEND/\"int8\"/\"float32\"}
plutok cache "$work/corpus/manifest-v26.jsonl" -o "$work/cache/whisper25-f32" --threads "$THREADS" -q \
    --frontend '{"name": "whisper-encoder", "compute_type": "float32", "context_seconds": 1.0, "pool": 2, "window_seconds": 10.0}'
plutok train-codec "$work/cache/whisper25-f32" -o "$run-v26" --threads "$THREADS" \
    --frontend "$FRONTEND_F32" --init-from "$run/model-v25" --content-weight 3.0 --real-weight 8.0 \
    --steps 1000 --batch-size 16 --segment-codes 100 --learning-rate 2e-4 --warmup-steps 100 \
    --eval-every 250 --log-every 50 --checkpoint-every 250 --seed 4 --resume
plutok assemble "$work/cache/whisper25-f32" "$run-v26/codec" -o "$run/model" --bpe-from "$run/model-v25" \
    --description "Plutok default v2.6: v2.5 trained on 1,000 steps on float32 Whisper features and the real speech of the new sources"

# 8. v2.7: v2.6 with the global-variance post-filter (docs/default-model.md, "v2.7"): one gain
#    per log-mel band, the real over the decoded standard deviation on 150 real train clips
#    (lowest sha256("gv:" + id)); the tokens and token space stay v2.6's.
model_v26="$run/model-v26"
rm -rf "$model_v26" && mv "$run/model" "$model_v26"
python scripts/global_variance_pilot.py "$work/corpus/manifest.jsonl" -o "$work/gv/rows.jsonl" \
    --model "$model_v26" --train-clips 150 --save-model "$run/model"

echo "model: $run/model  (bundle with: rm -rf src/plutok/assets/default && cp -r $run/model src/plutok/assets/default)"
