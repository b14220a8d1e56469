#!/usr/bin/env python3
"""Builds the quantized golden fixtures: small random-weight Llama models whose linear weights are
quantized (round to nearest) and written as the published formats lay them out, with the greedy
tokens and logprobs transformers computes on the *dequantized* model (what a quantized checkpoint
means: every weight equal to its dequantized value, activations in float32).

    python3 tests/golden/make_quant_golden.py tests/golden/fixtures

The packing is written here from the formats' descriptions, independently of dinfer's C readers:
- compressed-tensors "float-quantized": weight F8_E4M3 (out, in), weight_scale per tensor [1] or
  per channel [out, 1]; input_scale [1] for static activations.
- transformers "fp8": weight F8_E4M3, weight_scale_inv F32 [ceil(out/128), ceil(in/128)], the
  multiplier of each 128 x 128 block.
- AWQ GEMM: qweight int32 (in, out/8), nibble i of a word holding output column 8c + ORDER[i] with
  ORDER = [0, 2, 4, 6, 1, 3, 5, 7]; qzeros int32 (in/group, out/8) packed alike; scales F16
  (in/group, out). w = (q - z) * s.
- GPTQ ("gptq" checkpoint format, v1): qweight int32 (in * bits / 32, out) packed along the input,
  value j of a word at bits j * bits; qzeros int32 (in/group, out * bits / 32) packed along the
  output, holding z - 1; scales F16 (in/group, out); g_idx int32 (in) = i / group. w = (q - z) * s.
Linear layers are quantized; embeddings, norms and lm_head stay F32.
"""
import json
import math
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from make_golden import (PROMPT_LENS, N_GEN, draw_prompt, greedy, init_weights, load_fp32,  # noqa: E402
                         make_config, to_old_style)
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj"]
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
FP8_MAX = 448.0

BASE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=8,
            num_key_value_heads=2, vocab_size=256, max_position_embeddings=128, rms_norm_eps=1e-5,
            tie_word_embeddings=False, rope=("default", 10000.0, {}))


def fp8(x):
    return x.to(torch.float8_e4m3fn)


# ---- quantizers: each returns (tensors for the checkpoint, the dequantized float32 weight) ----

def ct_fp8(w, strategy, scale_dtype):
    if strategy == "tensor":
        scale = (w.abs().max() / FP8_MAX).reshape(1)
    else:
        scale = (w.abs().amax(dim=1, keepdim=True) / FP8_MAX)
    scale = scale.to(scale_dtype)
    s = scale.float()
    q = fp8(w / s)
    t = {"weight": q, "weight_scale": scale}
    if strategy == "tensor":
        t["input_scale"] = torch.tensor([0.02], dtype=scale_dtype)  # static activations (dinfer keeps BF16)
    return t, q.float() * s


def fp8_block(w, block=128):
    out, inn = w.shape
    br, bc = math.ceil(out / block), math.ceil(inn / block)
    s = torch.zeros(br, bc)
    for i in range(br):
        for j in range(bc):
            s[i, j] = w[i * block:(i + 1) * block, j * block:(j + 1) * block].abs().max() / FP8_MAX
    full = s.repeat_interleave(block, 0)[:out].repeat_interleave(block, 1)[:, :inn]
    q = fp8(w / full)
    return {"weight": q, "weight_scale_inv": s}, q.float() * full


