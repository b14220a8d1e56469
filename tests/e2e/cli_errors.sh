#!/usr/bin/env bash
# dinfer-run on bad model folders and bad flags: a non-zero exit, and one line on stderr that
# names the file (or flag) and the problem; never a crash.
set -uo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

# expect NEEDLE... -- ARGS: dinfer-run ARGS must exit 1 with one stderr line holding every needle
expect() {
  local needles=()
  while [ "$1" != "--" ]; do needles+=("$1"); shift; done
  shift
  "$DINFER_RUN" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  local lines
  lines=$(grep -c . "$tmp/err")
  local ok=1
  [ $rc -eq 1 ] || ok=0
  [ "$lines" -eq 1 ] || ok=0
  for n in "${needles[@]}"; do grep -qF -- "$n" "$tmp/err" || ok=0; done
  if [ $ok -eq 1 ]; then
    echo "ok: $(cat "$tmp/err")"
  else
    echo "FAIL (exit $rc, $lines lines) for: $*"; cat "$tmp/err"
    fails=$((fails + 1))
  fi
}

fresh() { rm -rf "$tmp/m"; "$DINFER_MKMODEL" --out "$tmp/m" --layers 2 >/dev/null; }

expect "$tmp/nope/config.json" "cannot open" -- --model "$tmp/nope" --tokens 1
fresh; rm "$tmp/m/model.safetensors"
expect "no model.safetensors" -- --model "$tmp/m" --tokens 1
fresh; truncate -s -1000 "$tmp/m/model.safetensors"
expect "model.safetensors" "truncated" -- --model "$tmp/m" --tokens 1
fresh; sed -i '1s/"shape":\[512,64\]/"shape":[512,65]/' "$tmp/m/model.safetensors"
expect "model.safetensors" "model.embed_tokens.weight" "shape x F32 size" -- --model "$tmp/m" --tokens 1
fresh; sed -i '1s/"data_offsets":\[0,/"data_offsets":[1,/' "$tmp/m/model.safetensors"
expect "model.safetensors" "data_offsets" -- --model "$tmp/m" --tokens 1
fresh; sed -i '1s/"dtype":"F32"/"dtype":"I32"/' "$tmp/m/model.safetensors"
expect "model.safetensors" "unsupported dtype I32" -- --model "$tmp/m" --tokens 1
fresh; sed -i '1s/"dtype":"F32"/"dtype":"X32"/' "$tmp/m/model.safetensors"
expect "model.safetensors" "unknown dtype" -- --model "$tmp/m" --tokens 1
fresh; sed -i '/num_attention_heads/d' "$tmp/m/config.json"
expect "config.json" "'num_attention_heads' is missing" -- --model "$tmp/m" --tokens 1
fresh; sed -i 's/"rope_scaling":.*null/"rope_scaling": {"rope_type": "yarn", "factor": 2}/' "$tmp/m/config.json"
expect "config.json" "\"yarn\"" -- --model "$tmp/m" --tokens 1
# a sharded folder whose index lacks a tensor the model needs
rm -rf "$tmp/s"; "$DINFER_MKMODEL" --out "$tmp/s" --layers 2 --shard-size 100KB >/dev/null
sed -i '/"lm_head.weight"/d' "$tmp/s/model.safetensors.index.json"
sed -i -z 's/,\n\t}/\n\t}/' "$tmp/s/model.safetensors.index.json"
expect "model.safetensors.index.json" "'lm_head.weight' is missing from the index" -- --model "$tmp/s" --tokens 1

# bad requests and flags
fresh
expect "outside the vocabulary" -- --model "$tmp/m" --tokens 1,512
expect "exceeds the context length 512" -- --model "$tmp/m" --tokens 1,2 --max-tokens 511
expect "--tokens" "not a comma-separated list" -- --model "$tmp/m" --tokens 1,,2
expect "--tokens" -- --model "$tmp/m" --tokens ""
expect "--max-tokens" "outside" -- --model "$tmp/m" --tokens 1 --max-tokens 0
expect "--temperature" -- --model "$tmp/m" --tokens 1 --temperature -1
expect "--temperature" "not a number" -- --model "$tmp/m" --tokens 1 --temperature nan
expect "--top-p" -- --model "$tmp/m" --tokens 1 --temperature 1 --top-p 0
expect "--model DIR is required" -- --tokens 1
expect "at least one prompt" -- --model "$tmp/m"
expect "unexpected argument" -- --model "$tmp/m" --tokens 1 extra
expect "--device" "not cpu or cuda" -- --model "$tmp/m" --tokens 1 --device tpu
expect "--dtype bf16 needs --device cuda" -- --model "$tmp/m" --tokens 1 --device cpu --dtype bf16
expect "--gpu-memory-fraction" -- --model "$tmp/m" --tokens 1 --gpu-memory-fraction 1.5
if [ -n "${HAS_GPU:-}" ] && ! "$HAS_GPU" >/dev/null 2>&1; then
  expect "--device cuda, but no CUDA device is visible" -- --model "$tmp/m" --tokens 1 --device cuda
fi

[ $fails -eq 0 ] || { echo "$fails case(s) failed"; exit 1; }
echo "all error cases gave one clear line"
