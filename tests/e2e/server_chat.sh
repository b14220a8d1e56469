#!/usr/bin/env bash
# Chat completions over OpenAI's HTTP API, spoken by curl (read with jq), on the committed
# stories260K given a tokenizer_config.json with a Mistral-style chat template (it refuses turns
# that do not alternate): the prompt is the template's text tokenized without added specials
# (/tokenize with messages shows it), a whole and a streamed chat give the socket protocol's text
# for the same ids, n / seeds / stop / logprobs / max_completion_tokens, the template's own
# refusal, hostile requests (bad JSON, wrong types, unknown roles, empty and 10,000 messages, other
# content parts, invalid UTF-8, a slow sender) each get their 4xx and the server keeps serving, 64
# streamed chats at once equal the socket protocol's texts, the Prometheus counters move by
# what was served (promtool checks the exposition), and while the server drains /health and new
# requests get 503 on an open connection as running streams finish. Then a full queue (429) and the
# template's sources: none (chat refused, naming it), --chat-template overriding, a model template
# the interpreter cannot run (the server starts, chat says why), a --chat-template that does not
# parse (the job stops).
set -uo pipefail
tmp=$(mktemp -d)
cleanup() { [ -n "${mpid:-}" ] && kill -KILL "$mpid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
for t in curl jq; do command -v $t >/dev/null || { echo "SKIP: $t is not installed (launch/install-deps.sh)"; exit 77; }; done
src=$(cd "$(dirname "$0")/../../launch/stories260K" && pwd)
mkdir -p "$tmp/model"
for f in config.json model.safetensors tokenizer.json; do ln -s "$src/$f" "$tmp/model/$f"; done
cat >"$tmp/model/tokenizer_config.json" <<'EOF'
{"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ message['content'] | trim }}{% else %}{{ ' ' + message['content'] | trim + eos_token }}{% endif %}{% endfor %}"}
EOF
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

# start_server MODEL [ARGS...]: sets mpid, addr, base; returns 1 when the job ended instead
start_server() {
  local model=$1
  shift
  rm -f "$tmp/ready"
  mpirun --oversubscribe --bind-to none -np 1 "$DINFER_SERVER" --model "$model" --port 0 --http-port 0 \
    --ready-file "$tmp/ready" "$@" >"$tmp/log" 2>&1 &
  mpid=$!
  for _ in $(seq 1 300); do
    [ -s "$tmp/ready" ] && break
    kill -0 "$mpid" 2>/dev/null || { mpid=; return 1; }
    sleep 0.1
  done
  read -r addr pid http <"$tmp/ready"
  base="http://$http"
}
stop_server() {
  kill -TERM "$pid"
  wait "$mpid"
  mpid=
}
post() { curl -s -o "$tmp/body" -w '%{http_code}' -H 'Content-Type: application/json' "$base$1" -d "$2"; }
expect_error() { # STATUS PARAM PATH JSON [WORDS]: the status, the field, and the message's words
  local code; code=$(post "$3" "$4")
  local param; param=$(jq -r '.error.param // ""' "$tmp/body" 2>/dev/null)
  local msg; msg=$(jq -r '.error.message' "$tmp/body" 2>/dev/null)
  if [ "$code" = "$1" ] && [ "$param" = "$2" ] && [ -n "$msg" ] && [[ "$msg" == *"${5:-}"* ]]; then
    ok "$1 ($msg)"
  else
    fail "$3 $(head -c 200 <<<"$4"): status $code, body $(head -c 300 "$tmp/body")"
  fi
}
metric() { curl -s "$base/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
# PATTERN in the server's log: the ready file comes from the server itself, the log through mpirun's
# forwarding, which can be behind (CI's sanitizer build failed on that once): up to 5 s
grep_log() {
  for _ in $(seq 50); do
    grep -q -- "$1" "$tmp/log" && return 0
    sleep 0.1
  done
  return 1
}

start_server "$tmp/model" --max-frame-bytes 4194304 --frame-timeout 2 --drain-seconds 300 || { echo "the server exited:"; cat "$tmp/log"; exit 1; }
grep_log "chat template: tokenizer_config.json" && ok "the model's template loaded" || fail "log: $(cat "$tmp/log")"
echo "== socket $addr, HTTP $base"
prompt0=$(metric dinfer_prompt_tokens_total)
gen0=$(metric dinfer_generation_tokens_total)

# ---- the prompt: the template's text, tokenized as transformers tokenizes a chat ----
conv='[{"role": "user", "content": "  Once upon a time  "}, {"role": "assistant", "content": "there was a cat."},
       {"role": "user", "content": "The cat"}]'
code=$(post /tokenize '{"messages": '"$conv"'}')
ids=$(jq -c .tokens "$tmp/body")
text='<s>Once upon a time there was a cat.</s>The cat'
want_ids=$(post /tokenize '{"prompt": "'"$text"'", "add_special_tokens": false}' >/dev/null; jq -c .tokens "$tmp/body")
[ "$code" = 200 ] && [ "$ids" = "$want_ids" ] && [ "$(jq '.[0]' <<<"$ids")" = 1 ] &&
  ok "/tokenize messages = the rendered text's ids ($ids)" || fail "tokenize messages: $ids vs $want_ids"
post /tokenize '{"messages": '"$conv"', "add_special_tokens": true}' >/dev/null
[ "$(jq '.tokens[0:2]' -c "$tmp/body")" = "[1,1]" ] && ok "add_special_tokens: the post-processor's BOS before the template's" ||
  fail "add_special_tokens: $(cat "$tmp/body")"

# ---- whole and streamed chat: the socket protocol's text for the same ids ----
want=$("$DINFER_CLIENT" generate --server "$addr" --tokens "$(jq -r 'join(",")' <<<"$ids")" --max-tokens 40 \
       --ignore-eos --json 2>/dev/null | jq -r .text)
[ -n "$want" ] || { echo "the socket protocol gave no text"; cat "$tmp/log"; exit 1; }
code=$(post /v1/chat/completions '{"model": "'"$tmp/model"'", "messages": '"$conv"', "max_tokens": 40, "temperature": 0, "ignore_eos": true}')
[ "$code" = 200 ] && [ "$(jq -r '.choices[0].message.content' "$tmp/body")" = "$want" ] &&
  ok "chat = the socket protocol's text (\"${want:0:40}...\")" || fail "chat: $code $(cat "$tmp/body") want '$want'"
[ "$(jq -r '.object, .choices[0].message.role, .choices[0].finish_reason, .usage.prompt_tokens, .usage.completion_tokens,
     (.id | startswith("chatcmpl-"))' "$tmp/body" | tr '\n' ' ')" = "chat.completion assistant length $(jq length <<<"$ids") 40 true " ] &&
  ok "object, role, finish_reason, usage" || fail "chat fields: $(cat "$tmp/body")"
curl -sN "$base/v1/chat/completions" -d '{"messages": '"$conv"', "max_completion_tokens": 40, "temperature": 0,
  "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}}' >"$tmp/sse"
grep '^data: {' "$tmp/sse" | sed 's/^data: //' >"$tmp/chunks"
[ "$(jq -j '.choices[]?.delta.content // ""' "$tmp/chunks")" = "$want" ] && ok "streamed deltas joined = the same text" ||
  fail "stream text: $(jq -j '.choices[]?.delta.content // ""' "$tmp/chunks")"
[ "$(jq -s -r '[.[] | .object] | unique | join(",")' "$tmp/chunks")" = chat.completion.chunk ] &&
  [ "$(jq -s -r '.[0].choices[0].delta.role' "$tmp/chunks")" = assistant ] &&
  [ "$(jq -s -r '[.[1:][] | .choices[]?.delta.role // empty] | length' "$tmp/chunks")" = 0 ] &&
  ok "chat.completion.chunk; the role in the first delta only" || fail "chunks: $(head -c 600 "$tmp/chunks")"
[ "$(jq -s -r '[.[] | select(.choices | length > 0) | .choices[0].finish_reason] | (.[-1], (.[:-1] | all(. == null)))' \
     "$tmp/chunks" | tr '\n' ' ')" = "length true " ] && ok "finish_reason on the last choice chunk" || fail "finish_reason"
[ "$(jq -s -r '.[-1] | (.choices | length), .usage.completion_tokens' "$tmp/chunks" | tr '\n' ' ')" = "0 40 " ] &&
  [ "$(tail -n 2 "$tmp/sse" | head -n 1)" = "data: [DONE]" ] && ok "the usage chunk, then [DONE]" || fail "stream end"

# ---- n, seeds, stop, logprobs, default max_tokens ----
post /v1/chat/completions '{"messages": [{"role": "user", "content": "Once"}], "max_tokens": 12, "n": 3, "seed": 5}' >/dev/null
a=$(jq -c '[.choices[].message.content]' "$tmp/body")
post /v1/chat/completions '{"messages": [{"role": "user", "content": "Once"}], "max_tokens": 12, "n": 3, "seed": 5}' >/dev/null
[ "$(jq length <<<"$a")" = 3 ] && [ "$a" = "$(jq -c '[.choices[].message.content]' "$tmp/body")" ] &&
  [ "$(jq 'unique | length' <<<"$a")" -gt 1 ] && ok "n=3 seeded: three choices, the same again" || fail "n=3: $a"
stopword=$(head -n 1 <<<"$want" | awk '{print $4}')
post /v1/chat/completions '{"messages": '"$conv"', "max_tokens": 40, "temperature": 0, "stop": "'"$stopword"'"}' >/dev/null
[ "$(jq -r '.choices[0].message.content' "$tmp/body")" = "${want%%"$stopword"*}" ] &&
  [ "$(jq -r '.choices[0].finish_reason' "$tmp/body")" = stop ] && ok "stop \"$stopword\"" || fail "stop: $(cat "$tmp/body")"
post /v1/chat/completions '{"messages": '"$conv"', "max_tokens": 5, "temperature": 0, "logprobs": true, "top_logprobs": 3}' >/dev/null
[ "$(jq -r '.choices[0].logprobs.content | length, ([.[] | (.top_logprobs | length) == 3 and .logprob <= 0 and
     (.bytes | length) > 0] | all)' "$tmp/body" | tr '\n' ' ')" = "5 true " ] && ok "logprobs: 5 tokens, 3 alternatives, bytes" ||
  fail "logprobs: $(cat "$tmp/body")"
post /v1/chat/completions '{"messages": [{"role": "user", "content": [{"type": "text", "text": "Once upon"},
  {"type": "text", "text": "a time"}]}], "max_tokens": 3, "temperature": 0}' >/dev/null
