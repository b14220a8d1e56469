/* RoPE on q and k (Hugging Face half-split pairs) fused with the write of k and v into their KV
 * cache slots, from the fused QKV product's rows: one block per token. q goes to its own buffer
 * (attention reads it there), k and v straight to the cache. */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"

template <typename T>
__global__ void rope_kv_kernel(T *q, const T *qkv, const float *inv_freq, const int32_t *pos, const int32_t *slot,
                               int nq, int nkv, int hd, T *kc, T *vc)
{
    const int t = blockIdx.x, half = hd / 2;
    const float p = (float)pos[t];
    const int64_t qw = (int64_t)nq * hd, kw = (int64_t)nkv * hd;
    const T *src = qkv + t * (qw + 2 * kw);
    T *qt = q + t * qw, *kt = kc + (int64_t)slot[t] * kw;
    /* pairs of every head of q, then of k */
    for (int i = threadIdx.x; i < (nq + nkv) * half; i += blockDim.x) {
        const int h = i / half, j = i % half;
        const T *in = src + (int64_t)h * hd; /* k's heads follow q's in the row */
        T *head = h < nq ? qt + (int64_t)h * hd : kt + (int64_t)(h - nq) * hd;
        float s, co;
        sincosf(p * inv_freq[j], &s, &co); /* fp32 angle, as transformers computes it */
        const float a = ld(&in[j]), b = ld(&in[j + half]);
        st(&head[j], a * co - b * s);
        st(&head[j + half], b * co + a * s);
    }
    T *vt = vc + (int64_t)slot[t] * kw;
    for (int64_t i = threadIdx.x; i < kw; i += blockDim.x)
        vt[i] = src[qw + kw + i];
}

template <typename T>
static void launch(cuda_ctx *c, void *q, const void *qkv, const float *inv_freq, const rt_attn_batch *b,
                   const rt_attn_shape *s, rt_kv_layer *kv)
{
    rope_kv_kernel<T><<<b->n_tokens, 128, 0, c->stream>>>((T *)q, (const T *)qkv, inv_freq, b->pos, b->slot,
                                                          s->n_heads, s->n_kv_heads, s->head_dim, (T *)kv->k,
                                                          (T *)kv->v);
}

extern "C" void cuda_rope_kv_write(rt_backend *be, void *q, const void *qkv, const float *inv_freq,
                                   const rt_attn_batch *b, const rt_attn_shape *s, rt_kv_layer *kv)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (b->n_tokens <= 0)
        return;
    CUDA_DISPATCH(c->dt, launch, c, q, qkv, inv_freq, b, s, kv);
    CUDA_LAUNCHED(c);
}
