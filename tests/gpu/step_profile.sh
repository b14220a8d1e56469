#!/usr/bin/env bash
# Where one step's GPU time goes (run on the GPU machine, not a test): Nsight Compute times every
# kernel of a short dinfer-run --bench (op by op, DINFER_CUDA_GRAPHS=0, so each kernel is its own
# launch), and one step's kernels are summed by kind.
#   tests/gpu/step_profile.sh MODEL_DIR [BUILD_DIR]           the last batch-1 decode step
#   PROFILE=prefill tests/gpu/step_profile.sh MODEL_DIR [BUILD]  the first prefill step of 64 x 128
#                                                                tokens (PROFILE_BATCH, PROFILE_PROMPT)
#   PROFILE_BATCH=64 (decode too: a decode step of that many sequences)
#   PROFILE_ARGS="--quantize fp8"   more dinfer-run flags
#   PROFILE_LIST=1   also every kernel of the step in order, with its time
# Prints kernels per step, then per kind: count, total microseconds, share of the step. Kernel
# times are measured one at a time (ncu serializes them), so their sum is the step's GPU work
# without launch gaps; the bench's own step time (printed first) includes them.
set -euo pipefail
model=$1
build=${2:-build}
ncu=${NCU:-/usr/local/cuda/bin/ncu}
csv=$(mktemp)
trap 'rm -f "$csv"' EXIT
mode=${PROFILE:-decode}
read -r -a extra <<<"${PROFILE_ARGS:-}"
if [ "$mode" = prefill ]; then
  run=(--batch "${PROFILE_BATCH:-64}" --prompt-len "${PROFILE_PROMPT:-128}" --gen-len 2 --max-batch-tokens 8192 "${extra[@]}")
  DINFER_CUDA_GRAPHS=0 "$build/launch/dinfer-run" --model "$model" --bench --device cuda --dtype bf16 "${run[@]}" |
    grep -E '^prefill:'
  # the kernels of the bench's warm-up (one prompt and a decode step) and of its batch's prefill
  limit=(--launch-count 1100)
else
  run=(--batch "${PROFILE_BATCH:-1}" --prompt-len 1 --gen-len 2 "${extra[@]}")
  DINFER_CUDA_GRAPHS=0 "$build/launch/dinfer-run" --model "$model" --bench --device cuda --dtype bf16 \
    --batch "${PROFILE_BATCH:-1}" --prompt-len 16 --gen-len 8 "${extra[@]}" | grep -E '^decode step'
  limit=()
fi
# every kernel timed once, with neither the caches flushed nor the clocks locked between them
# (decode: 4 steps, the bench's warm-up prefill and decode, then its own)
DINFER_CUDA_GRAPHS=0 "$ncu" --csv --metrics gpu__time_duration.sum --target-processes all --cache-control none \
  --clock-control none "${limit[@]}" "$build/launch/dinfer-run" --model "$model" --bench --device cuda --dtype bf16 \
  "${run[@]}" 2>/dev/null > "$csv"
python3 - "$csv" "$mode" "${PROFILE_LIST:-0}" <<'EOF'
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
# a step starts with the embedding kernel; the last one is a decode step, the longest a prefill
starts = [i for i, (n, _) in enumerate(rows) if "embedding" in n]
if sys.argv[2] != "prefill":
    step = rows[starts[-1]:]
else:
    steps = [rows[a:b] for a, b in zip(starts, starts[1:] + [len(rows)])]
    step = max(steps, key=lambda s: sum(us for _, us in s))
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
print(f"kernels per {sys.argv[2]} step: {len(step)}, GPU time {total:.1f} us")
for k, (c, t) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"  {k:40s} {c:5d} {t:10.1f} us {100 * t / total:5.1f}%")
if sys.argv[3] == "1":
    for n, us in step:
        print(f"  {us:8.1f} us  {n[:110]}")
EOF