[ "$(jq -r .usage.prompt_tokens "$tmp/body")" = \
  "$(post /tokenize '{"prompt": "<s>Once upon\na time", "add_special_tokens": false}' >/dev/null; jq .count "$tmp/body")" ] &&
  ok "text parts joined by a newline" || fail "content parts"
post /v1/chat/completions '{"messages": [{"role": "user", "content": "Once"}], "temperature": 0, "ignore_eos": true}' >/dev/null
[ "$(jq -r '.usage.prompt_tokens + .usage.completion_tokens' "$tmp/body")" = 512 ] &&
  ok "no max_tokens: what the context leaves ($(jq -r .usage.completion_tokens "$tmp/body") after $(jq -r .usage.prompt_tokens "$tmp/body") prompt tokens)" ||
  fail "default max_tokens: $(jq -c .usage "$tmp/body")"

# ---- refusals: each its status and field, the server goes on ----
expect_error 400 messages /v1/chat/completions '{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}' \
  "Conversation roles must alternate"
expect_error 400 messages /v1/chat/completions '{"messages": []}' "non-empty"
expect_error 400 messages /v1/chat/completions '{"messages": "hello"}'
expect_error 400 messages /v1/chat/completions '{"model": "x"}'
expect_error 400 "messages[0]" /v1/chat/completions '{"messages": [{"role": "wizard", "content": "x"}]}' "wizard"
expect_error 400 "messages[0]" /v1/chat/completions '{"messages": [{"role": "tool", "content": "x"}]}' "tools"
expect_error 400 "messages[1]" /v1/chat/completions '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant"}]}' "content is required"
expect_error 400 "messages[0]" /v1/chat/completions '{"messages": [{"role": 7, "content": "x"}]}'
expect_error 400 "messages[0]" /v1/chat/completions '{"messages": ["hi"]}'
expect_error 400 "messages[0].content" /v1/chat/completions '{"messages": [{"role": "user", "content": 42}]}'
expect_error 400 "messages[0].content" /v1/chat/completions '{"messages": [{"role": "user", "content": [{"type": "image_url",
  "image_url": {"url": "http://x"}}]}]}' "image_url"
