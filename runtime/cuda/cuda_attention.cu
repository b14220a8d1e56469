/* Attention over the paged KV cache for decode and prefill alike, with an online softmax, so no
 * score matrix is ever stored.
 *
 * The fast path (head sizes 64, 128 and 256, up to 8 query heads per KV head): one block per
 * (token, KV head, split of the context) serves every query head of that KV head, so each K and V
 * row is read once for all of them; a group of lanes holds one key row in 16-byte loads and the
 * warp walks several keys at a time, each lane's loads two key steps ahead of its math. When the
 * tokens and KV heads alone cannot fill the GPU (decode at small batch over a long context), each
 * token's context is split (flash-decoding) into as many equal parts as the grid has splits, whose
 * partial results are combined by the splits' blocks themselves as one cluster (up to 8 splits, on
 * Hopper), or by a second kernel. The general path (any other head size or group) is one
 * block per (token, query head) walking the keys in tiles of a thread per key. fp32 throughout. */
#include <cooperative_groups.h>
#include <type_traits>

#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"
extern "C" {
#include "runtime/config.h" /* RT_MAX_HEAD_DIM */
}

#define ATT_THREADS 128
#define ATT_MAX_ACC (RT_MAX_HEAD_DIM / ATT_THREADS) /* accumulators per thread: head_dim <= RT_MAX_HEAD_DIM */
static_assert(ATT_MAX_ACC * ATT_THREADS >= RT_MAX_HEAD_DIM, "the attention kernel must cover the config's head_dim limit");

/* KV: the cache's storage, T or fp8_e4m3 (then k_scale and v_scale hold slot s and KV head h's scale
 * at s * sst + h: rt_kv_layer's scale_stride) */
template <typename T, typename KV>
__global__ void attention_kernel(T *out, const T *q, const KV *kc, const KV *vc, const float *k_scale,
                                 const float *v_scale, int sst, const int32_t *pos, const int32_t *seq,
                                 const int32_t *toks, const int32_t *tables, int max_blocks, int bs, int nh, int nkv,
                                 int hd, int window, float scale)
{
    constexpr bool Q8 = sizeof(KV) == 1;
    pdl_wait();
    pdl_trigger();
    extern __shared__ float sm[];
    float *qs = sm;                     /* (hd) the query, scaled */
    float *ps = qs + hd;                /* (ATT_THREADS) this tile's probabilities */
    int *slots = (int *)(ps + ATT_THREADS); /* (ATT_THREADS) this tile's KV slots */
    __shared__ float scratch[32];
    const int t = toks ? toks[blockIdx.x] : blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
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
        float s = -INFINITY, vsc = 1.0f;
        if (j <= p) {
            const int slot = table[j / bs] * bs + j % bs;
            slots[tid] = slot;
            const KV *kj = kc + slot * kw + (int64_t)kvh * hd;
            float d = 0.0f;
            for (int i = 0; i < hd; i++)
                d += qs[i] * ld(&kj[i]);
            s = Q8 ? d * k_scale[(int64_t)slot * sst + kvh] : d;
            if (Q8)
                vsc = v_scale[(int64_t)slot * sst + kvh];
        }
        const float m_new = fmaxf(m, block_max(s, scratch));
        const float pj = j <= p ? expf(s - m_new) : 0.0f;
        ps[tid] = pj * vsc; /* the value sum's weight: the probability times the value row's scale */
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

#define FA_WARPS 4       /* a block's warps */
#define FA_SPLIT_WARPS 8 /* a split context's, at 128-wide heads (fa_launch) */
#define FA_MAX_GROUP 8   /* query heads per KV head */
#define FA_AHEAD 2       /* key steps whose loads are in flight ahead of the math */
#define FA_CLUSTER_MAX 8 /* splits combined in one cluster (the portable cluster size) */
/* p in the shared memory of the cluster's block `rank` (a cluster launch on sm_90 and later only) */
template <typename P>
__device__ __forceinline__ P *fa_remote(P *p, int rank)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    return cooperative_groups::this_cluster().map_shared_rank(p, rank);
#else
    (void)rank;
    return p;
#endif
}

template <typename KV, int HD, int W>
struct fa_geom {
    static constexpr int LPK = HD * (int)sizeof(KV) / 16 < 32 ? HD * (int)sizeof(KV) / 16 : 32; /* lanes per key */
    static constexpr int E = HD / LPK;                                                           /* elements per lane */
    static constexpr int KPW = 32 / LPK;                                                         /* keys per warp step */
};

/* Partial results of a split: o unnormalized (relative to m), l the sum of exp(s - m), written to
 * part_o and part_ml for fa_combine_kernel; or with cl (the grid's splits one cluster, at most
 * FA_CLUSTER_MAX) written to the shared memory of the cluster's block that owns each output (x %
 * n_splits), which combines them after one barrier: no second kernel.
 * With pre (a decode step, rt_attn_batch.decode) the keys before the token's own are asked for
 * before the wait on the kernel ahead, which writes only the token's own key. With inv_freq too (a
 * decode step's rope_attention), that kernel is the QKV product: q is a row of its output (q_ld
 * apart) and is rotated here, and the split that holds the token's own key takes it from the row,
 * rotates it, writes it and its v to their slot, and attends it after the others: no RoPE kernel
 * between the product and the attention. Off by default (DINFER_CUDA_ROPE_FUSE): on an H100 the 8B
 * step was 1-2% slower with it, the attention's blocks still starting only as the product's last
 * wave ends, with the angles and the early loads then on the step's path (docs/PERFORMANCE.md). */
