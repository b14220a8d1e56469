#!/usr/bin/env bash
# The first command of the README: installs what is missing, builds dinfer, writes the default
# model (a ~125M-parameter Llama-shaped model with seeded random weights) and runs an offline
# generation on it, first on one rank, then split tp=2 x pp=2 over four MPI ranks (the same
# tokens), printing the generated tokens and the speed.
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
echo "== offline generation: two prompts as one batch, greedy, 32 new tokens each"
mpirun --bind-to none -np 1 ./build/launch/dinfer-run --model "$model" --tokens 1,450,4996,17354 --tokens 1,9038,2501,263 \
  --max-tokens 32 --temperature 0 --ignore-eos
echo "== the same, split tp=2 x pp=2 over 4 MPI ranks"
mpirun --oversubscribe --bind-to none -np 4 ./build/launch/dinfer-run --model "$model" --tp 2 --pp 2 \
  --tokens 1,450,4996,17354 --tokens 1,9038,2501,263 --max-tokens 32 --temperature 0 --ignore-eos
echo "== benchmark: batch 4, prompt 128, 64 new tokens"
mpirun --bind-to none -np 1 ./build/launch/dinfer-run --model "$model" --bench --batch 4 --prompt-len 128 --gen-len 64
