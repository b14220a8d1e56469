#!/usr/bin/env bash
# Pipeline parallelism on CPU ranks (issue 14's figures; a benchmark, not a test): dinfer-server as
# 1x1, 2x1 (tp=2) and 1x2 (pp=2, with --pipeline-depth 1 and with the default depth 2), one core
# and one thread per rank (mpirun --bind-to core, --threads 1), and two independent single-rank
# servers pinned to one core each sharing the load; `dinfer bench` (closed loop, prompts of
# PROMPT_LEN random ids, GEN_LEN new tokens each) at concurrency 1, 8 and 64. Prints generated
# tokens/s per row and the ratios the issue asks for.
#   [ROUNDS=N] tests/bench_pipeline.sh BUILD MODEL [GEN_LEN] [PROMPT_LEN] [CONCURRENCIES]
# (ROUNDS: every row N times, alternating, and the medians: this is how to read a noisy machine)
set -euo pipefail
build=$1 model=$2 glen=${3:-64} plen=${4:-32} concs=${5:-"1 8 64"}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

# start NAME LAUNCHER... : a server whose ready file is $tmp/NAME
start() {
  local name=$1
  shift
  "$@" --model "$model" --port 0 --ready-file "$tmp/$name" --threads 1 >"$tmp/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 600); do [ -s "$tmp/$name" ] && return; sleep 0.1; done
  echo "server $name did not start:" >&2
  cat "$tmp/$name.log" >&2
  exit 1
}
stop_all() {
  for n in "$tmp"/srv*; do
    case $n in *.log) continue ;; esac
    kill -TERM "$(awk '{print $2}' "$n")" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  rm -f "$tmp"/srv*
}
# tok/s of one bench against a server: bench NAME CONCURRENCY
bench() {
  local reqs=$(($2 * 2))
  [ "$reqs" -ge 4 ] || reqs=4
  "$build/launch/dinfer" bench --server "$(awk '{print $1}' "$tmp/$1")" --concurrency "$2" --requests "$reqs" \
    --prompt-len "$plen" --gen-len "$glen" --json | sed -n 's/.*"tokens_per_second": \([0-9.]*\).*/\1/p'
}
server=$build/launch/dinfer-server
declare -A got # got[LABEL,C]: the figures of every round, space separated
row() { # row LABEL: every concurrency against the server srv0
  local label=$1 line
  bench srv0 1 >/dev/null # warm-up
  line=$(printf '%-36s' "$label")
  for c in $concs; do
    v=$(bench srv0 "$c")
    got[$label,$c]+="$v "
    line+=$(printf ' %10s' "$v")
  done
  echo "$line"
}
median() { tr ' ' '\n' | { grep . || true; } | sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.1f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
labels=("1x1" "2x1 (tp=2)" "1x2, --pipeline-depth 1" "1x2, depth 2 (default)" "two 1x1 servers, half the load each")
for round in $(seq 1 "${ROUNDS:-1}"); do
  printf '%-36s' "round $round: tokens/s at concurrency"
  for c in $concs; do printf ' %10s' "$c"; done
  echo
  start srv0 mpirun --bind-to core -np 1 "$server"
  row "${labels[0]}"
  stop_all
  start srv0 mpirun --bind-to core -np 2 "$server" --tp 2
  row "${labels[1]}"
  stop_all
  start srv0 mpirun --bind-to core -np 2 "$server" --pp 2 --pipeline-depth 1
  row "${labels[2]}"
  stop_all
  start srv0 mpirun --bind-to core -np 2 "$server" --pp 2
  row "${labels[3]}"
  stop_all
  # two single-rank servers on a core each, each taking half of the load at once
  start srv0 taskset -c 0 "$server"
  start srv1 taskset -c 1 "$server"
  bench srv0 1 >/dev/null
  bench srv1 1 >/dev/null
  line=$(printf '%-36s' "${labels[4]}")
  for c in $concs; do
    if [ "$c" -lt 2 ]; then line+=$(printf ' %10s' -); continue; fi
    bench srv0 $((c / 2)) >"$tmp/a" &
    b0=$!
    bench srv1 $((c / 2)) >"$tmp/b"
    wait $b0
    v=$(awk -v a="$(cat "$tmp/a")" -v b="$(cat "$tmp/b")" 'BEGIN { printf "%.1f", a + b }')
    got[${labels[4]},$c]+="$v "
    line+=$(printf ' %10s' "$v")
  done
  echo "$line"
  stop_all
done
printf '%-36s' "median of ${ROUNDS:-1} round(s)"
for c in $concs; do printf ' %10s' "$c"; done
echo
declare -A med
for l in "${labels[@]}"; do
  line=$(printf '%-36s' "$l")
  for c in $concs; do
    med[$l,$c]=$(echo "${got[$l,$c]:-}" | median)
    line+=$(printf ' %10s' "${med[$l,$c]:--}")
  done
  echo "$line"
done
for c in $concs; do
  [ "$c" -ge 2 ] || continue
  awk -v c="$c" -v d2="${med[${labels[3]},$c]}" -v d1="${med[${labels[2]},$c]}" -v two="${med[${labels[4]},$c]}" \
    'BEGIN { printf "concurrency %d: 1x2 depth 2 / depth 1 = %.2f; / two 1x1 servers = %.2f\n", c, d2 / d1, d2 / two }'
done