template <typename T, typename KV, int HD, int GM, int W, bool ROPE>
__global__ void __launch_bounds__(W * 32)
    fa_split_kernel(T *out, float *part_o, float2 *part_ml, const T *q, int64_t q_ld, KV *kc, KV *vc,
                    float *k_scale, float *v_scale, int sst, const int32_t *pos, const int32_t *seq,
                    const int32_t *toks, const int32_t *tables, int max_blocks, int bs, int nh, int nkv, int window,
                    float scale, int min_split, bool cl, bool pre, const float *inv_freq,
                    const int32_t *slots)
{
    /* with a cluster, every block writes into the others' shared memory once they have all
     * started: that barrier is split, this arrival well ahead of the wait before the writes */
    const bool push = cl && gridDim.z > 1;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (push)
        asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
#endif
    if (!pre) {
        pdl_wait();
        pdl_trigger();
    }
    using G_ = fa_geom<KV, HD, W>;
    constexpr bool Q8 = sizeof(KV) == 1; /* an FP8 cache: (slot, KV head)'s scale at slot * sst + head */
    constexpr int LPK = G_::LPK, E = G_::E, KPW = G_::KPW;
    extern __shared__ float fa_sm[]; /* (W, group, HD + 2): each warp's o, m, l */
    const int i = blockIdx.x, t = toks ? toks[i] : i, kvh = blockIdx.y, split = blockIdx.z, n_splits = gridDim.z;
    const int group = nh / nkv, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int sg = lane / LPK, sub = lane % LPK;
    const int p = pos[t];
    const int start = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
    /* the splits share this token's own context (a CUDA graph's grid is sized for its bucket's
     * widest table; splits of the table's width would leave most of them empty), in whole block
     * steps of at least min_split keys (FA_MIN_SPLIT): the trailing splits of a short context see none */
    constexpr int STEP = W * KPW;
    int split_len = (p + 1 - start + n_splits - 1) / n_splits;
    split_len = split_len > min_split ? (split_len + STEP - 1) / STEP * STEP : min_split;
    const int k0 = start + split * split_len, k1 = min(p + 1, k0 + split_len);
    const int32_t *table = tables + (int64_t)seq[t] * max_blocks;
    const int64_t kw = (int64_t)nkv * HD;
    constexpr bool rope = ROPE;
    const int kend = pre ? min(k1, p) : k1; /* keys read from the cache (pre: the token's own is not yet there) */
    const int kloop = rope ? kend : k1;     /* keys the loop attends (rope: the token's own after it) */

    /* the whole warp takes every step (the shuffles need all its lanes); a key group past the end
     * of the split computes nothing into its state. Each step's K and V rows are requested
     * FA_AHEAD steps ahead, as raw 16-byte vectors, so their latency passes under the math of the
     * steps before */
    constexpr int NV = E * (int)sizeof(KV) / 16;
    uint4 kn[FA_AHEAD][NV], vn[FA_AHEAD][NV];
    float ksn[FA_AHEAD], vsn[FA_AHEAD]; /* an FP8 cache's scales of the keys in flight */
    /* key j's rows if j < end, zeros otherwise */
    const auto fetch_to = [&](int j, int end, uint4 *kb, uint4 *vb, float &ks, float &vs) {
        if (j < end) {
            const int64_t slot = (int64_t)table[j / bs] * bs + j % bs;
            load_raw<KV, E>(kc + slot * kw + (int64_t)kvh * HD + sub * E, kb);
            load_raw<KV, E>(vc + slot * kw + (int64_t)kvh * HD + sub * E, vb);
            if (Q8)
                ks = __ldg(k_scale + slot * sst + kvh), vs = __ldg(v_scale + slot * sst + kvh);
        } else {
#pragma unroll
            for (int v = 0; v < NV; v++)
                kb[v] = make_uint4(0, 0, 0, 0), vb[v] = make_uint4(0, 0, 0, 0);
            ks = vs = 0.0f;
        }
    };
    const auto fetch = [&](int j, uint4 *kb, uint4 *vb, float &ks, float &vs) {
        fetch_to(j, kloop, kb, vb, ks, vs);
    };
#pragma unroll
    for (int a = 0; a < FA_AHEAD; a++)
        fetch_to(k0 + warp * KPW + sg + a * STEP, kend, kn[a], vn[a], ksn[a], vsn[a]);
    /* with rope, the rotation's cos and sin of each pair (fp32 angles, as transformers computes
     * them), before the wait; the pair of element i < HD / 2 is i + HD / 2, LPK / 2 lanes on */
    __shared__ float2 rope_cs[rope ? HD / 2 : 1];
    if constexpr (rope) {
        for (int j = threadIdx.x; j < HD / 2; j += blockDim.x) {
            float sn, co;
            sincosf((float)p * __ldg(inv_freq + j), &sn, &co);
            rope_cs[j] = make_float2(co, sn);
        }
        __syncthreads();
    }
    /* a head row's E elements of this lane (all the warp's lanes take part), rotated with rope */
    const auto row = [&](const T *head, float *o) {
        load_vec<T, E>(head + sub * E, o);
        if constexpr (rope) {
            const bool lo = sub < LPK / 2;
#pragma unroll
            for (int e = 0; e < E; e++) {
                const float y = __shfl_xor_sync(0xffffffffu, o[e], LPK / 2);
                const float2 cs = rope_cs[(sub * E + e) % (HD / 2)];
                o[e] = lo ? o[e] * cs.x - y * cs.y : o[e] * cs.x + y * cs.y;
            }
        }
    };
    if (pre) {
        pdl_wait();
        pdl_trigger();
        if (!rope) /* the token's own key, written by the kernel ahead, if it is among those */
#pragma unroll
            for (int a = 0; a < FA_AHEAD; a++)
                if (k0 + warp * KPW + sg + a * STEP == p)
                    fetch(p, kn[a], vn[a], ksn[a], vsn[a]);
    }
    float qv[GM][E], acc[GM][E], m[GM], l[GM];
#pragma unroll
    for (int g = 0; g < GM; g++) {
        m[g] = -INFINITY, l[g] = 0.0f;
#pragma unroll
        for (int e = 0; e < E; e++)
            acc[g][e] = 0.0f, qv[g][e] = 0.0f;
        if (g < group) { /* rope: rounded to T, as the RoPE kernel stores it */
            row(q + (int64_t)t * q_ld + ((int64_t)kvh * group + g) * HD, qv[g]);
#pragma unroll
            for (int e = 0; e < E; e++)
                qv[g][e] = (rope ? as_stored<T>(qv[g][e]) : qv[g][e]) * scale;
        }
    }
    /* one key of a lane group into the online softmax of each query head (every lane of the warp
     * takes part in the shuffles; ok: the key counts) */
    const auto attend = [&](const float *kr, const float *vr, float ksc, float vsc, bool ok) {
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
            if (Q8)
                d *= ksc;
            if (ok) {
                const float m_new = fmaxf(m[g], d);
                const float corr = __expf(m[g] - m_new), pj = __expf(d - m_new), pv = pj * vsc;
                l[g] = l[g] * corr + pj;
#pragma unroll
                for (int e = 0; e < E; e++)
                    acc[g][e] = acc[g][e] * corr + pv * vr[e];
                m[g] = m_new;
            }
        }
    };
    for (int jb = k0 + warp * KPW; jb < kloop; jb += FA_AHEAD * STEP) {
#pragma unroll
        for (int a = 0; a < FA_AHEAD; a++) {
            const int j = jb + a * STEP + sg;
            float kr[E], vr[E];
            raw_to_float<KV, E>(kn[a], kr);
            raw_to_float<KV, E>(vn[a], vr);
            const float ksc = Q8 ? ksn[a] : 1.0f, vsc = Q8 ? vsn[a] : 1.0f;
            fetch(j + FA_AHEAD * STEP, kn[a], vn[a], ksn[a], vsn[a]);
            attend(kr, vr, ksc, vsc, j < kloop);
        }
    }
    if (rope && p >= k0 && p < k1 && warp == 0) { /* (rope: a constant) */
        /* the token's own key and value from the QKV product's row, written to their slot as the
         * RoPE kernels write them (16-bit: k rounded; FP8: codes under the head's scale, the largest
         * magnitude / 448, or the static one) and attended as the loop would read them back; the
         * warp's first lane group writes and counts them */
        const T *kin = q + (int64_t)t * q_ld + (int64_t)nh * HD + (int64_t)kvh * HD;
        float kr[E], vr[E], ksc = 1.0f, vsc = 1.0f;
        row(kin, kr);
        load_vec<T, E>(kin + kw + sub * E, vr);
        const int64_t at = (int64_t)slots[t] * kw + (int64_t)kvh * HD + sub * E;
        if constexpr (Q8) {
            if (sst == 0) {
                ksc = __ldg(k_scale + kvh), vsc = __ldg(v_scale + kvh);
            } else {
                float km = 0.0f, vm = 0.0f;
#pragma unroll
                for (int e = 0; e < E; e++)
                    km = fmaxf(km, fabsf(kr[e])), vm = fmaxf(vm, fabsf(vr[e]));
#pragma unroll
                for (int o = LPK / 2; o > 0; o >>= 1) {
                    km = fmaxf(km, __shfl_xor_sync(0xffffffffu, km, o));
                    vm = fmaxf(vm, __shfl_xor_sync(0xffffffffu, vm, o));
                }
                ksc = km > 0.0f ? km / 448.0f : 1.0f, vsc = vm > 0.0f ? vm / 448.0f : 1.0f;
            }
            uint4 kq[NV], vq[NV];
            uint8_t *kb = reinterpret_cast<uint8_t *>(kq), *vb = reinterpret_cast<uint8_t *>(vq);
#pragma unroll
            for (int e = 0; e < E; e++) {
                kb[e] = __nv_cvt_float_to_fp8(kr[e] / ksc, __NV_SATFINITE, __NV_E4M3);
                vb[e] = __nv_cvt_float_to_fp8(vr[e] / vsc, __NV_SATFINITE, __NV_E4M3);
            }
            raw_to_float<KV, E>(kq, kr);
            raw_to_float<KV, E>(vq, vr);
            if (sg == 0) {
#pragma unroll
                for (int v = 0; v < NV; v++) {
                    reinterpret_cast<uint4 *>(kc + at)[v] = kq[v];
                    reinterpret_cast<uint4 *>(vc + at)[v] = vq[v];
                }
                if (sst != 0 && sub == 0)
                    k_scale[(int64_t)slots[t] * sst + kvh] = ksc, v_scale[(int64_t)slots[t] * sst + kvh] = vsc;
            }
        } else {
#pragma unroll
            for (int e = 0; e < E; e++)
                kr[e] = as_stored<T>(kr[e]);
            if (sg == 0) {
                store_vec<KV, E>(kc + at, kr);
                store_vec<KV, E>(vc + at, vr);
            }
        }
        attend(kr, vr, ksc, vsc, sg == 0);
    }
    /* the warp's KPW key groups' states merged by shuffles (lanes LPK apart hold the same elements):
     * W states a block meet in shared memory instead of W x KPW (8B int4 batch 1 on an H100, with the
     * cluster's states pushed below: 419.5 -> 424.2 tok/s; 423.9 pushed alone) */
