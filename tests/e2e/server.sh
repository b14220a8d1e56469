#!/usr/bin/env bash
# Starts dinfer-server under mpirun on a golden fixture, runs server_test against it (with an auth
# token when AUTH=1), then stops it with SIGTERM on rank 0 during a running request: the request
# still completes (drain), and every rank exits 0.
#   server.sh TP PP FIXTURE_DIR
set -uo pipefail
tp=$1 pp=$2 fixture=$3
tmp=$(mktemp -d)
log="$tmp/server.log"
cleanup() { [ -n "${mpid:-}" ] && kill -KILL "$mpid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
args=()
# shellcheck disable=SC2206
[ -n "${SERVER_ARGS:-}" ] && args+=(${SERVER_ARGS})
if [ "${AUTH:-0}" = 1 ]; then
  echo "s3cret-$$" > "$tmp/token"
  args+=(--auth-token-file "$tmp/token")
fi
mpirun --oversubscribe --bind-to none -np $((tp * pp)) "$DINFER_SERVER" --model "$fixture" --tp "$tp" --pp "$pp" \
  --port 0 --kv-blocks 20 --block-size 8 --max-batch-tokens 48 --drain-seconds 20 "${args[@]}" >"$log" 2>&1 &
mpid=$!
for _ in $(seq 1 300); do
  grep -q "ready on" "$log" && break
  kill -0 "$mpid" 2>/dev/null || { echo "the server exited:"; cat "$log"; exit 1; }
  sleep 0.1
done
addr=$(sed -n 's/.*ready on \([^ ]*\) (pid \([0-9]*\)).*/\1/p' "$log")
rank0=$(sed -n 's/.*ready on \([^ ]*\) (pid \([0-9]*\)).*/\2/p' "$log")
[ -n "$addr" ] || { echo "the server never became ready:"; cat "$log"; exit 1; }
echo "server on $addr (rank 0 pid $rank0), tp=$tp pp=$pp"

tok=()
[ "${AUTH:-0}" = 1 ] && tok=("$(cat "$tmp/token")")
"$SERVER_TEST" "$addr" "$fixture" "${tok[@]}"
rc=$?

# shutdown: a long request is running when SIGTERM reaches rank 0; it still finishes
tf=()
[ "${AUTH:-0}" = 1 ] && tf=(--auth-token-file "$tmp/token")
"$DINFER_CLIENT" generate --server "$addr" "${tf[@]}" --tokens 3,4 --max-tokens 60 --ignore-eos --json >"$tmp/last" 2>&1 &
cpid=$!
# SIGTERM once the request is running (a loaded machine may take longer than any fixed sleep)
for _ in $(seq 1 100); do
  "$DINFER_CLIENT" stats --server "$addr" "${tf[@]}" 2>/dev/null | grep -q "running: [1-9]" && break
  sleep 0.05
done
kill -TERM "$rank0"
wait "$cpid"
crc=$?
wait "$mpid"
src=$?
mpid=
grep -q '"finish_reason": "length", "prompt_tokens": 2, "completion_tokens": 60' "$tmp/last" ||
  { echo "the request running at shutdown did not finish:"; cat "$tmp/last"; rc=1; }
[ $crc -eq 0 ] || rc=1
[ $src -eq 0 ] || { echo "mpirun exited $src after SIGTERM"; rc=1; }
grep -q "rank 0: stopped" "$log" || { echo "no clean stop in the log"; rc=1; }
if [ "$pp" -gt 1 ]; then # the stages worked on several steps at once
  overlapped=$(sed -n 's/.* steps, \([0-9]*\) of them started while another was in flight.*/\1/p' "$log")
  echo "steps started with another in flight: ${overlapped:-none}"
  [ "${overlapped:-0}" -gt 0 ] || { echo "pp=$pp but no step started while another was in flight"; rc=1; }
fi
[ $rc -eq 0 ] || { echo "--- server log"; cat "$log"; }
exit $rc
