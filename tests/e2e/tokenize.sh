#!/usr/bin/env bash
# dinfer-tokenize on the real tokenizer files: the ids Hugging Face tokenizers gives (see
# tests/tokenizer/expected.json), a text's round trip through --decode, stdin, and the refusals
# (exit 1, naming the problem). Skips (77) when ../shared/tokenizers is absent.
set -uo pipefail
T=${DINFER_SHARED_TOKENIZERS:-}
[ -f "$T/llama3/tokenizer.json" ] || { echo "SKIP: no tokenizer files under '$T'"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
check() { # check WHAT GOT WANT
  [ "$2" = "$3" ] && echo "ok: $1" || { echo "FAIL: $1: got '$2', want '$3'"; fails=$((fails + 1)); }
}
check "llama2 --text" "$("$DINFER_TOKENIZE" --tokenizer "$T/llama2" --text "Hello world")" "[1,22557,1526]"
check "llama2 --no-special" "$("$DINFER_TOKENIZE" --tokenizer "$T/llama2/tokenizer.json" --text "Hello world" --no-special)" \
  "[22557,1526]"
check "llama3 stdin" "$(printf 'Hello world' | "$DINFER_TOKENIZE" --tokenizer "$T/llama3")" "[9906,1917]"
check "llama2 --decode --ids" "$("$DINFER_TOKENIZE" --tokenizer "$T/llama2" --decode --ids 1,22557,1526)" "<s> Hello world"
check "llama2 --skip-special" "$(echo '[1, 22557, 1526]' | "$DINFER_TOKENIZE" --tokenizer "$T/llama2" --decode --skip-special)" \
  "Hello world"
# a round trip: text -> ids -> the same text, on each tokenizer
printf 'Grüße, 世界! \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd  code:\n\tx = 42;\n' > "$tmp/text"
for m in llama3 qwen3 llama2; do
  "$DINFER_TOKENIZE" --tokenizer "$T/$m" --no-special < "$tmp/text" > "$tmp/ids" || { echo "FAIL: $m encode"; fails=$((fails + 1)); continue; }
  "$DINFER_TOKENIZE" --tokenizer "$T/$m" --decode < "$tmp/ids" > "$tmp/back"
  cmp -s "$tmp/text" "$tmp/back" && echo "ok: $m round trip ($(tr -cd , < "$tmp/ids" | wc -c) commas)" ||
    { echo "FAIL: $m round trip: $(cat "$tmp/back")"; fails=$((fails + 1)); }
done

expect_fail() { # expect_fail NEEDLE STDIN ARGS...
  local needle=$1 input=$2; shift 2
  if printf "$input" | "$DINFER_TOKENIZE" "$@" >"$tmp/out" 2>"$tmp/err"; then
    echo "accepted: $*"; fails=$((fails + 1)); return
  fi
  grep -qF -- "$needle" "$tmp/err" && echo "ok: $(cat "$tmp/err")" || { echo "FAIL: $*: $(cat "$tmp/err")"; fails=$((fails + 1)); }
}
expect_fail "not valid UTF-8 at byte 2" 'ab\xffcd' --tokenizer "$T/llama3"
expect_fail "not valid UTF-8 at byte 4" 'abcd\xe4\xb8' --tokenizer "$T/llama3"
expect_fail "--tokenizer PATH is required" 'x' --text x
expect_fail "$tmp/none: cannot open" 'x' --tokenizer "$tmp/none"
expect_fail "--ids goes with --decode" 'x' --tokenizer "$T/llama2" --ids 1,2
expect_fail "not a JSON array of token ids" 'hello' --tokenizer "$T/llama2" --decode
expect_fail "element 1 of the array is not an integer id" '[1, 2.5]' --tokenizer "$T/llama2" --decode
expect_fail "token id 32000 is outside the vocabulary" '[1, 32000]' --tokenizer "$T/llama2" --decode
printf '{"model": {"type": "WordPiece", "vocab": {}}}' > "$tmp/tokenizer.json"
expect_fail 'model: type "WordPiece" is not supported' '' --tokenizer "$tmp"
# --chat: a conversation through the model's template, as transformers' apply_chat_template gives it
exp=$(dirname "$0")/../chat/expected.json
for m in llama3 qwen3; do
  i=3 # a Unicode-heavy conversation
  jq -c ".[$i]" "$(dirname "$0")/../chat/conversations.json" >"$tmp/conv"
  jq -j --arg m $m ".cases[] | select(.tokenizer == \$m and .conversation == $i) | .text" "$exp" >"$tmp/want"
  "$DINFER_TOKENIZE" --tokenizer "$T/$m" --chat --render <"$tmp/conv" >"$tmp/got"
  cmp -s "$tmp/want" "$tmp/got" && echo "ok: $m --chat --render = transformers' text" || { echo "FAIL: $m --chat --render"; fails=$((fails + 1)); }
  [ "$("$DINFER_TOKENIZE" --tokenizer "$T/$m" --chat <"$tmp/conv")" = \
    "$(jq -c --arg m $m ".cases[] | select(.tokenizer == \$m and .conversation == $i) | .ids" "$exp")" ] &&
    echo "ok: $m --chat = transformers' ids" || { echo "FAIL: $m --chat ids"; fails=$((fails + 1)); }
done
expect_fail "has no chat template" '[]' --tokenizer "$T/llama2" --chat
expect_fail "not a JSON list of messages" '{"role": "user"}' --tokenizer "$T/llama3" --chat
expect_fail "go with --chat" 'x' --tokenizer "$T/llama3" --render
printf '{%% include "x" %%}' >"$tmp/bad.jinja"
expect_fail "the 'include' tag is not supported" '[]' --tokenizer "$T/llama3" --chat --chat-template "$tmp/bad.jinja"
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "dinfer-tokenize: ids, round trips, chat templates and refusals as expected"
