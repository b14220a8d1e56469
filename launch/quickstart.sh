#!/usr/bin/env bash
# The first command of the README: installs what is missing, builds dinfer, starts dinfer-server
# split tp=2 x pp=2 over four MPI ranks on stories260K (a small trained model, committed with its
# tokenizer) and streams two stories from text prompts; then writes a ~125M-parameter Llama-shaped
# model with seeded random weights, shows its split, and runs a short benchmark on it.
#   ./launch/quickstart.sh [MODEL_DIR]     (the 125M model; default ./quickstart-model, written once)
set -euo pipefail
cd "$(dirname "$0")/.."
./launch/install-deps.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
echo "== building (build/)"
cmake -S . -B build "${gen[@]}" >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
bin=./build/launch

# start_server MODEL: mpirun -np 4 dinfer-server split tp=2 x pp=2; sets mpid, addr, rank0, log
start_server() {
  log=$(mktemp)
  echo "== starting: mpirun -np 4 dinfer-server --model $1 --tp 2 --pp 2 --port 0"
  mpirun --oversubscribe --bind-to none -np 4 "$bin/dinfer-server" --model "$1" --tp 2 --pp 2 --port 0 \
    --kv-cache-mib 256 >"$log" 2>&1 &
  mpid=$!
  trap 'kill -KILL $mpid 2>/dev/null || true; rm -f "$log"' EXIT
  for _ in $(seq 1 600); do
    grep -q "ready on" "$log" && break
    kill -0 $mpid 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
  done
  cat "$log"
  addr=$(sed -n 's/.*ready on \([^ ]*\) (pid \([0-9]*\)).*/\1/p' "$log")
  rank0=$(sed -n 's/.*ready on \([^ ]*\) (pid \([0-9]*\)).*/\2/p' "$log")
}
stop_server() {
  echo "== stopping the server (SIGTERM to rank 0: it drains, then every rank exits)"
  kill -TERM "$rank0"
  wait $mpid
  tail -n 2 "$log"
  rm -f "$log"
}

# 1. a real model that speaks: llama2.c's stories260K (launch/stories260K, MIT), text in, text out
story=launch/stories260K
start_server "$story"
echo "== dinfer health --server $addr"
"$bin/dinfer" health --server "$addr"
echo '== dinfer generate --prompt "Once upon a time" (greedy; the text streams as it is made)'
"$bin/dinfer" generate --server "$addr" --prompt "Once upon a time" --max-tokens 120
echo '== dinfer generate --prompt "Tim and his dog" --temperature 0.8 --top-p 0.95 --seed 42 --stop "The end"'
"$bin/dinfer" generate --server "$addr" --prompt "Tim and his dog" --max-tokens 120 --temperature 0.8 --top-p 0.95 \
  --seed 42 --stop "The end"
stop_server

# 2. a larger split: the default ~125M-parameter Llama-shaped model (seeded random weights: its
# output is noise), its plan, ids in and out, and a short benchmark
model=${1:-quickstart-model}
if [ ! -f "$model/config.json" ]; then
  echo "== writing the default model to $model"
  ./build/launch/dinfer-mkmodel --out "$model" --preset llama-100m --seed 1
fi
echo "== the split: dinfer-plan --model $model --tp 2 --pp 2"
"$bin/dinfer-plan" --model "$model" --tp 2 --pp 2
start_server "$model"
echo "== dinfer generate --tokens (greedy, streamed as the tokens come)"
"$bin/dinfer" generate --server "$addr" --tokens 1,450,4996,17354 --max-tokens 32 --ignore-eos
echo "== dinfer bench --concurrency 8 --requests 16 --prompt-len 64 --gen-len 32"
"$bin/dinfer" bench --server "$addr" --concurrency 8 --requests 16 --prompt-len 64 --gen-len 32
echo "== dinfer stats"
"$bin/dinfer" stats --server "$addr"
stop_server
