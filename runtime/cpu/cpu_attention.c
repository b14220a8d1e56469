/* Attention over the paged KV cache on the CPU: one pass per (token, head) over the keys in tiles
 * with an online softmax (scores of a tile, its maximum, one rescale of the accumulator per tile,
 * one exponential per key), so no score matrix is ever stored, whatever the context length. */
#include <math.h>
#include <string.h>

#include "runtime/cpu/cpu_ops.h"

#define ATT_TILE 64 /* keys scored before the accumulator is rescaled once */

void cpu_attention(rt_backend *be, void *out_, const void *q_, const rt_kv_layer *kv, const rt_attn_batch *b,
                   const rt_attn_shape *s)
{
    (void)be;
    float *out = out_;
    const float *q = q_;
    const float *kc = kv->k, *vc = kv->v;
    const int hd = s->head_dim, group = s->n_heads / s->n_kv_heads, bs = b->block_size;
    const int64_t qw = (int64_t)s->n_heads * hd, kw = (int64_t)s->n_kv_heads * hd;
#pragma omp parallel for collapse(2) schedule(dynamic, 4)
    for (int t = 0; t < b->n_tokens; t++) {
        for (int h = 0; h < s->n_heads; h++) {
            const float *qh = q + t * qw + (int64_t)h * hd;
            const int32_t *table = b->block_tables + (int64_t)b->seq[t] * b->max_blocks;
            const int64_t kvo = (int64_t)(h / group) * hd;
            const int pos = b->pos[t];
            const int start = s->sliding_window > 0 && pos - s->sliding_window + 1 > 0
                                  ? pos - s->sliding_window + 1 : 0;
            float acc[RT_MAX_HEAD_DIM]; /* config.c limits head_dim */
            float sc[ATT_TILE];
            int64_t slots[ATT_TILE];
            memset(acc, 0, (size_t)hd * sizeof *acc);
            float m = -INFINITY, l = 0.0f;
            for (int j0 = start; j0 <= pos; j0 += ATT_TILE) {
                const int nt = pos - j0 + 1 < ATT_TILE ? pos - j0 + 1 : ATT_TILE;
                float tmax = -INFINITY;
                int blk = j0 / bs, off = j0 % bs; /* walked, not divided, key by key */
                for (int jj = 0; jj < nt; jj++) {
                    slots[jj] = (int64_t)table[blk] * bs + off;
                    if (++off == bs)
                        blk++, off = 0;
                    const float *kj = kc + slots[jj] * kw + kvo;
                    float d = 0.0f;
#pragma omp simd reduction(+ : d)
                    for (int i = 0; i < hd; i++)
                        d += qh[i] * kj[i];
                    sc[jj] = d * s->scale;
                    tmax = sc[jj] > tmax ? sc[jj] : tmax;
                }
                const float mn = tmax > m ? tmax : m, corr = expf(m - mn); /* expf(-inf) = 0 at first */
                l *= corr;
                for (int i = 0; i < hd; i++)
                    acc[i] *= corr;
                for (int jj = 0; jj < nt; jj++) {
                    const float p = expf(sc[jj] - mn);
                    const float *vj = vc + slots[jj] * kw + kvo;
                    l += p;
#pragma omp simd
                    for (int i = 0; i < hd; i++)
                        acc[i] += p * vj[i];
                }
                m = mn;
            }
            float *oh = out + t * qw + (int64_t)h * hd;
            float inv = 1.0f / l;
            for (int i = 0; i < hd; i++)
                oh[i] = acc[i] * inv;
        }
    }
}
