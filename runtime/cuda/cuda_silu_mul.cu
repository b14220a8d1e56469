/* out(n, ffn) = silu(gate) * up, from the fused gate/up product's rows (gate then up). */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"

template <typename T>
__global__ void silu_mul_kernel(T *out, const T *gu, int ffn, size_t n)
{
    pdl_wait();
    pdl_trigger();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / (size_t)ffn, j = i % (size_t)ffn;
        const T *g = gu + t * 2 * (size_t)ffn;
        const float x = ld(&g[j]);
        st(&out[i], x / (1.0f + expf(-x)) * ld(&g[ffn + j]));
    }
}

template <typename T>
static void launch(cuda_ctx *c, void *out, const void *gu, int ffn, size_t n)
{
    cuda_launch(c, silu_mul_kernel<T>, cuda_blocks(n, 256), 256, 0, (T *)out, (const T *)gu, ffn, n);
}

extern "C" void cuda_silu_mul(rt_backend *be, void *out, const void *gate_up, int n, int ffn)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (n <= 0 || ffn <= 0)
        return;
    CUDA_DISPATCH(c->dt, launch, c, out, gate_up, ffn, (size_t)n * (size_t)ffn);
    CUDA_LAUNCHED(c);
}