expect_error 400 "messages[0]" /v1/chat/completions '{"messages": [{"role": "user", "content": "x", "tool_calls": []}]}' "tools"
expect_error 400 "messages[0]" /v1/chat/completions '{"messages": [{"role": "user", "content": "x", "mood": "happy"}]}' "mood"
expect_error 400 tools /v1/chat/completions '{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}'
expect_error 400 top_logprobs /v1/chat/completions '{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}'
expect_error 400 top_logprobs /v1/chat/completions '{"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}'
expect_error 400 max_completion_tokens /v1/chat/completions '{"messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "max_completion_tokens": 4}'
expect_error 400 temperature /v1/chat/completions '{"messages": [{"role": "user", "content": "x"}], "temperature": "warm"}'
expect_error 400 "" /v1/chat/completions '{"messages": [{"role": "user", "content": "x"}'
expect_error 400 "" /v1/chat/completions "$(printf '{"messages": [{"role": "user", "content": "\xc3\x28"}]}')" "UTF-8"
expect_error 404 model /v1/chat/completions '{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}'
expect_error 400 prompt /v1/chat/completions "{\"messages\": [{\"role\": \"user\", \"content\": \"$(printf 'Once upon a time %.0s' $(seq 1 200))\"}]}" "context"
# 10,000 messages: rendered, then over the context
python3 -c 'import json; print(json.dumps({"messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": "hi"} for i in range(10000)]}))' >"$tmp/many" 2>/dev/null ||
  jq -n '{messages: [range(10000) | {role: (if . % 2 == 0 then "user" else "assistant" end), content: "hi"}]}' >"$tmp/many"
