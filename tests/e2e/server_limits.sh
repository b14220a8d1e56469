#!/usr/bin/env bash
# A hostile but fair client against dinfer-server (tests/e2e/server_limits.c): a flood of Health
# frames never read (with an auth token required, so every reply is UNAUTHENTICATED), more
# connections than --max-connections, a silent connection, a frame never finished, request_id 0,
# and a server short of file descriptors (ulimit -n). Each bounded to a few seconds.
set -uo pipefail
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
fx=$(cd "$(dirname "$0")/../golden/fixtures" && pwd)/llama_gqa
rc=0

# start NAME [ulimit-n] -- server flags: leaves addr, rank0 pid and the log in $tmp/NAME.*
start() {
  local name=$1 lim=$2; shift 3
  ( [ "$lim" != - ] && ulimit -n "$lim"
    exec mpirun --oversubscribe --bind-to none -np 1 "$DINFER_SERVER" --model "${model:-$fx}" --port 0 \
      --ready-file "$tmp/$name.ready" "$@" ) >"$tmp/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do [ -s "$tmp/$name.ready" ] && break; sleep 0.1; done
  [ -s "$tmp/$name.ready" ] || { echo "server $name did not start:"; cat "$tmp/$name.log"; exit 1; }
}
addr_of() { awk '{print $1}' "$tmp/$1.ready"; }
pid_of() { awk '{print $2}' "$tmp/$1.ready"; }
run() { "$SERVER_LIMITS" "$@" || rc=1; }

echo "s3cret" > "$tmp/token"
start a - -- --auth-token-file "$tmp/token" --max-connections 8
DINFER_TOKEN=s3cret run flood "$(addr_of a)" "$(pid_of a)"
DINFER_TOKEN=s3cret run conns "$(addr_of a)" 8
DINFER_TOKEN=s3cret run rid0 "$(addr_of a)"
refusals=$(grep -c "refused a connection" "$tmp/a.log")
echo "log: $refusals lines for 41 refused connections"
[ "$refusals" -le 6 ] || { echo "FAIL: refusals are not rate-limited in the log"; rc=1; }

# (server b's model folder has a quote in its name: dinfer health --json must still be JSON)
model="$tmp/the \"quoted\" model"
cp -r "$fx" "$model"
start b - -- --idle-timeout 1 --frame-timeout 1
model=
"$DINFER_CLIENT" health --server "$(addr_of b)" --json >"$tmp/health.json"
grep -qF '"model": "'"$tmp"'/the \"quoted\" model"' "$tmp/health.json" ||
  { echo "FAIL: the model path is not escaped in JSON: $(cat "$tmp/health.json")"; rc=1; }
run idle "$(addr_of b)"
run frame "$(addr_of b)"
# sampling extremes (top-p keeping nothing once read before its buffer; 1e-40 gave NaN): served,
# and a tiny temperature is greedy
gen() { "$DINFER_CLIENT" generate --server "$(addr_of b)" --tokens 3,4,5 --max-tokens 6 --ignore-eos --json "$@"; }
greedy=$(gen | sed 's/.*"tokens": \[\([^]]*\)\].*/\1/')
tiny=$(gen --temperature 1e-40 | sed 's/.*"tokens": \[\([^]]*\)\].*/\1/')
hot=$(gen --temperature 1e6 --top-p 1e-7 --seed 3 | sed 's/.*"tokens": \[\([^]]*\)\].*/\1/')
echo "sampling: greedy [$greedy], temperature 1e-40 [$tiny], temperature 1e6 with top-p 1e-7 [$hot]"
[ -n "$greedy" ] && [ "$tiny" = "$greedy" ] || { echo "FAIL: temperature 1e-40 is not greedy"; rc=1; }
[ "$hot" = "$greedy" ] || { echo "FAIL: top-p 1e-7 did not keep the most likely token"; rc=1; }

# 64 descriptors: Open MPI and the server take about 30 of them
start c 64 --
run emfile "$(addr_of c)" "$(pid_of c)" 120
grep -q "out of file descriptors\|Too many open files" "$tmp/c.log" || { echo "FAIL: the descriptor limit was not logged"; rc=1; }

for n in a b c; do kill -TERM "$(pid_of $n)" 2>/dev/null; done
wait
[ $rc -eq 0 ] || for n in a b c; do echo "--- server $n"; tail -n 20 "$tmp/$n.log"; done
exit $rc
