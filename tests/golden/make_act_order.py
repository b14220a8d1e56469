#!/usr/bin/env python3
"""Builds the act-order GPTQ fixture (desc_act true: input columns quantized out of order, so that
g_idx puts them in groups that are not runs of columns) from the plain 4-bit GPTQ fixture (groups of 32; quant_gptq8's one group a row has
no order to change), without
transformers and independently of dinfer's C readers:

    python3 tests/golden/make_act_order.py tests/golden/fixtures

quant_gptq4_act is quant_gptq4's model with three of its dimensions relabelled, which changes no
output: the hidden dimension by a permutation P (the embedding's and LM head's columns, the norms'
weights, the inputs of q/k/v/gate/up and the outputs of o/down), the FFN's by Q (gate/up's outputs,
down's inputs) and the query heads inside each KV group by H, with the value dimensions inside each
head by R (q's and v's outputs, o's inputs). Every quantized weight keeps its codes, scales and
zero points, moved with their columns: a weight whose inputs moved now holds input column k in the
group of its old column, g_idx[k] = old_column(k) / group_size, and so the greedy tokens and
logprobs transformers computed for quant_gptq4 (its golden.json, copied) are this model's too, up
to the order of fp32 sums.

GPTQ's layout (as make_quant_golden.py writes it): qweight int32 (in * bits / 32, out) packed along
the input, value j of a word at bits j * bits; qzeros int32 (in / group, out * bits / 32) packed
along the output; scales F16 (in / group, out); g_idx int32 (in).
"""
import json
import os
import random
import shutil
import struct
import sys

DTYPES = {"F32": ("f", 4), "F16": ("e", 2), "I32": ("i", 4), "I8": ("b", 1)}