code=$(curl -s -o "$tmp/body" -w '%{http_code}' "$base/v1/chat/completions" --data-binary @"$tmp/many")
[ "$code" = 400 ] && [ "$(jq -r .error.param "$tmp/body")" = prompt ] && ok "400 for 10,000 messages ($(jq -r .error.message "$tmp/body"))" ||
  fail "10,000 messages: $code $(head -c 300 "$tmp/body")"
# a slow sender: the body trickles in slower than --frame-timeout allows; the connection is closed
( exec 3<>"/dev/tcp/${http%:*}/${http##*:}" && printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 80\r\n\r\n{"mess' >&3 &&
  sleep 3 && printf 'ages": []}' >&3 2>/dev/null; timeout 3 cat <&3 ) >"$tmp/slow" 2>/dev/null
[ ! -s "$tmp/slow" ] || ! grep -q " 200 " "$tmp/slow" && ok "a slow sender is cut off (--frame-timeout 2)" || fail "slow sender: $(head -c 200 "$tmp/slow")"
post /v1/chat/completions '{"messages": '"$conv"', "max_tokens": 40, "temperature": 0, "ignore_eos": true}' >/dev/null
[ "$(jq -r '.choices[0].message.content' "$tmp/body")" = "$want" ] && ok "still serving after the refusals" ||
  fail "after refusals: $(cat "$tmp/body")"

# ---- 64 streamed chats at once: each the socket protocol's text for its conversation ----
for i in $(seq 1 64); do
  c='[{"role": "user", "content": "Once upon a time there was a '"$(sed -n "$((i % 8 + 1))p" <<<$'dog\ncat\nbird\nking\ngirl\nboy\ntree\nfish')"'"},
      {"role": "assistant", "content": "It was '"$i"' years old."}, {"role": "user", "content": "One day"}]'
  echo "$c" >"$tmp/conv$i"
  curl -sN "$base/v1/chat/completions" -d '{"messages": '"$c"', "max_tokens": 48, "temperature": 0, "stream": true}' >"$tmp/c$i" &
