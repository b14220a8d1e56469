#!/usr/bin/env bash
# dinfer-plan: the table of a possible split, and the reason for an impossible one (exit 1).
set -uo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fx=$(dirname "$0")/../golden/fixtures/llama_5layer_sharded
fails=0
out=$("$DINFER_PLAN" --model "$fx" --tp 2 --pp 4) || { echo "2x4 refused"; exit 1; }
echo "$out"
rows=$(echo "$out" | grep -cE '^[0-9]+ +[0-9]+ +[0-9]+ ')
[ "$rows" -eq 8 ] || { echo "expected 8 rank rows, got $rows"; fails=$((fails + 1)); }
# 5 layers over 4 stages: 2,1,1,1; rank 7 is stage 3, tp 1, layer 4, heads 4-7
grep -qE '^7 +3 +1 +4 +4-7 ' <<<"$out" || { echo "rank 7's row is wrong"; fails=$((fails + 1)); }
grep -qE '^0 +0 +0 +0-1 ' <<<"$out" || { echo "rank 0's row is wrong"; fails=$((fails + 1)); }
out=$("$DINFER_PLAN" --model "$fx" --tp 8 --pp 1)
grep -q 'KV heads are replicated: each is held by 2 ranks' <<<"$out" || { echo "no replication note"; fails=$((fails + 1)); }
out=$("$DINFER_PLAN" --model "$fx" --tp 1 --pp 2 --layers-per-stage 4,1)
grep -qE '^1 +1 +0 +4 ' <<<"$out" || { echo "--layers-per-stage 4,1 ignored"; fails=$((fails + 1)); }

expect_fail() { # expect_fail NEEDLE ARGS...
  local needle=$1; shift
  if "$DINFER_PLAN" "$@" >"$tmp/out" 2>"$tmp/err"; then echo "accepted: $*"; fails=$((fails + 1)); return; fi
  grep -qF -- "$needle" "$tmp/err" && echo "ok: $(cat "$tmp/err")" || { echo "FAIL: $*: $(cat "$tmp/err")"; fails=$((fails + 1)); }
}
expect_fail "8 query heads cannot split over tp=3" --model "$fx" --tp 3
expect_fail "pp=6 stages but the model has only 5 layers" --model "$fx" --pp 6
expect_fail "sums to 4 layers, the model has 5" --model "$fx" --pp 2 --layers-per-stage 2,2
expect_fail "lists 3 stages, --pp is 2" --model "$fx" --pp 2 --layers-per-stage 2,2,1
expect_fail "config.json" --model "$tmp/none"
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "dinfer-plan: tables and refusals as expected"
