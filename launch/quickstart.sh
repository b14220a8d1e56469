#!/usr/bin/env bash
# The first command of the README: installs what is missing, builds dinfer, writes the default
# model (a ~125M-parameter Llama-shaped model with seeded random weights), starts dinfer-server
# split tp=2 x pp=2 over four MPI ranks, streams a few generations with the dinfer client, runs a
# short benchmark, and stops the server.
#   ./launch/quickstart.sh [MODEL_DIR]     (default: ./quickstart-model, written once)
set -euo pipefail
cd "$(dirname "$0")/.."
./launch/install-deps.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
echo "== building (build/)"
cmake -S . -B build "${gen[@]}" >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
model=${1:-quickstart-model}
if [ ! -f "$model/config.json" ]; then
  echo "== writing the default model to $model"
  ./build/launch/dinfer-mkmodel --out "$model" --preset llama-100m --seed 1
fi
bin=./build/launch
echo "== the split: dinfer-plan --model $model --tp 2 --pp 2"
"$bin/dinfer-plan" --model "$model" --tp 2 --pp 2

log=$(mktemp)
echo "== starting: mpirun -np 4 dinfer-server --model $model --tp 2 --pp 2 --port 0"
mpirun --oversubscribe --bind-to none -np 4 "$bin/dinfer-server" --model "$model" --tp 2 --pp 2 --port 0 \
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

echo "== dinfer health --server $addr"
"$bin/dinfer" health --server "$addr"
echo "== dinfer generate (greedy, streamed as the tokens come)"
"$bin/dinfer" generate --server "$addr" --tokens 1,450,4996,17354 --max-tokens 32 --ignore-eos
echo "== dinfer generate (sampled: temperature 0.8, top-p 0.95, seed 42, with logprobs)"
"$bin/dinfer" generate --server "$addr" --tokens 1,9038,2501,263 --max-tokens 16 --temperature 0.8 \
  --top-p 0.95 --seed 42 --logprobs 1 --ignore-eos
echo "== dinfer bench --concurrency 8 --requests 16 --prompt-len 64 --gen-len 32"
"$bin/dinfer" bench --server "$addr" --concurrency 8 --requests 16 --prompt-len 64 --gen-len 32
echo "== dinfer stats"
"$bin/dinfer" stats --server "$addr"
echo "== stopping the server (SIGTERM to rank 0: it drains, then every rank exits)"
kill -TERM "$rank0"
wait $mpid
tail -n 2 "$log"
