/* x += y, element-wise (the last residual of a pipeline stage). */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"

template <typename T>
__global__ void add_kernel(T *x, const T *y, size_t n)
{
    pdl_wait();
    pdl_trigger();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        st(&x[i], ld(&x[i]) + ld(&y[i]));
}

template <typename T>
static void launch(cuda_ctx *c, void *x, const void *y, size_t n)
{
    cuda_launch(c, add_kernel<T>, cuda_blocks(n, 256), 256, 0, (T *)x, (const T *)y, n);
}

extern "C" void cuda_add(rt_backend *be, void *x, const void *y, size_t n)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (n == 0)
        return;
    CUDA_DISPATCH(c->dt, launch, c, x, y, n);
    CUDA_LAUNCHED(c);
}
