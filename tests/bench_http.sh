#!/usr/bin/env bash
# What HTTP costs against the socket protocol (issue 13's speed figure; a benchmark, not a test):
# one dinfer-server with both, the same closed-loop load through each in turn, twice: `dinfer
# bench` on the socket, then the same number of streamed /v1/completions requests over HTTP,
# CONCURRENCY at a time (one curl process, --parallel: its multi interface; prompts of PROMPT_LEN random token ids,
# GEN_LEN tokens each with ignore_eos, as dinfer bench asks), generated tokens counted from each
# stream's usage chunk.
#   tests/bench_http.sh BUILD MODEL [CONCURRENCY] [REQUESTS] [PROMPT_LEN] [GEN_LEN]   (SERVER_ARGS: more flags)
set -euo pipefail
build=$1 model=$2 conc=${3:-64} reqs=${4:-256} plen=${5:-64} glen=${6:-64}
tmp=$(mktemp -d)
cleanup() { [ -n "${mpid:-}" ] && kill -KILL "$mpid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
# shellcheck disable=SC2086
mpirun --oversubscribe --bind-to none -np 1 "$build/launch/dinfer-server" --model "$model" --port 0 --http-port 0 \
  --ready-file "$tmp/ready" ${SERVER_ARGS:-} >"$tmp/log" 2>&1 &
mpid=$!
for _ in $(seq 1 600); do [ -s "$tmp/ready" ] && break; sleep 0.1; done
read -r addr pid http <"$tmp/ready"
for i in $(seq 1 "$reqs"); do # the bodies, written beforehand
  ids=$(awk -v n="$plen" -v s="$i" 'BEGIN { srand(s); printf "1"; for (k = 1; k < n; k++) printf ",%d", 3 + int(rand() * 250) }')
  printf '{"prompt": [%s], "max_tokens": %d, "temperature": 0, "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}}' \
    "$ids" "$glen" >"$tmp/b$i"
done
socket() {
  "$build/launch/dinfer" bench --server "$addr" --concurrency "$conc" --requests "$reqs" --prompt-len "$plen" \
    --gen-len "$glen" --json | sed -n 's/.*"tokens_per_second": \([0-9.]*\).*/\1/p'
}
over_http() { # one curl process, CONCURRENCY transfers at a time (its multi interface)
  local t0 t1 n
  rm -f "$tmp"/o*
  t0=$(date +%s.%N)
  curl -s --no-progress-meter -N --parallel --parallel-immediate --parallel-max "$conc" -K "$tmp/curl.conf"
  t1=$(date +%s.%N)
  n=$(cat "$tmp"/o* | grep '"usage"' | sed 's/.*"completion_tokens":\([0-9]*\).*/\1/' | awk '{s += $1} END {print s}')
  [ "$n" -eq $((reqs * glen)) ] || echo "http: $n tokens, expected $((reqs * glen))" >&2
  awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", n / (b - a) }'
}
for i in $(seq 1 "$reqs"); do # one transfer each, separated by "next"
  [ "$i" = 1 ] || echo next
  printf 'url = "http://%s/v1/completions"\nheader = "Content-Type: application/json"\ndata-binary = "@%s/b%d"\noutput = "%s/o%d"\n' \
    "$http" "$tmp" "$i" "$tmp" "$i"
done >"$tmp/curl.conf"
socket >/dev/null # warm-up
echo "concurrency $conc, $reqs requests, prompt $plen, $glen new tokens: generated tokens/s"
for round in 1 2; do
  s=$(socket) h=$(over_http)
  awk -v r="$round" -v s="$s" -v h="$h" 'BEGIN { printf "round %d: socket %.1f, HTTP %.1f, HTTP / socket %.3f\n", r, s, h, h / s }'
done
kill -TERM "$pid"
wait "$mpid" || true
mpid=
