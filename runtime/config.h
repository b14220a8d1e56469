/* The model description read from a Hugging Face config.json (Llama, Mistral, Qwen2). */
#ifndef DINFER_RUNTIME_CONFIG_H
#define DINFER_RUNTIME_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "runtime/dtype.h"
#include "base/err.h"

#define RT_MAX_EOS 8
/* The largest head_dim any backend supports, given or derived (hidden_size / num_attention_heads):
 * the CPU kernels keep a head's accumulators and rotary factors on the stack, the CUDA attention
 * kernel in registers. Every such site is sized from this one limit. */
#define RT_MAX_HEAD_DIM 1024
#define RT_CONFIG_MAX_BYTES ((size_t)4 << 20) /* a config.json is a few KB; refuse what is not one */

typedef enum rt_arch {
    RT_ARCH_LLAMA = 0,
    RT_ARCH_MISTRAL,
    RT_ARCH_QWEN2,
} rt_arch;

typedef enum rt_rope_type {
    RT_ROPE_DEFAULT = 0,
    RT_ROPE_LINEAR,  /* positions divided by factor */
    RT_ROPE_LLAMA3,  /* Llama 3.1 frequency-dependent scaling */
} rt_rope_type;

typedef struct rt_rope {
    rt_rope_type type;
    double theta;           /* base of the inverse frequencies */
    double factor;          /* linear and llama3 */
    double low_freq_factor; /* llama3 */
    double high_freq_factor;
    int orig_max_pos;       /* llama3 original_max_position_embeddings */
} rt_rope;

/* Quantized weights: what config.json's quantization_config says the linear layers hold (the
 * embeddings, norms and, unless the checkpoint quantized it, the LM head stay float), or what
 * --quantize makes of a float checkpoint as it loads. runtime/quant.h reads and applies it. */
typedef enum rt_quant_method {
    RT_QUANT_NONE = 0,
    RT_QUANT_CT_FP8, /* compressed-tensors "float-quantized" (or "naive-quantized") FP8 */
    RT_QUANT_FP8,    /* transformers "fp8": FP8 with block scales (weight_scale_inv) */
    RT_QUANT_AWQ,    /* AWQ, GEMM packing, 4 bits with zero points */
    RT_QUANT_GPTQ,   /* GPTQ, 4 or 8 bits, its columns' groups from g_idx (act order: desc_act) */
    RT_QUANT_CT_INT, /* compressed-tensors integers: "pack-quantized" int4/int8 (llm-compressor's W4A16,
                      * W8A16), "int-quantized" int8 (its W8A8: activations left in the compute type) */
    RT_QUANT_LOAD,   /* a float checkpoint quantized as it loads (--quantize) */
} rt_quant_method;

typedef enum rt_quant_kind {
    RT_QK_FP8 = 1, /* FP8 e4m3 codes times a scale */
    RT_QK_INT,     /* unsigned integer codes of `bits` bits: (code - zero) times a scale */
} rt_quant_kind;

typedef enum rt_quant_scale {
    RT_QSCALE_TENSOR = 0, /* one scale a matrix */
    RT_QSCALE_CHANNEL,    /* one scale an output row */
    RT_QSCALE_GROUP,      /* one an output row and group_size input columns */
    RT_QSCALE_BLOCK,      /* one a block of block_rows x block_cols */
} rt_quant_scale;

/* The FP8 KV-cache scales a checkpoint carries (compressed-tensors' kv_cache_scheme: tensors
 * model.layers.L.self_attn.k_scale and v_scale, static, found by calibration). */
typedef enum rt_kv_scales {
    RT_KV_SCALES_NONE,   /* none */
    RT_KV_SCALES_TENSOR, /* one k_scale and one v_scale a layer (strategy "tensor") */
    RT_KV_SCALES_HEAD,   /* one a KV head (strategy "attn_head") */
} rt_kv_scales;