#pragma unroll
    for (int g = 0; g < GM; g++) {
        if (g >= group)
            continue;
#pragma unroll
        for (int o = LPK; o < 32; o <<= 1) {
            const float mo = __shfl_xor_sync(0xffffffffu, m[g], o), lo = __shfl_xor_sync(0xffffffffu, l[g], o);
            const float mn = fmaxf(m[g], mo);
            /* a state that saw no key (m -inf) weighs 0; two such stay empty */
            const float c1 = mn == -INFINITY ? 0.0f : __expf(m[g] - mn), c2 = mn == -INFINITY ? 0.0f : __expf(mo - mn);
            l[g] = l[g] * c1 + lo * c2;
#pragma unroll
            for (int e = 0; e < E; e++)
                acc[g][e] = acc[g][e] * c1 + __shfl_xor_sync(0xffffffffu, acc[g][e], o) * c2;
            m[g] = mn;
        }
    }
    const int stride = HD + 2;
#pragma unroll
    for (int g = 0; g < GM; g++) { /* constant indices: the arrays stay in registers */
        if (g < group && sg == 0) {
            float *dst = fa_sm + ((size_t)warp * group + g) * stride;
#pragma unroll
            for (int e = 0; e < E; e++)
                dst[sub * E + e] = acc[g][e];
            if (sub == 0)
                dst[HD] = m[g], dst[HD + 1] = l[g];
        }
    }
    __syncthreads();
    cuda_trace_mark(); /* every warp's keys done */
    /* with a cluster, the states its blocks write here: (m, l) of each block's query heads, then
     * each block's o of the outputs this block owns (x % n_splits == split), per apart */
    float2 *recv_ml = reinterpret_cast<float2 *>(fa_sm + (size_t)W * group * stride);
    float *recv_o = reinterpret_cast<float *>(recv_ml + FA_CLUSTER_MAX * group);
    const int per = (group * HD + n_splits - 1) / n_splits;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (push)
        asm volatile("barrier.cluster.wait.aligned;" ::: "memory"); /* every block of the cluster started */
