#include "runtime/kv_cache.h"

#include <stdlib.h>
#include <string.h>

size_t rt_kv_bytes_per_token(int n_layers, int n_kv_heads, int head_dim, rt_dtype dt, bool fp8)
{
    const size_t per_head = fp8 ? (size_t)head_dim + sizeof(float) : (size_t)head_dim * rt_dtype_size(dt);
    return 2 * (size_t)n_layers * (size_t)n_kv_heads * per_head;
}

int rt_kv_cache_create(rt_kv_cache *kv, rt_backend *be, int n_layers, int n_blocks, int block_size,
                       int n_kv_heads, int head_dim, bool fp8, base_err *err)
{
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
    size_t bytes = slots * (size_t)head_dim * (fp8 ? 1 : rt_dtype_size(be->ops->act_dtype));
    for (int l = 0; l < n_layers; l++) {
        rt_kv_layer *y = &kv->layers[l];
        y->k = be->ops->alloc(be, bytes);
        y->v = be->ops->alloc(be, bytes);
        if (fp8) {
            y->k_scale = be->ops->alloc(be, slots * sizeof(float));
            y->v_scale = be->ops->alloc(be, slots * sizeof(float));
        }
        if (!y->k || !y->v || (fp8 && (!y->k_scale || !y->v_scale))) {
            rt_kv_cache_destroy(kv);
            return base_errf(err, "KV cache: cannot allocate %d blocks of %d tokens (%.1f MiB per layer)",
                           n_blocks, block_size, 2.0 * (double)bytes / (1 << 20));
        }
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
