#!/usr/bin/env bash
# OpenAI's HTTP API of dinfer-server, spoken by curl (responses read with jq), on the committed
# stories260K (launch/stories260K) under mpirun 1x1, with an auth token: every endpoint, whole and
# streamed (SSE) completions equal to the socket protocol's text for the same greedy request, n
# choices, stop strings, logprobs, usage; each kind of bad request gets its status and OpenAI's
# error object naming the field, and the server keeps serving; a client that hangs up mid-stream
# cancels its request; the Prometheus counters move by what was served.
set -uo pipefail
tmp=$(mktemp -d)
cleanup() { [ -n "${mpid:-}" ] && kill -KILL "$mpid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
ln -s "$(cd "$(dirname "$0")/../../launch/stories260K" && pwd)" "$tmp/model"
for t in curl jq; do command -v $t >/dev/null || { echo "SKIP: $t is not installed (launch/install-deps.sh)"; exit 77; }; done
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

echo "s3cret-token" >"$tmp/token"
mpirun --oversubscribe --bind-to none -np 1 "$DINFER_SERVER" --model "$tmp/model" --port 0 --http-port 0 \
  --auth-token-file "$tmp/token" --max-frame-bytes 65536 --ready-file "$tmp/ready" >"$tmp/log" 2>&1 &
mpid=$!
for _ in $(seq 1 300); do
  [ -s "$tmp/ready" ] && break
  kill -0 "$mpid" 2>/dev/null || { echo "the server exited:"; cat "$tmp/log"; exit 1; }
  sleep 0.1
done
read -r addr pid http <"$tmp/ready"
[ -n "${http:-}" ] || { echo "no HTTP address in the ready file:"; cat "$tmp/ready" "$tmp/log"; exit 1; }
base="http://$http"
auth=(-H "Authorization: Bearer s3cret-token")
echo "== socket $addr, HTTP $base"

# post PATH JSON -> the body in $tmp/body, the status echoed
post() { curl -s -o "$tmp/body" -w '%{http_code}' "${auth[@]}" -H 'Content-Type: application/json' "$base$1" -d "$2"; }
# expect_error STATUS PARAM PATH JSON: the status, and OpenAI's error object naming PARAM ("" for null)
expect_error() {
  local code; code=$(post "$3" "$4")
  local param; param=$(jq -r '.error.param // ""' "$tmp/body" 2>/dev/null)
  local msg; msg=$(jq -r '.error.message' "$tmp/body" 2>/dev/null)
  if [ "$code" = "$1" ] && [ "$param" = "$2" ] && [ -n "$msg" ] && jq -e '.error.type' "$tmp/body" >/dev/null; then
    ok "$1 ($msg)"
  else
    fail "$3 $4: status $code, body $(head -c 300 "$tmp/body")"
  fi
}
metric() { curl -s "$base/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

# ---- open endpoints, authentication ----
[ "$(curl -s -o "$tmp/body" -w '%{http_code}' "$base/health")" = 200 ] && ok "/health 200 without a token" ||
  fail "/health"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/metrics")" = 200 ] && ok "/metrics 200 without a token" ||
  fail "/metrics"
code=$(curl -s -o "$tmp/body" -w '%{http_code}' "$base/v1/models")
[ "$code" = 401 ] && [ "$(jq -r .error.type "$tmp/body")" = authentication_error ] && ok "401 without a token" ||
  fail "models without a token: $code $(cat "$tmp/body")"
code=$(curl -s -o "$tmp/body" -w '%{http_code}' -H "Authorization: Bearer wrong" "$base/v1/models")
[ "$code" = 401 ] && ok "401 with a wrong token" || fail "wrong token: $code"
curl -s "${auth[@]}" "$base/v1/models" >"$tmp/body"
model=$(jq -r '.data[0].id' "$tmp/body")
[ "$model" = "$tmp/model" ] && [ "$(jq -r .object "$tmp/body")" = list ] && ok "/v1/models lists $model" ||
  fail "/v1/models: $(cat "$tmp/body")"

gen0=$(metric dinfer_generation_tokens_total)
len0=$(metric 'dinfer_requests_finished_total{reason="length"}')

# ---- completions: the socket protocol's text, whole and streamed ----
want=$("$DINFER_CLIENT" generate --server "$addr" --auth-token-file "$tmp/token" --prompt "Once upon a time" \
       --max-tokens 40 --ignore-eos --json 2>/dev/null | jq -r .text)
[ -n "$want" ] || { echo "the socket protocol gave no text"; cat "$tmp/log"; exit 1; }
req='{"model": "'"$tmp/model"'", "prompt": "Once upon a time", "max_tokens": 40, "temperature": 0}'
code=$(post /v1/completions "$req")
got=$(jq -r '.choices[0].text' "$tmp/body")
[ "$code" = 200 ] && [ "$got" = "$want" ] && ok "whole completion = the socket protocol's text" ||
  fail "completion: $code $(cat "$tmp/body") want '$want'"
[ "$(jq -r '.object, .choices[0].finish_reason, .usage.completion_tokens, (.usage.prompt_tokens > 0),
     (.usage.total_tokens == .usage.prompt_tokens + .usage.completion_tokens), (.id | startswith("cmpl-"))' \
     "$tmp/body" | tr '\n' ' ')" = "text_completion length 40 true true true " ] && ok "object, finish_reason, usage" ||
  fail "completion fields: $(cat "$tmp/body")"
curl -sN "${auth[@]}" "$base/v1/completions" -d '{"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0,
  "stream": true, "stream_options": {"include_usage": true}}' >"$tmp/sse"
grep '^data: {' "$tmp/sse" | sed 's/^data: //' >"$tmp/chunks"
joined=$(jq -j '.choices[]?.text' "$tmp/chunks")
[ "$joined" = "$want" ] && ok "SSE chunks joined = the same text" || fail "SSE text '$joined'"
[ "$(tail -n 2 "$tmp/sse" | head -n 1)" = "data: [DONE]" ] && ok "the stream ends with data: [DONE]" ||
  fail "stream end: $(tail -n 3 "$tmp/sse")"
[ "$(jq -s -r '[.[] | select(.choices | length > 0) | .choices[0].finish_reason] | (.[-1], (.[:-1] | all(. == null)))' \
     "$tmp/chunks" | tr '\n' ' ')" = "length true " ] && ok "finish_reason on the last choice chunk only" ||
  fail "finish_reason in the stream"
[ "$(jq -s -r '.[-1] | (.choices | length), .usage.completion_tokens' "$tmp/chunks" | tr '\n' ' ')" = "0 40 " ] &&
  ok "include_usage: a last chunk with usage and no choices" || fail "usage chunk: $(tail -n 4 "$tmp/sse")"
[ "$(grep -c '^data: ' "$tmp/sse")" -gt 10 ] && ok "streamed in $(grep -c '^data: ' "$tmp/sse") events" ||
  fail "too few events"

# ---- n, seeds, stop strings, logprobs, a prompt of ids ----
post /v1/completions '{"prompt": "Once", "max_tokens": 12, "temperature": 1.0, "n": 3, "seed": 7}' >/dev/null
a=$(jq -c '[.choices[].text]' "$tmp/body")
post /v1/completions '{"prompt": "Once", "max_tokens": 12, "temperature": 1.0, "n": 3, "seed": 7}' >/dev/null
b=$(jq -c '[.choices[].text]' "$tmp/body")
[ "$(jq 'length' <<<"$a")" = 3 ] && [ "$a" = "$b" ] && [ "$(jq 'unique | length' <<<"$a")" -gt 1 ] &&
  ok "n=3 seeded: three different choices, the same again with the same seed" || fail "n=3: $a / $b"
[ "$(jq '.usage.completion_tokens' "$tmp/body")" = 36 ] && ok "usage counts every choice's tokens" ||
  fail "usage of n=3: $(jq -c .usage "$tmp/body")"
stopword=$(awk '{print $5}' <<<"$want")
post /v1/completions '{"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0, "stop": ["'"$stopword"'", "zzz"]}' >/dev/null
[ "$(jq -r '.choices[0].text' "$tmp/body")" = "${want%%"$stopword"*}" ] &&
  [ "$(jq -r '.choices[0].finish_reason' "$tmp/body")" = stop ] && ok "stop \"$stopword\" ends the text before it" ||
  fail "stop: $(cat "$tmp/body")"
post /v1/completions '{"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "logprobs": 2}' >/dev/null
[ "$(jq -r '.choices[0].logprobs | (.tokens | length), (.token_logprobs | length), (.text_offset | length),
     ([.top_logprobs[] | length <= 2 and length >= 1] | all), ([.token_logprobs[] | . <= 0] | all)' "$tmp/body" |
     tr '\n' ' ')" = "6 6 6 true true " ] && ok "logprobs: 6 tokens, 2 alternatives each" ||
  fail "logprobs: $(cat "$tmp/body")"
post /v1/completions '{"prompt": "Once", "max_tokens": 3, "temperature": 0}' >/dev/null
[ "$(jq -r '.choices[0].text' "$tmp/body")" = " upon a time" ] && ok "the text continues the prompt (\" upon a time\")" ||
  fail "continuation: $(cat "$tmp/body")"
ids=$(curl -s "${auth[@]}" "$base/tokenize" -d '{"prompt": "Once upon a time"}' | jq -c .tokens)
[ "$ids" = "$("$DINFER_TOKENIZE" --tokenizer "$tmp/model" <<<"Once upon a time" | jq -c .)" ] || true
post /v1/completions '{"prompt": '"$ids"', "max_tokens": 40, "temperature": 0}' >/dev/null
[ "$(jq -r '.choices[0].text' "$tmp/body")" = "$want" ] && ok "a prompt of token ids ($ids) gives the same text" ||
  fail "ids prompt: $(cat "$tmp/body")"
[ "$(curl -s "${auth[@]}" "$base/detokenize" -d '{"tokens": '"$ids"'}' | jq -r .prompt)" = "<s> Once upon a time" ] &&
  ok "/detokenize" || fail "/detokenize"
[ "$(curl -s "${auth[@]}" "$base/tokenize" -d '{"prompt": "Once upon a time"}' | jq -r .count)" = \
  "$(jq length <<<"$ids")" ] && ok "/tokenize count" || fail "/tokenize count"

# ---- refusals: each its status and field; the server goes on ----
expect_error 400 "" /v1/completions '{"prompt": "x", '
expect_error 400 "" /v1/completions '[1, 2]'
expect_error 400 temperature /v1/completions '{"prompt": "x", "temperature": "hot"}'
expect_error 400 temperature /v1/completions '{"prompt": "x", "temperature": -1}'
expect_error 400 max_tokens /v1/completions '{"prompt": "x", "max_tokens": 0}'
expect_error 400 n /v1/completions '{"prompt": "x", "n": 17}'
expect_error 400 logprobs /v1/completions '{"prompt": "x", "logprobs": 21}'
expect_error 400 echo /v1/completions '{"prompt": "x", "echo": true}'
expect_error 400 best_of /v1/completions '{"prompt": "x", "best_of": 3}'
expect_error 400 suffix /v1/completions '{"prompt": "x", "suffix": "end"}'
expect_error 400 logit_bias /v1/completions '{"prompt": "x", "logit_bias": {"5": 10}}'
expect_error 400 frobnicate /v1/completions '{"prompt": "x", "frobnicate": 1}'
expect_error 400 prompt /v1/completions '{"max_tokens": 3}'
expect_error 400 prompt /v1/completions '{"prompt": ["a", "b"]}'
expect_error 400 stop /v1/completions '{"prompt": "x", "stop": [""]}'
expect_error 400 stream_options /v1/completions '{"prompt": "x", "stream_options": {"include_usage": true}}'
expect_error 400 prompt /v1/completions "{\"prompt\": \"$(printf 'Once upon a time %.0s' $(seq 1 200))\"}"
expect_error 400 "" /v1/completions "$(printf '{"prompt": "ab\xffcd"}')"
expect_error 404 model /v1/completions '{"model": "gpt-4", "prompt": "x"}'
[ "$(jq -r .error.code "$tmp/body")" = model_not_found ] && ok "code model_not_found" || fail "404 code"
expect_error 404 "" /v1/nothing '{}'
code=$(curl -s -o "$tmp/body" -w '%{http_code}' "${auth[@]}" "$base/v1/completions")
[ "$code" = 405 ] && ok "405 for GET /v1/completions" || fail "GET completions: $code"
head -c 100000 /dev/zero | tr '\0' a | sed 's/^/{"prompt": "/; s/$/"}/' >"$tmp/big"
code=$(curl -s -o "$tmp/body" -w '%{http_code}' "${auth[@]}" "$base/v1/completions" --data-binary @"$tmp/big")
[ "$code" = 413 ] && ok "413 for a 100 KB body (limit 64 KiB)" || fail "big body: $code"
# a request line of 1 MB, on a raw socket (too long for curl's command line and config files):
# libmicrohttpd answers 414 once its 32 KiB buffer is full and closes, which may reset the
# connection before the answer can be read here; the server's log tells what it answered
( exec 3<>"/dev/tcp/${http%:*}/${http##*:}" && trap '' PIPE &&
  { printf 'GET /v1/models?'; head -c 1000000 /dev/zero | tr '\0' a; printf ' HTTP/1.1\r\nHost: x\r\n\r\n'; } >&3 &&
  timeout 5 cat <&3 ) >"$tmp/longline" 2>/dev/null
code=$(head -n 1 "$tmp/longline" | awk '{print $2}')
# the server logs its answer as it closes, which can come just after this side sees the reset
for _ in $(seq 20); do
  [ "${code:0:1}" = 4 ] || grep -q "HTTP response code is 414" "$tmp/log" && break
  sleep 0.1
done
if [ "${code:0:1}" = 4 ] || grep -q "HTTP response code is 414" "$tmp/log"; then
  ok "414 for a 1 MB request line"
else
  fail "1 MB request line: '$code'"
fi
hdrs=(); for i in $(seq 1 3000); do hdrs+=(-H "X-Header-$i: value"); done
code=$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "${hdrs[@]}" "$base/v1/models")
[ "${code:0:1}" = 4 ] && ok "$code for 3,000 headers" || fail "3,000 headers: $code"
post /v1/completions '{"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0}' >/dev/null
[ "$(jq -r '.choices[0].text' "$tmp/body")" = "$want" ] && ok "still serving after the refusals" ||
  fail "after refusals: $(cat "$tmp/body")"

