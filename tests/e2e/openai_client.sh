#!/usr/bin/env bash
# OpenAI's official client library (the `openai` npm package, installed into this test's scratch
# folder from the npm registry) against dinfer-server's HTTP API, with an auth token, on the
# committed stories260K given a chat template: a completion, a streamed chat and the same chat
# whole give the socket protocol's text for the same ids; a bad request and a wrong key surface as
# the library's BadRequestError (param named) and AuthenticationError. Skips, saying so, without
# node and npm or when the registry cannot be reached.
set -uo pipefail
tmp=$(mktemp -d)
cleanup() { [ -n "${mpid:-}" ] && kill -KILL "$mpid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
for t in node npm curl jq; do command -v $t >/dev/null || { echo "SKIP: $t is not installed"; exit 77; }; done
here=$(cd "$(dirname "$0")" && pwd)
if ! (cd "$tmp" && timeout 300 npm install --no-audit --no-fund --loglevel=error --prefix "$tmp/node" openai@6 >"$tmp/npm.log" 2>&1); then
  echo "SKIP: npm could not install the openai package (no registry?):"; tail -5 "$tmp/npm.log"; exit 77
fi
cp "$here/openai_client.mjs" "$tmp/node/"
src=$(cd "$here/../../launch/stories260K" && pwd)
mkdir -p "$tmp/model"
for f in config.json model.safetensors tokenizer.json; do ln -s "$src/$f" "$tmp/model/$f"; done
cat >"$tmp/model/tokenizer_config.json" <<'JSON'
{"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}[{{ m.content }}] {% else %}{{ m.content }}{% endif %}{% endfor %}"}
JSON
echo "the-key" >"$tmp/token"
mpirun --oversubscribe --bind-to none -np 1 "$DINFER_SERVER" --model "$tmp/model" --port 0 --http-port 0 \
  --auth-token-file "$tmp/token" --ready-file "$tmp/ready" >"$tmp/log" 2>&1 &
mpid=$!
for _ in $(seq 1 300); do
  [ -s "$tmp/ready" ] && break
  kill -0 "$mpid" 2>/dev/null || { echo "the server exited:"; cat "$tmp/log"; exit 1; }
  sleep 0.1
done
read -r addr pid http <"$tmp/ready"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }
(cd "$tmp/node" && BASE="http://$http" KEY=the-key MODEL="$tmp/model" timeout 120 node openai_client.mjs) >"$tmp/out" 2>"$tmp/err" ||
  { echo "the client failed:"; cat "$tmp/err"; tail -5 "$tmp/log"; exit 1; }
echo "client: $(node -e "console.log(require('$tmp/node/node_modules/openai/package.json').version)" 2>/dev/null ||
  jq -r .version "$tmp/node/node_modules/openai/package.json") of the openai package"
o=$tmp/out
want_c=$("$DINFER_CLIENT" generate --server "$addr" --auth-token-file "$tmp/token" --prompt "Once upon a time" --max-tokens 20 --json | jq -r .text)
ids=$(curl -s -H "Authorization: Bearer the-key" "http://$http/tokenize" -d '{"messages": [{"role": "system", "content": "Tell a story."},
  {"role": "user", "content": "Once upon a time"}]}' | jq -r '.tokens | join(",")')
want_chat=$("$DINFER_CLIENT" generate --server "$addr" --auth-token-file "$tmp/token" --tokens "$ids" --max-tokens 20 --json | jq -r .text)
[ "$(jq -r .completion.object "$o")" = text_completion ] && [ "$(jq -r .completion.text "$o")" = "$want_c" ] &&
  [ "$(jq -r .completion.usage.completion_tokens "$o")" = 20 ] && ok "completions.create: the socket protocol's text" ||
  fail "completion: $(jq -c .completion "$o") want '$want_c'"
[ "$(jq -r .chat_stream.text "$o")" = "$want_chat" ] && [ "$(jq -r .chat_stream.role "$o")" = assistant ] &&
  [ "$(jq -r .chat_stream.finish "$o")" = length ] && [ "$(jq -r .chat_stream.usage.completion_tokens "$o")" = 20 ] &&
  ok "streamed chat.completions.create: $(jq -r .chat_stream.chunks "$o") chunks, the socket protocol's text" ||
  fail "chat stream: $(jq -c .chat_stream "$o") want '$want_chat'"
[ "$(jq -r .chat.text "$o")" = "$want_chat" ] && [ "$(jq -r .chat.object "$o")" = chat.completion ] &&
  ok "whole chat: the same text" || fail "chat: $(jq -c .chat "$o")"
[ "$(jq -r '.bad_request | .name, .status, .param' "$o" | tr '\n' ' ')" = "BadRequestError 400 messages " ] &&
  ok "an empty messages list: BadRequestError 400, param messages ($(jq -r .bad_request.message "$o"))" ||
  fail "bad request: $(jq -c .bad_request "$o")"
[ "$(jq -r '.unknown_role | .status, .param' "$o" | tr '\n' ' ')" = "400 messages[0] " ] &&
  ok "an unknown role: 400, param messages[0]" || fail "unknown role: $(jq -c .unknown_role "$o")"
[ "$(jq -r '.wrong_key | .name, .status' "$o" | tr '\n' ' ')" = "AuthenticationError 401 " ] &&
  ok "a wrong key: AuthenticationError 401" || fail "wrong key: $(jq -c .wrong_key "$o")"
[ "$(jq -r '.models[0]' "$o")" = "$tmp/model" ] && ok "models.list" || fail "models: $(jq -c .models "$o")"
kill -TERM "$pid"
wait "$mpid"
mpid=
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; tail -20 "$tmp/log"; exit 1; }
echo "the openai client library: completions, streamed and whole chat, errors as expected"