done
wait $(jobs -p | grep -v "^$mpid\$") 2>/dev/null
same=0
for i in $(seq 1 64); do
  t=$(post /tokenize '{"messages": '"$(cat "$tmp/conv$i")"'}' >/dev/null; jq -r '.tokens | join(",")' "$tmp/body")
  s=$("$DINFER_CLIENT" generate --server "$addr" --tokens "$t" --max-tokens 48 --json 2>/dev/null | jq -r .text)
  h=$(grep '^data: {' "$tmp/c$i" | sed 's/^data: //' | jq -j '.choices[]?.delta.content // ""')
  [ -n "$s" ] && [ "$h" = "$s" ] && same=$((same + 1))
done
[ $same = 64 ] && ok "64 concurrent streamed chats = the socket protocol's 64 texts" || fail "concurrent: $same of 64"

# ---- metrics ----
curl -s "$base/metrics" >"$tmp/metrics"
[ "$(awk '$1 == "dinfer_prompt_tokens_total" {print $2}' "$tmp/metrics")" -gt "$prompt0" ] &&
  [ "$(awk '$1 == "dinfer_generation_tokens_total" {print $2}' "$tmp/metrics")" -ge $((gen0 + 40 + 40 + 36 + 64 * 1)) ] &&
  ok "prompt and generation counters moved" || fail "counters"
if command -v promtool >/dev/null; then
  promtool check metrics <"$tmp/metrics" && ok "promtool check metrics" || fail "promtool: $(promtool check metrics <"$tmp/metrics" 2>&1)"
else
  fail "promtool is not installed (launch/install-deps.sh installs Debian's prometheus package)"
fi

# ---- draining: on a connection already open, /health and new requests get 503 ----
status_on3() { # a request on the open connection fd 3; echoes the status and reads the whole answer
  printf '%s /%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s' "$1" "$2" "${#3}" "$3" >&3
  local line len=0 code
  read -r -t 5 line <&3 || return 1
  code=$(awk '{print $2}' <<<"$line")
  while read -r -t 5 line <&3 && [ "$line" != $'\r' ]; do
    [[ "${line,,}" == content-length:* ]] && len=$(tr -dc 0-9 <<<"$line")
  done
  [ "$len" -gt 0 ] && head -c "$len" <&3 >/dev/null
  echo "$code"
}
exec 3<>"/dev/tcp/${http%:*}/${http##*:}"
[ "$(status_on3 GET health '')" = 200 ] && ok "/health 200 while serving" || fail "/health before draining"
cpids=()
for i in 1 2 3 4; do # 64 sequences of 480 tokens: a drain of seconds (a minute under ASan: --drain-seconds 300)
  curl -sN "$base/v1/completions" -d '{"prompt": "Once", "max_tokens": 480, "ignore_eos": true, "stream": true,
    "n": 16}' >"$tmp/drain$i" &
  cpids+=($!)
done
sleep 0.5
kill -TERM "$pid"
sleep 0.3
[ "$(status_on3 GET health '')" = 503 ] && ok "/health 503 while draining" || fail "/health while draining"
[ "$(status_on3 POST v1/chat/completions '{"messages": [{"role": "user", "content": "x"}]}')" = 503 ] &&
  ok "a new request while draining: 503" || fail "a request while draining"
