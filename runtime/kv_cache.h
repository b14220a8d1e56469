/* The paged KV cache: a pool of fixed-size blocks on the device (every rank holds the same number
 * of blocks, each with its own layers and KV heads) and the block allocator the scheduler uses to
 * hand blocks to sequences. */
#ifndef DINFER_RUNTIME_KV_CACHE_H
#define DINFER_RUNTIME_KV_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "runtime/backend.h"
#include "runtime/model.h"
#include "base/err.h"

#define RT_DEFAULT_BLOCK_SIZE 16

typedef struct rt_kv_cache {
    rt_backend *be;
    int n_layers;        /* this rank's layers */
    int n_blocks;        /* blocks sequences get: ids [0, n_blocks) */
    int pad_block;       /* one more block no sequence gets (id n_blocks): the padding rows of a
                          * captured step (forward.c) write their k and v there */
    int block_size;      /* tokens per block */
    int n_kv_heads;      /* this rank's KV heads */
    int head_dim;
    bool fp8;            /* FP8 codes with their scales (rt_kv_layer), else the backend's type */
    rt_kv_layer *layers; /* (n_layers) */
} rt_kv_cache;

/* What the cache holds: the compute type, FP8 codes with a scale a token and KV head, or FP8 codes
 * under the checkpoint's static scales (one a layer and KV head, none stored a token: a checkpoint
 * with them, --kv-dtype fp8, and not --kv-scales token). */
typedef enum rt_kv_kind { RT_KV_FLOAT, RT_KV_FP8_TOKEN, RT_KV_FP8_STATIC } rt_kv_kind;

static inline rt_kv_kind rt_kv_kind_of(const rt_config *c)
{
    return !c->kv_fp8                                                          ? RT_KV_FLOAT
           : c->quant.kv_scales != RT_KV_SCALES_NONE && !c->kv_token_scales ? RT_KV_FP8_STATIC
                                                                              : RT_KV_FP8_TOKEN;
}

/* An FP8 cache as a phrase ("FP8 with a scale a token and head", ...), NULL for RT_KV_FLOAT. */
const char *rt_kv_describe(const rt_config *c);

/* Bytes one token takes in the cache on a rank with these dimensions (k and v, every layer): in
 * type dt, or FP8 codes (and their scales where each token has its own). */
size_t rt_kv_bytes_per_token(int n_layers, int n_kv_heads, int head_dim, rt_dtype dt, rt_kv_kind kind);

/* The cache of kind for layers of n_kv_heads; RT_KV_FP8_STATIC's scales are the caller's to set
 * (rt_kv_cache_for_model uploads the checkpoint's). */
int rt_kv_cache_create(rt_kv_cache *kv, rt_backend *be, int n_layers, int n_blocks, int block_size,
                       int n_kv_heads, int head_dim, rt_kv_kind kind, base_err *err);
/* The cache for model m's shard as its config says (--kv-dtype, the checkpoint's static scales). */
int rt_kv_cache_for_model(rt_kv_cache *kv, const rt_model *m, int n_blocks, int block_size, base_err *err);
void rt_kv_cache_destroy(rt_kv_cache *kv);

/* Free-list allocator of block ids [0, n_blocks). */
typedef struct rt_kv_blocks {
    int n_blocks;
    int n_free;
    int *free_ids; /* stack of free ids */
} rt_kv_blocks;

int rt_kv_blocks_init(rt_kv_blocks *a, int n_blocks, base_err *err);
void rt_kv_blocks_destroy(rt_kv_blocks *a);
/* Takes n blocks into ids; fails (taking none) when fewer than n are free. */
int rt_kv_blocks_alloc(rt_kv_blocks *a, int n, int *ids);
void rt_kv_blocks_free(rt_kv_blocks *a, int n, const int *ids);

/* Blocks needed to hold n_tokens tokens. */
static inline int rt_kv_blocks_for(int n_tokens, int block_size)
{
    return (n_tokens + block_size - 1) / block_size;
}

#endif
