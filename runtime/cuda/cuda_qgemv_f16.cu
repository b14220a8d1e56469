/* cuda_qgemv.cuh's product for F16 storage (a file of its own to compile beside the others). */
#include "runtime/cuda/cuda_qgemv.cuh"

void cuda_qgemv_f16(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
                    const rt_fusion *f)
{
    qgemv<__half>(c, out, x, w, bias, n, f);
}
