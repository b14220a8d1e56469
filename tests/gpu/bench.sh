#!/usr/bin/env bash
# The GPU benchmark of docs/PERFORMANCE.md (run on the GPU machine, not a test): writes the
# llama3-1b and llama3-8b shaped BF16 synthetic models and runs dinfer-run --bench on one GPU:
# batch 1 and 64 with prompt 128 and 128 new tokens, then the 8B shape over a 4,096-token prompt
# (its prefill, and batch-1 decode at 4,096 to 4,224 tokens of context).
#   tests/gpu/bench.sh [BUILD_DIR ...]        (default: build; MODEL_ROOT from $BENCH_MODELS;
#                                             BENCH_ROWS=N,M... runs only those rows, 1-based)
# With several build folders (a baseline and a change), each row runs on every build in turn, in
# one sitting, so their figures compare.
set -euo pipefail
builds=("$@")
[ ${#builds[@]} -gt 0 ] || builds=(build)
root=${BENCH_MODELS:-/tmp/dinfer-bench}
mkdir -p "$root"
rows=(
  "llama3-1b 1 128 128" "llama3-1b 64 128 128"
  "llama3-8b 1 128 128" "llama3-8b 64 128 128"
  "llama3-8b 1 4096 128"
)
for i in "${!rows[@]}"; do
  [ -z "${BENCH_ROWS:-}" ] || [[ ",$BENCH_ROWS," == *",$((i + 1)),"* ]] || continue
  read -r preset batch prompt gen <<<"${rows[$i]}"
  [ -f "$root/$preset/config.json" ] || "${builds[0]}/launch/dinfer-mkmodel" --out "$root/$preset" --preset "$preset" --seed 1
  for b in "${builds[@]}"; do
    echo "== $b: dinfer-run --model $preset --bench --device cuda --dtype bf16 --batch $batch --prompt-len $prompt --gen-len $gen"
    "$b/launch/dinfer-run" --model "$root/$preset" --bench --device cuda --dtype bf16 --batch "$batch" \
      --prompt-len "$prompt" --gen-len "$gen" --max-batch-tokens 8192 | grep -v '^bench:'
  done
done
