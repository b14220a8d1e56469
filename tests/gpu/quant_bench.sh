#!/usr/bin/env bash
# Issue 15's GPU figures (run on the GPU machine, not a test): the llama3-8b shaped BF16 synthetic
# model (written by dinfer-mkmodel if missing) quantized as it loads, dinfer-run --bench on one GPU,
# prompt 128 and 128 new tokens at batch 1 and 64 (the batch-64 run's prefill is 64 x 128 tokens);
# then what the memory plan admits with and without an FP8 KV cache, and the KL divergence of each
# format's next-token distributions from BF16's (tests/tools/kl_divergence).
#   tests/gpu/quant_bench.sh [BUILD_DIR]      (default: build; models under $BENCH_MODELS)
#   QB_FORMATS="bf16 fp8 int8 int4"   formats to time (bf16: the checkpoint as it is)
#   QB_BATCHES="1 64"                 batch sizes
#   QB_KL=0                           skip the KL divergence (four more loads of the model)
#   QB_CHECKPOINTS="fp8 fp8-block awq gptq4"   also time checkpoints in these published formats
#                                     (dinfer-mkmodel --quantize, the same seed), loaded as they are
#   QB_PEER=1                         and transformers on each checkpoint folder (peer_transformers.py:
#                                     compiled decode, eager prefill), where it can load the format
#   QB_ONLY_CHECKPOINTS=1             skip the --quantize runs, the memory plan and the KL divergence
set -euo pipefail
b=${1:-build}
root=${BENCH_MODELS:-/tmp/dinfer-bench}
m=$root/llama3-8b
mkdir -p "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# decode tok/s of a run's output: rate FILE
rate() { sed -n 's/^decode: .*(\([0-9.]*\) tokens\/s).*/\1/p' "$1"; }
for f in ${QB_CHECKPOINTS:-}; do
  d=$root/llama3-8b-$f
  [ -f "$d/config.json" ] ||
    "$b/launch/dinfer-mkmodel" --out "$d" --preset llama3-8b --seed 1 --quantize "$f" >/dev/null
  for batch in ${QB_BATCHES:-1 64}; do
    echo "== checkpoint $f: dinfer-run --bench --device cuda --dtype bf16 --batch $batch --prompt-len 128 --gen-len 128"
    "$b/launch/dinfer-run" --model "$d" --bench --device cuda --dtype bf16 --batch "$batch" --prompt-len 128 \
      --gen-len 128 --max-batch-tokens 8192 2>"$tmp/err" | grep -v '^bench:' | tee "$tmp/ours" ||
      { tail -5 "$tmp/err"; exit 1; }
    [ "${QB_PEER:-0}" = 1 ] || continue
    echo "== checkpoint $f: transformers (static cache + torch.compile), batch $batch"
    if python3 "$(dirname "$0")/peer_transformers.py" "$d" "$batch" 128 128 >"$tmp/peer" 2>"$tmp/perr"; then
      cat "$tmp/peer"
      grep '^peer:' "$tmp/perr" || true
      awk -v a="$(rate "$tmp/ours")" -v p="$(rate "$tmp/peer")" \
        'BEGIN { if (p > 0) printf "decode: dinfer %.1f, transformers %.1f tok/s: %.2fx\n", a, p, a / p }'
    else
      echo "transformers cannot run this checkpoint: $(grep -E '[A-Za-z]*(Error|Exception)' "$tmp/perr" | tail -1)"
    fi
  done
done
[ "${QB_ONLY_CHECKPOINTS:-0}" = 1 ] && exit 0
[ -f "$m/config.json" ] || "$b/launch/dinfer-mkmodel" --out "$m" --preset llama3-8b --seed 1 >/dev/null
for f in ${QB_FORMATS:-bf16 fp8 int8 int4}; do
  q=()
  [ "$f" = bf16 ] || q=(--quantize "$f")
  for batch in ${QB_BATCHES:-1 64}; do
    echo "== $f: dinfer-run --bench --device cuda --dtype bf16 --batch $batch --prompt-len 128 --gen-len 128 ${q[*]}"
    "$b/launch/dinfer-run" --model "$m" --bench --device cuda --dtype bf16 --batch "$batch" --prompt-len 128 \
      --gen-len 128 --max-batch-tokens 8192 "${q[@]}" 2>"$tmp/err" | grep -v '^bench:' ||
      { tail -5 "$tmp/err"; exit 1; }
    grep "rank 0: cuda" "$tmp/err" | tail -1 > "$tmp/plan.$f" || true
  done
done
# 4,096-token sequences the memory plan admits: (budget - weights - workspace) / KV bytes a token
if [ -f "$tmp/plan.bf16" ]; then
  for kv in auto fp8; do
    per=$("$b/launch/dinfer-plan" --model "$m" --tp 1 --pp 1 --dtype bf16 --kv-dtype "$kv" |
      awk '$1 == "0" && NF >= 10 { print $NF }')
    sed -n 's/.*weights \([0-9.]*\) GiB, workspace \([0-9.]*\) GiB, budget \([0-9.]*\) GiB.*/\1 \2 \3/p' "$tmp/plan.bf16" |
      awk -v per="$per" -v kv="$kv" '{ room = ($3 - $1 - $2) * 1024; tok = room / per * 1000
        printf "KV %s: %.2f MiB a 1,000 tokens; %.1f GiB of room after BF16 weights: %d tokens, %d sequences of 4,096\n",
          kv, per, room / 1024, tok, int(tok / 4096) }'
  done
fi
if [ "${QB_KL:-1}" = 1 ]; then
  "$b/tests/kl_divergence" --model "$m" --device cuda --dtype bf16 --prompts 8 --len 64 fp8 int8 int4 kv-fp8
fi
