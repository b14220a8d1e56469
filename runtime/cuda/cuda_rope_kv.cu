/* RoPE on q and k (Hugging Face half-split pairs) fused with the write of k and v into their KV
 * cache slots, from the fused QKV product's rows. A token's rotation pairs and its v are spread over
 * several blocks (a decode step has one token: one block would serialize its sincosf calls). q
 * goes to its own buffer (attention reads it there), k and v straight to the cache. */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"

#define ROPE_THREADS 128

/* rope_heads: nq + nkv (q and k rotated here, v copied), or nq (an FP8 cache: k and v are
 * rope_kv_fp8_kernel's) */
template <typename T>
__global__ void rope_kv_kernel(T *q, const T *qkv, const float *inv_freq, const int32_t *pos, const int32_t *slot,
                               int nq, int nkv, int hd, int rope_heads, int pair_blocks, T *kc, T *vc)
{
    pdl_wait();
    pdl_trigger();
    const int t = blockIdx.x, half = hd / 2;
    const float p = (float)pos[t];
    const int64_t qw = (int64_t)nq * hd, kw = (int64_t)nkv * hd;
    const T *src = qkv + t * (qw + 2 * kw);
    T *qt = q + t * qw;
    if ((int)blockIdx.y >= pair_blocks) { /* the v part */
        T *vt = vc + (int64_t)slot[t] * kw;
        const int64_t i = (int64_t)(blockIdx.y - pair_blocks) * ROPE_THREADS + threadIdx.x;
        if (i < kw)
            vt[i] = src[qw + kw + i];
        return;
    }
    /* pairs of every head of q, then of k */
    const int i = blockIdx.y * ROPE_THREADS + threadIdx.x;
    if (i < rope_heads * half) {
        const int h = i / half, j = i % half;
        const T *in = src + (int64_t)h * hd; /* k's heads follow q's in the row */
        T *head = h < nq ? qt + (int64_t)h * hd : kc + (int64_t)slot[t] * kw + (int64_t)(h - nq) * hd;
        float s, co;
        sincosf(p * inv_freq[j], &s, &co); /* fp32 angle, as transformers computes it */
        const float a = ld(&in[j]), b = ld(&in[j + half]);
        st(&head[j], a * co - b * s);
        st(&head[j + half], b * co + a * s);
    }
}

/* An FP8 cache: a block per (token, KV head) rotates its k, takes its v, and writes both as e4m3
 * codes with a scale each (the largest magnitude / 448), as the CPU backend does; or, with static
 * scales (sst 0: the checkpoint's, one a KV head), as codes under those, saturating. */
template <typename T>
__global__ void rope_kv_fp8_kernel(const T *qkv, const float *inv_freq, const int32_t *pos, const int32_t *slot,
                                   int nq, int nkv, int hd, uint8_t *kc, uint8_t *vc, float *k_scale, float *v_scale,
                                   int sst)
{
    pdl_wait();
    pdl_trigger();
    __shared__ float red[32];
    const int t = blockIdx.x, h = blockIdx.y, half = hd / 2, j = threadIdx.x;
    const int64_t qw = (int64_t)nq * hd, kw = (int64_t)nkv * hd;
    const T *kin = qkv + t * (qw + 2 * kw) + qw + (int64_t)h * hd, *vin = kin + kw;
    float k0 = 0.0f, k1 = 0.0f, v0 = 0.0f, v1 = 0.0f;
    if (j < half) {
        float sn, co;
        sincosf((float)pos[t] * inv_freq[j], &sn, &co);
        const float a = ld(&kin[j]), b = ld(&kin[j + half]);
        k0 = a * co - b * sn, k1 = b * co + a * sn;
        v0 = ld(&vin[j]), v1 = ld(&vin[j + half]);
    }
    float ks, vs;
    if (sst == 0) { /* static: the checkpoint's */
        ks = k_scale[h], vs = v_scale[h];
    } else { /* every thread of the block takes part in the reductions */
        const float kmax = block_max(fmaxf(fabsf(k0), fabsf(k1)), red);
        const float vmax = block_max(fmaxf(fabsf(v0), fabsf(v1)), red);
        ks = kmax > 0.0f ? kmax / 448.0f : 1.0f, vs = vmax > 0.0f ? vmax / 448.0f : 1.0f;
    }
    const int64_t at = (int64_t)slot[t] * kw + (int64_t)h * hd;
    if (j < half) {
        kc[at + j] = __nv_cvt_float_to_fp8(k0 / ks, __NV_SATFINITE, __NV_E4M3);
        kc[at + j + half] = __nv_cvt_float_to_fp8(k1 / ks, __NV_SATFINITE, __NV_E4M3);
        vc[at + j] = __nv_cvt_float_to_fp8(v0 / vs, __NV_SATFINITE, __NV_E4M3);
        vc[at + j + half] = __nv_cvt_float_to_fp8(v1 / vs, __NV_SATFINITE, __NV_E4M3);
    }
    if (j == 0 && sst != 0) {
        k_scale[(int64_t)slot[t] * sst + h] = ks;
        v_scale[(int64_t)slot[t] * sst + h] = vs;
    }
}

