#!/usr/bin/env bash
# Writes the seed corpus of every fuzz target into DIR/config, DIR/safetensors, DIR/wire (the
# golden fixtures' config.json files, a tiny model's safetensors, a Health frame).
#   seed_corpus.sh DIR MKMODEL
set -euo pipefail
dir=$1 mkmodel=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$dir/config" "$dir/safetensors" "$dir/wire"
for f in "$root"/tests/golden/fixtures/*/config.json; do cp "$f" "$dir/config/$(basename "$(dirname "$f")").json"; done
"$mkmodel" --out "$dir/m" --dim 8 --heads 2 --kv-heads 1 --layers 1 --vocab 16 --ffn-dim 8 --dtype bf16 >/dev/null
cp "$dir/m/model.safetensors" "$dir/safetensors/"
rm -rf "$dir/m"
# a piece-size byte, then a Health request with request_id 7 (length 4: 08 07 62 00)
printf '\x03\x00\x00\x00\x04\x08\x07\x62\x00' > "$dir/wire/health"
