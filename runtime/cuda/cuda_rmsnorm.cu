/* RMSNorm, and the residual add fused with it: one block per row, the sum of squares in fp32. Rows
 * of up to RMS_PER * 1024 elements stay in registers between the sum and the scaling (a decode
 * step's norms are latency, not bandwidth: one pass over memory, the weights loaded before the
 * reduction); longer rows take the two-pass kernel. */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"

/* With delta: x += delta first (rounded to storage, as the unfused add would), then the norm. */
template <typename T>
__global__ void rmsnorm_kernel(T *out, T *x, const T *delta, const T *w, int dim, float eps)
{
    pdl_wait();
    pdl_trigger();
    __shared__ float scratch[32];
    T *xr = x + (int64_t)blockIdx.x * dim;
    const T *dr = delta ? delta + (int64_t)blockIdx.x * dim : nullptr;
    T *orow = out + (int64_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = ld(&xr[i]);
        if (dr) {
            st(&xr[i], v + ld(&dr[i]));
            v = ld(&xr[i]);
        }
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    const float inv = rsqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        st(&orow[i], ld(&w[i]) * (ld(&xr[i]) * inv));
}

#define RMS_PER 8

template <typename T>
__global__ void rmsnorm_reg_kernel(T *out, T *x, const T *delta, const T *w, int dim, float eps)
{
    pdl_wait();
    pdl_trigger();
    __shared__ float scratch[32];
    T *xr = x + (int64_t)blockIdx.x * dim;
    const T *dr = delta ? delta + (int64_t)blockIdx.x * dim : nullptr;
    T *orow = out + (int64_t)blockIdx.x * dim;
    float v[RMS_PER], wv[RMS_PER], ss = 0.0f;
#pragma unroll
    for (int j = 0; j < RMS_PER; j++) {
        const int i = threadIdx.x + j * blockDim.x;
        v[j] = wv[j] = 0.0f;
        if (i < dim) {
            float a = ld(&xr[i]);
            if (dr) {
                T r; /* rounded to storage, as the unfused add would leave it */
                st(&r, a + ld(&dr[i]));
                st(&xr[i], ld(&r));
                a = ld(&r);
            }
            v[j] = a;
            wv[j] = ld(&w[i]);
            ss += a * a;
        }
    }
    ss = block_sum(ss, scratch);
    const float inv = rsqrtf(ss / (float)dim + eps);
#pragma unroll
    for (int j = 0; j < RMS_PER; j++) {
        const int i = threadIdx.x + j * blockDim.x;
        if (i < dim)
            st(&orow[i], wv[j] * (v[j] * inv));
    }
}

/* Rows of whole 16-byte vectors (in 2-byte accesses a prompt's norms moved ~1.7 TB/s): 8 elements a
 * thread, dim / 8 threads a row. */
template <typename T>
__global__ void rmsnorm_vec_kernel(T *out, T *x, const T *delta, const T *w, int dim, float eps)
{
    pdl_wait();
    pdl_trigger();
    __shared__ float scratch[32];
    const int64_t at = (int64_t)blockIdx.x * dim + threadIdx.x * 8;
    float v[8], wv[8], ss = 0.0f;
    load_vec<T, 8>(x + at, v);
    if (delta) {
        float d[8];
        load_vec<T, 8>(delta + at, d);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            T r; /* rounded to storage, as the unfused add would leave it */
            st(&r, v[e] + d[e]);
            v[e] = ld(&r);
        }
        store_vec<T, 8>(x + at, v);
    }
    load_vec<T, 8>(w + threadIdx.x * 8, wv);
#pragma unroll
    for (int e = 0; e < 8; e++)
        ss += v[e] * v[e];
    ss = block_sum(ss, scratch);
    const float inv = rsqrtf(ss / (float)dim + eps);
#pragma unroll
    for (int e = 0; e < 8; e++)
        v[e] = wv[e] * (v[e] * inv);
    store_vec<T, 8>(out + at, v);
}

