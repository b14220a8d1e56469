#!/usr/bin/env bash
# A rank stuck inside a step (here: stopped with SIGSTOP, as a hung collective would leave it):
# past --comm-timeout rank 0 tells the client UNAVAILABLE, names the rank, and the whole job ends.
set -uo pipefail
tmp=$(mktemp -d)
trap '[ -n "${victim:-}" ] && kill -CONT "$victim" 2>/dev/null; [ -n "${mpid:-}" ] && kill -KILL $mpid 2>/dev/null; pkill -KILL -f "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
fx=$(cd "$(dirname "$0")/../golden/fixtures" && pwd)/llama_gqa
limit=${DINFER_FAIL_SECONDS:-10}
mpirun --oversubscribe --bind-to none -np 4 "$DINFER_SERVER" --model "$fx" --tp 2 --pp 2 --port 0 --comm-timeout 3 \
  --ready-file "$tmp/ready" >"$tmp/log" 2>&1 &
mpid=$!
for _ in $(seq 1 300); do [ -s "$tmp/ready" ] && break; sleep 0.1; done
[ -s "$tmp/ready" ] || { echo "the server did not start"; cat "$tmp/log"; exit 1; }
addr=$(awk '{print $1}' "$tmp/ready")
rank0=$(awk '{print $2}' "$tmp/ready")
# one of this job's ranks (a child of mpirun, not rank 0) stops; then a request needs it
victim=$(pgrep -P "$mpid" -f "$DINFER_SERVER" | grep -vx "$rank0" | tail -n 1)
[ -n "$victim" ] || { echo "no rank to stop"; exit 1; }
kill -STOP "$victim"
t0=$(date +%s%N)
"$DINFER_CLIENT" generate --server "$addr" --tokens 1,2 --max-tokens 120 --ignore-eos >"$tmp/client" 2>&1
secs_client=$(( ($(date +%s%N) - t0) / 1000000 ))
wait $mpid
mrc=$?
mpid=
secs=$(( ($(date +%s%N) - t0) / 1000000 ))
rc=0
grep -q "UNAVAILABLE" "$tmp/client" || { echo "FAIL: the client heard no UNAVAILABLE:"; cat "$tmp/client"; rc=1; }
grep -q "pid $victim, stopped" "$tmp/log" || { echo "FAIL: the stuck rank is not named"; rc=1; }
[ $mrc -ne 0 ] || { echo "FAIL: the job exited 0"; rc=1; }
[ "$secs" -lt $(( (3 + limit) * 1000 )) ] || { echo "FAIL: the job took ${secs} ms to end"; rc=1; }
echo "client told after ${secs_client} ms: $(grep -o 'UNAVAILABLE.*' "$tmp/client")"
echo "job gone ${secs} ms after the rank stopped (--comm-timeout 3)"
[ $rc -eq 0 ] || cat "$tmp/log"
exit $rc
