#!/usr/bin/env bash
# An FP8 KV cache under a checkpoint's static scales on the GPU (compressed-tensors' kv_cache_scheme,
# written by dinfer-mkmodel --kv-scales): the CPU's tokens with the same flags, fp32 all 12 of each
# prompt, BF16 the first; a scale a token (--kv-scales token) likewise.
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
shape=(--dim 256 --heads 4 --kv-heads 2 --layers 2 --ffn-dim 512 --vocab 384 --seed 11 --quantize fp8)
for s in tensor attn_head; do
  "$DINFER_MKMODEL" --out "$tmp/$s" "${shape[@]}" --kv-scales $s >/dev/null
done
# shellcheck disable=SC2054 # token lists
prompts=(--tokens 5,6,7 --tokens 100,3 --tokens 9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9)
gen() { "$DINFER_RUN" "${prompts[@]}" --max-tokens 12 --temperature 0 --ignore-eos --json --kv-dtype fp8 "$@" \
          2>/dev/null | sed 's/"logprobs.*//'; }
first() { gen "$@" | sed -E 's/.*"tokens": \[([0-9]+).*/\1/'; }
for s in tensor attn_head; do
  for scales in checkpoint token; do
    want=$(gen --model "$tmp/$s" --kv-scales $scales) got=$(gen --model "$tmp/$s" --kv-scales $scales --device cuda --dtype f32)
    if [ -z "$want" ] || [ "$got" != "$want" ]; then
      echo "FAIL: $s scales, --kv-scales $scales, f32 on the GPU: $got; the CPU: $want"; exit 1
    fi
    want=$(first --model "$tmp/$s" --kv-scales $scales) got=$(first --model "$tmp/$s" --kv-scales $scales --device cuda --dtype bf16)
    [ "$got" = "$want" ] || { echo "FAIL: $s scales, --kv-scales $scales, BF16 on the GPU: $got; the CPU: $want"; exit 1; }
    echo "ok: $s scales, --kv-scales $scales: the CPU's tokens in fp32, its first in BF16"
  done
done
