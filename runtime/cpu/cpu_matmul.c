#include "runtime/cpu/cpu_ops.h"

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

/* out(n, N) = x(n, K) . W(N, K)^T + bias. Threads split the output columns in groups of four so
 * each reads its own weight rows once; a group stays in cache while it meets every token of the
 * batch. */
void cpu_matmul(rt_backend *be, void *out_, const void *x_, const rt_tensor *w, const rt_tensor *bias, int n)
{
    (void)be;
    float *out = out_;
    const float *x = x_;
    const float *W = w->data;
    const float *b = bias && bias->data ? bias->data : NULL;
    const int64_t N = w->rows, K = w->cols, groups = N / 4;
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        const int64_t o = 4 * g;
        for (int t = 0; t < n; t++) {
            float s[4];
            dot4(x + (int64_t)t * K, W + o * K, K, s);
            for (int j = 0; j < 4; j++)
                out[(int64_t)t * N + o + j] = s[j] + (b ? b[o + j] : 0.0f);
        }
    }
    for (int64_t o = 4 * groups; o < N; o++) /* the last N % 4 rows */
        for (int t = 0; t < n; t++)
            out[(int64_t)t * N + o] = dot(x + (int64_t)t * K, W + o * K, K) + (b ? b[o] : 0.0f);
}