/* Prompts: a block a token computes its head_dim / 2 angles once into shared memory (every head
 * shares them), then rotates 8 pairs a thread in 16-byte loads and stores, and copies v in 16-byte
 * vectors. vc NULL: an FP8 cache (k and v are rope_kv_fp8_kernel's). */
template <typename T>
__global__ void rope_kv_vec_kernel(T *q, const T *qkv, const float *inv_freq, const int32_t *pos, const int32_t *slot,
                                   int nq, int nkv, int hd, int rope_heads, T *kc, T *vc)
{
    pdl_wait();
    pdl_trigger();
    extern __shared__ float2 rope_cs[]; /* (hd / 2): cos, sin */
    const int t = blockIdx.x, half = hd / 2, hc = half / 8;
    const float p = (float)pos[t];
    for (int j = threadIdx.x; j < half; j += blockDim.x) {
        float s, co;
        sincosf(p * inv_freq[j], &s, &co); /* fp32 angle, as transformers computes it */
        rope_cs[j] = make_float2(co, s);
    }
    __syncthreads();
    const int64_t qw = (int64_t)nq * hd, kw = (int64_t)nkv * hd, at = (int64_t)slot[t] * kw;
    const T *src = qkv + t * (qw + 2 * kw);
    for (int i = threadIdx.x; i < rope_heads * hc; i += blockDim.x) {
        const int h = i / hc, j0 = (i % hc) * 8;
        const T *in = src + (int64_t)h * hd; /* k's heads follow q's in the row */
        T *head = h < nq ? q + t * qw + (int64_t)h * hd : kc + at + (int64_t)(h - nq) * hd;
        float a[8], b[8], o0[8], o1[8];
        load_vec<T, 8>(in + j0, a);
        load_vec<T, 8>(in + j0 + half, b);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const float2 cs = rope_cs[j0 + e];
            o0[e] = a[e] * cs.x - b[e] * cs.y;
            o1[e] = b[e] * cs.x + a[e] * cs.y;
        }
        store_vec<T, 8>(head + j0, o0);
        store_vec<T, 8>(head + j0 + half, o1);
    }
    if (vc) {
        const uint4 *vs = reinterpret_cast<const uint4 *>(src + qw + kw);
        uint4 *vd = reinterpret_cast<uint4 *>(vc + at);
        for (int64_t i = threadIdx.x; i < kw * (int64_t)sizeof(T) / 16; i += blockDim.x)
            vd[i] = __ldg(vs + i);
    }
}

#define ROPE_VEC_MIN_TOKENS 64 /* fewer (decode): a token over many blocks, rope_kv_kernel */

template <typename T>
static void launch(cuda_ctx *c, void *q, const void *qkv, const float *inv_freq, const rt_attn_batch *b,
                   const rt_attn_shape *s, rt_kv_layer *kv)
{
    const bool fp8 = kv->k_scale != NULL;
    const int rope_heads = fp8 ? s->n_heads : s->n_heads + s->n_kv_heads, pairs = rope_heads * (s->head_dim / 2);
    const int kw = s->n_kv_heads * s->head_dim;
    const int pair_blocks = (pairs + ROPE_THREADS - 1) / ROPE_THREADS;
    const int v_blocks = fp8 ? 0 : (kw + ROPE_THREADS - 1) / ROPE_THREADS;
    const bool aligned = (uintptr_t)q % 16 == 0 && (uintptr_t)qkv % 16 == 0 && (uintptr_t)kv->k % 16 == 0 &&
                         (uintptr_t)kv->v % 16 == 0;
    if (b->n_tokens >= ROPE_VEC_MIN_TOKENS && aligned && s->head_dim % 16 == 0) {
        cuda_launch(c, rope_kv_vec_kernel<T>, (unsigned)b->n_tokens, ROPE_THREADS,
            (size_t)(s->head_dim / 2) * sizeof(float2), (T *)q, (const T *)qkv, inv_freq, b->pos, b->slot, s->n_heads,
            s->n_kv_heads, s->head_dim, rope_heads, (T *)kv->k, fp8 ? (T *)nullptr : (T *)kv->v);
    } else {
        cuda_launch(c, rope_kv_kernel<T>, dim3((unsigned)b->n_tokens, (unsigned)(pair_blocks + v_blocks)),
            ROPE_THREADS, 0, (T *)q, (const T *)qkv, inv_freq, b->pos, b->slot, s->n_heads, s->n_kv_heads,
            s->head_dim, rope_heads, pair_blocks, (T *)kv->k, (T *)kv->v);
    }
    if (fp8) {
        const unsigned threads = (unsigned)((s->head_dim / 2 + 31) / 32 * 32);
        cuda_launch(c, rope_kv_fp8_kernel<T>, dim3((unsigned)b->n_tokens, (unsigned)s->n_kv_heads), threads, 0,
            (const T *)qkv, inv_freq, b->pos, b->slot, s->n_heads, s->n_kv_heads, s->head_dim, (uint8_t *)kv->k,
            (uint8_t *)kv->v, kv->k_scale, kv->v_scale, kv->scale_stride);
    }
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
