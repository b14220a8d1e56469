#!/usr/bin/env bash
# What holds one product back (run on the GPU machine, not a test): Nsight Compute's sections of
# bench_matmul's product on the 8B shape at the GPU's own clocks (ncu otherwise locks them to base,
# ~1.46 GHz on an H100), the lines that say why: duration, DRAM share, registers and occupancy,
# cycles between a warp's instructions, and ncu's estimates of what to gain.
#   tests/gpu/kernel_sections.sh [BUILD_DIR] [FORMATS] [PRODUCTS] [ROWS]
#   defaults: build  int4,fp8,bf16  qkv,o,gate_up,down  1        (~3 s a product)
# A product alone says where its time goes, not what the step gains from a change: a kernel with
# more registers or shared memory can be faster here and slower in the step (PERFORMANCE.md).
set -euo pipefail
build=${1:-build} formats=${2:-int4,fp8,bf16} products=${3:-qkv,o,gate_up,down} rows=${4:-1}
ncu=${NCU:-/usr/local/cuda/bin/ncu}
for f in ${formats//,/ }; do
  for p in ${products//,/ }; do
    echo "== $f $p, $rows rows"
    # the product's own kernels (not the weights' set-up), the 7th launch: caches and clocks warm
    "$ncu" -k regex:'gemv|qmma|qt_|gemm|xmma|cutlass|dequant' --launch-skip 6 --launch-count 1 \
      --clock-control none --section SpeedOfLight --section WarpStateStats --section Occupancy \
      --section LaunchStats --section MemoryWorkloadAnalysis \
      "$build/tests/bench_matmul" --rows "$rows" --formats "$f" --products "$p" --iters 20 2>&1 |
      grep -E '^  [a-zA-Z_].*\(|Duration|DRAM Throughput|SM Frequency|Registers Per Thread|Occupancy  |Warp Cycles Per Issued|Grid Size|Est\. (Local )?Speedup|stalled' |
      sed -E 's/ +$//' || true
  done
done
