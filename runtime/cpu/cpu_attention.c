/* Attention over the paged KV cache on the CPU, for each (token, KV head): the query heads that
 * share the KV head (grouped-query attention) walk the keys together, in tiles, so each cached key
 * and value row is read once for all of them; an online softmax per head (the tile's scores, its
 * maximum, one rescale of the accumulator per tile, one vectorized exponential per key), so no
 * score matrix is ever stored, whatever the context length. An FP8 cache (codes and a scale a
 * token and head) is read a tile at a time into fp32 rows first. */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "runtime/cpu/cpu_math.h"
#include "runtime/cpu/cpu_ops.h"

#define ATT_TILE 64 /* keys scored before the accumulators are rescaled once */
#define ATT_HEADS 8 /* query heads of one KV head handled together */
#define ATT_TRANSPOSE_HD 32

/* Heads [h0, h0 + nh) of token t, all reading KV head kvh. Inlined into one copy per common head
 * size (hd a constant there: the per-key loops become straight vector code) and a generic one.
 * For small heads (up to ATT_TRANSPOSE_HD) a key's score is too short a dot product to vectorize
 * well (a multiply, then a horizontal sum): the tile's keys are copied transposed first, and the
 * scores of the whole tile are then hd multiply-adds across the keys, for every head of the group. */
static inline __attribute__((always_inline)) void attend(float *out, const float *q, const rt_kv_layer *kv,
                                                         const rt_attn_batch *b, const rt_attn_shape *s, int t,
                                                         int kvh, int h0, int nh, const int hd)
{
    const float *kc = kv->k, *vc = kv->v;
    const bool fp8 = kv->k_scale != NULL;
    float deq[fp8 ? 2 * ATT_TILE * hd : 1]; /* FP8: (2, ATT_TILE, hd) the tile's keys and values */
    const int bs = b->block_size;
    const int64_t qw = (int64_t)s->n_heads * hd, kw = (int64_t)s->n_kv_heads * hd, kvo = (int64_t)kvh * hd;
    const int32_t *table = b->block_tables + (int64_t)b->seq[t] * b->max_blocks;
    const int pos = b->pos[t];
    const int start = s->sliding_window > 0 && pos - s->sliding_window + 1 > 0 ? pos - s->sliding_window + 1 : 0;
    float acc[ATT_HEADS][RT_MAX_HEAD_DIM]; /* config.c limits head_dim */
    float sc[ATT_HEADS][ATT_TILE], m[ATT_HEADS], l[ATT_HEADS];
    const float *qh[ATT_HEADS];
    for (int g = 0; g < nh; g++) {
        qh[g] = q + t * qw + (int64_t)(h0 + g) * hd;
        memset(acc[g], 0, (size_t)hd * sizeof(float));
        m[g] = -INFINITY, l[g] = 0.0f;
    }
    const bool transpose = hd <= ATT_TRANSPOSE_HD;
    float kt[ATT_TRANSPOSE_HD][ATT_TILE]; /* the tile's keys, transposed, when transpose */
    float qs[ATT_HEADS][ATT_TRANSPOSE_HD];
    if (transpose)
        for (int g = 0; g < nh; g++)
            for (int i = 0; i < hd; i++)
                qs[g][i] = qh[g][i] * s->scale;
    /* a tile is a few runs of keys, one per KV block it touches: consecutive rows of the cache */
    int seg_jj[ATT_TILE], seg_len[ATT_TILE]; /* at most one run a key (blocks of one token) */
    const float *seg_k[ATT_TILE], *seg_v[ATT_TILE];
    const int64_t rs = fp8 ? hd : kw; /* between a run's rows */
    for (int j0 = start; j0 <= pos; j0 += ATT_TILE) {
        const int nt = pos - j0 + 1 < ATT_TILE ? pos - j0 + 1 : ATT_TILE;
        int n_seg = 0;
        for (int jj = 0; jj < nt;) {
            const int j = j0 + jj, off = j % bs, len = bs - off < nt - jj ? bs - off : nt - jj;
            const int64_t slot = (int64_t)table[j / bs] * bs + off, row = slot * kw + kvo;
            seg_jj[n_seg] = jj, seg_len[n_seg] = len;
            if (fp8) {
                float *kd = deq + (int64_t)jj * hd, *vd = deq + (int64_t)(ATT_TILE + jj) * hd;
                for (int r = 0; r < len; r++) {
                    const uint8_t *k8 = (const uint8_t *)kv->k + row + r * kw, *v8 = (const uint8_t *)kv->v + row + r * kw;
                    const float ks = kv->k_scale[(slot + r) * kv->scale_stride + kvh];
                    const float vs = kv->v_scale[(slot + r) * kv->scale_stride + kvh];
                    for (int i = 0; i < hd; i++) {
                        kd[r * hd + i] = cpu_fp8(k8[i]) * ks;
                        vd[r * hd + i] = cpu_fp8(v8[i]) * vs;
                    }
                }
                seg_k[n_seg] = kd, seg_v[n_seg] = vd;
            } else {
                seg_k[n_seg] = kc + row, seg_v[n_seg] = vc + row;
            }
            n_seg++;
            jj += len;
        }
        if (transpose) {
            for (int sg = 0; sg < n_seg; sg++)
                for (int r = 0; r < seg_len[sg]; r++) {
                    const float *kj = seg_k[sg] + r * rs;
                    for (int i = 0; i < hd; i++)
                        kt[i][seg_jj[sg] + r] = kj[i];
                }
            for (int i = 0; i < hd; i++) /* a last, partial tile: its unused columns are defined */
                for (int jj = nt; jj < ATT_TILE; jj++)
                    kt[i][jj] = 0.0f;
            for (int g = 0; g < nh; g++) {
#pragma omp simd
                for (int jj = 0; jj < ATT_TILE; jj++)
                    sc[g][jj] = 0.0f;
                for (int i = 0; i < hd; i++) {
                    const float qi = qs[g][i];
#pragma omp simd
                    for (int jj = 0; jj < ATT_TILE; jj++) /* whole tiles: the columns past nt are unused */
                        sc[g][jj] += qi * kt[i][jj];
                }
            }
        } else {
            for (int sg = 0; sg < n_seg; sg++)
                for (int r = 0; r < seg_len[sg]; r++) {
                    const float *kj = seg_k[sg] + r * rs;
                    for (int g = 0; g < nh; g++) {
                        float d = 0.0f;
#pragma omp simd reduction(+ : d)
                        for (int i = 0; i < hd; i++)
                            d += qh[g][i] * kj[i];
                        sc[g][seg_jj[sg] + r] = d * s->scale;
                    }
                }
        }
        for (int g = 0; g < nh; g++) {
            float tmax = -INFINITY;
#pragma omp simd reduction(max : tmax)
            for (int jj = 0; jj < nt; jj++)
                tmax = sc[g][jj] > tmax ? sc[g][jj] : tmax; /* not fmaxf: a libm call, not an instruction */
            const float mn = tmax > m[g] ? tmax : m[g], corr = cpu_expf(m[g] - mn); /* 0 for the first tile */
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int jj = 0; jj < nt; jj++) {
                sc[g][jj] = cpu_expf(sc[g][jj] - mn); /* the tile's probabilities, unnormalized */
                sum += sc[g][jj];
            }
            l[g] = l[g] * corr + sum;
            m[g] = mn;
            for (int i = 0; i < hd; i++)
                acc[g][i] *= corr;
        }
        for (int g = 0; g < nh; g++) {
            float *ag = acc[g];
            for (int sg = 0; sg < n_seg; sg++) {
                const float *ps = sc[g] + seg_jj[sg], *vb = seg_v[sg];
                for (int r = 0; r < seg_len[sg]; r++) {
                    const float p = ps[r], *vj = vb + r * rs;
#pragma omp simd
                    for (int i = 0; i < hd; i++)
                        ag[i] += p * vj[i];
                }
            }
        }
    }
    for (int g = 0; g < nh; g++) {
        float *oh = out + t * qw + (int64_t)(h0 + g) * hd;
        const float inv = 1.0f / l[g];
        for (int i = 0; i < hd; i++)
            oh[i] = acc[g][i] * inv;
    }
}

