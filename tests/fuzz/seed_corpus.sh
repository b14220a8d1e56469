#!/usr/bin/env bash
# Writes the seed corpus of every fuzz target into DIR/config, DIR/safetensors, DIR/wire (the
# golden fixtures' config.json files, a tiny model's safetensors, a Health frame).
#   seed_corpus.sh DIR MKMODEL
set -euo pipefail
dir=$1 mkmodel=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$dir/config" "$dir/safetensors" "$dir/wire" "$dir/tokenizer_load" "$dir/tokenizer_encode" "$dir/openai" \
  "$dir/jinja"
for f in "$root"/tests/golden/fixtures/*/config.json; do cp "$f" "$dir/config/$(basename "$(dirname "$f")").json"; done
"$mkmodel" --out "$dir/m" --dim 8 --heads 2 --kv-heads 1 --layers 1 --vocab 16 --ffn-dim 8 --dtype bf16 >/dev/null
cp "$dir/m/model.safetensors" "$dir/safetensors/"
rm -rf "$dir/m"
# small tokenizer.json files (the real ones are megabytes: slow seeds), and texts to encode
printf '%s' '{"normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}, "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}, "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [1]}}}, "added_tokens": [{"id": 1, "content": "<s>", "special": true}], "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true, "vocab": {"<unk>": 0, "<s>": 1, "<0x41>": 2, "\u2581": 3, "a": 4, "b": 5, "\u2581a": 6}, "merges": ["\u2581 a"]}}' > "$dir/tokenizer_load/llama2-like.json"
printf '%s' '{"pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": true}, "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first"}, "model": {"type": "BPE", "vocab": {"\u2581": 0, "a": 1, "\u2581a": 2}, "merges": [["\u2581", "a"]]}}' > "$dir/tokenizer_load/metaspace.json"
cp "$root/tests/tokenizer/corpus.json" "$dir/tokenizer_encode/corpus.json"
printf 'Hello world <|s|> [X] ab cab the\n\n  x' > "$dir/tokenizer_encode/mixed"
# a piece-size byte, then a Health request with request_id 7 (length 4: 08 07 62 00)
printf '\x03\x00\x00\x00\x04\x08\x07\x62\x00' > "$dir/wire/health"
# OpenAI request bodies
printf '%s' '{"model": "m", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 3, "stop": ["\n", "The"], "n": 2, "logprobs": 2, "stream": true, "stream_options": {"include_usage": true}, "user": "u"}' > "$dir/openai/completion"
printf '%s' '{"prompt": [1, 403, 407], "echo": false, "best_of": 1, "logit_bias": {}}' > "$dir/openai/ids"
printf '%s' '{"prompt": "x", "add_special_tokens": false}' > "$dir/openai/tokenize"
printf '%s' '{"tokens": [1, 2, 3]}' > "$dir/openai/detokenize"
printf '%s' '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "name": "n"}], "max_completion_tokens": 8, "logprobs": true, "top_logprobs": 2, "stream": true, "add_generation_prompt": true}' > "$dir/openai/chat"
printf '%s' '{"messages": [{"role": "user", "content": "x"}], "add_generation_prompt": false, "add_special_tokens": true}' > "$dir/openai/tokenize_chat"
# chat templates: every template of tests/chat (their language cases too, one file each)
cp "$root"/tests/chat/templates/*.jinja "$dir/jinja/"
i=0
while IFS= read -r -d '' t; do printf '%s' "$t" > "$dir/jinja/case$i"; i=$((i + 1)); done < \
  <(python3 -c 'import json,sys; [sys.stdout.write(t + "\0") for t in json.load(open(sys.argv[1]))["templates"]]' \
    "$root/tests/chat/jinja_cases.json" 2>/dev/null || true)
for n in llama3 qwen3; do
  f="$root/../shared/tokenizers/$n/tokenizer_config.json"
  [ -f "$f" ] && jq -j .chat_template "$f" > "$dir/jinja/$n.jinja" 2>/dev/null || true
done
