/* out = silu(gate) * up, element-wise. */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"

template <typename T>
__global__ void silu_mul_kernel(T *out, const T *g, const T *u, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float x = ld(&g[i]);
        st(&out[i], x / (1.0f + expf(-x)) * ld(&u[i]));
    }
}

template <typename T>
static void launch(cuda_ctx *c, void *out, const void *g, const void *u, size_t n)
{
    silu_mul_kernel<T><<<cuda_blocks(n, 256), 256, 0, c->stream>>>((T *)out, (const T *)g, (const T *)u, n);
}

extern "C" void cuda_silu_mul(rt_backend *be, void *out, const void *gate, const void *up, size_t n)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (n == 0)
        return;
    CUDA_DISPATCH(c->dt, launch, c, out, gate, up, n);
    CUDA_LAUNCHED(c);
}
