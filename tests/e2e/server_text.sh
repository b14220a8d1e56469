#!/usr/bin/env bash
# Text through dinfer-server, under mpirun 1x1 and 2x2, on the committed stories260K
# (launch/stories260K, with its tokenizer.json): a text prompt gives the text dinfer-run gives (the
# streamed pieces joined equal the whole decode), stop strings end the text where they start, also
# when they span two or three tokens, and bad text requests get INVALID_ARGUMENT naming the problem
# while the server keeps serving; a decoder that multiplies the text ends that request INTERNAL. A model folder without tokenizer.json refuses text but serves ids.
set -uo pipefail
tmp=$(mktemp -d)
cleanup() { [ -n "${mpid:-}" ] && kill -KILL "$mpid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
mkdir -p "$tmp" && ln -s "$(cd "$(dirname "$0")/../../launch/stories260K" && pwd)" "$tmp/model"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
field() { sed -n "s/.*\"$1\": \"\\(\\([^\"\\\\]\\|\\\\.\\)*\\)\".*/\\1/p"; } # a JSON string field, still escaped

start() { # start TP PP MODEL [SERVER_FLAGS...]
  : >"$tmp/log" # emptied here: the background job's own redirection may come after the first grep below,
                # which then read the last server's "ready on" line
  mpirun --oversubscribe --bind-to none -np $(($1 * $2)) "$DINFER_SERVER" --model "$3" --tp "$1" --pp "$2" --port 0 \
    "${@:4}" >"$tmp/log" 2>&1 &
  mpid=$!
  for _ in $(seq 1 300); do
    grep -q "ready on" "$tmp/log" && break
    kill -0 "$mpid" 2>/dev/null || { echo "the server exited:"; cat "$tmp/log"; exit 1; }
    sleep 0.1
  done
  addr=$(sed -n 's/.*ready on \([^ ]*\) (pid.*/\1/p' "$tmp/log")
  [ -n "$addr" ] || { echo "the server never became ready:"; cat "$tmp/log"; exit 1; }
}
stop() { kill -TERM "$(sed -n 's/.*ready on [^ ]* (pid \([0-9]*\)).*/\1/p' "$tmp/log")"; wait "$mpid"; mpid=; }
gen() { "$DINFER_CLIENT" generate --server "$addr" "$@" 2>&1; }
expect_refused() { # expect_refused NEEDLE ARGS...
  local needle=$1; shift
  local out; out=$(gen "$@") && { fail "accepted: $*"; return; }
  grep -qF -- "$needle" <<<"$out" && echo "ok: $out" || fail "$*: $out"
}

# the reference: dinfer-run's decode of the same greedy run
want=$("$DINFER_RUN" --model "$tmp/model" --prompt "Once upon a time" --max-tokens 60 --ignore-eos --json 2>/dev/null |
       field text)
[ -n "$want" ] || { echo "dinfer-run gave no text"; exit 1; }
for split in "1 1" "2 2"; do
  read -r tp pp <<<"$split"
  start "$tp" "$pp" "$tmp/model"
  echo "== server tp=$tp pp=$pp on $addr"
  got=$(gen --prompt "Once upon a time" --max-tokens 60 --ignore-eos --json | field text)
  [ "$got" = "$want" ] && echo "ok: the streamed text equals dinfer-run's" || fail "text: got '$got' want '$want'"
  # stop strings: one token ("Lily"), two or three tokens ("park. One", "red ball"), never found
  for s in "Lily" "park. One" "red ball" "zebra"; do
    out=$(gen --prompt "Once upon a time" --max-tokens 60 --ignore-eos --stop "$s" --stop "xyz" --json)
    got=$(field text <<<"$out")
    if [ "$s" = zebra ]; then
      exp=$want reason=length
    else
      exp=${want%%"$s"*} reason=stop
    fi
    [ "$got" = "$exp" ] && grep -q "\"finish_reason\": \"$reason\"" <<<"$out" && echo "ok: stop \"$s\" ($reason)" ||
      fail "stop \"$s\": $out"
  done
  # the text as it streams (not JSON) is the same text
  plain=$(gen --prompt "Once upon a time" --max-tokens 60 --ignore-eos | head -n -1)
  plain=${plain#Once upon a time} # the client prints the prompt first
  [ "$(printf '%s' "$plain" | awk '{printf "%s%s", (NR > 1 ? "\\n" : ""), $0}' | sed 's/"/\\"/g')" = "$want" ] &&
    echo "ok: streamed plain text" || fail "plain text: $plain"
  expect_refused "prompt_text: the text is not valid UTF-8 at byte 2" --prompt $'ab\xffcd'
  expect_refused "stop string 1 is empty" --prompt "x" --stop "a" --stop ""
  expect_refused "stop string 0 is too long" --prompt "x" --stop "$(head -c 257 /dev/zero | tr '\0' a)"
  long=$(printf 'Once upon a time %.0s' $(seq 1 200))
  expect_refused "over the context length 512" --prompt "$long"
  # dinfer bench with text prompts of 40 tokens drawn from the tokenizer
  out=$("$DINFER_CLIENT" bench --server "$addr" --concurrency 4 --requests 8 --prompt-len 40 --gen-len 8 \
        --tokenizer "$tmp/model" --json 2>&1)
  grep -q '"requests": 8, "failed": 0' <<<"$out" && echo "ok: bench with text prompts" || fail "bench --tokenizer: $out"
  # still serving, ids as before
  out=$(gen --tokens 1,403 --max-tokens 3 --json)
  grep -q '"tokens": \[407, 261, 378\]' <<<"$out" && echo "ok: ids still served" || fail "ids after errors: $out"
  stop
done
# a tokenizer.json whose decoder multiplies "th" 8-fold six times over: the load-time probe (single
# characters) passes it, and a request whose text would hold "th" ends INTERNAL naming the decoder
# (its tokens were right; its text cannot be made), while the server keeps serving
case $want in *th*) ;; *) fail "the reference text holds no \"th\": the next check would test nothing" ;; esac
mkdir -p "$tmp/thmodel" && ln -s "$tmp/model/config.json" "$tmp/model/model.safetensors" "$tmp/thmodel/"
python3 - "$tmp/model/tokenizer.json" "$tmp/thmodel/tokenizer.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1], encoding="utf-8"))
t["decoder"]["decoders"] += [{"type": "Replace", "pattern": {"String": "th"}, "content": "th" * 8}] * 6
json.dump(t, open(sys.argv[2], "w", encoding="utf-8"))
PY
start 1 1 "$tmp/thmodel" --http-port 0 --ready-file "$tmp/ready"
expect_refused "the generated text could not be made: the tokenizer's decoder grows these tokens' text more than 64x" \
  --prompt "Once upon a time" --max-tokens 60 --ignore-eos
