# A BODY for tests/gpu/device_call.sh (sourced there, not run alone): the checks and figures every
# GPU session starts from, most important first, each step skipped when the call's time is short.
#   MODELS=1 BODY=tests/gpu/body_standard.sh OUT=$OUT tests/gpu/device_call.sh
#   STD_LIMIT=S   the seconds the call may take in all (default 560); STD_STEPS=a,b,...  only those
# Steps: ctest (every gpu.* test), peer (bench.sh's rows beside transformers), server (concurrency 64
# and 256), quant (the 8B shape as AWQ, GPTQ in order and in act order, W4A16 and FP8 at load, batch
# 1 and 64 x 128), profile (every kernel of a batch-1 decode step: the 1B shape, and 2 layers of the
# 8B shape in BF16, as AWQ and as FP8 at load: ncu does not finish the 8B's 32 layers in minutes),
# sections (kernel_sections.sh: ncu's sections of each one-row product, int4, FP8 and BF16). One log
# a step in $OUT (the device tool returns 8 files). The six take more than one call's 600 s on an
# H100: STD_STEPS=ctest,peer,server, then (warm, MODELS=1 again) STD_STEPS=quant,profile,sections
# (ctest and profile alone: ~210 s from a cold start).
std_t0=$(date +%s)
std_left() { echo $((${STD_LIMIT:-560} - ($(date +%s) - std_t0))); }
std_on() { [ -z "${STD_STEPS:-}" ] || [[ ",$STD_STEPS," == *",$1,"* ]]; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p /tmp/bm /tmp/q
if std_on quant; then # written while the tests run (60-100 s each, in parallel)
  for f in awq gptq4 gptq4-act w4a16; do
    (build/launch/dinfer-mkmodel --out /tmp/q/$f --preset llama3-8b --quantize $f --seed 1 >/tmp/q/$f.log 2>&1
      echo "rc=$?" >/tmp/q/$f.done) &
  done
fi
std_on ctest && step ctest 300 "cd build && ctest -R gpu -j3 --output-on-failure 2>&1 |
  grep -E '(tests passed|tests failed|Test +#.*(Failed|Timeout)|\*\*\*)' | head -30"
[ "${MODELS:-1}" = 1 ] && waitfor /tmp/models_done
ln -sfn /tmp/m8 /tmp/bm/llama3-8b
std_on peer && [ "$(std_left)" -gt 260 ] && step peer 260 "BENCH_MODELS=/tmp/bm BENCH_PEER=1 tests/gpu/bench.sh build 2>&1 |
  grep -E '^(\||peer:)'"
std_on server && [ "$(std_left)" -gt 90 ] && step server 90 "BENCH_MODELS=/tmp/bm BENCH_ROWS=0 BENCH_SERVER=1 tests/gpu/bench.sh build 2>&1 |
  grep -E '^(==|TTFT|TPOT|throughput|server)'"
std_on quant && [ "$(std_left)" -gt 60 ] && step quant $(($(std_left) - 5)) "
  for f in awq gptq4 gptq4-act w4a16; do
    while [ ! -f /tmp/q/\$f.done ]; do sleep 2; done; echo \"== \$f: \$(tail -1 /tmp/q/\$f.log)\"
    for a in '--batch 1 --prompt-len 128 --gen-len 128' '--batch 64 --prompt-len 128 --gen-len 32'; do
      AB_ROUNDS=1 AB_ARGS=\"\$a\" tests/gpu/switch_ab.sh build /tmp/q/\$f -; done
  done
  echo '== fp8 at load (--quantize fp8)'
  for a in '--batch 1 --prompt-len 128 --gen-len 128' '--batch 64 --prompt-len 128 --gen-len 128'; do
    AB_ROUNDS=1 AB_ARGS=\"\$a --quantize fp8\" tests/gpu/switch_ab.sh build /tmp/m8 -; done"
if std_on profile && [ "$(std_left)" -gt 60 ]; then
  [ -f /tmp/bm/llama3-1b/config.json ] || build/launch/dinfer-mkmodel --out /tmp/bm/llama3-1b --preset llama3-1b --seed 1 >/dev/null
  [ -f /tmp/m8l2awq/config.json ] || build/launch/dinfer-mkmodel --out /tmp/m8l2awq --preset llama3-8b --layers 2 \
    --quantize awq --seed 1 >/dev/null
  step profile $(($(std_left) - 5)) "for m in /tmp/bm/llama3-1b /tmp/m8l2 /tmp/m8l2awq; do echo \"== \$m\";
    PROFILE_LIST=1 tests/gpu/step_profile.sh \$m build; done
    echo '== /tmp/m8l2 --quantize fp8'; PROFILE_LIST=1 PROFILE_ARGS='--quantize fp8' tests/gpu/step_profile.sh /tmp/m8l2 build"
fi
std_on sections && [ "$(std_left)" -gt 45 ] && step sections $(($(std_left) - 5)) "tests/gpu/kernel_sections.sh build"