def read_st(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, t in header.items():
        code, size = DTYPES[t["dtype"]]
        b, e = t["data_offsets"]
        vals = list(struct.unpack_from("<%d%s" % ((e - b) // size, code), raw, 8 + n + b))
        out[name] = (t["dtype"], list(t["shape"]), vals)
    return out


def write_st(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        dtype, shape, vals = tensors[name]
        code, size = DTYPES[dtype]
        blob = struct.pack("<%d%s" % (len(vals), code), *vals)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def rows_of(vals, shape):
    r, c = shape
    return [vals[i * c:(i + 1) * c] for i in range(r)]


def flat(rows):
    return [v for row in rows for v in row]


def unpack(words, bits):
    """int32 words -> their 32 / bits values, value j at bits j * bits."""
    mask, per = (1 << bits) - 1, 32 // bits
    return [((w & 0xFFFFFFFF) >> (bits * j)) & mask for w in words for j in range(per)]


def pack(values, bits):
    per, out = 32 // bits, []
    for i in range(0, len(values), per):
        u = 0
        for j in range(per):
            u |= values[i + j] << (bits * j)
        out.append(u - (1 << 32) if u >= 1 << 31 else u)
    return out


def take_cols(rows, perm):
    """new column k = old column perm[k]"""
    return [[row[p] for p in perm] for row in rows]


def move_outputs(t, prefix, perm, bits):
    """The linear's output j is its old output perm[j]: qweight's and scales' columns, qzeros' packed ones."""
    dt, shape, vals = t[prefix + "qweight"]
    t[prefix + "qweight"] = (dt, shape, flat(take_cols(rows_of(vals, shape), perm)))
    dt, shape, vals = t[prefix + "scales"]
    t[prefix + "scales"] = (dt, shape, flat(take_cols(rows_of(vals, shape), perm)))
    dt, shape, vals = t[prefix + "qzeros"]
    zs = [unpack(row, bits) for row in rows_of(vals, shape)]
    t[prefix + "qzeros"] = (dt, shape, flat(pack([z[p] for p in perm], bits) for z in zs))


def move_inputs(t, prefix, perm, bits, group):
    """The linear's input k is its old input perm[k]: qweight's packed rows, and g_idx."""
    dt, shape, vals = t[prefix + "qweight"]
    words, out = rows_of(vals, shape), shape[1]
    per = 32 // bits
    codes = [[0] * out for _ in range(shape[0] * per)]  # (in, out)
    for wr, row in enumerate(words):
        for c, w in enumerate(row):
            for j, v in enumerate(unpack([w], bits)):
                codes[wr * per + j][c] = v
    codes = [codes[p] for p in perm]
    packed = [[0] * out for _ in range(shape[0])]
    for c in range(out):
        col = pack([codes[i][c] for i in range(len(codes))], bits)
        for wr in range(shape[0]):
            packed[wr][c] = col[wr]
    t[prefix + "qweight"] = (dt, shape, flat(packed))
    dt, shape, vals = t[prefix + "g_idx"]
    assert vals == [i // group for i in range(len(vals))], prefix + "g_idx: the source must be in order"
    t[prefix + "g_idx"] = (dt, shape, [p // group for p in perm])


def compose(outer, inner):
    return [inner[o] for o in outer]


def main(root):
    rng = random.Random(15)
    for bits in (4,):
        src, dst = os.path.join(root, "quant_gptq%d" % bits), os.path.join(root, "quant_gptq%d_act" % bits)
        with open(os.path.join(src, "config.json")) as f:
            cfg = json.load(f)
        dim, ffn, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
        nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        hd, group = cfg.get("head_dim") or dim // nh, cfg["quantization_config"]["group_size"]
        t = read_st(os.path.join(src, "model.safetensors"))
        P, Q, R = list(range(dim)), list(range(ffn)), list(range(hd))
        rng.shuffle(P), rng.shuffle(Q), rng.shuffle(R)
        H = []  # query head h' is old head H[h'], inside its KV group
        for k in range(nkv):
            g = list(range(k * (nh // nkv), (k + 1) * (nh // nkv)))
            rng.shuffle(g)
            H += g
        heads = [H[i // hd] * hd + i % hd for i in range(nh * hd)]              # q's outputs
        values = [(i // hd) * hd + R[i % hd] for i in range(nkv * hd)]          # v's outputs
        o_in = [H[i // hd] * hd + R[i % hd] for i in range(nh * hd)]            # o's inputs
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            dt, shape, vals = t[name]
            t[name] = (dt, shape, flat(take_cols(rows_of(vals, shape), P)))
        dt, shape, vals = t["model.norm.weight"]
        t["model.norm.weight"] = (dt, shape, [vals[p] for p in P])
        for l in range(L):
            pre = "model.layers.%d." % l
            for norm in ("input_layernorm", "post_attention_layernorm"):
                dt, shape, vals = t[pre + norm + ".weight"]
                t[pre + norm + ".weight"] = (dt, shape, [vals[p] for p in P])
            for lin in ("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.", "mlp.gate_proj.",
                        "mlp.up_proj."):
                move_inputs(t, pre + lin, P, bits, group)
            move_outputs(t, pre + "self_attn.q_proj.", heads, bits)
            move_outputs(t, pre + "self_attn.v_proj.", values, bits)
            move_inputs(t, pre + "self_attn.o_proj.", o_in, bits, group)
            move_outputs(t, pre + "self_attn.o_proj.", P, bits)
            move_outputs(t, pre + "mlp.gate_proj.", Q, bits)
            move_outputs(t, pre + "mlp.up_proj.", Q, bits)
            move_inputs(t, pre + "mlp.down_proj.", Q, bits, group)
            move_outputs(t, pre + "mlp.down_proj.", P, bits)
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(dst)
        for f in ("generation_config.json", "golden.json"):
            shutil.copy(os.path.join(src, f), dst)
        cfg["quantization_config"]["desc_act"] = True
        with open(os.path.join(dst, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        write_st(os.path.join(dst, "model.safetensors"), t)
        print("wrote", dst)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/golden/fixtures")
