#!/usr/bin/env python3
"""The peer of tests/gpu/bench.sh: Hugging Face transformers on the same model folder and shapes,
run on the GPU machine (it has PyTorch and transformers). Decode: a static KV cache and
torch.compile (mode "reduce-overhead": CUDA graphs), greedy, compiled and warmed up before the
timing. Prefill: one eager forward over the batch of prompts (compiling every prompt shape would
time the compiler). Prints the same lines dinfer-run --bench prints, so bench.sh reads both alike:

  prefill: N tokens in X ms (Y tokens/s)
  decode:  N tokens in X ms (Y tokens/s)

  peer_transformers.py MODEL_DIR BATCH PROMPT_LEN GEN_LEN

A quantized checkpoint runs through transformers' quantizer for its format where transformers has
one (and the packages it needs are installed); otherwise this fails, saying why.
"""
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def timed(fn, reps=1):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps, out


def main():
    model_dir, batch, prompt, gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.manual_seed(0)
    # a quantized checkpoint (its config's quantization_config) is loaded by transformers' own
    # quantizer for the format, straight onto the GPU
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cuda").eval()
    except ImportError:  # device_map wants accelerate where transformers does not place models itself
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    quant = getattr(model.config, "quantization_config", None)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, prompt), device="cuda")
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        # prefill, eager: the whole batch of prompts in one forward, logits of the last position
        model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
        pre_s, _ = timed(lambda: model(input_ids=ids, attention_mask=mask, logits_to_keep=1), reps=3)
        # decode: static cache + compiled forward; generate() of 1 token is the prefill and the
        # first token, of gen tokens adds gen - 1 decode steps
        # generate() compiles the decode forward itself when the cache is static (its
        # CompileConfig defaults to mode "reduce-overhead"); compiling model.forward here as
        # well would nest two compilations
        model.generation_config.cache_implementation = "static"
        try:
            from transformers import CompileConfig
            model.generation_config.compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead")
        except ImportError:
            model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
        kw = dict(attention_mask=mask, do_sample=False, min_new_tokens=gen, max_new_tokens=gen, pad_token_id=0)
        for _ in range(3):  # compile and capture every shape the timed runs will use
            model.generate(ids, **kw)
        one_kw = dict(kw, min_new_tokens=1, max_new_tokens=1)
        model.generate(ids, **one_kw)
        first_s, _ = timed(lambda: model.generate(ids, **one_kw), reps=3)
        total_s, _ = timed(lambda: model.generate(ids, **kw), reps=2)
    method = (quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)) or "none"
    print(f"peer: transformers {transformers.__version__}, torch {torch.__version__}, compiled decode: "
          f"{hasattr(model, '_compiled_call')}, quantization: {method}", file=sys.stderr)
    decode_tokens = batch * (gen - 1)
    decode_s = max(total_s - first_s, 1e-9)
    print(f"prefill: {batch * prompt} tokens in {pre_s * 1e3:.1f} ms ({batch * prompt / pre_s:.1f} tokens/s)")
    print(f"decode:  {decode_tokens} tokens in {decode_s * 1e3:.1f} ms ({decode_tokens / decode_s:.1f} tokens/s)")


if __name__ == "__main__":
    main()
