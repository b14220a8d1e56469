#!/usr/bin/env bash
# A GPU memory plan that cannot fit is refused before any weight is read, with the sizes named;
# one that fits prints each rank's weights, workspace and budget.
set -uo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$DINFER_MKMODEL" --out "$tmp/m" --dim 512 --layers 4 --heads 8 --vocab 32000 --dtype bf16 >/dev/null
"$DINFER_RUN" --model "$tmp/m" --tokens 1,2 --device cuda --gpu-memory-fraction 0.001 2>"$tmp/err" && { echo "accepted"; exit 1; }
grep -q "more than --gpu-memory-fraction 0.00 of the GPU" "$tmp/err" || { cat "$tmp/err"; exit 1; }
grep -q "GiB of weights" "$tmp/err" || { cat "$tmp/err"; exit 1; }
echo "refused: $(cat "$tmp/err")"
"$DINFER_RUN" --model "$tmp/m" --tokens 1,2 --device cuda --max-tokens 2 2>"$tmp/err" >/dev/null || { cat "$tmp/err"; exit 1; }
grep -q "rank 0: cuda:0 .*BF16: weights .* GiB, workspace .* GiB, budget .* GiB" "$tmp/err" || { cat "$tmp/err"; exit 1; }
echo "plan: $(grep 'rank 0: cuda' "$tmp/err")"
