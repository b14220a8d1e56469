#!/usr/bin/env bash
# --quantize-lm-head on the GPU: stories260K (trained, its head tied to the embedding) with each
# head format gives the CPU's tokens with the same flags (the CPU backend dequantizes the same codes):
# all 40 in fp32, the first 10 in BF16; with int4 layers under an int8 head too.
set -euo pipefail
m="$(dirname "$0")/../../launch/stories260K"
story() { "$DINFER_RUN" --model "$m" --tokens 1 --max-tokens 40 --temperature 0 --json "$@" 2>/dev/null |
            sed -E 's/.*"tokens": \[([0-9, ]*)\].*/\1/'; }
first10() { story "$@" | cut -d, -f1-10; }
for h in int8 fp8 int4; do
  for layers in "" "--quantize int4"; do
    # shellcheck disable=SC2086
    want=$(story --quantize-lm-head $h $layers) got=$(story --quantize-lm-head $h $layers --device cuda --dtype f32)
    if [ -z "$want" ] || [ "$got" != "$want" ]; then
      echo "FAIL: $h head $layers, f32 on the GPU: $got; the CPU: $want"; exit 1
    fi
    # shellcheck disable=SC2086
    want=$(first10 --quantize-lm-head $h $layers) got=$(first10 --quantize-lm-head $h $layers --device cuda --dtype bf16)
    [ "$got" = "$want" ] || { echo "FAIL: $h head $layers, BF16 on the GPU: $got; the CPU: $want"; exit 1; }
    echo "ok: $h head ${layers:-(float layers)}: the CPU's 40 tokens in fp32, its first 10 in BF16"
  done
done
