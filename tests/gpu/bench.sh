#!/usr/bin/env bash
# The GPU benchmark of docs/PERFORMANCE.md (run on the GPU machine, not a test): writes the
# llama3-1b and llama3-8b shaped BF16 synthetic models and runs dinfer-run --bench on one GPU at
# batch 1 and 64, prompt 128, 128 new tokens.
#   tests/gpu/bench.sh [BUILD_DIR] [MODEL_ROOT]
set -euo pipefail
build=${1:-build}
root=${2:-/tmp/dinfer-bench}
mkdir -p "$root"
for preset in llama3-1b llama3-8b; do
  [ -f "$root/$preset/config.json" ] || "$build/launch/dinfer-mkmodel" --out "$root/$preset" --preset "$preset" --seed 1
  for batch in 1 64; do
    echo "== dinfer-run --model $preset --bench --device cuda --dtype bf16 --batch $batch --prompt-len 128 --gen-len 128"
    "$build/launch/dinfer-run" --model "$root/$preset" --bench --device cuda --dtype bf16 --batch "$batch" \
      --prompt-len 128 --gen-len 128 --max-batch-tokens 8192
  done
done
