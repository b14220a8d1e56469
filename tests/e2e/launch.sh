#!/usr/bin/env bash
# dinfer-launch --dry-run: the split chosen for host lists of 1, 2 and 4 hosts and several models,
# the command it would run (mpirun with a hostfile, or srun), overrides, and clear refusals.
set -uo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fx=$(cd "$(dirname "$0")/../golden/fixtures" && pwd)
fails=0
# a config-only 8B-shaped folder is enough: the launcher reads only config.json
"$DINFER_MKMODEL" --out "$tmp/big" --preset llama3-8b --layers 1 --vocab 1000 --dim 64 --heads 32 --kv-heads 8 \
  --ffn-dim 64 --head-dim 2 >/dev/null
sed -i 's/"num_hidden_layers":[^,]*/"num_hidden_layers":\t32/' "$tmp/big/config.json"

expect_split() { # expect_split MODEL HOSTS GPUS TP PP
  local out
  out=$("$DINFER_LAUNCH" --model "$1" --hosts "$2" --gpus-per-host "$3" --dry-run 2>&1)
  if grep -q "tp=$4 inside a host, pp=$5," <<<"$out"; then
    echo "ok: $(basename "$1") on $2 x $3: tp=$4 pp=$5"
  else
    echo "FAIL: $(basename "$1") on $2 x $3: expected tp=$4 pp=$5, got:"; echo "$out"; fails=$((fails + 1))
  fi
}
expect_split "$tmp/big" h1 8 8 1
expect_split "$tmp/big" h1,h2 8 8 2
expect_split "$tmp/big" h1,h2,h3,h4 8 8 4
expect_split "$tmp/big" h1,h2,h3,h4 4 4 4
expect_split "$fx/llama_gqa" h1 4 4 1
expect_split "$fx/llama_gqa" h1,h2 2 2 2
expect_split "$fx/llama_5layer_sharded" h1,h2,h3,h4 1 1 4
expect_split "$fx/llama3_rope_f16" h1,h2 8 8 2

# the command: a hostfile and one rank per GPU packed by host, the server's options passed on
out=$("$DINFER_LAUNCH" --model "$fx/llama_gqa" --hosts h1,h2 --gpus-per-host 2 --dry-run -- --port 7171 --host 0.0.0.0)
grep -q "command: mpirun --hostfile .* -np 4 --map-by ppr:2:node --bind-to none" <<<"$out" || { echo "FAIL: mpirun command: $out"; fails=$((fails + 1)); }
grep -q -- "--model $fx/llama_gqa --tp 2 --pp 2 --port 7171 --host 0.0.0.0" <<<"$out" || { echo "FAIL: server args: $out"; fails=$((fails + 1)); }
grep -qE "rank 2 +host h2 +stage 1 +tp 0" <<<"$out" || { echo "FAIL: placement: $out"; fails=$((fails + 1)); }
out=$("$DINFER_LAUNCH" --model "$fx/llama_gqa" --hosts h1,h2 --gpus-per-host 2 --launcher srun --dry-run)
grep -q "command: srun --mpi=pmix --kill-on-bad-exit=1 --nodes=2 --ntasks-per-node=2 --ntasks=4" <<<"$out" || { echo "FAIL: srun: $out"; fails=$((fails + 1)); }
printf 'h1 slots=4\n# a comment\nh2 slots=4\n' > "$tmp/hosts"
out=$("$DINFER_LAUNCH" --model "$fx/llama_gqa" --hostfile "$tmp/hosts" --gpus-per-host 4 --tp 2 --pp 4 --dry-run)
grep -q "tp=2 inside a host, pp=4, 8 rank(s) on 2 host(s)" <<<"$out" || { echo "FAIL: override: $out"; fails=$((fails + 1)); }

expect_fail() { # expect_fail NEEDLE ARGS...
  local needle=$1; shift
  if "$DINFER_LAUNCH" "$@" --dry-run >"$tmp/out" 2>"$tmp/err"; then echo "FAIL: accepted: $*"; fails=$((fails + 1)); return; fi
  if grep -qF -- "$needle" "$tmp/err"; then echo "ok: $(cat "$tmp/err")"; else echo "FAIL: $*: $(cat "$tmp/err")"; fails=$((fails + 1)); fi
}
expect_fail "no split of 4 host(s) x 16 GPU(s) fits the model (4 layers, 8 query heads, 2 KV heads)" \
  --model "$fx/llama_gqa" --hosts h1,h2,h3,h4 --gpus-per-host 16
expect_fail "--tp 4 x --pp 4 needs 16 ranks; 2 host(s) x 4 GPU(s) have 8" --model "$fx/llama_gqa" --hosts h1,h2 --gpus-per-host 4 --tp 4 --pp 4
expect_fail "8 query heads cannot split over tp=3" --model "$fx/llama_gqa" --hosts h1 --gpus-per-host 3 --tp 3 --pp 1
expect_fail "give both --tp and --pp" --model "$fx/llama_gqa" --tp 2
expect_fail "not allowed" --model "$fx/llama_gqa" --hosts 'h1;rm'
expect_fail "config.json" --model "$tmp/none" --hosts h1
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "dinfer-launch: splits, commands and refusals as expected"