exec 3>&-
wait "${cpids[@]}"
done_streams=0
for i in 1 2 3 4; do
  [ "$(tail -n 2 "$tmp/drain$i" | head -n 1)" = "data: [DONE]" ] &&
    [ "$(grep -c '"finish_reason":"length"' "$tmp/drain$i")" = 16 ] && done_streams=$((done_streams + 1))
done
[ $done_streams = 4 ] && ok "the 4 running streams (64 choices) finished during the drain" ||
  fail "drained streams: $done_streams of 4""
wait "$mpid"
mpid="

# ---- where the template comes from ----
mkdir -p "$tmp/plain" "$tmp/broken"
for f in config.json model.safetensors tokenizer.json; do ln -s "$src/$f" "$tmp/plain/$f"; ln -s "$src/$f" "$tmp/broken/$f"; done
start_server "$tmp/plain" --max-queue 2 || { echo "no start:"; cat "$tmp/log"; exit 1; }
expect_error 400 messages /v1/chat/completions '{"messages": [{"role": "user", "content": "Once"}]}' "no chat template"
# a full queue: three choices where two fit
expect_error 429 "" /v1/completions '{"prompt": "Once", "max_tokens": 300, "n": 3, "ignore_eos": true}' "queue is full"
[ "$(jq -r .error.type "$tmp/body")" = rate_limit_error ] && ok "429 is a rate_limit_error" || fail "429 type: $(cat "$tmp/body")"
code=$(post /v1/completions '{"prompt": "Once", "max_tokens": 3, "n": 2}')
[ "$code" = 200 ] && ok "two choices fit the queue of 2" || fail "after 429: $code $(cat "$tmp/body")"
stop_server
start_server "$tmp/plain" --chat-template "$src/../story.jinja" || { echo "no start:"; cat "$tmp/log"; exit 1; }
post /v1/chat/completions '{"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Once upon"},
  {"role": "assistant", "content": " a time"}], "max_tokens": 8, "temperature": 0}' >/dev/null
[ "$(jq -r .usage.prompt_tokens "$tmp/body")" = 5 ] && [ "$(jq -r '.choices[0].message.content' "$tmp/body")" = "$(
  "$DINFER_CLIENT" generate --server "$addr" --prompt "Once upon a time" --max-tokens 8 --json | jq -r .text)" ] &&
  ok "--chat-template launch/story.jinja (the README's): the story's beginning, as a text prompt gives it" ||
  fail "--chat-template: $(cat "$tmp/body")"
stop_server
printf '%s' '{"chat_template": "{% include \"other.jinja\" %}"}' >"$tmp/broken/tokenizer_config.json"
start_server "$tmp/broken" || { echo "no start:"; cat "$tmp/log"; exit 1; }
grep_log "the 'include' tag is not supported" && ok "an unusable model template: the server starts and says why" || fail "log"
expect_error 400 messages /v1/chat/completions '{"messages": [{"role": "user", "content": "x"}]}' "'include'"
code=$(post /v1/completions '{"prompt": "Once", "max_tokens": 3}')
[ "$code" = 200 ] && ok "completions still served" || fail "completions: $code"
stop_server
printf '%s' '{% for x in %}' >"$tmp/bad.jinja"
if start_server "$tmp/plain" --chat-template "$tmp/bad.jinja"; then
  fail "a --chat-template that does not parse was accepted"
  stop_server
else
  grep -q -- "--chat-template" "$tmp/log" && grep -q "line 1" "$tmp/log" && ok "a bad --chat-template stops the job: $(grep -o 'chat template.*' "$tmp/log" | head -1)" ||
    fail "bad --chat-template: $(cat "$tmp/log")"
fi
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; tail -20 "$tmp/log"; exit 1; }
echo "server chat: chat completions, chat tokenize, template sources and refusals as expected"
