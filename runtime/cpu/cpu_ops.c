/* Element-wise and row-wise CPU ops: embedding, norms, RoPE with the KV write, SiLU-mul, gather. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu/cpu_math.h"
#include "runtime/cpu/cpu_ops.h"
#include "runtime/dtype.h"

void cpu_embedding(rt_backend *be, void *out_, const rt_tensor *table, int64_t row_begin,
                   const int32_t *tokens, int n, const int32_t *chain, const rt_sample_out *prev)
{
    (void)be;
    float *out = out_;
    const float *tab = table->data;
    const int64_t dim = table->cols;
    CPU_FOR(t, n, {
        int64_t r = (int64_t)(chain && chain[t] >= 0 ? prev[chain[t]].token : tokens[t]) - row_begin;
        float *o = out + t * dim;
        if (r >= 0 && r < table->rows)
            memcpy(o, tab + r * dim, (size_t)dim * sizeof *o);
        else
            memset(o, 0, (size_t)dim * sizeof *o);
    });
}

static void rmsnorm_row(float *o, const float *x, const float *w, int64_t dim, float eps)
{
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < dim; i++)
        ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int64_t i = 0; i < dim; i++)
        o[i] = w[i] * (x[i] * inv);
}

void cpu_rmsnorm(rt_backend *be, void *out, const void *x, const rt_tensor *w, int n, float eps)
{
    (void)be;
    const int64_t dim = w->rows;
    CPU_FOR(t, n, rmsnorm_row((float *)out + t * dim, (const float *)x + t * dim, w->data, dim, eps););
}

void cpu_add_rmsnorm(rt_backend *be, void *x_, const void *delta_, void *out, const rt_tensor *w, int n,
                     float eps)
{
    (void)be;
    float *x = x_;
    const float *delta = delta_;
    const int64_t dim = w->rows;
    CPU_FOR(t, n, {
        float *xr = x + t * dim;
        const float *dr = delta + t * dim;
        for (int64_t i = 0; i < dim; i++)
            xr[i] += dr[i];
        rmsnorm_row((float *)out + t * dim, xr, w->data, dim, eps);
    });
}

/* Hugging Face layout: element i of a head pairs with element i + head_dim / 2. */
static void rope_head(float *h, const float *cosv, const float *sinv, int half)
{
    for (int i = 0; i < half; i++) {
        float a = h[i], b = h[i + half];
        h[i] = a * cosv[i] - b * sinv[i];
        h[i + half] = b * cosv[i] + a * sinv[i];
    }
}

/* One head's hd values into an FP8 cache row: codes and the scale (largest magnitude / 448), or
 * (fixed) codes under the static scale *scale, saturating. */
