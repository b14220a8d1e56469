#include <math.h>
#include <string.h>

#include "runtime/cpu/cpu_ops.h"
#include "runtime/dtype.h"

/* A dot product the compiler vectorizes (the simd reduction allows reassociation without
 * -ffast-math). */
static inline float dot(const float *restrict a, const float *restrict b, int64_t n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Four dot products of one activation row with four weight rows: four independent accumulator
 * chains, so the adds of one row do not wait on each other, and the activation row is loaded
 * once for all four. */
static inline void dot4(const float *restrict a, const float *restrict w, int64_t K, float *out)
{
    const float *restrict w0 = w, *restrict w1 = w + K, *restrict w2 = w + 2 * K, *restrict w3 = w + 3 * K;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t i = 0; i < K; i++) {
        s0 += a[i] * w0[i];
        s1 += a[i] * w1[i];
        s2 += a[i] * w2[i];
        s3 += a[i] * w3[i];
    }
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

/* Panels (RT_PANELS8): eight weight rows interleaved column by column, so a product is, for each
 * column k, x[k] times eight consecutive floats added into eight outputs: vector multiply-adds with
 * no horizontal sums, which dominate row-by-row dot products when rows are short (a 64-wide model).
 * PANELS panels (32 outputs) are computed together, each x[k] broadcast once for all of them. */
#define PANEL 8
#define PANELS 4

int cpu_prepare_weight(rt_backend *be, rt_tensor *w)
{
    if (w->layout != RT_ROWS || w->dtype != RT_F32 || w->q.kind)
        return 0;
    const int64_t N = w->rows, K = w->cols, np = (N + PANEL - 1) / PANEL;
    float *p = be->ops->alloc(be, (size_t)np * (size_t)K * PANEL * sizeof *p);
    if (!p)
        return -1;
    const float *W = w->data;
    CPU_FOR(q, np, {
        for (int64_t k = 0; k < K; k++)
            for (int r = 0; r < PANEL; r++) {
                const int64_t row = q * PANEL + r;
                p[(q * K + k) * PANEL + r] = row < N ? W[row * K + k] : 0.0f;
            }
    });
    be->ops->free(be, w->data);
    w->data = p;
    w->layout = RT_PANELS8;
    return 0;
}

/* Eight floats as one value: GCC's vector extension (a vector register where the target has one,
 * pairs or quads of narrower ones elsewhere), so the accumulators stay in registers. */
typedef float v8f __attribute__((vector_size(PANEL * sizeof(float))));

/* Eight floats from p (any alignment). A macro, not a function: a vector passed or returned by value
 * changes the ABI where the target lacks AVX (DINFER_NATIVE off), and GCC says so. */
#define LOAD8(v, p) memcpy(&(v), (p), sizeof(v8f))

/* acc[j] = sum over k of x[k] * P[q0 + j][k][0..8), for np (1 or PANELS) panels from q0. */
static inline __attribute__((always_inline)) void panels(const float *restrict x, const float *restrict P, int64_t K,
                                                         int64_t q0, const int np, v8f *acc)
{
    const float *restrict p = P + q0 * K * PANEL;
    if (np == PANELS) {
        v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        const float *p1 = p + K * PANEL, *p2 = p1 + K * PANEL, *p3 = p2 + K * PANEL;
        for (int64_t k = 0; k < K; k++) {
            const v8f xk = (v8f){0} + x[k];
            v8f w0, w1, w2, w3;
            LOAD8(w0, p + k * PANEL);
            LOAD8(w1, p1 + k * PANEL);
            LOAD8(w2, p2 + k * PANEL);
            LOAD8(w3, p3 + k * PANEL);
            a0 += xk * w0, a1 += xk * w1, a2 += xk * w2, a3 += xk * w3;
        }
        acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
        return;
    }
    for (int j = 0; j < np; j++, p += K * PANEL) {
        v8f a = {0};
        for (int64_t k = 0; k < K; k++) {
            v8f w0;
            LOAD8(w0, p + k * PANEL);
            a += ((v8f){0} + x[k]) * w0;
        }
        acc[j] = a;
    }
}

static void matmul_panels(float *out, const float *x, const rt_tensor *w, const float *b, int n)
{
    const int64_t N = w->rows, K = w->cols, np = (N + PANEL - 1) / PANEL, groups = (np + PANELS - 1) / PANELS;
    const float *P = w->data;
    CPU_FOR(g, groups, {
        const int64_t q0 = g * PANELS;
        const int m = np - q0 < PANELS ? (int)(np - q0) : PANELS;
        for (int t = 0; t < n; t++) {
            v8f acc[PANELS];
            panels(x + (int64_t)t * K, P, K, q0, m, acc);
            float *o = out + (int64_t)t * N + q0 * PANEL;
            const int64_t rows = N - q0 * PANEL < PANELS * PANEL ? N - q0 * PANEL : PANELS * PANEL;
            float v[PANELS * PANEL];
            memcpy(v, acc, sizeof v);
            for (int64_t r = 0; r < rows; r++)
                o[r] = v[r] + (b ? b[q0 * PANEL + r] : 0.0f);
        }
    });
}

/* A quantized weight (rt_tensor_quant): threads take groups of PANELS panels as for float panels;
 * a group's rows are dequantized QCHUNK columns at a time into panel layout on the stack and
 * multiplied into every token's outputs, so the codes are read once a call and nothing is
 * allocated. This is the reference the device kernels that read codes are held to. */
#define QCHUNK 256
#define QUANT_ROWS_MAX 8 /* up to this many tokens a row at a time; more through panels */

/* dst[0..kc) = row `row`'s values at columns [c0, c0 + kc): a group's scale and zero read once, a
 * loop per kind of code so each vectorizes (int4: c0 and every group boundary are even). */
static void dequant_chunk(const rt_tensor *w, int64_t row, int64_t c0, int64_t kc, float *restrict dst)
{
    const rt_tensor_quant *q = &w->q;
    const uint8_t *codes = w->data;
    const int64_t K = w->cols, ng = q->n_groups;
    const float mid = (float)(1 << (q->bits - 1));
    for (int64_t c = c0; c < c0 + kc;) {
        const int64_t g = c / q->group, end = (g + 1) * q->group < c0 + kc ? (g + 1) * q->group : c0 + kc;
        const int64_t len = end - c;
        const float s = q->scales[row * ng + g], z = q->zeros ? (float)q->zeros[row * ng + g] : mid;
        float *restrict o = dst + (c - c0);
        if (q->kind == RT_QK_FP8) {
            const uint8_t *src = codes + row * K + c;
#pragma omp simd
            for (int64_t i = 0; i < len; i++)
                o[i] = cpu_fp8(src[i]) * s;
        } else if (q->bits == 8) {
            const uint8_t *src = codes + row * K + c;
#pragma omp simd
            for (int64_t i = 0; i < len; i++)
                o[i] = ((float)src[i] - z) * s;
        } else {
            const uint8_t *src = codes + row * (K / 2) + c / 2;
#pragma omp simd
            for (int64_t i = 0; i < len / 2; i++) {
                o[2 * i] = ((float)(src[i] & 15) - z) * s;
                o[2 * i + 1] = ((float)(src[i] >> 4) - z) * s;
            }
        }
        c = end;
    }
}

/* Few tokens (decode): a row at a time, each chunk dequantized once and dotted with every token. */
static void matmul_quant_rows(float *out, const float *x, const rt_tensor *w, const float *b, int n)
{
    const int64_t N = w->rows, K = w->cols;
    CPU_FOR(r, N, {
        float buf[QCHUNK], acc[QUANT_ROWS_MAX] = {0};
        for (int64_t c0 = 0; c0 < K; c0 += QCHUNK) {
            const int64_t kc = K - c0 < QCHUNK ? K - c0 : QCHUNK;
            dequant_chunk(w, r, c0, kc, buf);
            for (int t = 0; t < n; t++)
                acc[t] += dot(buf, x + (int64_t)t * K + c0, kc);
        }
        for (int t = 0; t < n; t++)
            out[(int64_t)t * N + r] = acc[t] + (b ? b[r] : 0.0f);
    });
}

static void matmul_quant(float *out, const float *x, const rt_tensor *w, const float *b, int n)
{
    const int64_t N = w->rows, K = w->cols, np = (N + PANEL - 1) / PANEL, groups = (np + PANELS - 1) / PANELS;
    CPU_FOR(g, groups, {
        const int64_t q0 = g * PANELS, r0 = q0 * PANEL;
        const int m = np - q0 < PANELS ? (int)(np - q0) : PANELS;
        const int64_t rows = N - r0 < PANELS * PANEL ? N - r0 : PANELS * PANEL;
        for (int t = 0; t < n; t++)
            for (int64_t r = 0; r < rows; r++)
                out[(int64_t)t * N + r0 + r] = b ? b[r0 + r] : 0.0f;
        float P[PANELS * PANEL * QCHUNK], row[QCHUNK];
        for (int64_t c0 = 0; c0 < K; c0 += QCHUNK) {
            const int64_t kc = K - c0 < QCHUNK ? K - c0 : QCHUNK;
            for (int64_t r = 0; r < (int64_t)m * PANEL; r++) { /* panel j holds rows [8j, 8j + 8) */
                if (r < rows)
                    dequant_chunk(w, r0 + r, c0, kc, row);
                else
                    memset(row, 0, (size_t)kc * sizeof *row);
                for (int64_t k = 0; k < kc; k++)
                    P[((r / PANEL) * kc + k) * PANEL + r % PANEL] = row[k];
            }
            for (int t = 0; t < n; t++) {
                v8f acc[PANELS];
                panels(x + (int64_t)t * K + c0, P, kc, 0, m, acc);
                float v[PANELS * PANEL];
                memcpy(v, acc, (size_t)m * sizeof(v8f));
                float *o = out + (int64_t)t * N + r0;
                for (int64_t r = 0; r < rows; r++)
                    o[r] += v[r];
            }
        }
    });
}

/* out(n, N) = x(n, K) . W(N, K)^T + bias. Threads split the output columns in groups (of four rows,
 * or of PANELS panels) so each reads its own weight rows once; a group stays in cache while it
 * meets every token of the batch. */
void cpu_matmul(rt_backend *be, void *out_, const void *x_, const rt_tensor *w, const rt_tensor *bias, int n)
{
    (void)be;
    float *out = out_;
    const float *x = x_;
    const float *W = w->data;
    const float *b = bias && bias->data ? bias->data : NULL;
    if (w->q.kind) {
        if (n <= QUANT_ROWS_MAX)
            matmul_quant_rows(out, x, w, b, n);
        else
            matmul_quant(out, x, w, b, n);
        return;
    }
    if (w->layout == RT_PANELS8) {
        matmul_panels(out, x, w, b, n);
        return;
    }
    const int64_t N = w->rows, K = w->cols, groups = N / 4;
    CPU_FOR(g, groups, {
        const int64_t o = 4 * g;
        for (int t = 0; t < n; t++) {
            float s[4];
            dot4(x + (int64_t)t * K, W + o * K, K, s);
            for (int j = 0; j < 4; j++)
                out[(int64_t)t * N + o + j] = s[j] + (b ? b[o + j] : 0.0f);
        }
    });
    for (int64_t o = 4 * groups; o < N; o++) /* the last N % 4 rows */
        for (int t = 0; t < n; t++)
            out[(int64_t)t * N + o] = dot(x + (int64_t)t * K, W + o * K, K) + (b ? b[o] : 0.0f);
}
