/* Attention over the paged KV cache for decode and prefill alike, with an online softmax, so no
 * score matrix is ever stored.
 *
 * The fast path (head sizes 64, 128 and 256, up to 8 query heads per KV head): one block per
 * (token, KV head, split of the context) serves every query head of that KV head, so each K and V
 * row is read once for all of them; a group of lanes holds one key row in 16-byte loads and the
 * warp walks several keys at a time. When the tokens and KV heads alone cannot fill the GPU (decode
 * at small batch over a long context), the context is split (flash-decoding) and a second kernel
 * combines the splits' partial results. The general path (any other head size or group) is one
 * block per (token, query head) walking the keys in tiles of a thread per key. fp32 throughout. */
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

/* ---- the fast path ---- */

#define FA_WARPS 4
#define FA_MAX_GROUP 8   /* query heads per KV head */
#define FA_MIN_SPLIT 64  /* keys: a split shorter than this costs more to combine than it saves */

template <typename T, int HD>
struct fa_geom {
    static constexpr int LPK = HD * (int)sizeof(T) / 16 < 32 ? HD * (int)sizeof(T) / 16 : 32; /* lanes per key */
    static constexpr int E = HD / LPK;                                                           /* elements per lane */
    static constexpr int KPW = 32 / LPK;                                                         /* keys per warp step */
    static constexpr int PARTS = FA_WARPS * KPW; /* partial softmax states per block */
};

/* Partial results of a split: o unnormalized (relative to m), l the sum of exp(s - m). */
template <typename T, int HD, int GM>
__global__ void __launch_bounds__(FA_WARPS * 32)
    fa_split_kernel(T *out, float *part_o, float2 *part_ml, const T *q, const T *kc, const T *vc, const int32_t *pos,
                    const int32_t *seq, const int32_t *tables, int max_blocks, int bs, int nh, int nkv, int window,
                    float scale, int split_len)
{
    using G_ = fa_geom<T, HD>;
    constexpr int LPK = G_::LPK, E = G_::E, KPW = G_::KPW, PARTS = G_::PARTS;
    extern __shared__ float fa_sm[]; /* (PARTS, group, HD + 2): each part's o, m, l */
    const int t = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z, n_splits = gridDim.z;
    const int group = nh / nkv, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int sg = lane / LPK, sub = lane % LPK, part = warp * KPW + sg;
    const int p = pos[t];
    const int start = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
    const int k0 = max(start, split * split_len), k1 = min(p + 1, (split + 1) * split_len);
    const int32_t *table = tables + (int64_t)seq[t] * max_blocks;
    const int64_t kw = (int64_t)nkv * HD;

    float qv[GM][E], acc[GM][E], m[GM], l[GM];
#pragma unroll
    for (int g = 0; g < GM; g++) {
        m[g] = -INFINITY, l[g] = 0.0f;
#pragma unroll
        for (int e = 0; e < E; e++)
            acc[g][e] = 0.0f, qv[g][e] = 0.0f;
        if (g < group) {
            load_vec<T, E>(q + ((int64_t)t * nh + (int64_t)kvh * group + g) * HD + sub * E, qv[g]);
#pragma unroll
            for (int e = 0; e < E; e++)
                qv[g][e] *= scale;
        }
    }
    /* the whole warp takes every step (the shuffles need all its lanes); a key group past the end
     * of the split computes nothing into its state */
    for (int jb = k0 + warp * KPW; jb < k1; jb += FA_WARPS * KPW) {
        const int j = jb + sg;
        const bool ok = j < k1;
        float kr[E], vr[E];
        if (ok) {
            const int64_t slot = (int64_t)table[j / bs] * bs + j % bs;
            load_vec<T, E>(kc + slot * kw + (int64_t)kvh * HD + sub * E, kr);
            load_vec<T, E>(vc + slot * kw + (int64_t)kvh * HD + sub * E, vr);
        } else {
#pragma unroll
            for (int e = 0; e < E; e++)
                kr[e] = 0.0f, vr[e] = 0.0f;
        }
#pragma unroll
        for (int g = 0; g < GM; g++) {
            if (g >= group)
                continue;
            float d = 0.0f;
#pragma unroll
            for (int e = 0; e < E; e++)
                d += qv[g][e] * kr[e];
#pragma unroll
            for (int o = LPK / 2; o > 0; o >>= 1)
                d += __shfl_xor_sync(0xffffffffu, d, o);
            if (ok) {
                const float m_new = fmaxf(m[g], d);
                const float corr = __expf(m[g] - m_new), pj = __expf(d - m_new);
                l[g] = l[g] * corr + pj;
#pragma unroll
                for (int e = 0; e < E; e++)
                    acc[g][e] = acc[g][e] * corr + pj * vr[e];
                m[g] = m_new;
            }
        }
    }
    const int stride = HD + 2;
#pragma unroll
    for (int g = 0; g < GM; g++) { /* constant indices: the arrays stay in registers */
        if (g < group) {
            float *dst = fa_sm + ((size_t)part * group + g) * stride;
#pragma unroll
            for (int e = 0; e < E; e++)
                dst[sub * E + e] = acc[g][e];
            if (sub == 0)
                dst[HD] = m[g], dst[HD + 1] = l[g];
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < group * HD; i += blockDim.x) {
        const int g = i / HD, d = i % HD;
        float mx = -INFINITY;
        for (int r = 0; r < PARTS; r++)
            mx = fmaxf(mx, fa_sm[((size_t)r * group + g) * stride + HD]);
        float o = 0.0f, sum = 0.0f;
        if (mx > -INFINITY)
            for (int r = 0; r < PARTS; r++) {
                const float *src = fa_sm + ((size_t)r * group + g) * stride;
                const float w = __expf(src[HD] - mx); /* 0 for a part that saw no key */
                o += w * src[d];
                sum += w * src[HD + 1];
            }
        const int h = kvh * group + g;
        if (n_splits == 1) {
            st(&out[((int64_t)t * nh + h) * HD + d], o / sum);
        } else {
            const int64_t at = ((int64_t)t * nh + h) * n_splits + split;
            part_o[at * HD + d] = o;
            if (d == 0)
                part_ml[at] = make_float2(mx, sum);
        }
    }
}

/* out = the splits' partial results combined. One block per (token, query head). */
template <typename T>
__global__ void fa_combine_kernel(T *out, const float *part_o, const float2 *part_ml, int hd, int n_splits)
{
    const int64_t row = (int64_t)blockIdx.x * gridDim.y + blockIdx.y; /* token * nh + head */
    const float2 *ml = part_ml + row * n_splits;
    float mx = -INFINITY;
    for (int s = 0; s < n_splits; s++)
        if (ml[s].y > 0.0f)
            mx = fmaxf(mx, ml[s].x);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f, sum = 0.0f;
        for (int s = 0; s < n_splits; s++)
            if (ml[s].y > 0.0f) {
                const float w = __expf(ml[s].x - mx);
                o += w * part_o[(row * n_splits + s) * hd + d];
                sum += w * ml[s].y;
            }
        st(&out[row * hd + d], o / sum);
    }
}

