#!/usr/bin/env bash
# dinfer-run on bad model folders and bad flags: a non-zero exit, and one line on stderr that
# names the file (or flag) and the problem; never a crash.
set -uo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

# expect NEEDLE... -- ARGS: dinfer-run ARGS must exit 1 with one stderr line holding every needle,
# within 20 s (a FIFO in place of a file once blocked forever); PROG=... runs another program
expect() {
  local needles=()
  while [ "$1" != "--" ]; do needles+=("$1"); shift; done
  shift
  timeout 20 "${PROG:-$DINFER_RUN}" "$@" >"$tmp/out" 2>"$tmp/err"
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

# head_dim derived from hidden_size / num_attention_heads over the kernels' limit: once SIGSEGV
fresh; sed -i '/"head_dim"/d; s/"hidden_size":.*/"hidden_size": 1040,/; s/"num_attention_heads":.*/"num_attention_heads": 1,/; s/"num_key_value_heads":.*/"num_key_value_heads": 1,/' "$tmp/m/config.json"
expect "config.json" "head_dim 1040" "over the supported 1024" -- --model "$tmp/m" --tokens 1
PROG=$DINFER_PLAN expect "config.json" "head_dim 1040" -- --model "$tmp/m" --tp 1
# a key given twice (Python's json takes the last, cJSON the first): refused
fresh; sed -i 's/"vocab_size":/"vocab_size": 512, "vocab_size":/' "$tmp/m/config.json"
expect "config.json" "'vocab_size' appears twice" -- --model "$tmp/m" --tokens 1
# files that are not regular files, or too large: refused by name, never read without end
fresh; rm "$tmp/m/config.json"; ln -s /dev/zero "$tmp/m/config.json"
expect "config.json" "not a regular file (a device)" -- --model "$tmp/m" --tokens 1
fresh; head -c 5000000 /dev/zero | tr '\0' ' ' >> "$tmp/m/config.json"
expect "config.json" "over the 4194304-byte limit" -- --model "$tmp/m" --tokens 1
fresh; rm "$tmp/m/model.safetensors"; mkfifo "$tmp/m/model.safetensors"
expect "model.safetensors" "not a regular file (a FIFO)" -- --model "$tmp/m" --tokens 1
fresh; rm "$tmp/m/model.safetensors"; ln -s model.safetensors "$tmp/m/model.safetensors"
expect "model.safetensors" "symbolic links" -- --model "$tmp/m" --tokens 1
fresh; rm "$tmp/m/model.safetensors"; ln -s model.safetensors.index.json "$tmp/m/model.safetensors.index.json"
expect "model.safetensors.index.json" "symbolic links" -- --model "$tmp/m" --tokens 1

# NaN weights: --json stays valid JSON (null, never nan)
fresh
f="$tmp/m/model.safetensors"
hlen=$(od -An -t u8 -N8 "$f" | tr -d ' ')
begin=$(head -c $((8 + hlen)) "$f" | grep -ao '"model.norm.weight":{[^}]*}' | sed -n 's/.*"data_offsets":\[\([0-9]*\),.*/\1/p')
for i in $(seq 0 63); do printf '\x00\x00\xc0\x7f'; done | dd of="$f" bs=1 seek=$((8 + hlen + begin)) conv=notrunc status=none
"$DINFER_RUN" --model "$tmp/m" --tokens 1,2 --max-tokens 2 --json >"$tmp/out" 2>"$tmp/err"
if grep -q '"logprobs": \[null, null\]' "$tmp/out" && ! grep -qi nan "$tmp/out"; then
  echo "ok: NaN logprobs print as null: $(cat "$tmp/out")"
else
  echo "FAIL: NaN weights gave: $(cat "$tmp/out" "$tmp/err")"; fails=$((fails + 1))
fi

# the client: an unknown option is an error (it once printed the usage and exited 0)
if "$DINFER_CLIENT" --bogus >/dev/null 2>"$tmp/err"; then
  echo "FAIL: dinfer --bogus exited 0"; fails=$((fails + 1))
elif grep -q -- '--bogus' "$tmp/err"; then
  echo "ok: dinfer --bogus: $(tail -n 1 "$tmp/err")"
else
  echo "FAIL: dinfer --bogus did not name the option"; cat "$tmp/err"; fails=$((fails + 1))
fi
"$DINFER_CLIENT" --help >/dev/null || { echo "FAIL: dinfer --help did not exit 0"; fails=$((fails + 1)); }

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
expect "--pipeline-depth" -- --model "$tmp/m" --tokens 1 --pipeline-depth 0
expect "--pipeline-depth" -- --model "$tmp/m" --tokens 1 --pipeline-depth 17
fresh; sed -i 's/^{/{"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": 1},/' "$tmp/m/config.json"
expect "config.json" "quantization_config.desc_act' must be true or false" -- --model "$tmp/m" --tokens 1
fresh; sed -i 's/^{/{"quantization_config": {"quant_method": "bitsandbytes", "bits": 4},/' "$tmp/m/config.json"
expect "config.json" "quantization_config.quant_method" "\"bitsandbytes\" (bits 4)" -- --model "$tmp/m" --tokens 1
expect "--quantize" "not fp8, int8 or int4" -- --model "$tmp/m" --tokens 1 --quantize q4_k
expect "--kv-dtype" "not auto or fp8" -- --model "$tmp/m" --tokens 1 --kv-dtype int8
# quantized checkpoints: a scale tensor of the wrong shape, a split that cuts a group, and a second
# quantization, each refused naming the tensor, the split or the checkpoint's own
fx="$(dirname "$0")/../golden/fixtures"
rm -rf "$tmp/q" && cp -r "$fx/quant_awq" "$tmp/q" && sed -i 's/"group_size": 64/"group_size": 32/' "$tmp/q/config.json"
expect "model.layers.0.self_attn.q_proj.qzeros' has shape [2, 16], expected [4, 16]" -- --model "$tmp/q" --tokens 1
# (mpirun adds its own lines: the rank's one line is looked for among them)
if timeout 60 mpirun --oversubscribe -np 2 --bind-to none "$DINFER_RUN" --model "$fx/quant_fp8_block" --tokens 1 --tp 2 \
     >"$tmp/out" 2>"$tmp/err" ||
   ! grep -qF "rank 1 (host $(hostname)): model.layers.0.self_attn.o_proj: the tensor-parallel split at column 64 cuts a scale's group of 128" "$tmp/err"; then
  echo "FAIL: --tp 2 of quant_fp8_block (blocks of 128 columns, a 128-wide o_proj):"; cat "$tmp/err"
  fails=$((fails + 1))
else
  echo "ok: $(grep -F "cuts a scale" "$tmp/err")"
fi
expect "--quantize int8: the checkpoint is already quantized (AWQ int4, groups of 64)" -- --model "$fx/quant_awq" \
  --tokens 1 --quantize int8
fresh
PROG=env expect "DINFER_CUDA_GRAPHS is 'yes'" "0 (every step op by op) or 1" -- DINFER_CUDA_GRAPHS=yes "$DINFER_RUN" \
  --model "$tmp/m" --tokens 1
if [ -n "${HAS_GPU:-}" ] && ! "$HAS_GPU" >/dev/null 2>&1; then
  expect "--device cuda, but no CUDA device is visible" -- --model "$tmp/m" --tokens 1 --device cuda
fi

[ $fails -eq 0 ] || { echo "$fails case(s) failed"; exit 1; }
echo "all error cases gave one clear line"