#endif
    for (int x = threadIdx.x; x < group * HD; x += blockDim.x) {
        const int g = x / HD, d = x % HD;
        float mx = -INFINITY;
#pragma unroll
        for (int r = 0; r < W; r++)
            mx = fmaxf(mx, fa_sm[((size_t)r * group + g) * stride + HD]);
        float o = 0.0f, sum = 0.0f;
        if (mx > -INFINITY)
#pragma unroll
            for (int r = 0; r < W; r++) {
                const float *src = fa_sm + ((size_t)r * group + g) * stride;
                const float w = __expf(src[HD] - mx); /* 0 for a warp that saw no key */
                o += w * src[d];
                sum += w * src[HD + 1];
            }
        const int h = kvh * group + g;
        if (n_splits == 1) {
            st(&out[((int64_t)t * nh + h) * HD + d], o / sum);
        } else if (push) {
            fa_remote(recv_o, x % n_splits)[split * per + x / n_splits] = o;
            if (d == 0)
                for (int r = 0; r < n_splits; r++)
                    fa_remote(recv_ml, r)[split * group + g] = make_float2(mx, sum);
        } else {
            const int64_t at = ((int64_t)i * nh + h) * n_splits + split;
            part_o[at * HD + d] = o;
            if (d == 0)
                part_ml[at] = make_float2(mx, sum);
        }
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (push) {
        /* the writes above made visible to their owners; then each block reads only its own shared
         * memory, so it may end without waiting for the others (the blocks read the others' states
         * after a barrier and a second kept them alive until then: 8B batch 1 +1.0% on an H100) */
        asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
        cuda_trace_mark2(); /* the block's own merge, its writes and the barrier done */
        for (int k = threadIdx.x; split + n_splits * k < group * HD; k += blockDim.x) {
            const int x = split + n_splits * k, g = x / HD;
            /* fa_combine_kernel's sums, in the same order */
            float2 ml[FA_CLUSTER_MAX];
            float ov[FA_CLUSTER_MAX];
#pragma unroll
            for (int r = 0; r < FA_CLUSTER_MAX; r++)
                if (r < n_splits)
                    ml[r] = recv_ml[r * group + g], ov[r] = recv_o[r * per + k];
                else
                    ml[r] = make_float2(0.0f, 0.0f), ov[r] = 0.0f;
            float mx = -INFINITY;
#pragma unroll
            for (int r = 0; r < FA_CLUSTER_MAX; r++)
                if (ml[r].y > 0.0f)
                    mx = fmaxf(mx, ml[r].x);
            float o = 0.0f, sum = 0.0f;
#pragma unroll
            for (int r = 0; r < FA_CLUSTER_MAX; r++) {
                const float w = ml[r].y > 0.0f ? __expf(ml[r].x - mx) : 0.0f; /* a split that saw no key weighs 0 */
                o += w * ov[r];
                sum += w * ml[r].y;
            }
            st(&out[((int64_t)t * nh + kvh * group + g) * HD + x % HD], o / sum);
        }
    }
#endif
    cuda_trace_end();
}

/* out = the splits' partial results combined. One block per (token, query head), a thread per
 * element: the first warp turns the splits' (m, l) into weights in shared memory (n_splits floats
 * of dynamic shared memory), then every thread sums its element over the splits, several loads in
 * flight (the partials were just written: they come from L2). */
