#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test through ctest; then the
# same suite built with AddressSanitizer + UBSan; then each fuzz target for a short smoke when
# clang's libFuzzer is available.
#   ./tests/run.sh            everything
#   ./tests/run.sh --quick    the plain build's suite only
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1

./launch/install-deps.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
jobs=$(nproc 2>/dev/null || echo 2)

step() { printf '\n==== %s\n' "$*"; }

step "build (build/)"
cmake -S . -B build "${gen[@]}" -DDINFER_WERROR=ON >/dev/null
cmake --build build -j "$jobs"
step "tests"
(cd build && ctest --output-on-failure -j "$jobs")
[ $quick -eq 1 ] && exit 0

step "Release build, warnings as errors, portable CPU kernels (build-release/, DINFER_NATIVE=OFF): what a user's -DCMAKE_BUILD_TYPE=Release compiles for mixed CPUs; its CPU op tests"
cmake -S . -B build-release "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DDINFER_WERROR=ON -DDINFER_CUDA=OFF \
  -DDINFER_NATIVE=OFF >/dev/null
cmake --build build-release -j "$jobs"
(cd build-release && ctest --output-on-failure -R '^(unit\.(cpu_ops|sampler|dtype)|golden\.[a-z0-9_]+|e2e\.stories260k)$')

step "build with DINFER_SANITIZE=address;undefined (build-asan/)"
cmake -S . -B build-asan "${gen[@]}" -DDINFER_SANITIZE="address;undefined" -DDINFER_CUDA=OFF -DDINFER_WERROR=ON >/dev/null
cmake --build build-asan -j "$jobs"
step "tests under AddressSanitizer + UBSan"
(cd build-asan && ctest --output-on-failure -j "$jobs")

fuzzer_lib=$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null || true)
if ! command -v clang >/dev/null 2>&1 || [ ! -f "$fuzzer_lib" ]; then
  step "fuzz smoke: SKIPPED, clang with libFuzzer is not installed (apt-get install clang)"
  exit 0
fi
step "fuzz targets (build-fuzz/), a short smoke each"
CC=clang cmake -S . -B build-fuzz "${gen[@]}" -DDINFER_FUZZ=ON -DDINFER_CUDA=OFF -DDINFER_WERROR=ON >/dev/null
cmake --build build-fuzz -j "$jobs"
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
./tests/fuzz/seed_corpus.sh "$corpus" ./build/launch/dinfer-mkmodel
for t in config safetensors wire tokenizer_load tokenizer_encode openai jinja; do
  mkdir -p "build-fuzz/artifacts/$t" # what a failure leaves, kept
  if ! ./build-fuzz/tests/fuzz/fuzz_$t -max_total_time="${DINFER_FUZZ_SECONDS:-5}" -artifact_prefix="build-fuzz/artifacts/$t/" \
    "$corpus/$t" >"$corpus/$t.log" 2>&1; then
    tail -n 40 "$corpus/$t.log"
    echo "fuzz_$t found a failure (above)"
    exit 1
  fi
  echo "fuzz_$t: $(grep -E '^Done' "$corpus/$t.log")"
done
step "all tests passed"
