#!/usr/bin/env bash
# Real separate hosts: three network namespaces on a bridge, each with its own address and host
# name. dinfer-server runs with ranks on two of them (Open MPI over TCP, its remote launch agent
# entering the namespace), the client in the third: the tokens equal the offline run. Then one
# host's ranks are killed during a request: every rank exits within 10 s, the client hears
# UNAVAILABLE, and the lost rank is named. Needs root (CI is root); skips, saying so, otherwise.
set -uo pipefail
if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
  echo "SKIP: network namespaces need root, ip (iproute2) and unshare"
  exit 77
fi
fx=$(cd "$(dirname "$0")/../golden/fixtures" && pwd)/llama_gqa
limit=${DINFER_FAIL_SECONDS:-10}
id=$(( $$ % 200 + 20 ))            # a subnet and names of this run's own
net=10.$id.77
br=dbr$id
tmp=$(mktemp -d)
cleanup() {
  [ -n "${mpid:-}" ] && kill -KILL "$mpid" 2>/dev/null
  for i in 1 2 3; do
    for p in $(ip netns pids "dn${id}h$i" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "dn${id}h$i" 2>/dev/null
  done
  ip link del "$br" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
ip link add "$br" type bridge && ip link set "$br" up || { echo "SKIP: cannot create a bridge here"; exit 77; }
for i in 1 2 3; do
  ns=dn${id}h$i
  ip netns add "$ns" && ip link add "v${id}h$i" type veth peer name "v${id}b$i" || { echo "SKIP: cannot create namespaces"; exit 77; }
  ip link set "v${id}b$i" master "$br" up
  ip link set "v${id}h$i" netns "$ns"
  ip netns exec "$ns" ip addr add "$net.$i/24" dev "v${id}h$i"
  ip netns exec "$ns" ip link set "v${id}h$i" up
  ip netns exec "$ns" ip link set lo up
done
# Open MPI's remote launch agent: "agent HOST COMMAND...": run the command in that host's namespace,
# under that host's name
cat > "$tmp/agent" <<AGENT
#!/bin/bash
host=\$1; shift
while [ "\${host#-}" != "\$host" ]; do host=\$1; shift; done
n=\${host##*.}
exec ip netns exec "dn${id}h\$n" unshare --uts sh -c "hostname host\$n; \$*"
AGENT
chmod +x "$tmp/agent"
printf '%s slots=2\n%s slots=2\n' "$net.1" "$net.2" > "$tmp/hosts"
in_ns() { local n=$1; shift; ip netns exec "dn${id}h$n" unshare --uts sh -c "hostname host$n; exec \"\$@\"" sh "$@"; }

log=$tmp/server.log
in_ns 1 mpirun --hostfile "$tmp/hosts" -np 4 --map-by ppr:2:node --bind-to none --mca plm_rsh_agent "$tmp/agent" \
  --mca btl tcp,self --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24" \
  "$DINFER_SERVER" --model "$fx" --tp 2 --pp 2 --host 0.0.0.0 --port 7079 >"$log" 2>&1 &
mpid=$!
for _ in $(seq 1 300); do
  grep -q "ready on" "$log" && break
  kill -0 $mpid 2>/dev/null || { echo "the server exited:"; cat "$log"; exit 1; }
  sleep 0.1
done
grep -q "ready on" "$log" || { echo "the server never became ready:"; cat "$log"; exit 1; }
echo "server: $(grep 'ready on' "$log")"
# ranks 2 and 3 really are on the second host
for p in $(ip netns pids "dn${id}h2"); do [ "$(cat /proc/$p/comm 2>/dev/null)" = dinfer-server ] && echo "$p"; done > "$tmp/h2pids"
[ "$(wc -l < "$tmp/h2pids")" -eq 2 ] || { echo "expected 2 ranks on host 2, found $(wc -l < "$tmp/h2pids")"; cat "$log"; exit 1; }

want=$("$DINFER_RUN" --model "$fx" --tokens 5,6,7,8 --max-tokens 12 --ignore-eos --json 2>/dev/null | sed 's/.*"tokens": \[\([^]]*\)\].*/\1/')
got=$(in_ns 3 "$DINFER_CLIENT" generate --server "$net.1:7079" --tokens 5,6,7,8 --max-tokens 12 --ignore-eos --json | sed 's/.*"tokens": \[\([^]]*\)\].*/\1/')
[ "$got" = "$want" ] || { echo "tokens from host 3: $got, offline: $want"; exit 1; }
echo "client on host 3 got the offline tokens: $got"

# host 2's ranks die during a long request
in_ns 3 "$DINFER_CLIENT" generate --server "$net.1:7079" --tokens 1,2 --max-tokens 120 --ignore-eos >"$tmp/client" 2>&1 &
cpid=$!
# once tokens stream (the request is running), kill
for _ in $(seq 1 100); do [ "$(wc -w < "$tmp/client")" -ge 4 ] && break; sleep 0.05; done
grep -q finish "$tmp/client" && { echo "the request ended before the kill: the test cannot tell"; exit 1; }
t0=$(date +%s%N)
kill -KILL $(cat "$tmp/h2pids")
while pgrep -x dinfer-server >/dev/null && [ $(( ($(date +%s%N) - t0) / 1000000000 )) -lt $((limit * 3)) ]; do sleep 0.1; done
secs=$(( ($(date +%s%N) - t0) / 1000000 ))
wait $mpid; mrc=$?; mpid=
wait $cpid
echo "all ranks gone ${secs} ms after the kill; mpirun exited $mrc"
rc=0
[ "$secs" -lt $((limit * 1000)) ] || { echo "FAIL: took over ${limit} s"; rc=1; }
[ $mrc -ne 0 ] || { echo "FAIL: mpirun exited 0"; rc=1; }
grep -q "UNAVAILABLE" "$tmp/client" || { echo "FAIL: the client did not hear UNAVAILABLE:"; cat "$tmp/client"; rc=1; }
grep -qE "process rank [23] .* on node $net.2" "$log" || { echo "FAIL: the lost rank is not named:"; rc=1; }
echo "client: $(tail -n 1 "$tmp/client")"
grep -E "rank 0: |process rank" "$log" | tail -n 3
[ $rc -eq 0 ] || cat "$log"
exit $rc
