#!/usr/bin/env bash
# dinfer-mkmodel --quantize writes each published format as its tools lay it out, and dinfer reads
# each back as the same model: a format and --quantize (or two formats) that quantize alike give
# identical tokens and logprobs; the others stay close to the float model; a split equals one rank.
# (The readers themselves are checked against transformers by the golden.quant_* fixtures.)
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
shape=(--dim 256 --heads 4 --kv-heads 2 --layers 2 --ffn-dim 512 --vocab 384 --seed 11)
"$DINFER_MKMODEL" --out "$tmp/f32" "${shape[@]}" >/dev/null
for q in fp8 fp8-block awq gptq4 gptq8 w4a16 w8a16 w8a8; do
  "$DINFER_MKMODEL" --out "$tmp/$q" "${shape[@]}" --quantize "$q" >/dev/null
done
grep -q '"quant_method":.*"compressed-tensors"' "$tmp/fp8/config.json"
grep -q '"weight_block_size"' "$tmp/fp8-block/config.json"
grep -q '"version":.*"gemm"' "$tmp/awq/config.json"
grep -q '"checkpoint_format":.*"gptq_v2"' "$tmp/gptq4/config.json"
grep -q '"checkpoint_format":.*"gptq"' "$tmp/gptq8/config.json"
grep -q '"format":.*"pack-quantized"' "$tmp/w4a16/config.json"
grep -q '"symmetric":.*false' "$tmp/w8a16/config.json"
grep -q '"format":.*"int-quantized"' "$tmp/w8a8/config.json"

prompts=(--tokens 5,6,7 --tokens 100,3 --tokens 9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9)
gen() { "$DINFER_RUN" "${prompts[@]}" --max-tokens 12 --temperature 0 --ignore-eos --json "$@" 2>/dev/null; }
same() { # identical tokens and logprobs
  if [ "$(gen --model "$1" "${@:3}")" != "$(gen --model "$2")" ]; then
    echo "FAIL: $1 ${*:3} and $2 differ:"; gen --model "$1" "${@:3}"; gen --model "$2"; exit 1
  fi
  echo "ok: $(basename "$1") ${*:3} = $(basename "$2")"
}
same "$tmp/f32" "$tmp/fp8" --quantize fp8   # FP8 a scale a row, fp32 scales: the same numbers
same "$tmp/awq" "$tmp/gptq4"                # int4, groups of 128, F16 scales: two packings of one model

