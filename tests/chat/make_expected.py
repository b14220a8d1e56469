#!/usr/bin/env python3
"""Writes tests/chat/expected.json: what Hugging Face transformers' apply_chat_template renders
(add_generation_prompt=True) for every conversation of conversations.json, with the llama3 and
qwen3 tokenizers' own templates and with each template of templates/ (given through
chat_template=, the llama3 tokenizer's special tokens beside it), and the token ids of the llama3
and qwen3 prompts (tokenize=True). A template that refuses a conversation (raise_exception) gives
its message instead. Also each template of jinja_cases.json rendered by transformers' own Jinja
environment (the one apply_chat_template compiles with) over that file's variables: the corner
cases of the language. Run where transformers is installed (the GPU machine):

    python3 tests/chat/make_expected.py TOKENIZERS_DIR   (holding llama3/ and qwen3/)
"""
import glob
import json
import os
import sys

import transformers
from transformers import AutoTokenizer

here = os.path.dirname(os.path.abspath(__file__))
tok_dir = sys.argv[1]
convs = json.load(open(os.path.join(here, "conversations.json"), encoding="utf-8"))


def ids_of(r):
    if hasattr(r, "keys") and "input_ids" in r:  # transformers 5 returns a BatchEncoding
        r = r["input_ids"]
    return [int(x) for x in r]


def render(tok, conv, template=None):
    try:
        text = tok.apply_chat_template(conv, chat_template=template, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # the template's raise_exception, or another failure: its message
        return {"error": str(e)}
    out = {"text": text}
    if template is None:
        out["ids"] = ids_of(tok.apply_chat_template(conv, tokenize=True, add_generation_prompt=True))
    return out


cases = []
for name in ["llama3", "qwen3"]:
    tok = AutoTokenizer.from_pretrained(os.path.join(tok_dir, name))
    for i, conv in enumerate(convs):
        cases.append({"tokenizer": name, "conversation": i, **render(tok, conv)})
tok = AutoTokenizer.from_pretrained(os.path.join(tok_dir, "llama3"))
specials = {k: v for k, v in tok.special_tokens_map.items()}
for path in sorted(glob.glob(os.path.join(here, "templates", "*.jinja"))):
    template = open(path, encoding="utf-8").read()
    for i, conv in enumerate(convs):
        cases.append({"template": os.path.basename(path), "conversation": i, **render(tok, conv, template)})
try:  # the environment apply_chat_template compiles templates with
    from transformers.utils.chat_template_utils import _compile_jinja_template
except ImportError:
    try:
        from transformers.tokenization_utils_base import _compile_jinja_template
    except ImportError:
        _compile_jinja_template = None
jc = json.load(open(os.path.join(here, "jinja_cases.json"), encoding="utf-8"))
language = []
for template in jc["templates"]:
    try:
        if _compile_jinja_template:
            language.append({"text": _compile_jinja_template(template).render(**jc["vars"])})
        else:  # through the public call, the variables beside the messages as template kwargs
            rest = {k: v for k, v in jc["vars"].items() if k != "messages"}
            language.append({"text": tok.apply_chat_template(jc["vars"]["messages"], chat_template=template,
                                                             tokenize=False, **rest)})
    except Exception as e:
        language.append({"error": f"{type(e).__name__}: {e}"})
out = {"transformers": transformers.__version__, "special_tokens": specials, "cases": cases, "language": language}
with open(os.path.join(here, "expected.json"), "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(f"{len(cases)} conversations, {len(language)} language cases, transformers {transformers.__version__}")
