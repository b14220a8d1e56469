/* Attention over the paged KV cache for decode and prefill alike, flash-style: one block per
 * (token, query head) walks the token's cached positions in tiles of blockDim.x keys with an
 * online softmax, so no score matrix (T x T or otherwise) is ever stored. Grouped-query heads read
 * KV head h / (n_heads / n_kv_heads); a sliding window limits the positions. fp32 throughout. */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"
extern "C" {
#include "runtime/config.h" /* RT_MAX_HEAD_DIM */
}

#define ATT_THREADS 128
#define ATT_MAX_ACC (RT_MAX_HEAD_DIM / ATT_THREADS) /* accumulators per thread: head_dim <= RT_MAX_HEAD_DIM */
static_assert(ATT_MAX_ACC * ATT_THREADS >= RT_MAX_HEAD_DIM, "the attention kernel must cover the config's head_dim limit");

template <typename T>
__global__ void attention_kernel(T *out, const T *q, const T *kc, const T *vc, const int32_t *pos,
                                 const int32_t *seq, const int32_t *tables, int max_blocks, int bs, int nh, int nkv,
                                 int hd, int window, float scale)
{
    extern __shared__ float sm[];
    float *qs = sm;                     /* (hd) the query, scaled */
    float *ps = qs + hd;                /* (ATT_THREADS) this tile's probabilities */
    int *slots = (int *)(ps + ATT_THREADS); /* (ATT_THREADS) this tile's KV slots */
    __shared__ float scratch[32];
    const int t = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    const int kvh = h / (nh / nkv);
    const int64_t kw = (int64_t)nkv * hd;
    const T *qh = q + ((int64_t)t * nh + h) * hd;
    for (int i = tid; i < hd; i += ATT_THREADS)
        qs[i] = ld(&qh[i]) * scale;
    const int p = pos[t];
    const int start = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
    const int32_t *table = tables + (int64_t)seq[t] * max_blocks;
    float m = -INFINITY, l = 0.0f, acc[ATT_MAX_ACC];
    for (int a = 0; a < ATT_MAX_ACC; a++)
        acc[a] = 0.0f;
    __syncthreads();
    for (int base = start; base <= p; base += ATT_THREADS) {
        const int j = base + tid;
        float s = -INFINITY;
        if (j <= p) {
            const int slot = table[j / bs] * bs + j % bs;
            slots[tid] = slot;
            const T *kj = kc + slot * kw + (int64_t)kvh * hd;
            float d = 0.0f;
            for (int i = 0; i < hd; i++)
                d += qs[i] * ld(&kj[i]);
            s = d;
        }
        const float m_new = fmaxf(m, block_max(s, scratch));
        const float pj = j <= p ? expf(s - m_new) : 0.0f;
        ps[tid] = pj;
        const float tile_sum = block_sum(pj, scratch); /* its barriers also publish ps and slots */
        const float corr = expf(m - m_new);
        l = l * corr + tile_sum;
        m = m_new;
        const int n = p - base + 1 < ATT_THREADS ? p - base + 1 : ATT_THREADS;
        for (int a = 0; a < ATT_MAX_ACC; a++) {
            const int d = tid + a * ATT_THREADS;
            if (d >= hd)
                break;
            float v = acc[a] * corr;
            for (int jj = 0; jj < n; jj++)
                v += ps[jj] * ld(&vc[slots[jj] * kw + (int64_t)kvh * hd + d]);
            acc[a] = v;
        }
        __syncthreads(); /* ps and slots are rewritten by the next tile */
    }
    T *oh = out + ((int64_t)t * nh + h) * hd;
    const float inv = 1.0f / l;
    for (int a = 0; a < ATT_MAX_ACC; a++) {
        const int d = tid + a * ATT_THREADS;
        if (d < hd)
            st(&oh[d], acc[a] * inv);
    }
}

template <typename T>
static void launch(cuda_ctx *c, void *out, const void *q, const rt_kv_layer *kv, const rt_attn_batch *b,
                   const rt_attn_shape *s)
{
    dim3 grid((unsigned)b->n_tokens, (unsigned)s->n_heads);
    size_t shm = (size_t)s->head_dim * sizeof(float) + ATT_THREADS * (sizeof(float) + sizeof(int));
    attention_kernel<T><<<grid, ATT_THREADS, shm, c->stream>>>(
        (T *)out, (const T *)q, (const T *)kv->k, (const T *)kv->v, b->pos, b->seq, b->block_tables, b->max_blocks,
        b->block_size, s->n_heads, s->n_kv_heads, s->head_dim, s->sliding_window, s->scale);
}

extern "C" void cuda_attention(rt_backend *be, void *out, const void *q, const rt_kv_layer *kv,
                               const rt_attn_batch *b, const rt_attn_shape *s)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (b->n_tokens <= 0)
        return;
    CUDA_DISPATCH(c->dt, launch, c, out, q, kv, b, s);
    CUDA_LAUNCHED(c);
}