# ---- a client that hangs up mid-stream cancels its request ----
can0=$(metric 'dinfer_requests_finished_total{reason="cancelled"}')
curl -sN "${auth[@]}" "$base/v1/completions" -d '{"prompt": "Once", "max_tokens": 400, "temperature": 0,
  "stream": true}' 2>/dev/null | head -c 600 >/dev/null
for _ in $(seq 1 50); do
  [ "$(metric 'dinfer_requests_finished_total{reason="cancelled"}')" = $((can0 + 1)) ] && break
  sleep 0.1
done
[ "$(metric 'dinfer_requests_finished_total{reason="cancelled"}')" = $((can0 + 1)) ] &&
  ok "hanging up cancels the request" || fail "cancel on hang-up: $(curl -s "$base/metrics" | grep finished)"

# ---- concurrency: 16 streams at once, each the socket protocol's text ----
for i in $(seq 1 16); do
  curl -sN "${auth[@]}" "$base/v1/completions" -d '{"prompt": "Once upon a time", "max_tokens": 40,
    "temperature": 0, "stream": true}' >"$tmp/c$i" &
done
wait $(jobs -p | grep -v "^$mpid\$") 2>/dev/null
same=0
for i in $(seq 1 16); do
  [ "$(grep '^data: {' "$tmp/c$i" | sed 's/^data: //' | jq -j '.choices[]?.text')" = "$want" ] && same=$((same + 1))
