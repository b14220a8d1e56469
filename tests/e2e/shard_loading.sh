#!/usr/bin/env bash
# Each rank maps the checkpoint and copies only its own slices: in a tp=4 split a rank loads about a
# quarter of its stage's weights (what one rank of that stage loads with tp=1).
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
m="$tmp/m"
"$DINFER_MKMODEL" --out "$m" --layers 4 --dim 256 --heads 8 --kv-heads 4 --ffn-dim 512 --vocab 1024 \
  --shard-size 1MB >/dev/null
loaded() { # prints "rank bytes" per rank of a run with --verbose
  mpirun --oversubscribe --bind-to none -np "$1" "$DINFER_RUN" --model "$m" --tp "$2" --pp "$3" --tokens 1,2 \
    --max-tokens 2 --verbose 2>&1 >/dev/null | sed -n 's/^rank \([0-9]*\) (stage.*loaded \([0-9]*\) bytes.*/\1 \2/p'
}
mapfile -t stage_total < <(loaded 2 1 2 | awk '{print $2}')
[ ${#stage_total[@]} -eq 2 ] || { echo "no load report from the 1x2 run"; exit 1; }
report=$(loaded 8 4 2)
echo "$report" | awk -v s0="${stage_total[0]}" -v s1="${stage_total[1]}" '
  { stage = int($1 / 4); total = stage ? s1 : s0; f = $2 / total;
    printf "rank %d (stage %d) loaded %d of its stage'"'"'s %d bytes: %.3f\n", $1, stage, $2, total, f;
    if (f < 0.24 || f > 0.27) bad++; n++ }
  END { if (n != 8) { print "expected 8 ranks, got " n; exit 1 } if (bad) { print bad " rank(s) outside [0.24, 0.27]"; exit 1 } }'
echo "every tp=4 rank loaded about a quarter of its stage"