/* Splits of the context: enough blocks to fill the GPU twice over when tokens x KV heads cannot,
 * within the backend's scratch. */
static int fa_splits(const cuda_ctx *c, const rt_attn_batch *b, const rt_attn_shape *s, int *split_len)
{
    const int ctx = b->max_blocks * b->block_size; /* no token of the step sees more */
    const int64_t blocks = (int64_t)b->n_tokens * s->n_kv_heads, want = 2LL * c->n_sms;
    int n = blocks >= want ? 1 : (int)((want + blocks - 1) / blocks);
    const int most = (ctx + FA_MIN_SPLIT - 1) / FA_MIN_SPLIT;
    n = n < most ? n : most;
    const size_t per_split = (size_t)b->n_tokens * s->n_heads * ((size_t)s->head_dim * sizeof(float) + sizeof(float2));
    const int fit = (int)(c->scratch_bytes / per_split);
    n = n < fit ? n : fit;
    n = n > 1 ? n : 1;
    *split_len = (ctx + n - 1) / n;
    return (ctx + *split_len - 1) / *split_len;
}

template <typename T, int HD, int GM>
static void fa_launch(cuda_ctx *c, void *out, const void *q, const rt_kv_layer *kv, const rt_attn_batch *b,
                      const rt_attn_shape *s)
{
    using G_ = fa_geom<T, HD>;
    int split_len = 0;
    const int n_splits = fa_splits(c, b, s, &split_len);
    const int group = s->n_heads / s->n_kv_heads;
    const size_t shm = (size_t)G_::PARTS * group * (HD + 2) * sizeof(float);
    float *part_o = (float *)c->scratch;
    float2 *part_ml = (float2 *)(part_o + (size_t)b->n_tokens * s->n_heads * n_splits * HD);
    dim3 grid((unsigned)b->n_tokens, (unsigned)s->n_kv_heads, (unsigned)n_splits);
    fa_split_kernel<T, HD, GM><<<grid, FA_WARPS * 32, shm, c->stream>>>(
        (T *)out, part_o, part_ml, (const T *)q, (const T *)kv->k, (const T *)kv->v, b->pos, b->seq, b->block_tables,
        b->max_blocks, b->block_size, s->n_heads, s->n_kv_heads, s->sliding_window, s->scale, split_len);
    if (n_splits > 1)
        fa_combine_kernel<T><<<dim3((unsigned)b->n_tokens, (unsigned)s->n_heads), HD, 0, c->stream>>>(
            (T *)out, part_o, part_ml, HD, n_splits);
}

template <typename T>
static bool fa_try(cuda_ctx *c, void *out, const void *q, const rt_kv_layer *kv, const rt_attn_batch *b,
                   const rt_attn_shape *s)
{
    const int group = s->n_heads / s->n_kv_heads;
    if (group > FA_MAX_GROUP || s->n_heads % s->n_kv_heads != 0)
        return false;
    /* registers for 4 query heads a KV head (Llama 3's 8B and 1B), or for up to 8 */
    switch (s->head_dim * (group <= 4 ? 1 : -1)) {
    case 64: fa_launch<T, 64, 4>(c, out, q, kv, b, s); return true;
    case 128: fa_launch<T, 128, 4>(c, out, q, kv, b, s); return true;
    case 256: fa_launch<T, 256, 4>(c, out, q, kv, b, s); return true;
    case -64: fa_launch<T, 64, 8>(c, out, q, kv, b, s); return true;
    case -128: fa_launch<T, 128, 8>(c, out, q, kv, b, s); return true;
    case -256: fa_launch<T, 256, 8>(c, out, q, kv, b, s); return true;
    default: return false;
    }
}

/* ---- the general path ---- */

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
    bool fast = false;
    switch (c->dt) {
    case RT_F32: fast = fa_try<float>(c, out, q, kv, b, s); break;
    case RT_BF16: fast = fa_try<__nv_bfloat16>(c, out, q, kv, b, s); break;
    case RT_F16: fast = fa_try<__half>(c, out, q, kv, b, s); break;
    }
    if (!fast)
        CUDA_DISPATCH(c->dt, launch, c, out, q, kv, b, s);
    CUDA_LAUNCHED(c);
}
