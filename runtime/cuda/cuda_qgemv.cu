/* The quantized weight-streaming product (cuda_qgemv.cuh): which products it takes, the BF16
 * instantiation, and the choice among the storage types' (F16 and F32 in files of their own). */
#include "runtime/cuda/cuda_qgemv.cuh"

/* Whether the weight-streaming kernel takes this product: few rows, whole loads in one group each. */
bool cuda_qgemv_fits(const cuda_ctx *c, const void *x, const rt_tensor *w, int n)
{
    const int64_t E = w->q.bits == 4 ? 32 : 16;
    return c->gemv && n <= QGEMV_MAX_ROWS && (w->q.bits != 4 || w->layout == RT_INT4_PAIRS) && w->cols % E == 0 &&
           (w->q.n_groups == 1 || w->q.group % E == 0) && (uintptr_t)x % 16 == 0 && (uintptr_t)w->data % 16 == 0;
}

void cuda_qgemv_bf16(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
                     const rt_fusion *f)
{
    qgemv<__nv_bfloat16>(c, out, x, w, bias, n, f);
}

void cuda_qgemv_rope(cuda_ctx *c, const void *x, const rt_tensor *w, const __nv_bfloat16 *bias, const fusion &f)
{
    qgemv_fused<FUSE_NORM | FUSE_ROPE, __nv_bfloat16>(c, nullptr, x, w, bias, f, 1);
}

void cuda_qgemv(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
                const rt_fusion *f)
{
    switch (c->dt) {
    case RT_BF16: cuda_qgemv_bf16(c, out, x, w, bias, n, f); break;
    case RT_F16: cuda_qgemv_f16(c, out, x, w, bias, n, f); break;
    case RT_F32: cuda_qgemv_f32(c, out, x, w, bias, n, f); break;
    }
}