#define ATTEND_FOR(HD)                                                                                      \
    static void attend_##HD(float *out, const float *q, const rt_kv_layer *kv, const rt_attn_batch *b,              \
                            const rt_attn_shape *s, int t, int kvh, int h0, int nh)                           \
    {                                                                                                       \
        attend(out, q, kv, b, s, t, kvh, h0, nh, HD);                                                       \
    }
ATTEND_FOR(8)
ATTEND_FOR(16)
ATTEND_FOR(32)
ATTEND_FOR(64)
ATTEND_FOR(128)
ATTEND_FOR(256)

static void attend_any(float *out, const float *q, const rt_kv_layer *kv, const rt_attn_batch *b,
                       const rt_attn_shape *s, int t, int kvh, int h0, int nh)
{
    attend(out, q, kv, b, s, t, kvh, h0, nh, s->head_dim);
}

typedef void (*attend_fn)(float *, const float *, const rt_kv_layer *, const rt_attn_batch *,
                          const rt_attn_shape *, int, int, int, int);



void cpu_attention(rt_backend *be, void *out, const void *q, const rt_kv_layer *kv, const rt_attn_batch *b,
                   const rt_attn_shape *s)
{
    const int hd = s->head_dim;
    const attend_fn fn = hd == 8 ? attend_8 : hd == 16 ? attend_16 : hd == 32 ? attend_32 : hd == 64 ? attend_64
                         : hd == 128 ? attend_128 : hd == 256 ? attend_256 : attend_any;
    (void)be;
    const int group = s->n_heads / s->n_kv_heads, chunks = (group + ATT_HEADS - 1) / ATT_HEADS;
    /* query head h reads KV head h / group: heads [kvh * group, (kvh + 1) * group) share one */
    CPU_FOR_DYNAMIC(i, (int64_t)b->n_tokens * s->n_kv_heads * chunks, {
        const int t = (int)(i / ((int64_t)s->n_kv_heads * chunks)), kvh = (int)(i / chunks % s->n_kv_heads);
        const int c = (int)(i % chunks);
        const int h0 = kvh * group + c * ATT_HEADS;
        const int nh = group - c * ATT_HEADS < ATT_HEADS ? group - c * ATT_HEADS : ATT_HEADS;
        fn(out, q, kv, b, s, t, kvh, h0, nh);
    });
}
