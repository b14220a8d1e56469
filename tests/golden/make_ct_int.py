#!/usr/bin/env python3
"""Builds the compressed-tensors integer fixtures (format "pack-quantized", as llm-compressor writes
W4A16 and W8A16 checkpoints) from the GPTQ fixtures, without transformers and independently of
dinfer's C readers:

    python3 tests/golden/make_ct_int.py tests/golden/fixtures

Each is the same model as its source: the same codes, zero points and F16 scales in the other
layout, so every weight dequantizes to the same value and the greedy tokens and logprobs
transformers computed for the source (its golden.json, copied) are this model's too.

  quant_gptq4     -> quant_ct_w4a16      int4, groups of 32, symmetric (every zero point 8: none stored)
  quant_gptq8     -> quant_ct_w8a16      int8, a scale a row, asymmetric (zero points stored)
  quant_gptq4_act -> quant_ct_w4a16_act  the int4 one with its columns out of order (actorder "group")
  quant_gptq4     -> quant_ct_w8a8       format "int-quantized": the same values (-8 to 7) as int8 a byte,
                                         groups of 32, int8 activations per token (which dinfer does not
                                         apply: activations stay in the compute type)

GPTQ's layout (make_quant_golden.py, checkpoint_format "gptq"): qweight int32 (in * bits / 32, out)
packed along the input; qzeros int32 (groups, out * bits / 32) packed along the output, holding
z - 1; scales F16 (groups, out); g_idx int32 (in).
compressed-tensors' (compressors/quantized_compressors/pack_quantized.py): weight_packed int32
(out, in * bits / 32), each row packed along the input, value j of a word at bits j * bits, each
value its signed code plus 2^(bits-1), that is the unsigned code; weight_scale (out, groups);
weight_zero_point int32 (out * bits / 32, groups) packed along the output (asymmetric only);
weight_shape int32 [out, in]; weight_g_idx int32 (in) under actorder "group". int-quantized
(compressors/quantized_compressors/int_quantized.py): weight int8 (out, in), the signed values.
"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))
from make_act_order import pack, read_st, rows_of, unpack, write_st  # noqa: E402

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj"]


def convert(t, prefix, bits, sym, act, int8=False):
    per = 32 // bits
    _, shape, qw = t.pop(prefix + "qweight")
    _, zshape, qz = t.pop(prefix + "qzeros")
    _, sshape, sc = t.pop(prefix + "scales")
    _, _, gidx = t.pop(prefix + "g_idx")
    inn, out, ng = shape[0] * per, shape[1], sshape[0]
    codes = [[0] * inn for _ in range(out)]  # (out, in)
    for wr, row in enumerate(rows_of(qw, shape)):
        for c, w in enumerate(row):
            for j, v in enumerate(unpack([w], bits)):
                codes[c][wr * per + j] = v
    zeros = [unpack(row, bits) for row in rows_of(qz, zshape)]  # (groups, out): z - 1
    zeros = [[z + 1 for z in row] for row in zeros]
    if sym:
        assert all(z == 1 << (bits - 1) for row in zeros for z in row), prefix + ": a symmetric source"
    if int8:  # the signed values, a byte each
        t[prefix + "weight"] = ("I8", [out, inn], [v - (1 << (bits - 1)) for row in codes for v in row])
    else:
        t[prefix + "weight_packed"] = ("I32", [out, inn // per], [w for row in codes for w in pack(row, bits)])
    t[prefix + "weight_scale"] = ("F16", [out, ng], [sc[j * out + r] for r in range(out) for j in range(ng)])
    if not int8:
        t[prefix + "weight_shape"] = ("I32", [2], [out, inn])
    if not sym:  # packed along the output: (out / per, groups)
        cols = [pack([zeros[j][r] for r in range(out)], bits) for j in range(ng)]  # per group: out / per words
        t[prefix + "weight_zero_point"] = ("I32", [out // per, ng], [cols[j][w] for w in range(out // per)
                                                                      for j in range(ng)])
    if act:
        t[prefix + "weight_g_idx"] = ("I32", [inn], gidx)


def main(root):
    for src, dst in (("quant_gptq4", "quant_ct_w4a16"), ("quant_gptq8", "quant_ct_w8a16"),
                     ("quant_gptq4_act", "quant_ct_w4a16_act"), ("quant_gptq4", "quant_ct_w8a8")):
        int8 = dst.endswith("w8a8")
        with open(os.path.join(root, src, "config.json")) as f:
            cfg = json.load(f)
        gq = cfg["quantization_config"]
        bits, group, sym, act = gq["bits"], gq["group_size"], gq["sym"], gq["desc_act"]
        t = read_st(os.path.join(root, src, "model.safetensors"))
        for lay in range(cfg["num_hidden_layers"]):
            for lin in LINEARS:
                convert(t, "model.layers.%d.%s." % (lay, lin), bits, sym, act, int8)
        weights = {"num_bits": 8 if int8 else bits, "type": "int", "symmetric": sym, "dynamic": False,
                   "strategy": "group" if group > 0 else "channel", "actorder": "group" if act else None,
                   "observer": "minmax"}
        if group > 0:
            weights["group_size"] = group
        cfg["quantization_config"] = {
            "quant_method": "compressed-tensors", "format": "int-quantized" if int8 else "pack-quantized",
            "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "output_activations": None,
                                          "input_activations": {"num_bits": 8, "type": "int", "strategy": "token",
                                                                "symmetric": True, "dynamic": True} if int8 else None}},
            "ignore": ["lm_head"], "kv_cache_scheme": None}
        out = os.path.join(root, dst)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        for f in ("generation_config.json", "golden.json"):
            shutil.copy(os.path.join(root, src, f), out)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        write_st(os.path.join(out, "model.safetensors"), t)
        print("wrote", out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/golden/fixtures")
