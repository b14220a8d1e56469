#!/usr/bin/env bash
# A switch's effect measured in one sitting (run on the GPU machine, not a test): dinfer-run
# --bench on one model under each setting in turn, the settings alternating for AB_ROUNDS rounds
# (machines drift between calls: only figures from one sitting compare).
#   tests/gpu/switch_ab.sh BUILD_DIR MODEL SETTING...
#     SETTING: environment assignments for that run ("DINFER_CUDA_FUSE=0"), or "-" for none;
#              AB_BUILD=DIR among them runs DIR's dinfer-run instead (a baseline build),
#              AB_MORE=FLAG,VALUE,... adds dinfer-run flags ("AB_MORE=--quantize-lm-head,int8")
#   AB_ARGS   dinfer-run's bench flags (default: --batch 1 --prompt-len 128 --gen-len 128)
#   AB_ROUNDS rounds (default 2)
#   AB_TOKENS=N instead of timing: N greedy tokens of three token-id prompts under each setting (one
#             round; AB_ARGS then only the model's flags, e.g. "--quantize int4"), each setting's
#             tokens against the first's and the largest logprob difference up to the first token that differs.
#             Give "-" twice: the default's tokens vary run to run on the synthetic 8B (the norms' sums are
#             float atomics, its greedy choices near-ties), and only a difference beyond that says anything
# Prints, a run a line: the setting, prefill tok/s, decode tok/s, and the bandwidth line.
set -euo pipefail
b=$1 m=$2
shift 2
tokens=${AB_TOKENS:-0}
if [ "$tokens" -gt 0 ]; then
  args="${AB_ARGS:-} --max-tokens $tokens --ignore-eos --logprobs --json --tokens 1,2,3,4,5,6,7,8 --tokens 9,10,11 --tokens 100,200,300,400,500"
  AB_ROUNDS=1
else
  args="--bench --max-batch-tokens 8192 ${AB_ARGS:---batch 1 --prompt-len 128 --gen-len 128}"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for round in $(seq "${AB_ROUNDS:-2}"); do
  for setting in "$@"; do
    words=() envs=() more=() run=$b
    [ "$setting" = - ] || read -r -a words <<<"$setting"
    for e in "${words[@]}"; do
      case $e in
        AB_BUILD=*) run=${e#AB_BUILD=} ;;
        AB_MORE=*) IFS=, read -r -a more <<<"${e#AB_MORE=}" ;;
        *) envs+=("$e") ;;
      esac
    done
    # shellcheck disable=SC2086
    env "${envs[@]}" "$run/launch/dinfer-run" --model "$m" --device cuda --dtype bf16 $args "${more[@]}" \
      >"$tmp/out" 2>"$tmp/err" || { tail -5 "$tmp/err"; exit 1; }
    if [ "$tokens" -gt 0 ]; then
      grep '^{' "$tmp/out" >"$tmp/json"
      [ -f "$tmp/ref" ] || cp "$tmp/json" "$tmp/ref"
      printf '%-40s %s\n' "$setting" "$(python3 -c '
import json, sys
ref = [json.loads(l) for l in open(sys.argv[1])]
got = [json.loads(l) for l in open(sys.argv[2])]
same = all(a["tokens"] == b["tokens"] for a, b in zip(ref, got)) and len(ref) == len(got)
first = [next((i for i, (x, y) in enumerate(zip(a["tokens"], b["tokens"])) if x != y), None) for a, b in zip(ref, got)]
# up to and including the first token that differs (after it the two continue different texts)
d = max(abs(x - y) for a, b, f in zip(ref, got, first) for x, y in list(zip(a["logprobs"], b["logprobs"]))[:None if f is None else f + 1])
print(("same tokens" if same else "tokens differ (first at %s)" % first) + ", logprobs within %.4f up to there" % d)
' "$tmp/ref" "$tmp/json")"
      continue
    fi
    pre=$(sed -n 's/^prefill:.*(\([0-9.]*\) tokens\/s).*/\1/p' "$tmp/out")
    dec=$(sed -n 's/^decode: .*(\([0-9.]*\) tokens\/s).*/\1/p' "$tmp/out")
    bw=$(grep '^decode reads' "$tmp/out" | sed 's/^decode reads //')
    printf 'round %s  %-40s prefill %10s  decode %9s tok/s  (%s)\n' "$round" "$setting" "$pre" "$dec" "$bw"
  done
done