if command -v curl >/dev/null; then # the same over HTTP: 500, the message in OpenAI's error body
  read -r _ _ http <"$tmp/ready"
  code=$(curl -s -o "$tmp/body" -w '%{http_code}' -H 'Content-Type: application/json' "http://$http/v1/completions" \
    -d '{"prompt": "Once upon a time", "max_tokens": 60, "ignore_eos": true, "temperature": 0}')
  [ "$code" = 500 ] && grep -q "decoder grows these tokens' text" "$tmp/body" && echo "ok: HTTP 500 naming the decoder" ||
    fail "HTTP after the decoder's refusal: $code $(cat "$tmp/body")"
  # both counted as errors, not as requests that stopped (the metrics follow the step)
  finished() { curl -s "http://$http/metrics" | awk -v m="dinfer_requests_finished_total{reason=\"$1\"}" '$1 == m {print $2}'; }
  for _ in $(seq 1 50); do [ "$(finished error)" = 2 ] && break; sleep 0.1; done
  [ "$(finished error)" = 2 ] && [ "$(finished stop)" = 0 ] && echo "ok: counted as 2 errors" ||
    fail "metrics after the refusals: error $(finished error), stop $(finished stop)"
fi
out=$(gen --prompt "Once upon a" --max-tokens 1 --json)
grep -q '"tokens": \[378\]' <<<"$out" && grep -q '"text": " time"' <<<"$out" && echo "ok: still serving text" ||
  fail "after the decoder's refusal: $out"
stop

# a model folder without tokenizer.json: ids work, text is refused by name
start 1 1 "$(dirname "$0")/../golden/fixtures/llama_5layer_sharded"
expect_refused "the model has no tokenizer.json" --prompt "hello"
expect_refused "stop strings need the model's tokenizer.json" --tokens 1,2 --stop "x"
gen --tokens 1,2 --max-tokens 2 >/dev/null && echo "ok: ids without a tokenizer" || fail "ids without a tokenizer"
stop
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "server text: prompts, streamed text, stop strings and refusals as expected"