# the rest against the float model: the first three tokens of every prompt at 8 bits, the first at
# int4 (a random model's next-token choices are close enough that int4 may change a later one)
tokens() { local n=$1; shift; gen "$@" | sed -E "s/.*\"tokens\": \[(([0-9]+, ){$((n - 1))}[0-9]+).*/\1/"; }
for q in fp8-block:3 gptq8:3 w8a16:3 w8a8:3 awq:1 w4a16:1; do
  n=${q#*:} q=${q%:*}
  want=$(tokens "$n" --model "$tmp/f32") got=$(tokens "$n" --model "$tmp/$q")
  [ "$got" = "$want" ] || { echo "FAIL: $q's first tokens $got, the float model's $want"; exit 1; }
  echo "ok: $q's first $n token(s) of each prompt are the float model's"
done

# tensor parallel: each rank reads its slice of the packed tensors (blocks, groups and words whole)
for q in fp8-block awq gptq8 w4a16 w8a16 w8a8; do
  a=$(gen --model "$tmp/$q" | sed 's/"logprobs.*//')
  b=$(mpirun --oversubscribe --bind-to none -np 2 "$DINFER_RUN" --model "$tmp/$q" --tp 2 "${prompts[@]}" \
        --max-tokens 12 --temperature 0 --ignore-eos --json 2>/dev/null | sed 's/"logprobs.*//')
  [ "$a" = "$b" ] || { echo "FAIL: $q under --tp 2: $b, one rank: $a"; exit 1; }
  echo "ok: $q under --tp 2 = one rank"
done

# act order (GPTQ's desc_act, GPTQModel's default; dinfer-mkmodel --quantize gptq4-act: each layer
# input's columns grouped by a shuffle, g_idx): one rank holds every product as codes, its groups put
# back in runs and its inputs gathered in that order (no more bytes than gptq4 but the orders of
# q/k/v's, o's and gate/up's inputs: the FFN is relabelled by down's order instead); --tp 2 cuts
# o_proj's groups, holds it as floats, says so, and computes the same tokens (down_proj stays codes:
# each rank gets whole groups of the relabelled FFN); its first token of each prompt is the float
# model's, as gptq4's is. (Against transformers: the golden.quant_gptq4_act fixture.)
"$DINFER_MKMODEL" --out "$tmp/gptq4-act" "${shape[@]}" --quantize gptq4-act >/dev/null
grep -q '"desc_act":.*true' "$tmp/gptq4-act/config.json"
"$DINFER_PLAN" --model "$tmp/gptq4-act" --tp 2 --pp 1 | grep -q "^act order: where the --tp 2 split gives a rank part of o_proj"
hb() { "$DINFER_RUN" --verbose --tokens 1 --max-tokens 1 --threads 1 --model "$1" 2>&1 >/dev/null |
         sed -n 's/.*holding \([0-9]*\) bytes of weights.*/\1/p'; }
a=$(hb "$tmp/gptq4") b=$(hb "$tmp/gptq4-act") # the orders: 2 layers x (256 + 256 + 256) int32s
[ -n "$a" ] && [ "$((b - a))" -eq $((2 * (256 + 256 + 256) * 4)) ] ||
  { echo "FAIL: gptq4 holds $a bytes, gptq4-act $b"; exit 1; }
a=$(gen --model "$tmp/gptq4-act" | sed 's/"logprobs.*//')
b=$(mpirun --oversubscribe --bind-to none -np 2 "$DINFER_RUN" --model "$tmp/gptq4-act" --tp 2 "${prompts[@]}" \
      --max-tokens 12 --temperature 0 --ignore-eos --json 2>"$tmp/err" | sed 's/"logprobs.*//')
[ "$a" = "$b" ] || { echo "FAIL: gptq4-act under --tp 2: $b, one rank: $a"; exit 1; }
grep -q "rank 0: 2 act-order (desc_act) products dequantized to floats: the --tp 2 split" "$tmp/err" ||
  { echo "FAIL: --tp 2 does not say which products are floats: $(cat "$tmp/err")"; exit 1; }
want=$(tokens 1 --model "$tmp/f32") got=$(tokens 1 --model "$tmp/gptq4-act")
[ "$got" = "$want" ] || { echo "FAIL: gptq4-act's first tokens $got, the float model's $want"; exit 1; }
# a g_idx that is not one: a column in no group, a group of too many columns, none at all
bad_gidx() { # $1: the edit of layer 0's q_proj g_idx (a Python statement on the list g)
  rm -rf "$tmp/act_bad"
  cp -r "$tmp/gptq4-act" "$tmp/act_bad"
  python3 - "$tmp/act_bad/model.safetensors" "$1" <<'PY'
import json, struct, sys
p, edit = sys.argv[1], sys.argv[2]
raw = open(p, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
name = "model.layers.0.self_attn.q_proj.g_idx"
b, e = h[name]["data_offsets"]
data = bytearray(raw[8 + n:])
g = list(struct.unpack("<%di" % ((e - b) // 4), data[b:e]))
if edit == "drop":
    h["model.layers.0.self_attn.q_proj.g_idk"] = h.pop(name)
else:
    exec(edit)
    data[b:e] = struct.pack("<%di" % len(g), *g)
head = json.dumps(h).encode()
head += b" " * (-len(head) % 8)
open(p, "wb").write(struct.pack("<Q", len(head)) + head + bytes(data))
PY
  if "$DINFER_RUN" --model "$tmp/act_bad" --tokens 1 --max-tokens 1 2>"$tmp/err" >/dev/null; then
    echo "FAIL: a g_idx edited by '$1' accepted"; exit 1
  fi
  grep -q "$2" "$tmp/err" || { echo "FAIL: '$1': $(cat "$tmp/err")"; exit 1; }
}
bad_gidx "g[5] = 2" "tensor 'model.layers.0.self_attn.q_proj.g_idx' puts input column 5 in group 2, outside \[0, 2)"
bad_gidx "g[g.index(1)] = 0" "tensor 'model.layers.0.self_attn.q_proj.g_idx' puts more than 128 columns (the group size) in group 0"
bad_gidx drop "desc_act is true but the checkpoint has no tensor 'model.layers.0.self_attn.q_proj.g_idx'"
sed -i 's/"desc_act":[[:space:]]*true/"desc_act": false/' "$tmp/gptq4-act/config.json"
if "$DINFER_RUN" --model "$tmp/gptq4-act" --tokens 1 --max-tokens 1 2>"$tmp/err" >/dev/null; then
  echo "FAIL: a scattered g_idx under desc_act false accepted"; exit 1
fi
grep -q "g_idx' puts input columns out of order (act order) but quantization_config's desc_act is false" "$tmp/err" ||
  { echo "FAIL: $(cat "$tmp/err")"; exit 1; }
echo "ok: gptq4-act held as codes on one rank, --tp 2 = one rank (o_proj as floats, said), the float model's" \
  "first tokens; a bad or missing g_idx, or one out of order under desc_act false, refused, naming the tensor"

# --kv-dtype fp8: a byte an element and a scale a token and head (head_dim 64: 68 bytes for BF16's
# 128), in the memory plan; the model still tells the float model's first tokens
kvmib() { "$DINFER_PLAN" --model "$tmp/f32" --tp 1 --pp 1 --dtype bf16 "$@" | awk '$1 == "0" {print $NF}'; }
kv16=$(kvmib) kv8=$(kvmib --kv-dtype fp8)
awk -v a="$kv16" -v b="$kv8" 'BEGIN { exit !(b > 0 && a / b > 1.85 && a / b < 1.9) }' ||
  { echo "FAIL: KV MiB per 1k tokens: BF16 $kv16, FP8 $kv8 (want 128 / 68 = 1.88x)"; exit 1; }
"$DINFER_PLAN" --model "$tmp/f32" --tp 1 --pp 1 --kv-dtype fp8 | grep -q "KV cache in FP8"
want=$(tokens 1 --model "$tmp/f32") got=$(tokens 1 --model "$tmp/f32" --kv-dtype fp8)
[ "$got" = "$want" ] || { echo "FAIL: --kv-dtype fp8's first tokens $got, the float cache's $want"; exit 1; }
# a checkpoint's static FP8 KV-cache scales (compressed-tensors' kv_cache_scheme, as llm-compressor
# writes them: k_scale and v_scale a layer, one value or one a KV head; dinfer-mkmodel --kv-scales):
# unused without --kv-dtype fp8 (the fp8 checkpoint's tokens and logprobs exactly); with it a byte an
# element and no scale a token, exactly 2x BF16's tokens in the plan; --kv-scales token goes back to
# a scale a token; the float cache's first tokens; --tp 2 (each rank its KV heads' scales) = one rank
for s in tensor attn_head; do
  "$DINFER_MKMODEL" --out "$tmp/kv_$s" "${shape[@]}" --quantize fp8 --kv-scales $s >/dev/null
  grep -q "\"strategy\":.*\"$s\"" "$tmp/kv_$s/config.json"
  same "$tmp/kv_$s" "$tmp/fp8"
  kvmib() { "$DINFER_PLAN" --model "$tmp/kv_$s" --tp 1 --pp 1 --dtype bf16 "$@" | awk '$1 == "0" {print $NF}'; }
  a=$(kvmib) b=$(kvmib --kv-dtype fp8) c=$(kvmib --kv-dtype fp8 --kv-scales token)
  awk -v a="$a" -v b="$b" -v c="$c" 'BEGIN { exit !(b > 0 && a / b > 1.99 && a / b < 2.01 && a / c < 1.9) }' ||
    { echo "FAIL: $s scales, KV MiB per 1k tokens: BF16 $a, FP8 $b (want 2x), a scale a token $c"; exit 1; }
  "$DINFER_PLAN" --model "$tmp/kv_$s" --kv-dtype fp8 | grep -q "KV cache in FP8 under the checkpoint's static scales"
  "$DINFER_RUN" --model "$tmp/kv_$s" --tokens 1 --max-tokens 1 --kv-dtype fp8 2>&1 >/dev/null |
    grep -q "KV cache: FP8 under the checkpoint's static scales" || { echo "FAIL: no start-up line for the scales"; exit 1; }
  want=$(tokens 3 --model "$tmp/kv_$s") got=$(tokens 3 --model "$tmp/kv_$s" --kv-dtype fp8)
  [ "$got" = "$want" ] || { echo "FAIL: $s static KV scales' first tokens $got, the float cache's $want"; exit 1; }
  a=$(gen --model "$tmp/kv_$s" --kv-dtype fp8 | sed 's/"logprobs.*//')
  b=$(mpirun --oversubscribe --bind-to none -np 2 "$DINFER_RUN" --model "$tmp/kv_$s" --tp 2 "${prompts[@]}" \
        --max-tokens 12 --temperature 0 --ignore-eos --json --kv-dtype fp8 2>/dev/null | sed 's/"logprobs.*//')
  [ "$a" = "$b" ] || { echo "FAIL: $s static KV scales under --tp 2: $b, one rank: $a"; exit 1; }
  echo "ok: $s static KV-cache scales: unused by default, 2x BF16's tokens with --kv-dtype fp8, the float cache's" \
    "first tokens, --tp 2 = one rank"
done
# a scale missing or not a scale: refused, naming the tensor
cp -r "$tmp/kv_tensor" "$tmp/kv_bad"
python3 - "$tmp/kv_bad/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
raw = open(p, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
b, _ = h["model.layers.1.self_attn.v_scale"]["data_offsets"]
data = bytearray(raw[8 + n:])
data[b:b + 4] = struct.pack("<f", 0.0)
head = json.dumps(h).encode()
head += b" " * (-len(head) % 8)
open(p, "wb").write(struct.pack("<Q", len(head)) + head + bytes(data))
PY
if "$DINFER_RUN" --model "$tmp/kv_bad" --tokens 1 --max-tokens 1 2>"$tmp/err" >/dev/null; then
  echo "FAIL: a KV-cache scale of 0 accepted"; exit 1
fi
grep -q "tensor 'model.layers.1.self_attn.v_scale' holds 0: a scale must be positive and finite" "$tmp/err" ||
  { echo "FAIL: $(cat "$tmp/err")"; exit 1; }
sed -i 's/"model.layers.0.self_attn.k_scale"/"model.layers.0.self_attn.k_scalX"/' "$tmp/kv_bad/model.safetensors"
if "$DINFER_RUN" --model "$tmp/kv_bad" --tokens 1 --max-tokens 1 2>"$tmp/err" >/dev/null; then
  echo "FAIL: a missing k_scale accepted"; exit 1
fi
grep -q "model.layers.0.self_attn.k_scale.*kv_cache_scheme names the KV-cache scales" "$tmp/err" ||
  { echo "FAIL: $(cat "$tmp/err")"; exit 1; }
if "$DINFER_MKMODEL" --out "$tmp/bad" "${shape[@]}" --quantize awq --kv-scales tensor 2>"$tmp/err"; then
  echo "FAIL: --kv-scales with awq accepted"; exit 1
fi
grep -q -- "--kv-scales needs --quantize fp8" "$tmp/err"
echo "ok: a KV-cache scale of 0 or a missing one is refused, naming the tensor"

# a trained model (stories260K, committed): the FP8 cache tells the same story for its first 40 tokens
m="$(dirname "$0")/../../launch/stories260K"
story() { "$DINFER_RUN" --model "$m" --tokens 1 --max-tokens 40 --temperature 0 --json "$@" 2>/dev/null | sed 's/"logprobs.*//'; }
[ "$(story --kv-dtype fp8)" = "$(story)" ] || { echo "FAIL: stories260K with an FP8 cache: $(story --kv-dtype fp8)"; exit 1; }
echo "ok: --kv-dtype fp8 holds 1.88x the tokens of BF16 (plan: $kv16 / $kv8 MiB per 1k), the same first token of each prompt"

# --quantize-lm-head: the LM head quantized as it loads (left float by --quantize); tied to the
# embedding, a quantized copy of it. The bytes held move by the head's (384 x 256: 393,216 bytes of
# F32, 98,304 of int8 codes and 1,536 of fp32 scales); the float head's first tokens; under --tp 2
# (the head's rows split by vocabulary) the same as on one rank
"$DINFER_MKMODEL" --out "$tmp/tied" "${shape[@]}" --tie >/dev/null # f32's head is its own
held() { "$DINFER_RUN" --verbose --tokens 1 --max-tokens 1 --threads 1 "$@" 2>&1 >/dev/null |
           sed -n 's/.*holding \([0-9]*\) bytes of weights.*/\1/p'; }
a=$(held --model "$tmp/f32") b=$(held --model "$tmp/f32" --quantize-lm-head int8)
if [ -z "$a" ] || [ $((a - b)) -ne $((393216 - 98304 - 1536)) ]; then
  echo "FAIL: untied head, bytes held $a float, $b with --quantize-lm-head int8"; exit 1
fi
"$DINFER_RUN" --model "$tmp/tied" --tokens 1 --max-tokens 1 --quantize-lm-head int8 2>&1 >/dev/null |
  grep -q "LM head: int8, a scale a row (--quantize-lm-head), kept as codes and scales, a copy of the tied" ||
  { echo "FAIL: rank 0 does not say how the LM head is held"; exit 1; }
a=$(held --model "$tmp/tied") b=$(held --model "$tmp/tied" --quantize-lm-head int8)
if [ -z "$a" ] || [ $((b - a)) -ne $((98304 + 1536)) ]; then
  echo "FAIL: tied head, bytes held $a float, $b with --quantize-lm-head int8"; exit 1
fi
# the float head's first 3 tokens with an int8 head (a random model's next-token logprobs lie close
# together, about -3.5 each: FP8's 3 mantissa bits swap a close pair in its first token)
for mdl in f32 tied awq fp8; do # awq and fp8: quantized checkpoints, their heads float
  want=$(tokens 3 --model "$tmp/$mdl") got=$(tokens 3 --model "$tmp/$mdl" --quantize-lm-head int8)
  [ "$got" = "$want" ] || { echo "FAIL: $mdl, int8 head: first tokens $got, the float head's $want"; exit 1; }
done
a=$(gen --model "$tmp/f32" --quantize int4 --quantize-lm-head int8 | sed 's/"logprobs.*//')
b=$(mpirun --oversubscribe --bind-to none -np 2 "$DINFER_RUN" --model "$tmp/f32" --tp 2 "${prompts[@]}" \
      --max-tokens 12 --temperature 0 --ignore-eos --json --quantize int4 --quantize-lm-head int8 2>/dev/null |
      sed 's/"logprobs.*//')
[ "$a" = "$b" ] || { echo "FAIL: --quantize-lm-head int8 under --tp 2: $b, one rank: $a"; exit 1; }
# stories260K (trained, tied): its 40-token story with an int8 head, its first 10 tokens with FP8 and int4
[ "$(story --quantize-lm-head int8)" = "$(story)" ] ||
  { echo "FAIL: stories260K with an int8 head: $(story --quantize-lm-head int8)"; exit 1; }
first10() { story "$@" | sed -E 's/.*"tokens": \[(([0-9]+, ){9}[0-9]+).*/\1/'; }
for h in fp8 int4; do
  [ "$(first10 --quantize-lm-head $h)" = "$(first10)" ] ||
    { echo "FAIL: stories260K with an $h head: $(first10 --quantize-lm-head $h), float: $(first10)"; exit 1; }
done
if "$DINFER_RUN" --model "$tmp/f32" --tokens 1 --quantize-lm-head int3 2>"$tmp/err" >/dev/null; then
  echo "FAIL: --quantize-lm-head int3 accepted"; exit 1
fi
grep -q -- '--quantize-lm-head: "int3" is not fp8, int8 or int4' "$tmp/err" || { echo "FAIL: $(cat "$tmp/err")"; exit 1; }
echo "ok: --quantize-lm-head holds the head as codes (a tied one as a copy), keeps the float head's first tokens" \
  "and stories260K's story (int8; FP8 and int4 its first 10 tokens), splits by vocabulary under --tp 2, names a" \
  "bad format"

# tests/tools/kl_divergence (docs/PERFORMANCE.md's 8B table runs it on the GPU): each format's
# divergence from the float model is finite and positive, int8's below FP8's below int4's
"$DINFER_KL" --model "$tmp/f32" --prompts 2 --len 24 int8 fp8 int4 kv-fp8 > "$tmp/kl"
cat "$tmp/kl"
kl() { awk -v f="$1" '$1 == f && $2 == "mean" { print $4 }' "$tmp/kl"; }
awk -v a="$(kl int8)" -v b="$(kl fp8)" -v c="$(kl int4)" -v d="$(kl kv-fp8)" \
  'BEGIN { exit !(a > 0 && d > 0 && a < b && b < c && c < 10) }' || { echo "FAIL: KL divergences out of order"; exit 1; }
if "$DINFER_KL" --model "$tmp/f32" int3 2>"$tmp/err"; then echo "FAIL: kl_divergence took int3"; exit 1; fi
grep -q "fp8, int8, int4 or kv-fp8" "$tmp/err"
echo "ok: KL(float || int8) < KL(float || fp8) < KL(float || int4)"

# a format that cannot hold the shape is refused naming it
if "$DINFER_MKMODEL" --out "$tmp/bad" --dim 64 --heads 4 --kv-heads 2 --layers 1 --ffn-dim 100 --quantize awq \
     2>"$tmp/err" >/dev/null; then
  echo "FAIL: an AWQ model of 100-wide FFN written"; exit 1
fi
grep -q "does not pack as AWQ" "$tmp/err" || { echo "FAIL: $(cat "$tmp/err")"; exit 1; }
if "$DINFER_MKMODEL" --out "$tmp/bad" --quantize int3 2>"$tmp/err"; then echo "FAIL: int3 accepted"; exit 1; fi
grep -q -- "--quantize: unknown format" "$tmp/err"
echo "ok: refusals name the format and shape"
