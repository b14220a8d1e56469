#!/usr/bin/env bash
# Where one batch-1 decode step's GPU time goes (run on the GPU machine, not a test): Nsight
# Compute times every kernel of a short dinfer-run --bench (op by op, DINFER_CUDA_GRAPHS=0, so each
# kernel is its own launch), and the last decode step's kernels are summed by kind.
#   tests/gpu/step_profile.sh MODEL_DIR [BUILD_DIR]
# Prints kernels per step, then per kind: count, total microseconds, share of the step. Kernel
# times are measured one at a time (ncu serializes them), so their sum is the step's GPU work
# without launch gaps; the bench's own step time (printed first) includes them.
set -euo pipefail
model=$1
build=${2:-build}
ncu=${NCU:-/usr/local/cuda/bin/ncu}
csv=$(mktemp)
trap 'rm -f "$csv"' EXIT
DINFER_CUDA_GRAPHS=0 "$build/launch/dinfer-run" --model "$model" --bench --device cuda --dtype bf16 --batch 1 \
  --prompt-len 16 --gen-len 8 | grep -E '^decode step'
# 4 steps (the bench's warm-up prefill and decode, then its own), every kernel timed once, with
# neither the caches flushed nor the clocks locked between them
DINFER_CUDA_GRAPHS=0 "$ncu" --csv --metrics gpu__time_duration.sum --target-processes all --cache-control none \
  --clock-control none "$build/launch/dinfer-run" --model "$model" --bench --device cuda --dtype bf16 --batch 1 \
  --prompt-len 1 --gen-len 2 2>/dev/null > "$csv"
python3 - "$csv" <<'EOF'
import csv, re, sys
rows = []
with open(sys.argv[1]) as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    v = float(r["Metric Value"].replace(",", ""))
    unit = r.get("Metric Unit", "nsecond")
    us = {"ns": v / 1000, "nsecond": v / 1000, "us": v, "usecond": v, "ms": v * 1000, "msecond": v * 1000}[unit]
    rows.append((r["Kernel Name"], us))
# a step starts with the embedding kernel; the last one is a decode step
starts = [i for i, (n, _) in enumerate(rows) if "embedding" in n]
step = rows[starts[-1]:]
ours = re.compile(r"\b([a-z0-9_]+_kernel)\b")
def kind(n):
    m = ours.search(n.split("(")[0])
    return m.group(1) if m else "matrix products (cuBLAS)"
agg = {}
for n, us in step:
    k = kind(n)
    c, t = agg.get(k, (0, 0.0))
    agg[k] = (c + 1, t + us)
total = sum(t for _, t in agg.values())
print(f"kernels per decode step: {len(step)}, GPU time {total:.1f} us")
for k, (c, t) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"  {k:40s} {c:5d} {t:10.1f} us {100 * t / total:5.1f}%")
EOF