done
[ $same = 16 ] && ok "16 concurrent streams, each the same text" || fail "concurrent: $same of 16"

# ---- metrics: the counters moved by what was served ----
curl -s "$base/metrics" >"$tmp/metrics"
gen1=$(awk '$1 == "dinfer_generation_tokens_total" {print $2}' "$tmp/metrics")
len1=$(awk '$1 == "dinfer_requests_finished_total{reason=\"length\"}" {print $2}' "$tmp/metrics")
[ $((gen1 - gen0)) -ge $((40 + 40 + 40 + 36 + 6 + 40 + 40 + 16 * 40)) ] && ok "generation tokens +$((gen1 - gen0))" ||
  fail "generation tokens moved by $((gen1 - gen0))"
[ $((len1 - len0)) -ge 24 ] && ok "finished by length +$((len1 - len0))" || fail "finished{length} +$((len1 - len0))"
for m in dinfer_requests_running dinfer_requests_waiting dinfer_kv_cache_usage_ratio dinfer_prompt_tokens_total \
  dinfer_preemptions_total dinfer_time_to_first_token_seconds_count dinfer_time_per_output_token_seconds_count \
  dinfer_e2e_request_latency_seconds_count dinfer_step_duration_seconds_count dinfer_engine_steps_in_flight \
  dinfer_engine_steps_overlapped_total dinfer_iteration_tokens_count; do
  grep -q "^$m " "$tmp/metrics" || fail "metric $m missing"