typedef struct rt_quant {
    rt_quant_method method;
    rt_quant_kind kind;
    rt_quant_scale scale;
    int bits;                   /* 8 (FP8, int8) or 4 */
    int group_size;             /* RT_QSCALE_GROUP */
    int block_rows, block_cols; /* RT_QSCALE_BLOCK */
    bool zero_point;            /* integer codes come with zero points (else the zero is 2^(bits-1)) */
    bool gptq_v1;               /* GPTQ's "gptq" format: each stored zero point is the zero minus one */
    bool symmetric;             /* GPTQ's sym (its zero points are then all 2^(bits-1)) */
    bool act_order;             /* GPTQ's desc_act (compressed-tensors' actorder "group"): columns
                                 * quantized out of order, each one's group in g_idx (weight_g_idx);
                                 * the loader puts groups back in runs and the forward pass gathers a
                                 * product's inputs in that order (rt_tensor_quant.perm) */
    bool scales_f16;            /* scales are stored as F16 (AWQ, GPTQ): quantizing rounds them so */
    bool int8_weight;           /* compressed-tensors int-quantized (naive-quantized): `weight` holds each
                                 * signed value in a byte (int8 I8), 8 (or 4) bits of it used */
    rt_kv_scales kv_scales;     /* the checkpoint's FP8 KV-cache scales (compressed-tensors) */
} rt_quant;

typedef struct rt_config {
    rt_arch arch;
    int dim;            /* hidden_size */
    int ffn_dim;        /* intermediate_size */
    int n_layers;       /* num_hidden_layers */
    int n_heads;        /* num_attention_heads */
    int n_kv_heads;     /* num_key_value_heads (GQA when < n_heads) */
    int head_dim;       /* head_dim, default dim / n_heads */
    int vocab_size;
    int max_pos;        /* max_position_embeddings: the context length */
    double norm_eps;    /* rms_norm_eps */
    rt_rope rope;
    bool tie_embeddings;
    bool qkv_bias;      /* Qwen2, or Llama with attention_bias */
    bool o_bias;        /* Llama with attention_bias */
    int sliding_window; /* 0: full attention; else a query sees this many positions (itself included) */
    int bos_id;         /* -1 when the config has none */
    int n_eos;
    int eos_ids[RT_MAX_EOS];
    rt_dtype dtype;     /* torch_dtype / dtype: the checkpoint's compute type */
    rt_quant quant;     /* quantization_config, or --quantize (method RT_QUANT_NONE: float weights) */
    rt_quant head_quant; /* --quantize-lm-head: the LM head quantized as it loads (method RT_QUANT_NONE: as
                          * stored, float; tied to the embedding, its own quantized copy) */
    bool kv_fp8;        /* --kv-dtype fp8: the KV cache in FP8 e4m3, a scale a token and KV head, or the
                         * checkpoint's static scales (quant.kv_scales) */
    bool kv_token_scales; /* --kv-scales token: a scale a token even where the checkpoint has its own */
} rt_config;

/* Parses the text of a config.json (len bytes, need not be NUL-terminated). `name` is used in error
 * messages. Fails with a message naming the field and value for anything missing, of the wrong
 * type, out of range or unsupported. */
int rt_config_parse(rt_config *cfg, const char *text, size_t len, const char *name, base_err *err);

/* Reads DIR/config.json and parses it; the end-of-sequence ids of DIR/generation_config.json, when
 * there is one, are joined to config.json's (transformers' generate() stops at either). */
int rt_config_load(rt_config *cfg, const char *dir, base_err *err);

/* Writes cfg as a config.json (transformers 4 key style, which every reader accepts) to path. */
int rt_config_write(const rt_config *cfg, const char *path, base_err *err);

const char *rt_arch_name(rt_arch a); /* "LlamaForCausalLM", ... */
struct cJSON;
/* Parses a quantization_config object (`name` prefixes messages); refuses what dinfer cannot load,
 * naming the field: method, format, bits, group size, activation order, zero-point layout. */
int rt_quant_parse(rt_quant *q, const struct cJSON *obj, const char *name, base_err *err);
/* --quantize's modes: "fp8" (per channel), "int8" (per channel, symmetric), "int4" (groups of
 * 128 with zero points, round to nearest); -1 for another name. */
int rt_quant_for_load(rt_quant *q, const char *mode);
/* The quantization_config object that describes q (a checkpoint method), as the format's tools
 * write it; NULL for RT_QUANT_NONE / RT_QUANT_LOAD or out of memory. */
struct cJSON *rt_quant_to_json(const rt_quant *q);
/* "AWQ int4, groups of 128", ... for logs and messages (buf of 96 bytes is enough). */
const char *rt_quant_describe(const rt_quant *q, char *buf, size_t size);
bool rt_config_is_eos(const rt_config *cfg, int token);
/* Adds an end-of-sequence id (already there: nothing); -1 when it is outside the vocabulary or
 * RT_MAX_EOS are taken. */
int rt_config_add_eos(rt_config *cfg, int id);


#endif
