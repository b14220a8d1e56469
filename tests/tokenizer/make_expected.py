#!/usr/bin/env python3
"""Writes tests/tokenizer/expected.json: for each tokenizer under ../shared/tokenizers (llama3,
qwen3, llama2), and the quickstart's launch/stories260K (the tokenizer.json llama2c_convert wrote),
and each text of tests/tokenizer/corpus.json, the ids Hugging Face `tokenizers` gives with and
without the post-processor's special tokens, and the text its decode gives back (with special
tokens kept). Run where `tokenizers` is installed (the GPU machine):

  python3 tests/tokenizer/make_expected.py [TOKENIZERS_DIR] > tests/tokenizer/expected.json

The expected file is committed; the tokenizer files are not (tests read them from
../shared/tokenizers and skip, saying so, when they are absent).
"""
import json
import os
import sys

import tokenizers
from tokenizers import Tokenizer

here = os.path.dirname(os.path.abspath(__file__))
root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "..", "shared", "tokenizers")
texts = json.load(open(os.path.join(here, "corpus.json"), encoding="utf-8"))
out = {"tokenizers_version": tokenizers.__version__, "corpus_size": len(texts), "tokenizers": {}}
paths = {name: os.path.join(root, name, "tokenizer.json") for name in ("llama3", "qwen3", "llama2")}
paths["stories260K"] = os.path.join(here, "..", "..", "launch", "stories260K", "tokenizer.json")
paths["flags"] = os.path.join(here, "flags", "tokenizer.json")  # added tokens' lstrip/rstrip/single_word/normalized
for name, path in paths.items():
    if not os.path.exists(path):
        sys.exit(f"{path}: not found")
    tok = Tokenizer.from_file(path)
    rows = []
    for t in texts:
        with_special = tok.encode(t, add_special_tokens=True).ids
        plain = tok.encode(t, add_special_tokens=False).ids
        rows.append({"ids": with_special, "ids_no_special": plain,
                     "decoded": tok.decode(with_special, skip_special_tokens=False),
                     "decoded_no_special": tok.decode(plain, skip_special_tokens=False)})
    out["tokenizers"][name] = rows
json.dump(out, sys.stdout, ensure_ascii=True, separators=(",", ":"))
sys.stdout.write("\n")
