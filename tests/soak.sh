#!/usr/bin/env bash
# A soak of dinfer-server (not run by tests/run.sh; loopback only, bounded): STREAMS concurrent
# streams (default 256, over 16 connections) for SECONDS (default 600) against a 2-rank server
# (tp=2) with a KV cache small enough to preempt. Every 30 s the RSS and open descriptors of both
# ranks are sampled; at the end every stream must have matched its solo run, the KV cache must be
# empty, and the series is printed as a Markdown table (docs/SOAK.md holds the last one).
#   ./tests/soak.sh [SECONDS] [STREAMS]          (after ./tests/run.sh --quick has built build/)
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600} streams=${2:-256}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
bin=build/launch
[ -x build/tests/soak_client ] || { echo "build first: ./tests/run.sh --quick"; exit 1; }
tmp=$(mktemp -d)
trap '[ -n "${mpid:-}" ] && kill -KILL $mpid 2>/dev/null; rm -rf "$tmp"' EXIT
fx=tests/golden/fixtures/llama_gqa
mpirun --oversubscribe --bind-to none -np 2 "$bin/dinfer-server" --model "$fx" --tp 2 --port 0 --kv-blocks 400 \
  --block-size 8 --max-batch-tokens 256 --ready-file "$tmp/ready" >"$tmp/log" 2>&1 &
mpid=$!
for _ in $(seq 1 300); do [ -s "$tmp/ready" ] && break; sleep 0.1; done
[ -s "$tmp/ready" ] || { echo "the server did not start"; cat "$tmp/log"; exit 1; }
addr=$(awk '{print $1}' "$tmp/ready") rank0=$(awk '{print $2}' "$tmp/ready")
rank1=$(pgrep -P "$mpid" -f dinfer-server | grep -vx "$rank0" | head -n 1)
sample() { # seconds -> one table row
  local r0 r1 f0 f1
  r0=$(awk '/VmRSS/{print $2}' /proc/"$rank0"/status) r1=$(awk '/VmRSS/{print $2}' /proc/"$rank1"/status)
  f0=$(ls /proc/"$rank0"/fd | wc -l) f1=$(ls /proc/"$rank1"/fd | wc -l)
  echo "| $1 | $((r0 / 1024)) | $f0 | $((r1 / 1024)) | $f1 |"
}
echo "soak: $streams streams over 16 connections for $secs s against $addr (tp=2, 400 KV blocks of 8 tokens)"
build/tests/soak_client "$addr" "$streams" 16 "$secs" >"$tmp/client" 2>&1 &
cpid=$!
{ echo "| seconds | rank 0 RSS MiB | rank 0 fds | rank 1 RSS MiB | rank 1 fds |"; echo "|---|---|---|---|---|"; } >"$tmp/series"
t=0
while kill -0 $cpid 2>/dev/null; do
  sample "$t" >>"$tmp/series"
  for _ in $(seq 1 30); do kill -0 $cpid 2>/dev/null || break; sleep 1; done
  t=$((t + 30))
done
wait $cpid; crc=$?
sample "end" >>"$tmp/series"
"$bin/dinfer" stats --server "$addr" >"$tmp/stats"
cat "$tmp/client"
cat "$tmp/series"
grep -E "KV blocks|preemptions" "$tmp/stats"
rc=0
[ $crc -eq 0 ] || { echo "FAIL: streams differ from their solo runs"; rc=1; }
grep -q "KV blocks: 0 used" "$tmp/stats" || { echo "FAIL: the KV cache is not empty at the end"; rc=1; }
kill -TERM "$rank0"; wait $mpid; mpid=
exit $rc
