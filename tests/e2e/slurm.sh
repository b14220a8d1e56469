#!/usr/bin/env bash
# A real Slurm: installs Debian's slurm-wlm and munge when missing, configures a one-node cluster
# on this host (its own ports, state and config in a temporary folder), submits
# launch/dinfer.sbatch with a golden fixture and 4 tasks, queries the coordinator with dinfer
# generate (the tokens equal the offline run), scancels the job during a request, and checks the
# request finished (drain) and every rank exited cleanly. Once with srun --mpi=pmix (the default)
# and once with mpirun inside the allocation. Needs root (CI is root); skips, saying so, otherwise.
set -uo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: a Slurm cluster needs root to start slurmctld, slurmd and munged"
  exit 77
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  echo "installing slurm-wlm and munge (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge; } >/dev/null 2>&1 ||
    { echo "SKIP: cannot install slurm-wlm and munge here (no package source?)"; exit 77; }
fi
root=$(cd "$(dirname "$0")/../.." && pwd)
fx=$root/tests/golden/fixtures/llama_gqa
tmp=$(mktemp -d)
host=$(hostname)
port=$(( 6900 + $$ % 500 * 2 ))
cleanup() {
  for pf in "$tmp/slurmctld.pid" "$tmp/slurmd.pid"; do [ -f "$pf" ] && kill "$(cat "$pf")" 2>/dev/null; done
  sleep 1
  for pf in "$tmp/slurmctld.pid" "$tmp/slurmd.pid"; do [ -f "$pf" ] && kill -KILL "$(cat "$pf")" 2>/dev/null; done
  pkill -f "$tmp/" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/state" "$tmp/spool"
cat > "$tmp/slurm.conf" <<CONF
ClusterName=dinfertest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
SlurmctldPort=$port
SlurmdPort=$((port + 1))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SlurmdParameters=config_overrides
KillWait=60
NodeName=$host CPUs=8 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF=$tmp/slurm.conf
# munge: the key the package made, the daemon if it is not running
[ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1k count=1 2>/dev/null; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null
if ! munge -n >/dev/null 2>&1; then munged --force 2>/dev/null || { echo "SKIP: munged does not start"; exit 77; }; fi
slurmctld -f "$SLURM_CONF" && slurmd -f "$SLURM_CONF" || { echo "SKIP: slurmctld or slurmd does not start"; cat "$tmp"/*.log; exit 77; }
for _ in $(seq 1 60); do grep -q idle <<<"$(sinfo -h -o %T 2>/dev/null)" && break; sleep 0.5; done
grep -q idle <<<"$(sinfo -h -o %T)" || { echo "FAIL: the node never became idle"; sinfo; tail "$tmp"/*.log; exit 1; }
echo "slurm: $(sinfo -h -o '%P %a %D %T %N')"

want=$("$DINFER_RUN" --model "$fx" --tokens 5,6,7,8 --max-tokens 12 --ignore-eos --json 2>/dev/null | sed 's/.*"tokens": \[\([^]]*\)\].*/\1/')
rc=0
run_job() { # run_job LAUNCHER SERVER_PORT DRAIN_SECONDS
  local launcher=$1 sport=$2 drain=$3 jid addr got
  rm -f "$tmp/addr"
  jid=$(cd "$tmp" && DINFER_LAUNCHER=$launcher DINFER_MODEL=$fx DINFER_PORT=$sport DINFER_BIN=$(dirname "$DINFER_SERVER") \
        DINFER_ADDR_FILE=$tmp/addr DINFER_ARGS="--drain-seconds $drain" \
        sbatch --parsable --nodes=1 --ntasks-per-node=4 --output="$tmp/job-%j.log" --export=ALL "$root/launch/dinfer.sbatch")
  [ -n "$jid" ] || { echo "FAIL: sbatch refused the job"; return 1; }
  for _ in $(seq 1 120); do [ -s "$tmp/addr" ] && break; sleep 0.5; done
  [ -s "$tmp/addr" ] || { echo "FAIL ($launcher): no address after 60 s"; cat "$tmp/job-$jid.log"; scancel "$jid"; return 1; }
  addr=$(cat "$tmp/addr")
  got=$("$DINFER_CLIENT" generate --server "$addr" --tokens 5,6,7,8 --max-tokens 12 --ignore-eos --json | sed 's/.*"tokens": \[\([^]]*\)\].*/\1/')
  [ "$got" = "$want" ] || { echo "FAIL ($launcher): tokens $got, offline $want"; scancel "$jid"; return 1; }
  echo "job $jid ($launcher) on $addr: the offline tokens"
  # scancel during a request: the request still finishes, every rank stops
  "$DINFER_CLIENT" generate --server "$addr" --tokens 1,2 --max-tokens 40 --ignore-eos --json >"$tmp/inflight" 2>&1 &
  local cpid=$! t0
  sleep 0.3
  t0=$(date +%s)
  scancel "$jid"
  wait $cpid || { echo "FAIL ($launcher): the request running at scancel failed: $(cat "$tmp/inflight")"; sleep 2; cat "$tmp/job-$jid.log"; return 1; }
  grep -q '"completion_tokens": 40' "$tmp/inflight" || { echo "FAIL ($launcher): $(cat "$tmp/inflight")"; return 1; }
  for _ in $(seq 1 180); do grep -q . <<<"$(squeue -h -j "$jid" 2>/dev/null)" || break; sleep 0.5; done
  if grep -q . <<<"$(squeue -h -j "$jid" 2>/dev/null)"; then echo "FAIL ($launcher): the job is still there"; return 1; fi
  echo "job $jid ended $(( $(date +%s) - t0 )) s after scancel; the running request finished"
  local log=$tmp/job-$jid.log
  # under srun the ranks' output reaches the job log to the end; mpirun stops forwarding it once
  # it is signalled, so there the drained request and the empty process table are the evidence
  if [ "$launcher" = srun ]; then
    grep -q "rank 0: stopping" "$log" && grep -q "rank 0: stopped" "$log" ||
      { echo "FAIL ($launcher): rank 0 did not drain and stop:"; cat "$log"; return 1; }
  fi
  if pgrep -f "dinfer-server.*--port $sport" >/dev/null; then echo "FAIL ($launcher): ranks left running"; return 1; fi
  grep -E "rank 0: (stopping|stopped)|the job ended" "$log"
}
run_job srun $((port + 2)) 20 || rc=1
run_job mpirun $((port + 3)) 15 || rc=1
[ $rc -eq 0 ] && echo "slurm: both launches served, drained on scancel and stopped every rank"
exit $rc
