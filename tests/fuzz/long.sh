#!/usr/bin/env bash
# The long fuzz run (not in CI): every target for RUNS executions (default 10 million) from the
# seed corpus, with AddressSanitizer and UBSan; prints each target's executions, time and result.
# SECONDS_EACH caps each target's time (default: none); TARGETS picks some (default: all).
#   [SECONDS_EACH=600] [TARGETS="openai jinja"] ./tests/fuzz/long.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-10000000}
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
CC=clang cmake -S . -B build-fuzz "${gen[@]}" -DDINFER_FUZZ=ON -DDINFER_CUDA=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" >/dev/null
[ -f build/CMakeCache.txt ] || cmake -S . -B build "${gen[@]}" >/dev/null
cmake --build build --target dinfer-mkmodel >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
./tests/fuzz/seed_corpus.sh "$work/corpus" build/launch/dinfer-mkmodel
rc=0
cap=()
[ -n "${SECONDS_EACH:-}" ] && cap=(-max_total_time="$SECONDS_EACH")
for t in ${TARGETS:-config safetensors wire tokenizer_load tokenizer_encode openai jinja}; do
  start=$(date +%s)
  art=build-fuzz/artifacts/$t # crashes, and inputs slower than 10 s (slow-unit-*), kept here
  mkdir -p "$art"
  if ./build-fuzz/tests/fuzz/fuzz_$t -runs="$runs" "${cap[@]}" -artifact_prefix="$art/" -print_final_stats=1 "$work/corpus/$t" >"$work/$t.log" 2>&1; then
    res="0 crashes"
  else
    res="FAILED"; rc=1; tail -n 40 "$work/$t.log"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
  slow=$(sed -n 's/.*Test unit written to \(.*slow-unit-.*\)/\1/p' "$work/$t.log" | tr '\n' ' ')
  [ -n "$slow" ] && res="$res; inputs slower than 10 s: $slow"
  echo "fuzz_$t: ${execs:-?} executions in $(( $(date +%s) - start )) s, $res ($(grep -E '^Done' "$work/$t.log" || true))"
done
exit $rc