static void fp8_row(uint8_t *codes, float *scale, const float *x, int hd, bool fixed)
{
    float amax = 0.0f;
    for (int i = 0; i < hd && !fixed; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    const float s = fixed ? *scale : amax > 0.0f ? amax / 448.0f : 1.0f;
    *scale = s;
    for (int i = 0; i < hd; i++)
        codes[i] = rt_f32_to_fp8(x[i] / s);
}

void cpu_rope_kv_write(rt_backend *be, void *q_, const void *qkv_, const float *inv_freq, const rt_attn_batch *b,
                       const rt_attn_shape *s, rt_kv_layer *kv)
{
    (void)be;
    float *q = q_;
    const float *qkv = qkv_;
    const int hd = s->head_dim, half = hd / 2;
    const int64_t qw = (int64_t)s->n_heads * hd, kw = (int64_t)s->n_kv_heads * hd, row = qw + 2 * kw;
    CPU_FOR(t, b->n_tokens, {
        float cosv[RT_MAX_HEAD_DIM / 2], sinv[RT_MAX_HEAD_DIM / 2]; /* config.c limits head_dim */
        float p = (float)b->pos[t];
        for (int i = 0; i < half; i++) {
            float ang = p * inv_freq[i]; /* fp32 product, as transformers computes it */
            cosv[i] = cosf(ang);
            sinv[i] = sinf(ang);
        }
        const float *src = qkv + t * row;
        memcpy(q + t * qw, src, (size_t)qw * sizeof(float));
        for (int h = 0; h < s->n_heads; h++)
            rope_head(q + t * qw + (int64_t)h * hd, cosv, sinv, half);
        const int64_t slot = b->slot[t];
        if (kv->k_scale) { /* FP8: each head's rotated k and its v, quantized */
            float kh[RT_MAX_HEAD_DIM];
            const bool fixed = kv->scale_stride == 0;
            for (int h = 0; h < s->n_kv_heads; h++) {
                const int64_t at = slot * kw + (int64_t)h * hd, si = slot * kv->scale_stride + h;
                memcpy(kh, src + qw + (int64_t)h * hd, (size_t)hd * sizeof(float));
                rope_head(kh, cosv, sinv, half);
                fp8_row((uint8_t *)kv->k + at, kv->k_scale + si, kh, hd, fixed);
                fp8_row((uint8_t *)kv->v + at, kv->v_scale + si, src + qw + kw + (int64_t)h * hd, hd, fixed);
            }
        } else {
            float *kc = (float *)kv->k + slot * kw;
            memcpy(kc, src + qw, (size_t)kw * sizeof(float));
            memcpy((float *)kv->v + slot * kw, src + qw + kw, (size_t)kw * sizeof(float));
            for (int h = 0; h < s->n_kv_heads; h++)
                rope_head(kc + (int64_t)h * hd, cosv, sinv, half);
        }
    });
}

void cpu_add(rt_backend *be, void *x_, const void *y_, size_t n)
{
    (void)be;
    float *x = x_;
    const float *y = y_;
    /* in chunks: one thread a chunk, each chunk a vector loop */
    const int64_t chunk = 1 << 14, chunks = ((int64_t)n + chunk - 1) / chunk;
    CPU_FOR(c, chunks, {
        const int64_t end = (c + 1) * chunk < (int64_t)n ? (c + 1) * chunk : (int64_t)n;
        for (int64_t i = c * chunk; i < end; i++)
            x[i] += y[i];
    });
}

void cpu_silu_mul(rt_backend *be, void *out_, const void *gate_up, int n, int ffn)
{
    (void)be;
    float *out = out_;
    CPU_FOR(t, n, {
        const float *g = (const float *)gate_up + t * 2 * ffn, *u = g + ffn;
        float *o = out + t * ffn;
        for (int i = 0; i < ffn; i++)
            o[i] = g[i] / (1.0f + cpu_expf(-g[i])) * u[i];
    });
}

void cpu_gather_rows(rt_backend *be, void *out, const void *x, const int32_t *rows, int n, int dim)
{
    (void)be;
    for (int i = 0; i < n; i++)
        memcpy((float *)out + (int64_t)i * dim, (const float *)x + (int64_t)rows[i] * dim,
               (size_t)dim * sizeof(float));
}

void cpu_gather_cols(rt_backend *be, void *out, const void *x, const int32_t *cols, int n, int dim)
{
    (void)be;
    CPU_FOR(i, n, {
        const float *src = (const float *)x + i * dim;
        float *dst = (float *)out + i * dim;
        for (int c = 0; c < dim; c++)
            dst[c] = src[cols[c]];
    });
}

/* ---- the fused chain (backend.h's fuses / matmul_fused / norm_begin) ----
 *
 * The CPU backend runs it only when DINFER_CPU_FUSE=1 (rt_cpu_backend_create): the product as
 * cpu_matmul computes it, then what rt_fusion says done on its rows, so that the forward pass's
 * fused chain (which the GPU runs at small batch) is tested where no GPU is: the golden fixtures
 * under it must give transformers' tokens as the op-by-op path does. */
#define CPU_FUSE_MAX_ROWS 16

bool cpu_fuses(rt_backend *be, const rt_tensor *w, int n)
{
    (void)be, (void)w;
    return n > 0 && n <= CPU_FUSE_MAX_ROWS;
}

void cpu_matmul_fused(rt_backend *be, void *out_, const void *x, const rt_tensor *w, const rt_tensor *bias,
                      const rt_fusion *f, int n)
{
    const int N = (int)w->rows, K = (int)w->cols;
    float *p = malloc((size_t)n * (size_t)N * sizeof *p), *out = out_;
    if (!p) /* host ops have no failure path: a product of at most 16 rows is a few MiB */
        abort();
    const rt_tensor none = {0};
    const float *b = bias && bias->data ? bias->data : NULL;
    cpu_matmul(be, p, x, w, &none, n);
    for (int r = 0; r < n; r++) {
        float *pr = p + (size_t)r * N;
        const float inv =
            f->norm_ss ? 1.0f / sqrtf(f->norm_ss[(size_t)r * RT_FUSION_SS_STRIDE] / (float)K + f->eps) : 1.0f;
        for (int j = 0; j < N; j++) /* the norm scales the product, not the bias */
            pr[j] = pr[j] * inv + (b ? b[j] : 0.0f);
        if (f->silu) {
            float *o = out + (size_t)r * (N / 2);
            for (int j = 0; j < N / 2; j++)
                o[j] = pr[j] / (1.0f + cpu_expf(-pr[j])) * pr[N / 2 + j];
        } else if (f->residual) {
            float *o = out + (size_t)r * N, *xg = f->next_norm ? (float *)f->xg + (size_t)r * N : NULL;
            const float *g = f->next_norm ? f->next_norm->data : NULL;
            float sq = 0.0f;
            for (int j = 0; j < N; j++) {
                o[j] += pr[j];
                if (g) {
                    xg[j] = o[j] * g[j];
                    sq += o[j] * o[j];
                }
            }
            if (g)
                f->ss[(size_t)r * RT_FUSION_SS_STRIDE] += sq;
        } else {
            memcpy(out + (size_t)r * N, pr, (size_t)N * sizeof *pr);
        }
    }
    free(p);
}

void cpu_norm_begin(rt_backend *be, void *xg_, float *ss, size_t ss_len, const void *x_, const rt_tensor *w, int n)
{
    (void)be;
    const int dim = (int)w->rows;
    const float *x = x_, *g = w->data;
    float *xg = xg_;
    memset(ss, 0, ss_len * sizeof *ss);
    for (int r = 0; r < n; r++) {
        float sq = 0.0f;
        for (int j = 0; j < dim; j++) {
            const float v = x[(size_t)r * dim + j];
            sq += v * v;
            xg[(size_t)r * dim + j] = v * g[j];
        }
        ss[(size_t)r * RT_FUSION_SS_STRIDE] = sq;
    }
}
