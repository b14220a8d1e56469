/* RoPE on q and k (Hugging Face half-split pairs) fused with the write of k and v into their KV
 * cache slots: one block per token. */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"

template <typename T>
__global__ void rope_kv_kernel(T *q, T *k, const T *v, const float *inv_freq, const int32_t *pos,
                               const int32_t *slot, int nq, int nkv, int hd, T *kc, T *vc)
{
    const int t = blockIdx.x, half = hd / 2;
    const float p = (float)pos[t];
    const int64_t qw = (int64_t)nq * hd, kw = (int64_t)nkv * hd;
    T *qt = q + t * qw, *kt = k + t * kw;
    /* pairs of every head of q, then of k */
    for (int i = threadIdx.x; i < (nq + nkv) * half; i += blockDim.x) {
        const int h = i / half, j = i % half;
        T *head = h < nq ? qt + (int64_t)h * hd : kt + (int64_t)(h - nq) * hd;
        float s, co;
        sincosf(p * inv_freq[j], &s, &co); /* fp32 angle, as transformers computes it */
        const float a = ld(&head[j]), b = ld(&head[j + half]);
        st(&head[j], a * co - b * s);
        st(&head[j + half], b * co + a * s);
    }
    __syncthreads();
    const int64_t s0 = (int64_t)slot[t] * kw;
    for (int64_t i = threadIdx.x; i < kw; i += blockDim.x) {
        kc[s0 + i] = kt[i];
        vc[s0 + i] = v[t * kw + i];
    }
}

template <typename T>
static void launch(cuda_ctx *c, void *q, void *k, const void *v, const float *inv_freq, const rt_attn_batch *b,
                   const rt_attn_shape *s, rt_kv_layer *kv)
{
    rope_kv_kernel<T><<<b->n_tokens, 128, 0, c->stream>>>((T *)q, (T *)k, (const T *)v, inv_freq, b->pos, b->slot,
                                                          s->n_heads, s->n_kv_heads, s->head_dim, (T *)kv->k,
                                                          (T *)kv->v);
}

extern "C" void cuda_rope_kv_write(rt_backend *be, void *q, void *k, const void *v, const float *inv_freq,
                                   const rt_attn_batch *b, const rt_attn_shape *s, rt_kv_layer *kv)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (b->n_tokens <= 0)
        return;
    CUDA_DISPATCH(c->dt, launch, c, q, k, v, inv_freq, b, s, kv);
    CUDA_LAUNCHED(c);
}