template <typename T>
__global__ void fa_combine_kernel(T *out, const float *part_o, const float2 *part_ml, const int32_t *toks, int hd,
                                  int n_splits)
{
    pdl_wait();
    pdl_trigger();
    extern __shared__ float fa_w[];
    __shared__ float inv_sum;
    const int64_t row = (int64_t)blockIdx.x * gridDim.y + blockIdx.y; /* the token's index * nh + head */
    const int64_t out_row = (int64_t)(toks ? toks[blockIdx.x] : (int)blockIdx.x) * gridDim.y + blockIdx.y;
    const float2 *ml = part_ml + row * n_splits;
    if (threadIdx.x < 32) {
        float mx = -INFINITY;
        for (int s = threadIdx.x; s < n_splits; s += 32) {
            const float2 v = ml[s];
            if (v.y > 0.0f)
                mx = fmaxf(mx, v.x);
        }
        for (int o = 16; o > 0; o >>= 1)
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        float sum = 0.0f;
        for (int s = threadIdx.x; s < n_splits; s += 32) {
            const float2 v = ml[s];
            const float w = v.y > 0.0f ? __expf(v.x - mx) : 0.0f; /* a split that saw no key weighs 0 */
            fa_w[s] = w;
            sum += w * v.y;
        }
        sum = warp_sum(sum);
        if (threadIdx.x == 0)
            inv_sum = 1.0f / sum;
    }
    __syncthreads();
    const float *po = part_o + row * n_splits * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
#pragma unroll 8
        for (int s = 0; s < n_splits; s++)
            o += fa_w[s] * po[(int64_t)s * hd + d];
        st(&out[out_row * hd + d], o * inv_sum);
    }
}

/* The tokens one launch attends: toks NULL means tokens 0 .. n - 1. */
typedef struct tok_set {
    int n;
    const int32_t *toks;
} tok_set;

/* Splits of the context: enough blocks to fill the GPU twice over when tokens x KV heads cannot,
 * within the backend's scratch. */
static int fa_splits(const cuda_ctx *c, const rt_attn_batch *b, const rt_attn_shape *s, int n_tokens)
{
    const int ctx = b->max_blocks * b->block_size; /* no token of the step sees more */
    const int64_t blocks = (int64_t)n_tokens * s->n_kv_heads, want = 2LL * c->n_sms;
    int n = blocks >= want ? 1 : (int)((want + blocks - 1) / blocks);
    const int most = (ctx + c->fa_min_split - 1) / c->fa_min_split;
    n = n < most ? n : most;
    const size_t per_split = (size_t)n_tokens * s->n_heads * ((size_t)s->head_dim * sizeof(float) + sizeof(float2));
    const int fit = (int)(c->scratch_bytes / per_split);
    n = n < fit ? n : fit;
    return n > 1 ? n : 1;
}

/* ROPE: a decode step's rope_attention (q is then the QKV product's output, inv_freq the rotation's) */
template <typename T, typename KV, int HD, int GM, int W, bool ROPE>
static void fa_run(cuda_ctx *c, void *out, const void *q, const rt_kv_layer *kv, const rt_attn_batch *b,
                   const rt_attn_shape *s, tok_set ts, int n_splits, const float *inv_freq)
{
    using G_ = fa_geom<KV, HD, W>;
    const int group = s->n_heads / s->n_kv_heads;
    /* the splits combined in their cluster (H100, batch 1: 8B int4 406.1 -> 414.3 tok/s; the early keys
     * below 404.7 -> 414.3) */
    const bool cl = c->fa_cluster && n_splits > 1 && n_splits <= FA_CLUSTER_MAX;
    /* the warps' states, then with cl those the cluster's blocks write to this one (the kernel's
     * recv_ml and recv_o) */
    const size_t per = (size_t)(group * HD + n_splits - 1) / n_splits;
    const size_t shm = (size_t)W * group * (HD + 2) * sizeof(float) +
                       (cl ? (size_t)FA_CLUSTER_MAX * group * sizeof(float2) + n_splits * per * sizeof(float) : 0);
    float *part_o = (float *)c->scratch;
    float2 *part_ml = (float2 *)(part_o + (size_t)ts.n * s->n_heads * n_splits * HD);
    dim3 grid((unsigned)ts.n, (unsigned)s->n_kv_heads, (unsigned)n_splits);
    if (shm > 48 * 1024) /* the partial states of many key groups (an FP8 cache at head_dim 64, 8 heads a KV head) */
        CUDA_CHECK(c, cudaFuncSetAttribute(fa_split_kernel<T, KV, HD, GM, W, ROPE>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm));
    cuda_launch_cluster(c, cl ? (unsigned)n_splits : 1u, fa_split_kernel<T, KV, HD, GM, W, ROPE>, grid, W * 32, shm,
        (T *)out, part_o, part_ml, (const T *)q,
        (int64_t)(s->n_heads + (ROPE ? 2 * s->n_kv_heads : 0)) * HD, (KV *)kv->k, (KV *)kv->v, kv->k_scale,
        kv->v_scale, kv->scale_stride, b->pos, b->seq, ts.toks,
        b->block_tables, b->max_blocks, b->block_size, s->n_heads, s->n_kv_heads, s->sliding_window, s->scale,
        c->fa_min_split, cl, ROPE || (c->fa_pre && b->decode), inv_freq, b->slot);
    if (n_splits > 1 && !cl)
        cuda_launch(c, fa_combine_kernel<T>, dim3((unsigned)ts.n, (unsigned)s->n_heads), HD,
            (size_t)n_splits * sizeof(float), (T *)out, part_o, part_ml, ts.toks, HD, n_splits);
}

