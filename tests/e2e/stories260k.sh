#!/usr/bin/env bash
# stories260K (llama2.c's trained model, converted to the Hugging Face layout) must reproduce the
# 256 greedy ids that llama2.c's run.c prints, listed in ../shared/models/README.md.
set -euo pipefail
models=${DINFER_SHARED_MODELS:-$(dirname "$0")/../../../shared/models}
if [ ! -f "$models/stories260K.bin" ] || [ ! -f "$models/README.md" ]; then
  echo "SKIP: $models/stories260K.bin is absent (it is test data beside the project, not part of it)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$LLAMA2C_CONVERT" "$models/stories260K.bin" "$tmp/model" "$models/tok512.bin"
# the quickstart's committed copy is this conversion, byte for byte
root=$(cd "$(dirname "$0")/../.." && pwd)
for f in config.json model.safetensors tokenizer.json; do
  cmp -s "$tmp/model/$f" "$root/launch/stories260K/$f" || { echo "launch/stories260K/$f is not llama2c_convert's output"; exit 1; }
done
echo "stories260K: launch/stories260K is the converted checkpoint"
# the converted tokenizer.json encodes as llama2.c's own encoder does (run.c compiled in)
if [ -n "${RUNC_TOKENIZER_CHECK:-}" ]; then
  "$RUNC_TOKENIZER_CHECK" "$models/tok512.bin" 512 "$tmp/model/tokenizer.json" "$(dirname "$0")/../tokenizer/corpus.json"
else
  echo "SKIP (this check only): llama2.c's run.c is absent, the tokenizer is not compared with its encoder"
fi
# the reference ids: the first line of the first fenced block after "Reference outputs"
want=$(awk '/^## Reference outputs/{r=1} r && /^```/{getline; print; exit}' "$models/README.md")
[ -n "$want" ] || { echo "no reference ids found in $models/README.md"; exit 1; }
got=$("$DINFER_RUN" --model "$tmp/model" --tokens 1 --max-tokens 256 --temperature 0 --ignore-eos --json 2>/dev/null |
      sed -n 's/.*"tokens": \[\([^]]*\)\].*/\1/p' | tr -d ' ')
if [ "$got" != "$want" ]; then
  echo "stories260K greedy ids differ from llama2.c's:"
  echo " got:  $got"
  echo " want: $want"
  exit 1
fi
echo "stories260K: 256 greedy ids identical to llama2.c's"
# prompted run (R3): "Once upon a time" -> [1, 403, 407, 261, 378], 64 positions in all
got=$("$DINFER_RUN" --model "$tmp/model" --tokens 1,403,407,261,378 --max-tokens 59 --ignore-eos --json 2>/dev/null |
      sed -n 's/.*"tokens": \[\([^]]*\)\].*/\1/p' | tr -d ' ')
want59=$(echo "$want" | cut -d, -f5-63)
[ "$got" = "$want59" ] || { echo "prompted run differs: got $got want $want59"; exit 1; }
echo "stories260K: prompted greedy run identical"
# the same 256 ids from every tp x pp split (5 layers: uneven stages; 4 KV heads: replicated at tp=8)
for split in 2x1 1x2 2x2 4x1 1x4 2x4 8x1; do
  tp=${split%x*} pp=${split#*x}
  got=$(mpirun --oversubscribe --bind-to none -np $((tp * pp)) "$DINFER_RUN" --model "$tmp/model" --tp "$tp" --pp "$pp" \
        --tokens 1 --max-tokens 256 --ignore-eos --json 2>/dev/null | sed -n 's/.*"tokens": \[\([^]]*\)\].*/\1/p' | tr -d ' ')
  [ "$got" = "$want" ] || { echo "stories260K at tp=$tp x pp=$pp differs: $got"; exit 1; }
  echo "stories260K: tp=$tp x pp=$pp identical"
done

# text: the prompt encoded by the tokenizer.json, the story decoded by it, as llama2.c prints them
# (README.md's R3: "Once upon a time" and 60 greedy tokens; R2: the 256 greedy tokens from BOS)
block() { awk -v h="$1" 'index($0, h) == 1 {r = 1; next} r && /^```/ {if (inb) exit; inb = 1; next} inb' "$models/README.md"; }
json_escape() { sed 's/\\/\\\\/g; s/"/\\"/g' | awk '{printf "%s%s", (NR > 1 ? "\\n" : ""), $0}'; }
r3=$(block "R3," | json_escape)
# run.c's 64 steps from a 5-token prompt print 60 new tokens: the last is predicted at position 63
out=$("$DINFER_RUN" --model "$tmp/model" --prompt "Once upon a time" --max-tokens 60 --ignore-eos --json 2>/dev/null)
tokens=$(sed -n 's/.*"tokens": \[\([^]]*\)\].*/\1/p' <<<"$out" | tr -d ' ')
[ "$tokens" = "$(echo "$want" | cut -d, -f5-64)" ] || { echo "--prompt \"Once upon a time\" gave other ids: $tokens"; exit 1; }
grep -qF "\"text\": \"${r3#Once upon a time}\"" <<<"$out" || { echo "--prompt text differs from R3: $out"; exit 1; }
echo "stories260K: --prompt \"Once upon a time\" gives llama2.c's ids and text"
r2=$(block "R2," | json_escape)
out=$("$DINFER_RUN" --model "$tmp/model" --tokens 1 --max-tokens 256 --ignore-eos --json 2>/dev/null)
grep -qF "\"text\": \"$r2\"" <<<"$out" || { echo "the 256-token story's text differs from R2: $out"; exit 1; }
echo "stories260K: the 256-token story decodes to llama2.c's text"