def int_groups(w, bits, group, sym, zero_min=0):
    """Round-to-nearest codes q (out, in), zeros z and scales s (out, n_groups) as float16-rounded."""
    out, inn = w.shape
    g = inn if group <= 0 else group
    wg = w.reshape(out, inn // g, g)
    maxq = 2 ** bits - 1
    if sym:
        amax = wg.abs().amax(dim=2)
        s = (2 * amax / maxq).half().float()
        z = torch.full_like(s, float((maxq + 1) // 2))
    else:
        lo, hi = wg.amin(dim=2).clamp(max=0), wg.amax(dim=2).clamp(min=0)
        s = ((hi - lo) / maxq).half().float()
        z = torch.round(-lo / s).clamp(zero_min, maxq)
    q = torch.clamp(torch.round(wg / s[:, :, None]) + z[:, :, None], 0, maxq)
    deq = ((q - z[:, :, None]) * s[:, :, None]).reshape(out, inn)
    return q.reshape(out, inn).to(torch.int64), z.to(torch.int64), s, deq


def to_i32(u):
    """uint32 values held in int64 to the int32 of the same bits."""
    return torch.where(u >= 2 ** 31, u - 2 ** 32, u).to(torch.int32)


def awq(w, group):
    q, z, s, deq = int_groups(w, 4, group, sym=False)
    qt, zt = q.t().contiguous(), z.t().contiguous()  # (in, out), (groups, out)

    def pack(m):
        rows, cols = m.shape
        p = torch.zeros(rows, cols // 8, dtype=torch.int64)
        for i, col in enumerate(AWQ_ORDER):
            p |= m[:, col::8] << (4 * i)
        return to_i32(p)

    return {"qweight": pack(qt), "qzeros": pack(zt), "scales": s.t().contiguous().half()}, deq


def gptq(w, bits, group, sym):
    # v1 stores z - 1: keep z >= 1 so that every zero is representable (as GPTQ's own tools do)
    q, z, s, deq = int_groups(w, bits, group, sym, zero_min=1)
    per = 32 // bits
    out, inn = w.shape
    qt = q.t().contiguous()  # (in, out)
    qw = torch.zeros(inn // per, out, dtype=torch.int64)
    for j in range(per):
        qw |= qt[j::per, :] << (bits * j)
    zt = (z - 1).t().contiguous()  # (groups, out)
    qz = torch.zeros(zt.shape[0], out // per, dtype=torch.int64)
    for j in range(per):
        qz |= zt[:, j::per] << (bits * j)
    g = inn if group <= 0 else group
    g_idx = torch.arange(inn, dtype=torch.int32) // g
    return {"qweight": to_i32(qw), "qzeros": to_i32(qz), "scales": s.t().contiguous().half(), "g_idx": g_idx}, deq


def ct_config(strategy, static_input):
    acts = None
    if static_input:
        acts = dict(num_bits=8, type="float", strategy="tensor", symmetric=True, dynamic=False)
    else:
        acts = dict(num_bits=8, type="float", strategy="token", symmetric=True, dynamic=True)
    return dict(quant_method="compressed-tensors", format="float-quantized", quantization_status="compressed",
                config_groups=dict(group_0=dict(targets=["Linear"], input_activations=acts, weights=dict(
                    num_bits=8, type="float", strategy=strategy, symmetric=True, dynamic=False, group_size=None,
                    block_structure=None))),
                ignore=["lm_head"], kv_cache_scheme=None)


# name: (config overrides (seed: another draw of weights), quantize(weight) -> (tensors, dequantized), quantization_config)
FIXTURES = {
    "quant_fp8_tensor": ({}, lambda w: ct_fp8(w, "tensor", torch.bfloat16), ct_config("tensor", True)),
    "quant_fp8_channel": ({}, lambda w: ct_fp8(w, "channel", torch.float32), ct_config("channel", False)),
    "quant_fp8_block": (dict(intermediate_size=320), fp8_block,
                        dict(quant_method="fp8", activation_scheme="dynamic", weight_block_size=[128, 128])),
    "quant_awq": (dict(seed=7), lambda w: awq(w, 64),
                  dict(quant_method="awq", bits=4, group_size=64, zero_point=True, version="gemm")),
    "quant_gptq4": ({}, lambda w: gptq(w, 4, 32, sym=True),
                    dict(quant_method="gptq", bits=4, group_size=32, desc_act=False, sym=True,
                         checkpoint_format="gptq", damp_percent=0.01, true_sequential=True, static_groups=False)),
    "quant_gptq8": ({}, lambda w: gptq(w, 8, -1, sym=False),
                    dict(quant_method="gptq", bits=8, group_size=-1, desc_act=False, sym=False,
                         checkpoint_format="gptq", damp_percent=0.01, true_sequential=True, static_groups=False)),
}


def cross_check(d, ref, prompt):
    """Where this machine's transformers can load the format itself (its own quantizer integration),
    its logits on the quantized folder against the reference's: an independent check of the packing."""
    try:
        from transformers import AutoModelForCausalLM
        kw = {}
        if torch.cuda.is_available():
            kw["device_map"] = "cuda"
        m = AutoModelForCausalLM.from_pretrained(d, **kw).eval()
        dev = next(m.parameters()).device
        with torch.no_grad():
            got = m(torch.tensor([prompt], device=dev)).logits[0].float().cpu()
            want = ref(torch.tensor([prompt])).logits[0].float()
        print(f"  cross-check {os.path.basename(d)}: transformers loads it itself, max |logit diff| "
              f"{(got - want).abs().max().item():.4g} (logits up to {want.abs().max().item():.3g}), "
              f"argmax agree {(got.argmax(-1) == want.argmax(-1)).float().mean().item():.3f}")
    except Exception as e:  # the integration's package is not installed, or it refuses the layout
        print(f"  cross-check {os.path.basename(d)}: transformers cannot load it here: {str(e)[:200]}")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "fixtures")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(4)
    for k, (name, (over, quantize, qcfg)) in enumerate(FIXTURES.items()):
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        kw = dict(BASE, **over)
        seed = kw.pop("seed", 0)  # another draw when the first gave a near-tie
        cfg = make_config(LlamaConfig, kw)
        torch.manual_seed(100 + k)
        model = LlamaForCausalLM(cfg).eval()
        init_weights(model, 2000 + k + 100 * seed)
        sd = {n: p.detach().clone().float().contiguous() for n, p in model.state_dict().items()}
        ckpt = {}
        for n, t in sd.items():
            mod = n[:-len(".weight")] if n.endswith(".weight") else None
            if mod and any(mod.endswith(l) for l in LINEARS):
                tensors, deq = quantize(t)
                for suffix, v in tensors.items():
                    ckpt[f"{mod}.{suffix}"] = v.contiguous()
                sd[n] = deq.float()
            else:
                ckpt[n] = t
        # the reference: the dequantized weights, saved and reloaded like the other fixtures
        ref_dir = d + ".dequantized"
        model.load_state_dict(sd)
        model.save_pretrained(ref_dir, safe_serialization=True)
        ref = load_fp32(ref_dir).eval()
        g = torch.Generator().manual_seed(177 + k)
        prompts = [draw_prompt(ref, n, kw["vocab_size"], g) for n in PROMPT_LENS]
        tokens, logprobs, min_gap = [], [], float("inf")
        for p in prompts:
            t, lp, gap = greedy(ref, p)
            tokens.append(t)
            logprobs.append(lp)
            min_gap = min(min_gap, gap)
        # the quantized checkpoint: the reference's config.json with the quantization_config
        os.makedirs(d)
        for f in ("config.json", "generation_config.json"):
            if os.path.exists(os.path.join(ref_dir, f)):
                shutil.copy(os.path.join(ref_dir, f), os.path.join(d, f))
        to_old_style(os.path.join(d, "config.json"))
        with open(os.path.join(d, "config.json")) as f:
            c = json.load(f)
        c["quantization_config"] = qcfg
        c["torch_dtype"] = "float32"
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f, indent=2)
        save_file(ckpt, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(d, "golden.json"), "w") as f:
            json.dump(dict(prompts=prompts, n_gen=N_GEN, tokens=tokens, logprobs=logprobs, min_top2_gap=min_gap,
                           saved_dtype="float32", reference="dequantized weights, float32",
                           transformers=__import__("transformers").__version__, torch=torch.__version__), f)
        cross_check(d, ref, prompts[2])
        shutil.rmtree(ref_dir)
        print(f"{name}: {sorted(os.listdir(d))}, {os.path.getsize(os.path.join(d, 'model.safetensors'))} bytes, "
              f"min top-2 logprob gap {min_gap:.4f}")
        if min_gap < 1e-3:
            print(f"WARNING {name}: a greedy step is a near-tie; choose another seed")


if __name__ == "__main__":
    main()
