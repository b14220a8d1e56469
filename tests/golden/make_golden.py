#!/usr/bin/env python3
"""Builds the golden fixtures: small random-weight models made and run by Hugging Face
transformers (the reference dinfer must match), saved as safetensors folders, with transformers'
greedy tokens and the log-softmax of each greedy step for several prompts.

Run where PyTorch and transformers are installed (the GPU machine):
    python3 tests/golden/make_golden.py tests/golden/fixtures
Each fixture is a folder with config.json, the weights and golden.json. The models are computed
in float32 on the CPU with eager attention; a model saved in BF16 or F16 is reloaded from its own
files and upcast, so the reference sees exactly the weights dinfer reads.
"""
import json
import math
import os
import shutil
import sys

import torch
import transformers
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

PROMPT_LENS = [1, 5, 17, 40]
N_GEN = 24
# The first greedy step of every prompt is what reduced precision (BF16 on the GPU) is held to:
# prompts whose first step is a near-tie would test rounding noise, not correctness, so a prompt
# is drawn again until its top two first-step logprobs are at least this far apart.
FIRST_GAP = 0.1
TF_MAJOR = int(transformers.__version__.split(".")[0])

# name: (config class, model class, save dtype, old-style config.json, shard size, config)
FIXTURES = {
    "llama_gqa": (LlamaConfig, LlamaForCausalLM, torch.float32, False, None, dict(
        hidden_size=64, intermediate_size=160, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=2, vocab_size=256, max_position_embeddings=128, rms_norm_eps=1e-5,
        rope=("default", 10000.0, {}))),
    "llama_mha_tied_bf16": (LlamaConfig, LlamaForCausalLM, torch.bfloat16, False, None, dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=8, vocab_size=256, max_position_embeddings=128, rms_norm_eps=1e-6,
        tie_word_embeddings=True, rope=("default", 10000.0, {}))),
    "llama3_rope_f16": (LlamaConfig, LlamaForCausalLM, torch.float16, True, None, dict(
        hidden_size=64, intermediate_size=100, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=4, head_dim=16, vocab_size=203, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope=("llama3", 10000.0, dict(
            factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=32)))),
    "qwen2_bias": (Qwen2Config, Qwen2ForCausalLM, torch.float32, False, None, dict(
        hidden_size=64, intermediate_size=136, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=2, vocab_size=256, max_position_embeddings=128, rms_norm_eps=1e-6,
        tie_word_embeddings=False, rope=("default", 1000000.0, {}))),
    "llama_5layer_sharded": (LlamaConfig, LlamaForCausalLM, torch.float32, True, "120KB", dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=5, num_attention_heads=8,
        num_key_value_heads=4, vocab_size=256, max_position_embeddings=128, rms_norm_eps=1e-5,
        attention_bias=True, rope=("linear", 10000.0, dict(factor=2.0)))),
    "mistral_swa": (MistralConfig, MistralForCausalLM, torch.float32, False, None, dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=2, vocab_size=256, max_position_embeddings=128, rms_norm_eps=1e-5,
        sliding_window=16, rope=("default", 10000.0, {}))),
}


def make_config(cfg_cls, kw):
    kw = dict(kw)
    rope_type, theta, extra = kw.pop("rope")
    if TF_MAJOR >= 5:
        kw["rope_parameters"] = dict(rope_type=rope_type, rope_theta=theta, **extra)
    else:
        kw["rope_theta"] = theta
        kw["rope_scaling"] = None if rope_type == "default" else dict(rope_type=rope_type, **extra)
    return cfg_cls(bos_token_id=1, eos_token_id=2, hidden_act="silu", **kw)


def init_weights(model, seed):
    """Weights large enough that greedy choices are far from ties: linear weights of standard
    deviation 1/sqrt(fan_in), embeddings of 1, norms near 1, biases of 0.1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def to_old_style(path):
    """Rewrites a transformers 5 config.json into the older key style most published checkpoints
    use: top-level rope_theta / rope_scaling and torch_dtype."""
    with open(path) as f:
        c = json.load(f)
    rp = c.pop("rope_parameters", None)
    if rp is not None:
        rp = dict(rp)
        c["rope_theta"] = rp.pop("rope_theta", 10000.0)
        c["rope_scaling"] = None if rp.get("rope_type", "default") == "default" else rp
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    with open(path, "w") as f:
        json.dump(c, f, indent=2)


def load_fp32(d):
    try:
        return AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        return AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager")


def greedy(model, prompt):
    ids, lps, gaps = list(prompt), [], []
    with torch.no_grad():
        for _ in range(N_GEN):
            logits = model(torch.tensor([ids])).logits[0, -1].float()
            lp = torch.log_softmax(logits, dim=-1)
            top = torch.topk(lp, 2)
            tok = int(torch.argmax(lp))
            ids.append(tok)
            lps.append(float(lp[tok]))
            gaps.append(float(top.values[0] - top.values[1]))
    return ids[len(prompt):], lps, min(gaps)


def first_gap(model, prompt):
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([prompt])).logits[0, -1].float(), dim=-1)
    top = torch.topk(lp, 2).values
    return float(top[0] - top[1])


def draw_prompt(model, n, vocab, g):
    for _ in range(200):
        p = torch.randint(0, vocab, (n,), generator=g).tolist()
        if first_gap(model, p) >= FIRST_GAP:
            return p
    raise RuntimeError(f"no prompt of {n} tokens with a first-step gap of {FIRST_GAP}")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "fixtures")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(4)
    for k, (name, (cfg_cls, model_cls, dtype, old, shard, kw)) in enumerate(FIXTURES.items()):
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        cfg = make_config(cfg_cls, kw)
        torch.manual_seed(k)
        model = model_cls(cfg).eval()
        init_weights(model, 1000 + k)
        model = model.to(dtype)
        save_kw = dict(max_shard_size=shard) if shard else {}
        try:
            model.save_pretrained(d, safe_serialization=True, **save_kw)
        except TypeError:  # transformers versions where safetensors is the only format
            model.save_pretrained(d, **save_kw)
        if old:
            to_old_style(os.path.join(d, "config.json"))
        ref = load_fp32(d).eval()
        g = torch.Generator().manual_seed(77 + k)
        vocab = kw["vocab_size"]
        prompts = [draw_prompt(ref, n, vocab, g) for n in PROMPT_LENS]
        tokens, logprobs, min_gap = [], [], float("inf")
        for p in prompts:
            t, lp, gap = greedy(ref, p)
            tokens.append(t)
            logprobs.append(lp)
            min_gap = min(min_gap, gap)
        note = ""
        if kw.get("sliding_window"):
            # the window must matter for these prompts, else the fixture would not test it
            full = load_fp32(d)
            full.config.sliding_window = None
            differs = any(greedy(full, p)[1] != lp for p, lp in zip(prompts, logprobs))
            note = f", sliding window changes the output: {differs}"
        files = sorted(os.listdir(d))
        with open(os.path.join(d, "golden.json"), "w") as f:
            json.dump(dict(prompts=prompts, n_gen=N_GEN, tokens=tokens, logprobs=logprobs,
                           min_top2_gap=min_gap, saved_dtype=str(dtype).split(".")[-1],
                           transformers=transformers.__version__, torch=torch.__version__), f)
        print(f"{name}: {files}, min top-2 logprob gap {min_gap:.4f}{note}")
        if min_gap < 1e-3:
            print(f"WARNING {name}: a greedy step is a near-tie; choose another seed")


if __name__ == "__main__":
    main()
