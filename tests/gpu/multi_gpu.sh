#!/usr/bin/env bash
# Issue 14 where each rank has a GPU of its own (NCCL between them; run it on a machine of two or
# more GPUs): every two-rank split of the golden fixtures against transformers (FP32: the tokens,
# logprobs within 1e-4), then the 8B shape's batch-1 and batch-64 decode and 64 x 128 prefill
# as 1x1, 2x1 (tp=2), 1x2 with --pipeline-depth 1 and with the default depth 2, for each build.
#   tests/gpu/multi_gpu.sh BUILD [BUILD...]      (PRESETS="llama3-8b llama3-1b" to choose models)
set -uo pipefail
builds=("$@")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fx=$(cd "$(dirname "$0")/../golden/fixtures" && pwd)
n_gpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
[ "$n_gpu" -ge 2 ] || { echo "multi_gpu.sh: needs 2 GPUs, this machine has $n_gpu"; exit 77; }
rc=0
b=${builds[-1]}
for f in llama_gqa mistral_swa qwen2_bias llama_5layer_sharded; do
  for split in "--tp 2" "--pp 2"; do
    if "$b/tests/golden_check" "$fx/$f" -- mpirun --bind-to none -np 2 "$b/launch/dinfer-run" $split --device cuda \
      --dtype f32 >/tmp/mg.log 2>&1; then
      echo "golden $f $split: $(tail -n 1 /tmp/mg.log)"
    else
      echo "golden $f $split FAILED:"; tail -n 20 /tmp/mg.log; rc=1
    fi
  done
done
mkdir -p /tmp/dinfer-bench
for preset in ${PRESETS:-llama3-8b}; do
  m=/tmp/dinfer-bench/$preset
  [ -f "$m/config.json" ] || "$b/launch/dinfer-mkmodel" --preset "$preset" --out "$m" | tail -n 1
  for batch in 1 64; do
    for bb in "${builds[@]}"; do
      for split in "1x1" "--tp 2" "--pp 2 --pipeline-depth 1" "--pp 2"; do
        # a build from before --pipeline-depth: its --pp 2 is depth 1
        [[ $split != *depth* ]] || "$bb/launch/dinfer-run" --help 2>&1 | grep -q pipeline-depth || continue
        if [ "$split" = 1x1 ]; then cmd=("$bb/launch/dinfer-run"); args=(); else
          cmd=(mpirun --bind-to none -np 2 "$bb/launch/dinfer-run"); read -r -a args <<<"$split"; fi
        out=$("${cmd[@]}" --model "$m" "${args[@]}" --device cuda --bench --batch "$batch" --prompt-len 128 \
          --gen-len 128 --max-batch-tokens 8192 2>&1)
        [ $? -eq 0 ] || { echo "$out" | tail -n 5; rc=1; continue; }
        echo "$preset batch $batch, $bb, $split: $(echo "$out" | grep -E '^(prefill|decode):' | sed 's/ tokens in .*(/ (/' | tr '\n' ' ')"
      done
    done
  done
done
exit $rc
