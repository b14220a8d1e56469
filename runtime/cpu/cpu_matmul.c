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

/* out(n, N) = x(n, K) . W(N, K)^T + bias. Threads split the output columns so each reads its own
 * weight rows once; a weight row stays in cache while it meets every token of the batch. */
void cpu_matmul(rt_backend *be, void *out_, const void *x_, const rt_tensor *w, const rt_tensor *bias, int n)
{
    (void)be;
    float *out = out_;
    const float *x = x_;
    const float *W = w->data;
    const float *b = bias && bias->data ? bias->data : NULL;
    const int64_t N = w->rows, K = w->cols;
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < N; o++) {
        const float *wr = W + o * K;
        float bo = b ? b[o] : 0.0f;
        for (int t = 0; t < n; t++)
            out[(int64_t)t * N + o] = dot(x + (int64_t)t * K, wr, K) + bo;
    }
}
