/* A rank's share of the model: which layers, heads, FFN columns and vocabulary rows it holds (the
 * shard, decided by partition/), and those weights loaded from a checkpoint onto a backend. */
#ifndef DINFER_RUNTIME_MODEL_H
#define DINFER_RUNTIME_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#include "runtime/backend.h"
#include "runtime/config.h"
#include "base/err.h"

/* What one rank holds. Ranges are [begin, end) in the full model's numbering. */
typedef struct rt_shard {
    int layer_begin, layer_end; /* this pipeline stage's layers */
    int head_begin, n_heads;    /* query heads */
    int kv_head_begin, n_kv_heads; /* KV heads (replicated across ranks when tp > KV heads) */
    int ffn_begin, ffn_end;     /* FFN (intermediate) columns */
    int vocab_begin, vocab_end; /* embedding and LM-head rows */
    bool first_stage;           /* embeds the tokens */
    bool last_stage;            /* final norm, LM head, sampling */
    bool adds_row_bias;         /* adds o_proj's bias (one rank of a tp group does) */
    int sampler_rank;           /* the world rank that samples and returns the tokens to rank 0 */
} rt_shard;

/* The whole model on one rank. */
void rt_shard_whole(rt_shard *s, const rt_config *cfg);

/* The q, k and v projections are one matrix (rows of q, then k, then v: one product computes all
 * three), and so are gate and up. The matrices only matmul reads (wqkv, wo, w_gate_up, w_down, an
 * untied lm_head) are in the backend's layout for it (rt_tensor.layout). */
typedef struct rt_layer_weights {
    rt_tensor attn_norm; /* (dim) */
    rt_tensor wqkv, bqkv; /* ((n_heads + 2 * n_kv_heads) * head_dim, dim), bias likewise or empty */
    rt_tensor wo, bo;    /* (dim, n_heads * head_dim): this rank's columns; bias (dim) or empty */
    rt_tensor ffn_norm;  /* (dim) */
    rt_tensor w_gate_up; /* (2 * ffn_local, dim): gate's rows, then up's */
    rt_tensor w_down;    /* (dim, ffn_local) */
    float *kv_scales;    /* host memory, (2, n_kv_heads) of this rank: the checkpoint's static FP8 KV-cache
                          * scales, k's then v's (cfg.quant.kv_scales; NULL without) */
} rt_layer_weights;

/* A layer's tensors, each once (for walking them all: freeing, rounding). */
#define RT_LAYER_TENSORS 8
void rt_layer_tensors(rt_layer_weights *w, rt_tensor *out[RT_LAYER_TENSORS]);

typedef struct rt_model {
    rt_config cfg;
    rt_shard shard;
    rt_backend *be;
    rt_tensor embed;          /* (vocab_local, dim), first stage */
    rt_tensor final_norm;     /* (dim), last stage */
    rt_tensor lm_head;        /* (vocab_local, dim), last stage; shares embed's memory when tied */
    int n_layers;             /* layer_end - layer_begin */
    rt_layer_weights *layers; /* (n_layers) */
    size_t bytes_loaded;      /* checkpoint bytes this rank read */
    size_t bytes_held;        /* backend memory its weights take (quantized ones as codes and scales) */
    int act_order_cut;        /* act-order products held as floats: a tensor-parallel split cut their groups */
    int act_order_mixed;      /* and fused ones whose parts' orders differ (q/k/v or gate/up's g_idx) */
} rt_model;

/* Loads the shard's weights from the checkpoint in dir (config.json already parsed into cfg),
 * converting them to the backend's weight type. Every tensor's shape is checked against cfg. */
int rt_model_load(rt_model *m, const rt_config *cfg, const rt_shard *shard, const char *dir,
                  rt_backend *be, base_err *err);
void rt_model_free(rt_model *m);

/* Weight bytes a shard holds in dtype dt (used by the partition plan's memory estimate). */
size_t rt_shard_weight_bytes(const rt_config *cfg, const rt_shard *s, rt_dtype dt);

/* Whether the shard's LM head is its embedding (tied, both on this shard, not quantized apart). */
bool rt_shard_head_is_embedding(const rt_config *cfg, const rt_shard *s);

/* The head_dim / 2 inverse frequencies of the model's rotary embedding, scaling applied. */
void rt_rope_inv_freq(const rt_rope *rope, int head_dim, float *inv_freq);

#endif
