/* out(n, N) = x(n, K) . W(N, K)^T (+ bias) through cuBLAS, fp32 accumulation. Row-major on our side
 * is column-major transposed on cuBLAS's: out^T (N x n) = W^T^T (N x K) . x^T (K x n). */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"

template <typename T>
__global__ void add_bias_kernel(T *out, const T *bias, int64_t N, int64_t total)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        st(&out[i], ld(&out[i]) + ld(&bias[i % N]));
}

template <typename T>
static void add_bias(cuda_ctx *c, void *out, const void *bias, int64_t N, int64_t total)
{
    add_bias_kernel<T><<<cuda_blocks((size_t)total, 256), 256, 0, c->stream>>>((T *)out, (const T *)bias, N, total);
}

static cudaDataType_t cuda_type(rt_dtype t)
{
    return t == RT_BF16 ? CUDA_R_16BF : t == RT_F16 ? CUDA_R_16F : CUDA_R_32F;
}

extern "C" void cuda_matmul(rt_backend *be, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (n <= 0)
        return;
    const int N = (int)w->rows, K = (int)w->cols;
    const float one = 1.0f, zero = 0.0f;
    const cudaDataType_t t = cuda_type(c->dt);
    /* CUBLAS_COMPUTE_32F: fp32 accumulation, and no TF32 shortcut for fp32 inputs */
    CUBLAS_CHECK(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, n, K, &one, w->data, t, K, x, t, K, &zero,
                                 out, t, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (bias && bias->data) {
        CUDA_DISPATCH(c->dt, add_bias, c, out, bias->data, (int64_t)N, (int64_t)N * n);
        CUDA_LAUNCHED(c);
    }
}