template <typename T>
static void launch(cuda_ctx *c, void *out, void *x, const void *delta, const rt_tensor *w, int n, float eps)
{
    const int dim = (int)w->rows;
    const bool aligned = (uintptr_t)out % 16 == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)delta % 16 == 0 &&
                         (uintptr_t)w->data % 16 == 0;
    if (aligned && dim % 256 == 0 && dim <= 8 * 1024) { /* whole warps of 8 elements a thread */
        cuda_launch(c, rmsnorm_vec_kernel<T>, n, dim / 8, 0, (T *)out, (T *)x, (const T *)delta, (const T *)w->data,
                    dim, eps);
        return;
    }
    if (dim <= RMS_PER * 1024) {
        /* about four elements a thread: a short reduction, few loads in flight each */
        int threads = ((dim + 3) / 4 + 31) / 32 * 32;
        threads = threads < 32 ? 32 : threads > 1024 ? 1024 : threads;
        while (threads * RMS_PER < dim)
            threads += 32;
        cuda_launch(c, rmsnorm_reg_kernel<T>, n, threads, 0, (T *)out, (T *)x, (const T *)delta, (const T *)w->data,
                                                            dim, eps);
        return;
    }
    const int threads = 1024;
    cuda_launch(c, rmsnorm_kernel<T>, n, threads, 0, (T *)out, (T *)x, (const T *)delta, (const T *)w->data, dim, eps);
}

/* The start of a chain of fused products (backend.h's norm_begin): a block a row writes xg = x * w
 * and the row's sum of squares; the blocks together zero the chain's later sums. */
template <typename T>
__global__ void norm_begin_kernel(T *xg, float *ss, size_t ss_len, const T *x, const T *w, int n, int dim)
{
    pdl_wait();
    pdl_trigger();
    __shared__ float scratch[32];
    const T *xr = x + (int64_t)blockIdx.x * dim;
    T *orow = xg + (int64_t)blockIdx.x * dim;
    float sq = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = ld(&xr[i]);
        sq += v * v;
        st(&orow[i], v * ld(&w[i]));
    }
    sq = block_sum(sq, scratch);
    if (threadIdx.x == 0)
        ss[(size_t)blockIdx.x * RT_FUSION_SS_STRIDE] = sq;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < ss_len; i += (size_t)gridDim.x * blockDim.x)
        if (i % RT_FUSION_SS_STRIDE != 0 || i / RT_FUSION_SS_STRIDE >= (size_t)n)
            ss[i] = 0.0f;
}

template <typename T>
static void norm_begin(cuda_ctx *c, void *xg, float *ss, size_t ss_len, const void *x, const rt_tensor *w, int n)
{
    cuda_launch(c, norm_begin_kernel<T>, n, 256, 0, (T *)xg, ss, ss_len, (const T *)x, (const T *)w->data, n,
                (int)w->rows);
}

extern "C" void cuda_norm_begin(rt_backend *be, void *xg, float *ss, size_t ss_len, const void *x, const rt_tensor *w,
                                int n)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (n <= 0)
        return;
    CUDA_DISPATCH(c->dt, norm_begin, c, xg, ss, ss_len, x, w, n);
    CUDA_LAUNCHED(c);
}

extern "C" void cuda_rmsnorm(rt_backend *be, void *out, const void *x, const rt_tensor *w, int n, float eps)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (n <= 0)
        return;
    CUDA_DISPATCH(c->dt, launch, c, out, (void *)x, (const void *)nullptr, w, n, eps);
    CUDA_LAUNCHED(c);
}

extern "C" void cuda_add_rmsnorm(rt_backend *be, void *x, const void *delta, void *out, const rt_tensor *w, int n,
                                 float eps)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (n <= 0)
        return;
    CUDA_DISPATCH(c->dt, launch, c, out, x, delta, w, n, eps);
    CUDA_LAUNCHED(c);
}
