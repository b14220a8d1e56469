#!/usr/bin/env python3
"""Writes tests/tokenizer/corpus.json: the texts the tokenizer must encode exactly as Hugging Face
`tokenizers` does (issue 12). Kept as a script so the hard characters are written as escapes and
can be read here; the JSON is what tests and tests/tokenizer/make_expected.py read.

  python3 tests/tokenizer/make_corpus.py > tests/tokenizer/corpus.json
"""
import json

texts = [
    # plain English, spaces and punctuation
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "trailing space ",
    "  two leading spaces and two trailing  ",
    "multiple     spaces    inside",
    "tabs\tand\t\ttabs",
    "line one\nline two\n\nline four",
    "windows\r\nline\r\nendings\r\n",
    "\n",
    "\n\n\n",
    " ",
    "   ",
    "\t",
    "a",
    "",
    # contractions in any case, numbers
    "I'm sure you're right, it's what they'd've said; we'll see. I'M SURE YOU'RE RIGHT. I'M, You'Re",
    "don't DON'T Don't 'quoted' ''double'' '",
    "1234567890 12 123 1234 12345 3.14159 1,000,000 -42 +7 0x1F 1e-9",
    "The year 2024 had 366 days; 2023 had 365.",
    # code
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (i = 0; i < n; i++) { a[i] = b[i] + c[i]; } // C",
    "<div class=\"x\">&amp; &lt;tag&gt;</div>",
    "SELECT * FROM users WHERE id = 'abc' AND name LIKE '%x%';",
    "    indented four\n        indented eight\n",
    # scripts
    "\u4eca\u5929\u5929\u6c14\u5f88\u597d\uff0c\u6211\u4eec\u53bb\u516c\u56ed\u6563\u6b65\u5427\u3002",  # Chinese
    "\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3059\u3002\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3002",  # Japanese
    "\uc548\ub155\ud558\uc138\uc694, \ub9cc\ub098\uc11c \ubc18\uac11\uc2b5\ub2c8\ub2e4.",  # Korean
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645\u060c \u0643\u064a\u0641 \u062d\u0627\u0644\u0643\u061f",  # Arabic
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e, \u0906\u092a \u0915\u0948\u0938\u0947 \u0939\u0948\u0902?",  # Hindi
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u041a\u0430\u043a \u0434\u0435\u043b\u0430?",  # Cyrillic
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",  # Hebrew
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",  # Thai
    "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5",  # Greek
    "mixed English \u4e2d\u6587 and \u65e5\u672c\u8a9e and \ud55c\uad6d\uc5b4 in one line",
    # emoji: ZWJ sequences, skin tones, flags, keycaps
    "\U0001F600 \U0001F602\U0001F923",
    "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 family",
    "\U0001F44D\U0001F3FD \U0001F44B\U0001F3FF \U0001F9D1\U0001F3FB\u200D\U0001F4BB",
    "\U0001F1EF\U0001F1F5\U0001F1FA\U0001F1F8\U0001F1E9\U0001F1EA flags",
    "1\uFE0F\u20E3 #\uFE0F\u20E3 \u2764\uFE0F \u2764",
    "\U0001F3F3\uFE0F\u200D\U0001F308",
    # combining marks next to precomposed letters (NFC changes the first of each pair)
    "cafe\u0301 caf\u00e9",
    "A\u030a \u00c5 \u212b",
    "n\u0303 \u00f1 u\u0308ber \u00fcber",
    "\u1e9b\u0323 \u1e0b\u0323",
    "\ufb01 \ufb02 \u2126 \u00bd",  # ligatures and compatibility characters
    # special-token strings inside ordinary text
    "<|begin_of_text|>Hello<|end_of_text|> and <|eot_id|>",
    "text <|im_start|>user\nhi<|im_end|> more",
    "<s> hello </s> <unk> <s>",
    "a<|endoftext|>b",
    "<|begin_of_text|><|begin_of_text|>",
    "<|not_a_special_token|>",
    # long words, repeats
    "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "a" * 300,
    "ab" * 150 + " " + "xyz" * 100,
    "!!!!!!!!!!????????........,,,,,,,,",
    "==========" * 10,
    # unusual spaces
    "non\u00a0breaking\u00a0spaces",
    "zero\u200bwidth\u200bspace and \ufeffBOM",
    "ideographic\u3000space and thin\u2009space and em\u2003space",
    "\u2028line separator\u2029paragraph",
    # urls, mixed
    "https://example.com/path?q=1&r=2#frag user@example.org",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX! 42 foxes.",
    "\u00bfQu\u00e9 tal? \u00a1Muy bien! \u00c7a va tr\u00e8s bien, merci. Stra\u00dfe.",
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    # added tokens' flags (tests/tokenizer/flags has them: lstrip/rstrip [MASK], single_word abab,
    # a normalized "hey" under a Lowercase normalizer, rstrip <e>)
    "a [MASK] b",
    "x  [MASK]  y",
    "\t[MASK]\n",
    "[MASK][MASK]",
    "abab cabab ababc abab. (abab) _abab abab_ xabab abababab \u00e9abab abab\u0301",
    "HEY Hey hey<|x|>hey<e>  end they heyhey",
    "The <e> end <e>",
]

print(json.dumps(texts, ensure_ascii=True, indent=1))
