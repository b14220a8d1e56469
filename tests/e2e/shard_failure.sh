#!/usr/bin/env bash
# When one rank cannot load its shard (a truncated or missing file that only its stage reads),
# every rank exits non-zero within 10 s (DINFER_FAIL_SECONDS; more under sanitizers) and the first line of the error names the rank and the
# file; no rank hangs in a collective. Also: start-up errors every rank sees (a world size that is
# not tp x pp, an impossible split) stop the job with one message.
set -uo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
limit=${DINFER_FAIL_SECONDS:-10}
run() { # run NAME ARGS...: mpirun with a 30 s guard; sets rc, secs and the stderr file
  local name=$1; shift
  local t0; t0=$(date +%s%N)
  timeout $((limit * 3)) mpirun --oversubscribe --bind-to none "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
  rc=$?
  secs=$(( ($(date +%s%N) - t0) / 1000000000 ))
}
check() { # check NAME NEEDLE...: non-zero exit (not the guard's), within the limit, needles in line 1
  local name=$1; shift
  local first; first=$(head -n 1 "$tmp/$name.err")
  local ok=1
  { [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $secs -lt $((limit + base)) ]; } || ok=0
  for n in "$@"; do [[ "$first" == *"$n"* ]] || ok=0; done
  if [ $ok -eq 1 ]; then echo "ok ($name, exit $rc, ${secs}s): $first"
  else echo "FAIL ($name): exit $rc after ${secs}s, first line: $first"; cat "$tmp/$name.err"; fails=$((fails + 1)); fi
}

m="$tmp/m"
"$DINFER_MKMODEL" --out "$m" --layers 4 --dim 128 --heads 8 --kv-heads 4 --ffn-dim 256 --vocab 512 \
  --shard-size 300KB >/dev/null
# the shard that holds layer 3's down projection: read by stage 1 (ranks 2 and 3) of a 2x2 split only
shard=$(sed -n 's/.*"model.layers.3.mlp.down_proj.weight":[[:space:]]*"\([^"]*\)".*/\1/p' "$m/model.safetensors.index.json")
first_layer0=$(sed -n 's/.*"model.layers.0.mlp.down_proj.weight":[[:space:]]*"\([^"]*\)".*/\1/p' "$m/model.safetensors.index.json")
[ -n "$shard" ] && [ "$shard" != "$first_layer0" ] || { echo "model not sharded as the test needs"; exit 1; }
cp "$m/$shard" "$tmp/saved"

run ok -np 4 "$DINFER_RUN" --model "$m" --tp 2 --pp 2 --tokens 1,2,3 --max-tokens 4
[ $rc -eq 0 ] || { echo "the intact model failed:"; cat "$tmp/ok.err"; exit 1; }
# the time is measured around the whole mpirun: a failing job may take the limit on top of what
# starting and running this intact job took (a loaded machine starts MPI slowly)
base=$secs
echo "an intact job took ${base}s; a failing one must end within $((limit + base))s"

truncate -s -4096 "$m/$shard"
run truncated -np 4 "$DINFER_RUN" --model "$m" --tp 2 --pp 2 --tokens 1,2,3 --max-tokens 4
check truncated "rank 2" "$shard" "truncated"

rm "$m/$shard"
run missing -np 4 "$DINFER_RUN" --model "$m" --tp 2 --pp 2 --tokens 1,2,3 --max-tokens 4
check missing "rank 2" "$shard" "cannot open"
cp "$tmp/saved" "$m/$shard"

run world -np 3 "$DINFER_RUN" --model "$m" --tp 2 --pp 2 --tokens 1,2,3
check world "the job has 3 ranks but tp=2 x pp=2 needs 4"
run heads -np 3 "$DINFER_RUN" --model "$m" --tp 3 --tokens 1,2,3
check heads "8 query heads cannot split over tp=3"
run request -np 4 "$DINFER_RUN" --model "$m" --tp 2 --pp 2 --tokens 1,999
check request "outside the vocabulary"

[ $fails -eq 0 ] || { echo "$fails case(s) failed"; exit 1; }
echo "every failure stopped every rank with the rank and file named"
