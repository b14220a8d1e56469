/* Row gather (the rows that need logits), column gather (an act-order product's inputs) and the
 * conversion of logits to fp32. */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"

template <typename T>
__global__ void gather_kernel(T *out, const T *x, const int32_t *rows, int dim)
{
    pdl_wait();
    pdl_trigger();
    const T *src = x + (int64_t)rows[blockIdx.x] * dim;
    T *dst = out + (int64_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        dst[i] = src[i];
}

/* a block a row (blockIdx.y) and a chunk of its columns; the row (an activation row, a few KB) is
 * in L2 for the scattered reads */
template <typename T>
__global__ void gather_cols_kernel(T *out, const T *x, const int32_t *cols, int dim)
{
    pdl_wait();
    pdl_trigger();
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < dim)
        out[(int64_t)blockIdx.y * dim + c] = x[(int64_t)blockIdx.y * dim + cols[c]];
}

template <typename T>
__global__ void to_f32_kernel(float *out, const T *x, size_t n)
{
    pdl_wait();
    pdl_trigger();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = ld(&x[i]);
}

template <typename T>
static void gather(cuda_ctx *c, void *out, const void *x, const int32_t *rows, int n, int dim)
{
    cuda_launch(c, gather_kernel<T>, n, 256, 0, (T *)out, (const T *)x, rows, dim);
}

template <typename T>
static void gather_cols(cuda_ctx *c, void *out, const void *x, const int32_t *cols, int n, int dim)
{
    cuda_launch(c, gather_cols_kernel<T>, dim3((unsigned)((dim + 255) / 256), (unsigned)n), 256, 0, (T *)out,
                (const T *)x, cols, dim);
}

template <typename T>
static void to_f32(cuda_ctx *c, float *out, const void *x, size_t n)
{
    cuda_launch(c, to_f32_kernel<T>, cuda_blocks(n, 256), 256, 0, out, (const T *)x, n);
}

extern "C" void cuda_gather_rows(rt_backend *be, void *out, const void *x, const int32_t *rows, int n, int dim)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (n <= 0)
        return;
    CUDA_DISPATCH(c->dt, gather, c, out, x, rows, n, dim);
    CUDA_LAUNCHED(c);
}

extern "C" void cuda_gather_cols(rt_backend *be, void *out, const void *x, const int32_t *cols, int n, int dim)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (n <= 0)
        return;
    CUDA_DISPATCH(c->dt, gather_cols, c, out, x, cols, n, dim);
    CUDA_LAUNCHED(c);
}

extern "C" void cuda_to_f32(rt_backend *be, float *out, const void *x, size_t n)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (n == 0)
        return;
    CUDA_DISPATCH(c->dt, to_f32, c, out, x, n);
    CUDA_LAUNCHED(c);
}
