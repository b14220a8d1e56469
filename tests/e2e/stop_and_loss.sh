#!/usr/bin/env bash
# How a serving job ends, on a model whose steps take seconds:
#  1. a rank killed after a long step (8 x 1,000-token prefill on tp=2): the streaming client hears
#     UNAVAILABLE and the log names the lost rank (the grace of 3 x the longest step once outlasted
#     mpirun's SIGKILL: a bare EOF, nothing named);
#  2. kill -TERM of a plain mpirun during a request: the client hears UNAVAILABLE naming mpirun
#     (Open MPI SIGKILLs the ranks a second after its SIGTERM: too soon for a drain);
#  3. SIGTERM to dinfer-launch during a request: rank 0 drains at once (no new work, the running
#     request finishes) and dinfer-launch exits 0, within seconds.
set -uo pipefail
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; pkill -KILL -f "$tmp/" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
rc=0
fail() { echo "FAIL: $*"; rc=1; }
"$DINFER_MKMODEL" --out "$tmp/m" --dim 256 --layers 2 --heads 4 --kv-heads 4 --ffn-dim 704 --vocab 512 \
  --max-pos 4096 >/dev/null || exit 1

wait_ready() { # FILE LOG PID
  for _ in $(seq 1 300); do [ -s "$1" ] && return 0; kill -0 "$3" 2>/dev/null || break; sleep 0.1; done
  echo "the server did not start:"; cat "$2"; exit 1
}
# waits until the client output file shows streamed tokens
wait_tokens() { for _ in $(seq 1 200); do [ "$(wc -c < "$1")" -ge 40 ] && return 0; sleep 0.05; done; return 1; }

echo "== 1. a rank lost after a long step"
mpirun --oversubscribe --bind-to none -np 2 "$DINFER_SERVER" --model "$tmp/m" --tp 2 --port 0 \
  --max-batch-tokens 8192 --kv-cache-mib 64 --ready-file "$tmp/r1" >"$tmp/log1" 2>&1 &
mpid=$!; pids+=($mpid)
wait_ready "$tmp/r1" "$tmp/log1" $mpid
addr=$(awk '{print $1}' "$tmp/r1"); rank0=$(awk '{print $2}' "$tmp/r1")
"$DINFER_CLIENT" bench --server "$addr" --concurrency 8 --requests 8 --prompt-len 1000 --gen-len 1 --json >"$tmp/bench" ||
  fail "the long prefill failed"
"$DINFER_CLIENT" generate --server "$addr" --tokens 1,2 --max-tokens 4000 --ignore-eos >"$tmp/c1" 2>&1 &
cpid=$!
wait_tokens "$tmp/c1" || fail "no tokens streamed"
victim=$(pgrep -P "$mpid" -f "$DINFER_SERVER" | grep -vx "$rank0" | head -n 1)
t0=$(date +%s%N)
kill -KILL "$victim"
wait $cpid
wait $mpid
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
grep -q "UNAVAILABLE" "$tmp/c1" || fail "the client heard no UNAVAILABLE: $(tail -c 300 "$tmp/c1")"
grep -q "rank 1 (host .*, pid $victim, gone)" "$tmp/log1" || fail "the log does not name rank 1 (pid $victim)"
echo "client: $(grep -o 'UNAVAILABLE.*' "$tmp/c1" | head -n 1)"
echo "job gone ${ms} ms after rank 1 was killed"

echo "== 2. kill -TERM of a plain mpirun during a request"
mpirun --oversubscribe --bind-to none -np 1 "$DINFER_SERVER" --model "$tmp/m" --port 0 --kv-cache-mib 64 \
  --ready-file "$tmp/r2" >"$tmp/log2" 2>&1 &
mpid=$!; pids+=($mpid)
wait_ready "$tmp/r2" "$tmp/log2" $mpid
addr=$(awk '{print $1}' "$tmp/r2")
"$DINFER_CLIENT" generate --server "$addr" --tokens 1,2 --max-tokens 4000 --ignore-eos >"$tmp/c2" 2>&1 &
cpid=$!
wait_tokens "$tmp/c2" || fail "no tokens streamed"
kill -TERM $mpid
wait $cpid
wait $mpid
grep -q "UNAVAILABLE: mpirun (pid $mpid) is ending the job" "$tmp/c2" ||
  fail "the client was not told why: $(tail -c 300 "$tmp/c2")"
echo "client: $(grep -o 'UNAVAILABLE.*' "$tmp/c2" | head -n 1)"

echo "== 3. SIGTERM to dinfer-launch during a request: a drain, exit 0"
"$DINFER_LAUNCH" --model "$tmp/m" --hosts localhost --gpus-per-host 1 -- --port 0 --kv-cache-mib 64 \
  --drain-seconds 300 --ready-file "$tmp/r3" >"$tmp/log3" 2>&1 &
lpid=$!; pids+=($lpid)
wait_ready "$tmp/r3" "$tmp/log3" $lpid
addr=$(awk '{print $1}' "$tmp/r3")
"$DINFER_CLIENT" generate --server "$addr" --tokens 1,2 --max-tokens 1500 --ignore-eos >"$tmp/c3" 2>&1 &
cpid=$!
wait_tokens "$tmp/c3" || fail "no tokens streamed"
t0=$(date +%s%N)
kill -TERM $lpid
sleep 0.5
"$DINFER_CLIENT" health --server "$addr" >"$tmp/h3" 2>&1 && fail "a new connection was served during the drain"
wait $cpid; crc=$?
t1=$(date +%s%N)
wait $lpid; lrc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 )) after=$(( ($(date +%s%N) - t1) / 1000000 ))
grep -q 'finish: length, 2 prompt + 1500 generated tokens' "$tmp/c3" ||
  fail "the running request did not finish: $(tail -c 300 "$tmp/c3")"
[ $crc -eq 0 ] || fail "the client exited $crc"
[ $lrc -eq 0 ] || fail "dinfer-launch exited $lrc after the drain"
[ $after -lt 5000 ] || fail "dinfer-launch exited ${after} ms after the drained request finished"
grep -q "stopping: 1 running request" "$tmp/log3" || fail "rank 0 did not drain"
echo "dinfer-launch exited $lrc ${ms} ms after SIGTERM, ${after} ms after the running request finished"

[ $rc -eq 0 ] || for i in 1 2 3; do echo "--- log $i"; tail -n 15 "$tmp/log$i"; done
exit $rc