template <typename T, typename KV, int HD, int GM, bool ROPE = false>
static void fa_launch(cuda_ctx *c, void *out, const void *q, const rt_kv_layer *kv, const rt_attn_batch *b,
                      const rt_attn_shape *s, tok_set ts, const float *inv_freq = nullptr)
{
    const int n_splits = fa_splits(c, b, s, ts.n);
    /* a split context at 128-wide heads, 4 query heads a KV head (Llama 3's 8B): the blocks are few
     * and each is latency-bound, so twice the warps keep twice the loads in flight (8B at 4,096
     * tokens: 168.2 -> 173.5 tok/s on an H100; 4 steps ahead instead of 2 gained nothing) */
    if constexpr (HD == 128 && GM == 4)
        if (n_splits > 1)
            return fa_run<T, KV, HD, GM, FA_SPLIT_WARPS, ROPE>(c, out, q, kv, b, s, ts, n_splits, inv_freq);
    fa_run<T, KV, HD, GM, FA_WARPS, ROPE>(c, out, q, kv, b, s, ts, n_splits, inv_freq);
}

template <typename T, typename KV>
static bool fa_try(cuda_ctx *c, void *out, const void *q, const rt_kv_layer *kv, const rt_attn_batch *b,
                   const rt_attn_shape *s, tok_set ts)
{
    const int group = s->n_heads / s->n_kv_heads;
    if (group > FA_MAX_GROUP || s->n_heads % s->n_kv_heads != 0)
        return false;
    /* registers for 4 query heads a KV head (Llama 3's 8B and 1B), or for up to 8 */
    switch (s->head_dim * (group <= 4 ? 1 : -1)) {
    case 64: fa_launch<T, KV, 64, 4>(c, out, q, kv, b, s, ts); return true;
    case 128: fa_launch<T, KV, 128, 4>(c, out, q, kv, b, s, ts); return true;
    case 256: fa_launch<T, KV, 256, 4>(c, out, q, kv, b, s, ts); return true;
    case -64: fa_launch<T, KV, 64, 8>(c, out, q, kv, b, s, ts); return true;
    case -128: fa_launch<T, KV, 128, 8>(c, out, q, kv, b, s, ts); return true;
    case -256: fa_launch<T, KV, 256, 8>(c, out, q, kv, b, s, ts); return true;
    default: return false;
    }
}

/* ---- prompt tiles on the tensor cores ----
 *
 * FlashAttention-2's forward over the paged cache: one block of 4 warps per (tile, query head),
 * each warp 16 of the tile's 64 query rows; keys in steps of 64, K and V staged in shared memory
 * by asynchronous copies one step ahead of the math; S = Q K^T and O += P V by mma.sync
 * (m16n8k16, fp32 accumulators); the online softmax on S's accumulator fragments, whose layout
 * is the A operand's of P V, so P never leaves registers. bf16 and fp16, head sizes 64 and 128. */

#define TC_WARPS 4
#define TC_KEYS 64
static_assert(TC_WARPS * 16 == RT_ATTN_TILE, "a warp's 16 query rows of each tile");

/* four 8x8 matrices of 16-bit elements; lane i names row i % 8 of matrix i / 8 */
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

/* two floats as a pair of T in one register, the first in the low half */
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi)
{
    if constexpr (std::is_same<T, __nv_bfloat16>::value) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    } else {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
}

