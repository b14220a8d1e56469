#!/usr/bin/env bash
# dinfer-mkmodel: presets and flags give the shapes asked for, the same seed the same bytes, a
# large model is split into shards with an index, and dinfer-run loads what it writes.
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$DINFER_MKMODEL" --out "$tmp/a" --seed 3 >/dev/null
"$DINFER_MKMODEL" --out "$tmp/b" --seed 3 >/dev/null
"$DINFER_MKMODEL" --out "$tmp/c" --seed 4 >/dev/null
cmp -s "$tmp/a/model.safetensors" "$tmp/b/model.safetensors" || { echo "same seed, different weights"; exit 1; }
if cmp -s "$tmp/a/model.safetensors" "$tmp/c/model.safetensors"; then echo "different seeds, same weights"; exit 1; fi

"$DINFER_MKMODEL" --out "$tmp/q" --arch qwen2 --dim 96 --heads 6 --kv-heads 2 --layers 3 --ffn-dim 200 \
  --vocab 300 --tie --dtype bf16 --shard-size 100KB >/dev/null
grep -q '"Qwen2ForCausalLM"' "$tmp/q/config.json"
grep -q '"head_dim":.*16' "$tmp/q/config.json"
grep -q '"torch_dtype":.*"bfloat16"' "$tmp/q/config.json"
[ -f "$tmp/q/model.safetensors.index.json" ] || { echo "no index for a sharded model"; exit 1; }
ls "$tmp"/q/model-0000*-of-0000*.safetensors >/dev/null
grep -q 'q_proj.bias' "$tmp/q/model.safetensors.index.json" || { echo "qwen2 without q/k/v biases"; exit 1; }
if grep -q 'lm_head' "$tmp/q/model.safetensors.index.json"; then echo "tied model wrote lm_head"; exit 1; fi
out=$("$DINFER_RUN" --model "$tmp/q" --tokens 1,2,3 --max-tokens 5 --json 2>/dev/null)
grep -q '"finish_reason": "length"' <<<"$out" || { echo "qwen2 bf16 sharded model did not run: $out"; exit 1; }

"$DINFER_MKMODEL" --out "$tmp/p" --preset llama3-1b --layers 1 --vocab 1000 --dim 128 --heads 4 --kv-heads 2 \
  --ffn-dim 256 >/dev/null
grep -q '"rope_type":.*"llama3"' "$tmp/p/config.json"
"$DINFER_RUN" --model "$tmp/p" --tokens 5 --max-tokens 2 >/dev/null 2>&1

if "$DINFER_MKMODEL" --out "$tmp/x" --preset huge 2>"$tmp/err"; then echo "unknown preset accepted"; exit 1; fi
grep -q 'unknown preset "huge"' "$tmp/err"
if "$DINFER_MKMODEL" --out "$tmp/x" --dim 100 --heads 8 2>"$tmp/err"; then echo "bad dims accepted"; exit 1; fi
grep -q 'not a multiple' "$tmp/err"
echo "mkmodel: shapes, seeds, shards and presets as asked"
