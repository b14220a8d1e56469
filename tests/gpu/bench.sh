#!/usr/bin/env bash
# The GPU benchmark of docs/PERFORMANCE.md (run on the GPU machine, not a test): writes the
# llama3-1b and llama3-8b shaped BF16 synthetic models and runs dinfer-run --bench on one GPU:
# batch 1 and 64 with prompt 128 and 128 new tokens, then the 8B shape over a 4,096-token prompt
# (its prefill, and batch-1 decode at 4,096 to 4,224 tokens of context).
#   tests/gpu/bench.sh [BUILD_DIR ...]        (default: build; models under $BENCH_MODELS)
#   BENCH_ROWS=N,M...  only those rows (1-based)
#   BENCH_PEER=1       also transformers on every row (tests/gpu/peer_transformers.py: static cache
#                      and torch.compile for decode, eager prefill), then a table of the last
#                      build's figures, the peer's and their ratio
#   BENCH_SERVER=1     also the 8B model behind dinfer-server (mpirun -np 1, default binding) and
#                      dinfer bench at concurrency 64 and 256, prompt 128, 128 new tokens, each
#                      against the offline batch-64 run of the same build in the same call: its
#                      decode figure and its whole run (the same work: 64 prompts of 128, then 128
#                      new tokens each). BENCH_SERVER_ARGS: more dinfer-server flags
#   BENCH_PP=1         also pp=2 on the one GPU (two ranks sharing it, mpirun -np 2): the 1B shape,
#                      batch 64, prompt 128, 64 new, --pipeline-depth 1 and 2, each build in turn,
#                      and each run's whole time (the pipelined scheduler on a GPU: PERFORMANCE.md,
#                      "On one GPU"; a rule tuned on CPU ranks once made it 2.2-2.5x slower)
# With several build folders (a baseline and a change), each row runs on every build in turn, in
# one sitting, so their figures compare.
set -euo pipefail
builds=("$@")
[ ${#builds[@]} -gt 0 ] || builds=(build)
root=${BENCH_MODELS:-/tmp/dinfer-bench}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rows=(
  "llama3-1b 1 128 128" "llama3-1b 64 128 128"
  "llama3-8b 1 128 128" "llama3-8b 64 128 128"
  "llama3-8b 1 4096 128"
)
# tokens/s of the "prefill:" or "decode:" line of a run's output
rate() { sed -n "s/^$1: .*(\([0-9.]*\) tokens\/s).*/\1/p" "$2" | head -1; }
summary=()
for i in "${!rows[@]}"; do
  [ -z "${BENCH_ROWS:-}" ] || [[ ",$BENCH_ROWS," == *",$((i + 1)),"* ]] || continue
  read -r preset batch prompt gen <<<"${rows[$i]}"
  [ -f "$root/$preset/config.json" ] || "${builds[0]}/launch/dinfer-mkmodel" --out "$root/$preset" --preset "$preset" --seed 1
  for b in "${builds[@]}"; do
    echo "== $b: dinfer-run --model $preset --bench --device cuda --dtype bf16 --batch $batch --prompt-len $prompt --gen-len $gen"
    "$b/launch/dinfer-run" --model "$root/$preset" --bench --device cuda --dtype bf16 --batch "$batch" \
      --prompt-len "$prompt" --gen-len "$gen" --max-batch-tokens 8192 | grep -v '^bench:' | tee "$tmp/ours"
  done
  if [ "${BENCH_PEER:-0}" = 1 ]; then
    echo "== transformers (static cache + torch.compile): $preset, batch $batch, prompt $prompt, generate $gen"
    python3 "$here/peer_transformers.py" "$root/$preset" "$batch" "$prompt" "$gen" 2>"$tmp/peer.err" | tee "$tmp/peer" ||
      { tail -5 "$tmp/peer.err"; : > "$tmp/peer"; }
    grep '^peer:' "$tmp/peer.err" || true
    share=$(sed -n 's/.*GB\/s, \([0-9]*%\) of the measured.*/\1/p' "$tmp/ours")
    summary+=("$(printf '%s batch %s prompt %s|%s|%s|%s|%s|%s' "$preset" "$batch" "$prompt" \
      "$(rate prefill "$tmp/ours")" "$(rate prefill "$tmp/peer")" "$(rate decode "$tmp/ours")" \
      "$(rate decode "$tmp/peer")" "${share:-?}")")
  fi
done
if [ ${#summary[@]} -gt 0 ]; then
  echo
  echo "| row | dinfer prefill tok/s | transformers (eager) | ratio | dinfer decode tok/s | transformers (compiled) | ratio | dinfer decode, share of copy bandwidth |"
  echo "|---|---|---|---|---|---|---|---|"
  for s in "${summary[@]}"; do
    IFS='|' read -r name p0 p1 d0 d1 sh <<<"$s"
    awk -v n="$name" -v p0="$p0" -v p1="$p1" -v d0="$d0" -v d1="$d1" -v sh="$sh" 'BEGIN {
      pr = (p1 > 0) ? sprintf("%.2f", p0 / p1) : "-"; dr = (d1 > 0) ? sprintf("%.2f", d0 / d1) : "-"
      printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", n, p0, p1 ? p1 : "-", pr, d0, d1 ? d1 : "-", dr, sh }'
  done
fi
if [ "${BENCH_SERVER:-0}" = 1 ]; then
  b=${builds[${#builds[@]} - 1]}
  [ -f "$root/llama3-8b/config.json" ] || "$b/launch/dinfer-mkmodel" --out "$root/llama3-8b" --preset llama3-8b --seed 1
  echo "== $b: the offline figure the server compares with: dinfer-run --bench --batch 64 --prompt-len 128 --gen-len 128"
  "$b/launch/dinfer-run" --model "$root/llama3-8b" --bench --device cuda --dtype bf16 --batch 64 --prompt-len 128 \
    --gen-len 128 --max-batch-tokens 8192 | grep -E '^(prefill|decode):' | tee "$tmp/offline"
  # generated tokens/s: decode-only, and over the whole run (prefill's step makes each first token)
  off_decode=$(rate decode "$tmp/offline")
  off_whole=$(awk '/^(prefill|decode):/ { for (i = 1; i < NF; i++) if ($(i + 1) == "ms") t += $i }
    END { if (t > 0) printf "%.1f", 64 * 128 / (t / 1e3) }' "$tmp/offline")
  log=$tmp/server.log
  # shellcheck disable=SC2086 # BENCH_SERVER_ARGS is a list of flags
  mpirun --allow-run-as-root -np 1 "$b/launch/dinfer-server" --model "$root/llama3-8b" --device cuda --dtype bf16 \
    --port 0 --max-batch-tokens 8192 --max-seqs 256 ${BENCH_SERVER_ARGS:-} >"$log" 2>&1 &
  spid=$!
  for _ in $(seq 1 300); do grep -q "ready on" "$log" && break; sleep 0.5; done
  addr=$(sed -n 's/.*ready on \([^ ]*\) (pid.*/\1/p' "$log")
  [ -n "$addr" ] || { echo "the server did not start:"; tail -20 "$log"; kill "$spid" 2>/dev/null; exit 1; }
  for c in 64 256; do
    echo "== dinfer bench --concurrency $c --requests $((4 * c)) --prompt-len 128 --gen-len 128 (server: $b, mpirun -np 1)"
    "$b/launch/dinfer" bench --server "$addr" --concurrency "$c" --requests $((4 * c)) --prompt-len 128 --gen-len 128 |
      tee "$tmp/client"
    awk -v d="$off_decode" -v w="$off_whole" '/^throughput:/ && d > 0 && w > 0 {
      printf "server %.1f tok/s: %.2fx the offline decode (%.1f), %.2fx the offline whole run (%.1f)\n", $2, $2 / d, d, $2 / w, w }' \
      "$tmp/client"
  done
  kill -TERM "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
fi
if [ "${BENCH_PP:-0}" = 1 ]; then
  [ -f "$root/llama3-1b/config.json" ] ||
    "${builds[0]}/launch/dinfer-mkmodel" --out "$root/llama3-1b" --preset llama3-1b --seed 1
  for b in "${builds[@]}"; do
    for d in 1 2; do
      echo "== $b: mpirun -np 2 dinfer-run --model llama3-1b --pp 2 --pipeline-depth $d --bench --device cuda --batch 64 --prompt-len 128 --gen-len 64"
      mpirun --allow-run-as-root -np 2 "$b/launch/dinfer-run" --model "$root/llama3-1b" --pp 2 --pipeline-depth "$d" \
        --bench --device cuda --dtype bf16 --batch 64 --prompt-len 128 --gen-len 64 >"$tmp/pp" 2>&1 ||
        { tail -5 "$tmp/pp"; exit 1; }
      grep -E '^(prefill|decode):' "$tmp/pp"
      awk '/^(prefill|decode):/ { for (i = 1; i < NF; i++) if ($(i + 1) == "ms") t += $i }
        END { printf "whole run: %.1f ms\n", t }' "$tmp/pp"
    done
  done
fi