template <typename T, int HD>
__global__ void __launch_bounds__(TC_WARPS * 32)
    tc_attention_kernel(T *out, const T *q, const T *kc, const T *vc, const int32_t *pos, const int32_t *seq,
                        const int32_t *tiles, const int32_t *tables, int max_blocks, int bs, int nh, int nkv,
                        int window, float scale_log2)
{
    pdl_wait();
    pdl_trigger();
    constexpr int LD = HD + 8;                   /* a staged row, padded: ldmatrix rows fall in distinct banks */
    constexpr int CH = HD * (int)sizeof(T) / 16; /* 16-byte pieces of a row */
    extern __shared__ __align__(16) unsigned char tc_sm[];
    T *qs = reinterpret_cast<T *>(tc_sm);        /* (RT_ATTN_TILE, LD) */
    T *ks = qs + RT_ATTN_TILE * LD;              /* (2, TC_KEYS, LD): two steps of keys */
    T *vs = ks + 2 * TC_KEYS * LD;               /* (2, TC_KEYS, LD) */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int h = blockIdx.y, kvh = h / (nh / nkv);
    const int tok0 = tiles[2 * blockIdx.x], ntok = tiles[2 * blockIdx.x + 1];
    const int p0 = pos[tok0], last = p0 + ntok - 1;
    const int32_t *table = tables + (int64_t)seq[tok0] * max_blocks;
    const int64_t kw = (int64_t)nkv * HD;
    const int kfirst = window > 0 && p0 - window + 1 > 0 ? p0 - window + 1 : 0;

    for (int i = tid; i < RT_ATTN_TILE * CH; i += TC_WARPS * 32) {
        const int r = i / CH, c = i % CH;
        const bool ok = r < ntok;
        cp_async16(qs + r * LD + c * 8, q + ((int64_t)(tok0 + (ok ? r : 0)) * nh + h) * HD + c * 8, ok);
    }
    /* keys kb .. kb + TC_KEYS - 1 into buffer `buf` (past the tile's last position: zeros) */
    auto stage = [&](int kb, int buf) {
        T *kd = ks + buf * TC_KEYS * LD, *vd = vs + buf * TC_KEYS * LD;
        for (int i = tid; i < TC_KEYS * CH; i += TC_WARPS * 32) {
            const int r = i / CH, c = i % CH, j = kb + r;
            const bool ok = j <= last;
            const int64_t at = ok ? ((int64_t)table[j / bs] * bs + j % bs) * kw + (int64_t)kvh * HD + c * 8 : 0;
            cp_async16(kd + r * LD + c * 8, kc + at, ok);
            cp_async16(vd + r * LD + c * 8, vc + at, ok);
        }
        cp_async_commit();
    };
    stage(kfirst, 0); /* with the query tile in its group */

    const int g = lane >> 2, cq = lane & 3;
    const int pr0 = p0 + warp * 16 + g, pr1 = pr0 + 8; /* positions of this thread's two rows */
    const int lo0 = window > 0 ? pr0 - window + 1 : 0, lo1 = window > 0 ? pr1 - window + 1 : 0;
    uint32_t qf[HD / 16][4];
    float o[HD / 8][4], m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
#pragma unroll
    for (int n = 0; n < HD / 8; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

    int buf = 0;
    for (int kb = kfirst; kb <= last; kb += TC_KEYS, buf ^= 1) {
        if (kb + TC_KEYS <= last) {
            stage(kb + TC_KEYS, buf ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (kb == kfirst) {
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++)
                ldsm_x4(qf[kk], qs + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + kk * 16 + (lane >> 4) * 8);
        }
        /* a warp whose rows all stand before this step's keys, or past them by the window, or past the
         * tile's end, skips the step (the condition is the warp's, the same in every lane) */
        const int w0 = p0 + warp * 16;
        const bool live = warp * 16 < ntok && kb <= w0 + 15 && (window <= 0 || kb + TC_KEYS - 1 >= w0 - window + 1);
        if (live) {
            const T *kt = ks + buf * TC_KEYS * LD, *vt = vs + buf * TC_KEYS * LD;
            float s[TC_KEYS / 8][4];
#pragma unroll
            for (int n = 0; n < TC_KEYS / 8; n++) {
                s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
                for (int kk = 0; kk < HD / 16; kk += 2) {
                    uint32_t b[4];
                    ldsm_x4(b, kt + (n * 8 + (lane & 7)) * LD + kk * 16 + (lane >> 3) * 8);
                    mma16816<T>(s[n], qf[kk], b[0], b[1]);
                    mma16816<T>(s[n], qf[kk + 1], b[2], b[3]);
                }
            }
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int n = 0; n < TC_KEYS / 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int j = kb + n * 8 + 2 * cq + e;
                    const float v0 = j <= pr0 && j >= lo0 ? s[n][e] * scale_log2 : -INFINITY;
                    const float v1 = j <= pr1 && j >= lo1 ? s[n][2 + e] * scale_log2 : -INFINITY;
                    s[n][e] = v0, s[n][2 + e] = v1;
                    mx0 = fmaxf(mx0, v0), mx1 = fmaxf(mx1, v1);
                }
#pragma unroll
            for (int x = 1; x <= 2; x <<= 1) {
                mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, x));
                mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, x));
            }
            const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
            const float b0 = n0 == -INFINITY ? 0.0f : n0, b1 = n1 == -INFINITY ? 0.0f : n1; /* no key yet */
            const float c0 = exp2f(m0 - b0), c1 = exp2f(m1 - b1);
            m0 = n0, m1 = n1;
            l0 *= c0, l1 *= c1;
#pragma unroll
            for (int n = 0; n < HD / 8; n++)
                o[n][0] *= c0, o[n][1] *= c0, o[n][2] *= c1, o[n][3] *= c1;
#pragma unroll
            for (int n = 0; n < TC_KEYS / 8; n++) {
                s[n][0] = exp2f(s[n][0] - b0), s[n][1] = exp2f(s[n][1] - b0);
                s[n][2] = exp2f(s[n][2] - b1), s[n][3] = exp2f(s[n][3] - b1);
                l0 += s[n][0] + s[n][1], l1 += s[n][2] + s[n][3];
            }
#pragma unroll
            for (int kk = 0; kk < TC_KEYS / 16; kk++) {
                const uint32_t a[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                                       pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                       pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
                for (int n = 0; n < HD / 8; n += 2) {
                    uint32_t b[4];
                    ldsm_x4_trans(b, vt + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + n * 8 + (lane >> 4) * 8);
                    mma16816<T>(o[n], a, b[0], b[1]);
                    mma16816<T>(o[n + 1], a, b[2], b[3]);
                }
            }
        }
        __syncthreads(); /* the buffer is staged again two steps on */
    }
#pragma unroll
    for (int x = 1; x <= 2; x <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, x);
        l1 += __shfl_xor_sync(0xffffffffu, l1, x);
    }
    const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
    const int r0 = warp * 16 + g, r1 = r0 + 8;
#pragma unroll
    for (int n = 0; n < HD / 8; n++) {
        const int d = n * 8 + 2 * cq;
        if (r0 < ntok)
            *reinterpret_cast<uint32_t *>(out + ((int64_t)(tok0 + r0) * nh + h) * HD + d) =
                pack2<T>(o[n][0] * i0, o[n][1] * i0);
        if (r1 < ntok)
            *reinterpret_cast<uint32_t *>(out + ((int64_t)(tok0 + r1) * nh + h) * HD + d) =
                pack2<T>(o[n][2] * i1, o[n][3] * i1);
    }
}

