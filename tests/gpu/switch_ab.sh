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
# Prints, a run a line: the setting, prefill tok/s, decode tok/s, and the bandwidth line.
set -euo pipefail
b=$1 m=$2
shift 2
args=${AB_ARGS:---batch 1 --prompt-len 128 --gen-len 128}
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
    env "${envs[@]}" "$run/launch/dinfer-run" --model "$m" --bench --device cuda --dtype bf16 \
      --max-batch-tokens 8192 $args "${more[@]}" >"$tmp/out" 2>"$tmp/err" || { tail -5 "$tmp/err"; exit 1; }
    pre=$(sed -n 's/^prefill:.*(\([0-9.]*\) tokens\/s).*/\1/p' "$tmp/out")
    dec=$(sed -n 's/^decode: .*(\([0-9.]*\) tokens\/s).*/\1/p' "$tmp/out")
    bw=$(grep '^decode reads' "$tmp/out" | sed 's/^decode reads //')
    printf 'round %s  %-40s prefill %10s  decode %9s tok/s  (%s)\n' "$round" "$setting" "$pre" "$dec" "$bw"
  done
done
