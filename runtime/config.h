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
bool rt_config_is_eos(const rt_config *cfg, int token);
/* Adds an end-of-sequence id (already there: nothing); -1 when it is outside the vocabulary or
 * RT_MAX_EOS are taken. */
int rt_config_add_eos(rt_config *cfg, int id);


#endif
