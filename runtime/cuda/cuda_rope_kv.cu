/* RoPE on q and k (Hugging Face half-split pairs) fused with the write of k and v into their KV
 * cache slots, from the fused QKV product's rows. A token's rotation pairs and its v are spread over
 * several blocks (a decode step has one token: one block would serialize its sincosf calls). q
 * goes to its own buffer (attention reads it there), k and v straight to the cache. */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"

#define ROPE_THREADS 128

template <typename T>
__global__ void rope_kv_kernel(T *q, const T *qkv, const float *inv_freq, const int32_t *pos, const int32_t *slot,
                               int nq, int nkv, int hd, int pair_blocks, T *kc, T *vc)
{
    pdl_wait();
    pdl_trigger();
    const int t = blockIdx.x, half = hd / 2;
    const float p = (float)pos[t];
    const int64_t qw = (int64_t)nq * hd, kw = (int64_t)nkv * hd;
    const T *src = qkv + t * (qw + 2 * kw);
    T *qt = q + t * qw, *kt = kc + (int64_t)slot[t] * kw;
    if ((int)blockIdx.y >= pair_blocks) { /* the v part */
        T *vt = vc + (int64_t)slot[t] * kw;
        const int64_t i = (int64_t)(blockIdx.y - pair_blocks) * ROPE_THREADS + threadIdx.x;
        if (i < kw)
            vt[i] = src[qw + kw + i];
        return;
    }
    /* pairs of every head of q, then of k */
    const int i = blockIdx.y * ROPE_THREADS + threadIdx.x;
    if (i < (nq + nkv) * half) {
        const int h = i / half, j = i % half;
        const T *in = src + (int64_t)h * hd; /* k's heads follow q's in the row */
        T *head = h < nq ? qt + (int64_t)h * hd : kt + (int64_t)(h - nq) * hd;
        float s, co;
        sincosf(p * inv_freq[j], &s, &co); /* fp32 angle, as transformers computes it */
        const float a = ld(&in[j]), b = ld(&in[j + half]);
        st(&head[j], a * co - b * s);
        st(&head[j + half], b * co + a * s);
    }
}

template <typename T>
static void launch(cuda_ctx *c, void *q, const void *qkv, const float *inv_freq, const rt_attn_batch *b,
                   const rt_attn_shape *s, rt_kv_layer *kv)
{
    const int pairs = (s->n_heads + s->n_kv_heads) * (s->head_dim / 2), kw = s->n_kv_heads * s->head_dim;
    const int pair_blocks = (pairs + ROPE_THREADS - 1) / ROPE_THREADS, v_blocks = (kw + ROPE_THREADS - 1) / ROPE_THREADS;
    cuda_launch(c, rope_kv_kernel<T>, dim3((unsigned)b->n_tokens, (unsigned)(pair_blocks + v_blocks)), ROPE_THREADS, 0,
        (T *)q, (const T *)qkv, inv_freq, b->pos, b->slot, s->n_heads, s->n_kv_heads, s->head_dim, pair_blocks,
        (T *)kv->k, (T *)kv->v);
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
