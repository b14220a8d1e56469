#!/usr/bin/env bash
# One call on the GPU machine (not a test): the Debian packages carried in .devdeps set up, the
# tree built (Release, CUDA), optionally a baseline built beside it and the 8B-shape models written
# in the background, then BODY's steps, each logged to $OUT/NAME.log with its tail printed.
#
# On the development machine, once a checkout:
#   ../shared/device/fetch-debs.sh libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 \
#     libpcre2-posix3 libutf8proc2 libutf8proc-dev libmicrohttpd12 libmicrohttpd-dev
# a baseline (any revision) as a tar whose paths start with base/:
#   git archive --format=tar --prefix=base/ main > base.tar      # keep it out of git
# and a BODY file of steps, for example:
#   step ops 200 "cd build && ctest -R 'gpu\.ops' --output-on-failure"
#   waitfor /tmp/base_done
#   step mm 200 "for b in /tmp/base/build build; do \$b/tests/bench_matmul --rows 1 --formats int4; done"
#   waitfor /tmp/models_done
#   step ab 200 "AB_ARGS='--batch 1 --quantize int4' tests/gpu/switch_ab.sh build /tmp/m8 AB_BUILD=/tmp/base/build -"
# (tests/gpu/body_standard.sh is one, committed: the GPU tests, transformers side by side, the server
# and the quantized checkpoints.) The call (the device tool's command; carry .devdeps, base.tar and
# the BODY file):
#   BASE=1 BODY=body.sh tests/gpu/device_call.sh
#
#   BASE=1      build base.tar's tree in /tmp/base (dinfer-run, bench_matmul, dinfer-mkmodel; 8 jobs),
#               /tmp/base_done when done
#   MODELS=0    skip writing /tmp/m8l2 (the 8B shape, 2 layers) and /tmp/m8 (the 8B shape, BF16),
#               /tmp/models_done when both are written
#   TAILN=N     lines of each step's log printed (default 12)
#   BUILD_TARGETS="a b"  build only those targets (a short call: dinfer-run dinfer-mkmodel ...)
#   OUT         where the logs go (the device tool's $OUT)
# In BODY: `step NAME TIMEOUT_S "COMMAND"`, `waitfor FILE`, and `variant NAME DIR`: DIR (carried)
# holds files at their repository paths (DIR/runtime/cuda/cuda_qmma.cu, ...); they replace the
# tree's while dinfer-run, bench_matmul and test_backend_ops are rebuilt into /tmp/NAME/launch and
# /tmp/NAME/tests (a build dir as switch_ab.sh's AB_BUILD takes it), then the tree's own files go
# back and those three are rebuilt from them (a changed .cu file ~20 s each way).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
TAILN=${TAILN:-12}
# shellcheck disable=SC1091
source .devdeps/use-debs.sh
# libmicrohttpd's .pc names gnutls, which the image has no .pc for
sed -i '/^Requires.private/d' /opt/devdeps/usr/lib/x86_64-linux-gnu/pkgconfig/libmicrohttpd.pc
t0=$(date +%s)
step() {
  local name=$1 limit=$2 s rc
  shift 2
  s=$(date +%s)
  timeout "$limit" bash -c "$*" >"$OUT/$name.log" 2>&1
  rc=$?
  echo "== $name rc=$rc $(($(date +%s) - s))s (t=$(($(date +%s) - t0)))"
  tail -n "$TAILN" "$OUT/$name.log"
}
waitfor() { while [ ! -f "$1" ]; do sleep 2; done; }
variant() {
  local name=$1 dir=$2 f files
  files=$(cd "$dir" && find . -type f | sed 's#^\./##')
  for f in $files; do
    mkdir -p "/tmp/orig/$name/$(dirname "$f")" && cp "$f" "/tmp/orig/$name/$f" && cp "$dir/$f" "$f"
  done
  step "build_$name" 300 "ninja -C build dinfer-run bench_matmul test_backend_ops >/dev/null &&
    mkdir -p /tmp/$name/launch /tmp/$name/tests && cp build/launch/dinfer-run /tmp/$name/launch/ &&
    cp build/tests/bench_matmul build/tests/test_backend_ops /tmp/$name/tests/"
  for f in $files; do cp "/tmp/orig/$name/$f" "$f"; done
  step "rebuild_after_$name" 300 "ninja -C build dinfer-run bench_matmul test_backend_ops >/dev/null"
  # only 8 files come back from $OUT: a variant's build logs go once both builds passed (their
  # tails are in the call's output)
  [ -s "$OUT/build_$name.log" ] || rm -f "$OUT/build_$name.log"
  [ -s "$OUT/rebuild_after_$name.log" ] || rm -f "$OUT/rebuild_after_$name.log"
}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
if [ "${BASE:-0}" = 1 ]; then
  (rm -rf /tmp/base && tar -xf base.tar -C /tmp && cd /tmp/base &&
    cmake -S . -B build -G Ninja -DDINFER_CUDA=ON -DCMAKE_BUILD_TYPE=Release >/tmp/base_cfg.log 2>&1 &&
    cmake --build build -j 8 --target dinfer-run bench_matmul dinfer-mkmodel >/tmp/base_build.log 2>&1
    echo "rc=$?" >/tmp/base_done) &
fi
step build 400 "cmake -S . -B build -G Ninja -DDINFER_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
  cmake --build build -j 16 ${BUILD_TARGETS:+--target $BUILD_TARGETS}"
if [ "${MODELS:-1}" = 1 ]; then
  (./build/launch/dinfer-mkmodel --out /tmp/m8l2 --preset llama3-8b --layers 2 --seed 1 >/tmp/mk.log 2>&1
    ./build/launch/dinfer-mkmodel --out /tmp/m8 --preset llama3-8b --seed 1 >>/tmp/mk.log 2>&1
    echo "rc=$?" >/tmp/models_done) &
fi
# shellcheck disable=SC1090
source "$BODY"
echo "== end t=$(($(date +%s) - t0))"
