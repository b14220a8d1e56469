#!/usr/bin/env bash
# A soak of dinfer-server (not run by tests/run.sh; loopback only, bounded): STREAMS concurrent
# streams (default 256, over 16 connections; some cancelled, some with deadlines) for SECONDS
# (default 600) against a server split SPLIT (default "--tp 2"; e.g. SPLIT="--pp 2" for two steps
# in flight, SPLIT="--tp 2 --pp 2" on 4 ranks) with a KV cache small enough to preempt. Every 30 s
# the RSS and open descriptors of every rank are sampled; at the end every stream must have matched
# its solo run, the KV cache must be empty, and the series is printed as a Markdown table
# (docs/SOAK.md holds the last ones).
#   [SPLIT=...] ./tests/soak.sh [SECONDS] [STREAMS]     (after ./tests/run.sh --quick has built build/)
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600} streams=${2:-256} split=${SPLIT:---tp 2}
read -r -a split_args <<<"$split"
tp=1 pp=1
for ((i = 0; i + 1 < ${#split_args[@]}; i++)); do
  case ${split_args[i]} in --tp) tp=${split_args[i + 1]} ;; --pp) pp=${split_args[i + 1]} ;; esac
done
nranks=$((tp * pp))
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
bin=build/launch
[ -x build/tests/soak_client ] || { echo "build first: ./tests/run.sh --quick"; exit 1; }
tmp=$(mktemp -d)
trap '[ -n "${mpid:-}" ] && kill -KILL $mpid 2>/dev/null; rm -rf "$tmp"' EXIT
fx=tests/golden/fixtures/llama_gqa
mpirun --oversubscribe --bind-to none -np "$nranks" "$bin/dinfer-server" --model "$fx" "${split_args[@]}" --port 0 --kv-blocks 400 \
  --block-size 8 --max-batch-tokens 256 --ready-file "$tmp/ready" >"$tmp/log" 2>&1 &
mpid=$!
for _ in $(seq 1 300); do [ -s "$tmp/ready" ] && break; sleep 0.1; done
[ -s "$tmp/ready" ] || { echo "the server did not start"; cat "$tmp/log"; exit 1; }
addr=$(awk '{print $1}' "$tmp/ready") rank0=$(awk '{print $2}' "$tmp/ready")
pids=() # by MPI rank (Open MPI puts it in each process's environment)
for p in $(pgrep -P "$mpid" -f dinfer-server); do
  r=$(tr '\0' '\n' </proc/"$p"/environ | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
  pids[${r:-0}]=$p
done
[ "${pids[0]:-}" = "$rank0" ] || { echo "rank 0's process is not $rank0"; exit 1; }
sample() { # seconds -> one table row: each rank's RSS MiB and descriptors
  local row="| $1 |" p
  for p in "${pids[@]}"; do
    row+=" $(($(awk '/VmRSS/{print $2}' /proc/"$p"/status) / 1024)) | $(ls /proc/"$p"/fd | wc -l) |"
  done
  echo "$row"
}
echo "soak: $streams streams over 16 connections for $secs s against $addr ($split, 400 KV blocks of 8 tokens)"
build/tests/soak_client "$addr" "$streams" 16 "$secs" >"$tmp/client" 2>&1 &
cpid=$!
{
  h="| seconds |" r="|---|"
  for ((i = 0; i < ${#pids[@]}; i++)); do h+=" rank $i RSS MiB | rank $i fds |" r+="---|---|"; done
  echo "$h"; echo "$r"
} >"$tmp/series"
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
kill -TERM "$rank0"; wait $mpid; mrc=$?; mpid=
[ $mrc -eq 0 ] || { echo "FAIL: the server exited $mrc on SIGTERM"; rc=1; }
exit $rc
