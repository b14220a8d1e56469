#include "runtime/kv_cache.h"

#include <stdlib.h>
#include <string.h>

size_t rt_kv_bytes_per_token(int n_layers, int n_kv_heads, int head_dim, rt_dtype dt, rt_kv_kind kind)
{
    const size_t per_head = kind == RT_KV_FP8_TOKEN    ? (size_t)head_dim + sizeof(float)
                            : kind == RT_KV_FP8_STATIC ? (size_t)head_dim
                                                       : (size_t)head_dim * rt_dtype_size(dt);
    return 2 * (size_t)n_layers * (size_t)n_kv_heads * per_head;
}

const char *rt_kv_describe(const rt_config *c)
{
    switch (rt_kv_kind_of(c)) {
    case RT_KV_FP8_TOKEN:
        return "FP8 with a scale a token and head";
    case RT_KV_FP8_STATIC:
        return c->quant.kv_scales == RT_KV_SCALES_HEAD
                   ? "FP8 under the checkpoint's static scales, one a layer and KV head (kv_cache_scheme)"
                   : "FP8 under the checkpoint's static scales, one a layer (kv_cache_scheme)";
    default:
        return NULL;
    }
}

int rt_kv_cache_create(rt_kv_cache *kv, rt_backend *be, int n_layers, int n_blocks, int block_size,
                       int n_kv_heads, int head_dim, rt_kv_kind kind, base_err *err)
{
    const bool fp8 = kind != RT_KV_FLOAT, per_token = kind == RT_KV_FP8_TOKEN;
    memset(kv, 0, sizeof *kv);
    kv->be = be;
    kv->n_blocks = n_blocks;
    kv->pad_block = n_blocks;
    kv->block_size = block_size;
    kv->n_kv_heads = n_kv_heads;
    kv->head_dim = head_dim;
    kv->fp8 = fp8;
    kv->layers = calloc(n_layers ? (size_t)n_layers : 1, sizeof *kv->layers);
    if (!kv->layers)
        return base_errf(err, "KV cache: out of host memory");
    kv->n_layers = n_layers;
    const size_t slots = (size_t)(n_blocks + 1) * (size_t)block_size * (size_t)n_kv_heads;
    const size_t bytes = slots * (size_t)head_dim * (fp8 ? 1 : rt_dtype_size(be->ops->act_dtype));
    const size_t n_scales = per_token ? slots : (size_t)n_kv_heads;
    for (int l = 0; l < n_layers; l++) {
        rt_kv_layer *y = &kv->layers[l];
        y->k = be->ops->alloc(be, bytes);
        y->v = be->ops->alloc(be, bytes);
        if (fp8) {
            y->k_scale = be->ops->alloc(be, n_scales * sizeof(float));
            y->v_scale = be->ops->alloc(be, n_scales * sizeof(float));
            y->scale_stride = per_token ? n_kv_heads : 0;
        }
        if (!y->k || !y->v || (fp8 && (!y->k_scale || !y->v_scale))) {
            rt_kv_cache_destroy(kv);
            return base_errf(err, "KV cache: cannot allocate %d blocks of %d tokens (%.1f MiB per layer)",
                           n_blocks, block_size, 2.0 * (double)bytes / (1 << 20));
        }
    }
    return 0;
}

int rt_kv_cache_for_model(rt_kv_cache *kv, const rt_model *m, int n_blocks, int block_size, base_err *err)
{
    const rt_kv_kind kind = rt_kv_kind_of(&m->cfg);
    const int nkv = m->shard.n_kv_heads;
    if (rt_kv_cache_create(kv, m->be, m->n_layers, n_blocks, block_size, nkv, m->cfg.head_dim, kind, err))
        return -1;
    for (int l = 0; kind == RT_KV_FP8_STATIC && l < m->n_layers; l++) {
        m->be->ops->upload(m->be, kv->layers[l].k_scale, m->layers[l].kv_scales, (size_t)nkv * sizeof(float));
        m->be->ops->upload(m->be, kv->layers[l].v_scale, m->layers[l].kv_scales + nkv, (size_t)nkv * sizeof(float));
    }
    return 0;
}

void rt_kv_cache_destroy(rt_kv_cache *kv)
{
    for (int l = 0; l < kv->n_layers; l++) {
        if (kv->layers[l].k)
            kv->be->ops->free(kv->be, kv->layers[l].k);
        if (kv->layers[l].v)
            kv->be->ops->free(kv->be, kv->layers[l].v);
        if (kv->layers[l].k_scale)
            kv->be->ops->free(kv->be, kv->layers[l].k_scale);
        if (kv->layers[l].v_scale)
            kv->be->ops->free(kv->be, kv->layers[l].v_scale);
    }
    free(kv->layers);
    memset(kv, 0, sizeof *kv);
}

int rt_kv_blocks_init(rt_kv_blocks *a, int n_blocks, base_err *err)
{
    a->free_ids = malloc((n_blocks ? (size_t)n_blocks : 1) * sizeof *a->free_ids);
    if (!a->free_ids)
        return base_errf(err, "KV blocks: out of memory");
    a->n_blocks = a->n_free = n_blocks;
    /* lowest ids on top of the stack */
    for (int i = 0; i < n_blocks; i++)
        a->free_ids[i] = n_blocks - 1 - i;
    return 0;
}

void rt_kv_blocks_destroy(rt_kv_blocks *a)
{
    free(a->free_ids);
    memset(a, 0, sizeof *a);
}

int rt_kv_blocks_alloc(rt_kv_blocks *a, int n, int *ids)
{
    if (n < 0 || n > a->n_free)
        return -1;
    for (int i = 0; i < n; i++)
        ids[i] = a->free_ids[--a->n_free];
    return 0;
}

void rt_kv_blocks_free(rt_kv_blocks *a, int n, const int *ids)
{
    for (int i = 0; i < n; i++)
        a->free_ids[a->n_free++] = ids[i];
}
