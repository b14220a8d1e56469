#!/usr/bin/env bash
# A rank stuck inside a step (here: stopped with SIGSTOP, as a hung collective would leave it):
# past --comm-timeout rank 0 tells the client UNAVAILABLE, names the rank, and the whole job ends.
# Twice: a 2x2 job serving one request, and a 1x3 pipeline with three steps in flight under load.
set -uo pipefail
tmp=$(mktemp -d)
trap '[ -n "${victim:-}" ] && kill -CONT "$victim" 2>/dev/null; [ -n "${mpid:-}" ] && kill -KILL $mpid 2>/dev/null; pkill -KILL -f "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
fx=$(cd "$(dirname "$0")/../golden/fixtures" && pwd)/llama_gqa
limit=${DINFER_FAIL_SECONDS:-10}
rc=0

# stuck_case TP PP LOAD [server flags...]: LOAD concurrent requests run while the rank stops
stuck_case() {
  local tp=$1 pp=$2 load=$3
  shift 3
  echo "== tp=$tp pp=$pp, $load concurrent request(s) running, $*"
  rm -f "$tmp/ready" "$tmp/log" "$tmp/client" "$tmp/bench"
  mpirun --oversubscribe --bind-to none -np $((tp * pp)) "$DINFER_SERVER" --model "$fx" --tp "$tp" --pp "$pp" \
    --port 0 --comm-timeout 3 --ready-file "$tmp/ready" "$@" >"$tmp/log" 2>&1 &
  mpid=$!
  for _ in $(seq 1 300); do [ -s "$tmp/ready" ] && break; sleep 0.1; done
  [ -s "$tmp/ready" ] || { echo "the server did not start"; cat "$tmp/log"; rc=1; return; }
  local addr rank0
  addr=$(awk '{print $1}' "$tmp/ready")
  rank0=$(awk '{print $2}' "$tmp/ready")
  local bpid=
  if [ "$load" -gt 1 ]; then # the pipeline full of steps when the rank stops
    "$DINFER_CLIENT" bench --server "$addr" --concurrency "$load" --requests 100000 --prompt-len 8 --gen-len 100 \
      >"$tmp/bench" 2>&1 &
    bpid=$!
    sleep 1
  fi
  # one of this job's ranks (a child of mpirun, not rank 0) stops; then a request needs it
  victim=$(pgrep -P "$mpid" -f "$DINFER_SERVER" | grep -vx "$rank0" | tail -n 1)
  [ -n "$victim" ] || { echo "no rank to stop"; rc=1; return; }
  kill -STOP "$victim"
  local t0 secs secs_client mrc
  t0=$(date +%s%N)
  "$DINFER_CLIENT" generate --server "$addr" --tokens 1,2 --max-tokens 120 --ignore-eos >"$tmp/client" 2>&1
  secs_client=$(( ($(date +%s%N) - t0) / 1000000 ))
  wait $mpid
  mrc=$?
  mpid=
  secs=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ -n "$bpid" ] && { kill "$bpid" 2>/dev/null; wait "$bpid" 2>/dev/null; }
  grep -q "UNAVAILABLE" "$tmp/client" || { echo "FAIL: the client heard no UNAVAILABLE:"; cat "$tmp/client"; rc=1; }
  grep -q "pid $victim, stopped" "$tmp/log" || { echo "FAIL: the stuck rank is not named"; rc=1; }
  [ $mrc -ne 0 ] || { echo "FAIL: the job exited 0"; rc=1; }
  [ "$secs" -lt $(( (3 + limit) * 1000 )) ] || { echo "FAIL: the job took ${secs} ms to end"; rc=1; }
  local flying
  flying=$(sed -n 's/.*engine steps in flight: \([0-9]*\)).*/\1/p' "$tmp/log" | head -n 1)
  if [ "$load" -gt 1 ] && [ "${flying:-0}" -lt "$pp" ]; then
    echo "FAIL: expected $pp steps in flight when the rank stopped, the log says ${flying:-nothing}"
    rc=1
  fi
  echo "client told after ${secs_client} ms: $(grep -o 'UNAVAILABLE.*' "$tmp/client")"
  echo "job gone ${secs} ms after the rank stopped (--comm-timeout 3), ${flying:-?} engine steps in flight"
  [ $rc -eq 0 ] || cat "$tmp/log"
  kill -CONT "$victim" 2>/dev/null
  victim=
}

stuck_case 2 2 1
stuck_case 1 3 12 --pipeline-depth 3
exit $rc