template <typename T, int HD>
static void tc_launch(cuda_ctx *c, void *out, const void *q, const rt_kv_layer *kv, const rt_attn_batch *b,
                      const rt_attn_shape *s)
{
    const size_t shm = (size_t)(RT_ATTN_TILE + 4 * TC_KEYS) * (HD + 8) * sizeof(T);
    CUDA_CHECK(c, cudaFuncSetAttribute(tc_attention_kernel<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)shm));
    cuda_launch(c, tc_attention_kernel<T, HD>, dim3((unsigned)b->n_tiles, (unsigned)s->n_heads), TC_WARPS * 32, shm,
        (T *)out, (const T *)q, (const T *)kv->k, (const T *)kv->v, b->pos, b->seq, b->tiles, b->block_tables,
        b->max_blocks, b->block_size, s->n_heads, s->n_kv_heads, s->sliding_window, s->scale * 1.44269504088896f);
}

/* The tiles on the tensor cores, when the type and head size have a kernel there. */
template <typename T>
static bool tc_try(cuda_ctx *c, void *out, const void *q, const rt_kv_layer *kv, const rt_attn_batch *b,
                   const rt_attn_shape *s)
{
    if constexpr (std::is_same<T, float>::value) {
        return false;
    } else {
        if (b->n_tiles <= 0 || s->n_heads % s->n_kv_heads != 0)
            return false;
        switch (s->head_dim) {
        case 64: tc_launch<T, 64>(c, out, q, kv, b, s); return true;
        case 128: tc_launch<T, 128>(c, out, q, kv, b, s); return true;
        default: return false;
        }
    }
}

/* ---- the general path ---- */

template <typename T, typename KV>
static void launch(cuda_ctx *c, void *out, const void *q, const rt_kv_layer *kv, const rt_attn_batch *b,
                   const rt_attn_shape *s, tok_set ts)
{
    dim3 grid((unsigned)ts.n, (unsigned)s->n_heads);
    size_t shm = (size_t)s->head_dim * sizeof(float) + ATT_THREADS * (sizeof(float) + sizeof(int));
    cuda_launch(c, attention_kernel<T, KV>, grid, ATT_THREADS, shm,
        (T *)out, (const T *)q, (const KV *)kv->k, (const KV *)kv->v, (const float *)kv->k_scale,
        (const float *)kv->v_scale, kv->scale_stride, b->pos, b->seq, ts.toks, b->block_tables,
        b->max_blocks, b->block_size, s->n_heads, s->n_kv_heads, s->head_dim, s->sliding_window, s->scale);
}

/* An FP8 cache (codes and scales) goes to the split kernel or the general one, which dequantize as
 * they load; the tensor-core tiles read 16-bit caches only. */
template <typename T>
static void attend(cuda_ctx *c, void *out, const void *q, const rt_kv_layer *kv, const rt_attn_batch *b,
                   const rt_attn_shape *s)
{
    tok_set ts = {b->n_tokens, NULL};
    if (kv->k_scale) {
        if (!fa_try<T, fp8_e4m3>(c, out, q, kv, b, s, ts))
            launch<T, fp8_e4m3>(c, out, q, kv, b, s, ts);
        return;
    }
    if (tc_try<T>(c, out, q, kv, b, s))
        ts = (tok_set){b->n_rest, b->rest};
    if (ts.n > 0 && !fa_try<T, T>(c, out, q, kv, b, s, ts))
        launch<T, T>(c, out, q, kv, b, s, ts);
}

extern "C" void cuda_attention(rt_backend *be, void *out, const void *q, const rt_kv_layer *kv,
                               const rt_attn_batch *b, const rt_attn_shape *s)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (b->n_tokens <= 0)
        return;
    CUDA_DISPATCH(c->dt, attend, c, out, q, kv, b, s);
    CUDA_LAUNCHED(c);
}

/* A decode step through the split kernel, its RoPE and KV write inside (fa_split_kernel's ROPE;
 * DINFER_CUDA_ROPE_FUSE=1), built for 16-bit activations, 128-wide heads and up to 4 query heads a
 * KV head (Llama 3's 8B): false for any other shape, or a row not 16-byte aligned. */
template <typename T>
static bool rope_attend(cuda_ctx *c, void *out, const void *qkv, const float *inv_freq, const rt_attn_batch *b,
                        const rt_attn_shape *s, rt_kv_layer *kv)
{
    if constexpr (std::is_same<T, float>::value) {
        return false;
    } else {
        const int64_t row = (int64_t)(s->n_heads + 2 * s->n_kv_heads) * s->head_dim * (int64_t)sizeof(T);
        if ((uintptr_t)qkv % 16 != 0 || row % 16 != 0 || s->head_dim != 128 || s->n_heads % s->n_kv_heads != 0 ||
            s->n_heads / s->n_kv_heads > 4)
            return false;
        const tok_set ts = {b->n_tokens, NULL};
        if (kv->k_scale)
            fa_launch<T, fp8_e4m3, 128, 4, true>(c, out, qkv, kv, b, s, ts, inv_freq);
        else
            fa_launch<T, T, 128, 4, true>(c, out, qkv, kv, b, s, ts, inv_freq);
        return true;
    }
}

extern "C" bool cuda_rope_attention(rt_backend *be, void *out, const void *qkv, const float *inv_freq,
                                    const rt_attn_batch *b, const rt_attn_shape *s, rt_kv_layer *kv)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (!c->rope_fuse || !b->decode || b->n_tokens <= 0)
        return false;
    bool done = false;
    CUDA_DISPATCH(c->dt, done = rope_attend, c, out, qkv, inv_freq, b, s, kv);
    if (done)
        cuda_launched(c);
    return done;
}