done
steps=$(awk '$1 == "dinfer_engine_steps_total" {print $2}' "$tmp/metrics")
[ "${steps:-0}" -ge 40 ] && ok "engine steps $steps" || fail "dinfer_engine_steps_total is ${steps:-missing}"
iters=$(awk '$1 == "dinfer_iteration_tokens_count" {print $2}' "$tmp/metrics")
big=$(awk '$1 == "dinfer_iteration_tokens_bucket{le=\"+Inf\"}" {n = $2}
  $1 == "dinfer_iteration_tokens_bucket{le=\"2048\"}" {k = $2} END {print n - k}' "$tmp/metrics")
# an idle server has taken back every step it started; none exceeds --max-batch-tokens (2048 by default)
[ "$iters" = "$steps" ] && [ "$big" = 0 ] && ok "iteration tokens: $iters steps, none over 2048 tokens" ||
  fail "dinfer_iteration_tokens_count ${iters:-missing} against $steps steps, $big over 2048 tokens"
[ "$(awk '$1 == "dinfer_time_to_first_token_seconds_bucket{le=\"+Inf\"}" {print $2}' "$tmp/metrics")" = \
  "$(awk '$1 == "dinfer_time_to_first_token_seconds_count" {print $2}' "$tmp/metrics")" ] &&
  ok "histograms: +Inf bucket = count" || fail "histogram +Inf"
if command -v promtool >/dev/null; then
  promtool check metrics <"$tmp/metrics" && ok "promtool check metrics" || fail "promtool: $(promtool check metrics <"$tmp/metrics" 2>&1)"
else
  echo "note: promtool not installed: the exposition format is not checked by it here"
fi

# ---- draining: /health says 503, the server stops ----
kill -TERM "$pid"
wait "$mpid"
mpid=
grep -q "stopped" "$tmp/log" && ok "stopped on SIGTERM" || fail "stop: $(tail -5 "$tmp/log")"
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; tail -20 "$tmp/log"; exit 1; }
echo "server HTTP: OpenAI completions, tokenize, models, health, metrics and refusals as expected"
