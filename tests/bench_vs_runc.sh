#!/usr/bin/env bash
# dinfer against llama2.c's run.c on stories260K, one thread each, side by side in one sitting (not
# in CI): run.c built with its README's flags (gcc -Ofast -march=native), dinfer-run --bench from
# build/ (./tests/run.sh --quick builds it), alternating, ROUNDS rounds; prints each round and the
# median decode tokens/s of both and their ratio.
#   ./tests/bench_vs_runc.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-7}
models=../shared/models peer=../shared/peers/llama2.c
[ -f "$models/stories260K.bin" ] && [ -f "$peer/run.c" ] || { echo "SKIP: ../shared/models or ../shared/peers is absent"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -Ofast -march=native -o "$tmp/run" "$peer/run.c" -lm
build/tests/llama2c_convert "$models/stories260K.bin" "$tmp/s260"
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
runc=() ours=()
for r in $(seq 1 "$rounds"); do
  # run.c: 512 steps (its whole context) from BOS, greedy; it reports tokens/s after the first step
  a=$("$tmp/run" "$models/stories260K.bin" -z "$models/tok512.bin" -t 0 -n 512 2>&1 >/dev/null |
      sed -n 's/achieved tok\/s: //p')
  # dinfer: one sequence, a 1-token prompt, 510 decode steps, the same 512 positions
  b=$(build/launch/dinfer-run --model "$tmp/s260" --device cpu --threads 1 --bench --batch 1 --prompt-len 1 \
      --gen-len 511 | sed -n 's/^decode: .*(\([0-9.]*\) tokens\/s)/\1/p')
  echo "round $r: run.c $a tok/s, dinfer $b tok/s"
  runc+=("$a") ours+=("$b")
done
med() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
ma=$(med "${runc[@]}") mb=$(med "${ours[@]}")
echo "median over $rounds rounds: run.c $ma tok/s, dinfer $mb tok/s, dinfer / run.c = $(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.2f", b / a}')"
