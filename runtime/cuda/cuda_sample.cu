/* Sampling on the device: blocks of SAMPLE_SLICE logits summarize each row (its best logit, key
 * range and normalizer), then one block per row does what rt_sample_with does on the host (greedy,
 * temperature, top-k, top-p, the sampled token's logprob and the top-n logprobs), so only the
 * samples leave the GPU, not the vocabulary.
 *
 * The filters work on order-preserving 32-bit keys of the logits. Top-k finds the k-th largest key
 * by bisection over the key range (a block count per probe); top-p does the same with the
 * probability mass of the keys above a probe. Masses are fixed-point integers (exp((l - max) / T)
 * scaled by 2^40): sums are exact, so the kept set and the sample depend only on the row and its
 * uniform draw, never on the order threads add in or on what else is in the batch. Ties at the
 * boundary are kept lowest id first, as the host sampler keeps them. The sample is the kept token
 * where the cumulative mass passes u times the kept mass, walked in the host sampler's order (id
 * order unfiltered, else best first: found by one more bisection, then the rank among equal
 * logits), so a row and its uniform draw give the host's token except where the two roundings of
 * the exponentials fall on opposite sides of a boundary. */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"
extern "C" {
#include "runtime/sampler.h"
}

#define SAMPLE_THREADS 1024
#define MASS_ONE 1099511627776.0 /* 2^40: the fixed-point scale of a probability mass of weight 1 */

__device__ __forceinline__ uint32_t key_of(float f)
{
    const uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float float_of(uint32_t k)
{
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

/* The row's shared state between the phases of the kernel. */
struct sample_smem {
    unsigned long long u64[32];
    float f[32];
    int i[32];
    unsigned long long bcast;
};

__device__ unsigned long long block_sum_u64(unsigned long long v, sample_smem *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0)
        sh->u64[w] = v;
    __syncthreads();
    v = lane < nw ? sh->u64[lane] : 0ull;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* The best (value, id) over the block: the largest value, the lowest id among equals. */
__device__ void block_best(float *v, int *id, sample_smem *sh)
{
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, *v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, *id, o);
        if (ov > *v || (ov == *v && oi < *id))
            *v = ov, *id = oi;
    }
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0)
        sh->f[w] = *v, sh->i[w] = *id;
    __syncthreads();
    *v = lane < nw ? sh->f[lane] : -INFINITY;
    *id = lane < nw ? sh->i[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, *v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, *id, o);
        if (ov > *v || (ov == *v && oi < *id))
            *v = ov, *id = oi;
    }
}

__device__ uint32_t block_min_u32(uint32_t v, sample_smem *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0)
        sh->i[w] = (int)v;
    __syncthreads();
    v = lane < nw ? (uint32_t)sh->i[lane] : 0xffffffffu;
    for (int o = 16; o > 0; o >>= 1)
        v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Exclusive prefix sum over the block in thread order; total gets the sum of all. */
__device__ unsigned long long block_scan_u64(unsigned long long v, unsigned long long *total, sample_smem *sh)
{
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    unsigned long long incl = v;
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned long long n = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o)
            incl += n;
    }
    __syncthreads();
    if (lane == 31)
        sh->u64[w] = incl;
    __syncthreads();
    unsigned long long before = 0, all = 0;
    for (int i = 0; i < nw; i++) {
        before += i < w ? sh->u64[i] : 0ull;
        all += sh->u64[i];
    }
    *total = all;
    return before + incl - v;
}

/* The fixed-point mass of a logit at this temperature. */
__device__ __forceinline__ unsigned long long mass_of(float l, float mx, float inv_t)
{
    return (unsigned long long)(expf((l - mx) * inv_t) * (float)MASS_ONE);
}

/* Count (mass false) or mass (mass true) of the logits whose key is >= t. */
__device__ unsigned long long above(const float *x, int V, uint32_t t, bool mass, float mx, float inv_t,
                                    sample_smem *sh)
{
    unsigned long long s = 0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float l = x[i];
        if (key_of(l) >= t)
            s += mass ? mass_of(l, mx, inv_t) : 1ull;
    }
    return block_sum_u64(s, sh);
}

/* The largest key t in [lo, hi) with F(t) >= target, F the count or mass above t (F(lo) >= target
 * is the caller's promise); *f_next gets F(t + 1). */
__device__ uint32_t bisect(const float *x, int V, uint32_t lo, uint32_t hi, unsigned long long target, bool mass,
                           float mx, float inv_t, unsigned long long *f_next, sample_smem *sh)
{
    unsigned long long f_hi = 0; /* F(hi) < target: hi is one past the largest key, or a probe that fell short */
    while (hi - lo > 1) {
        const uint32_t mid = lo + (hi - lo) / 2;
        const unsigned long long f = above(x, V, mid, mass, mx, inv_t, sh);
        if (f >= target)
            lo = mid;
        else
            hi = mid, f_hi = f;
    }
    *f_next = f_hi;
    return lo;
}

/* The id of the r-th logit (0-based, in id order) whose key is k: each thread counts its contiguous
 * chunk, a scan places the chunks, the one holding it walks. */
__device__ int nth_with_key(const float *x, int V, uint32_t k, unsigned long long r, sample_smem *sh)
{
    const int chunk = (V + (int)blockDim.x - 1) / (int)blockDim.x;
    const int b = (int)threadIdx.x * chunk, e = min(V, b + chunk);
    unsigned long long n = 0, total = 0;
    for (int i = b; i < e; i++)
        n += key_of(x[i]) == k;
    const unsigned long long before = block_scan_u64(n, &total, sh);
    if (threadIdx.x == 0)
        sh->bcast = 0;
    __syncthreads();
    if (r >= before && r < before + n) {
        unsigned long long at = before;
        for (int i = b; i < e; i++)
            if (key_of(x[i]) == k && at++ == r) {
                sh->bcast = (unsigned long long)i;
                break;
            }
    }
    __syncthreads();
    return (int)sh->bcast;
}

/* The kept set of a row (top-k, then top-p), then the token where the cumulative mass passes u times
 * the kept mass, walking as the host sampler walks: in id order when nothing is filtered, else best
 * first (logit descending, ids ascending among equals). The kept set is the keys above tau and the
 * first `need` ids whose key is tau; tau 0 (below every real logit's key) keeps everything. */
__device__ int draw(const float *x, int V, const rt_sample_row &p, float mx, float inv_t, uint32_t kmin,
                    uint32_t kmax, sample_smem *sh)
{
    uint32_t tau = 0;
    unsigned long long need = 0;
    if (p.top_k > 0 && p.top_k < V) {
        unsigned long long n_above = 0;
        tau = bisect(x, V, kmin, kmax + 1, (unsigned long long)p.top_k, false, mx, inv_t, &n_above, sh);
        need = (unsigned long long)p.top_k - n_above;
    }
    if (p.top_p < 1.0f) {
        /* the mass after top-k; the smallest best-first prefix of it reaching top_p of it */
        const unsigned long long kept = tau ? above(x, V, tau + 1, true, mx, inv_t, sh) +
                                                  need * mass_of(float_of(tau), mx, inv_t)
                                            : above(x, V, kmin, true, mx, inv_t, sh);
        unsigned long long target = (unsigned long long)ceil((double)p.top_p * (double)kept);
        target = target < 1 ? 1 : target > kept ? kept : target;
        unsigned long long m_next = 0;
        const uint32_t tp = bisect(x, V, tau ? tau : kmin, kmax + 1, target, true, mx, inv_t, &m_next, sh);
        const unsigned long long w = mass_of(float_of(tp), mx, inv_t); /* > 0: F(tp) > F(tp + 1) */
        unsigned long long n = (target - m_next + w - 1) / w;
        if (tp == tau && tau) {
            n = n < need ? n : need;
        } else {
            const unsigned long long ties = above(x, V, tp, false, mx, inv_t, sh) - above(x, V, tp + 1, false, mx, inv_t, sh);
            n = n < ties ? n : ties;
        }
        tau = tp, need = n > 0 ? n : 1;
    }
    if (tau == 0) {
        /* nothing filtered: in id order, each thread a contiguous chunk */
        const int chunk = (V + (int)blockDim.x - 1) / (int)blockDim.x;
        const int b = (int)threadIdx.x * chunk, e = min(V, b + chunk);
        unsigned long long m = 0, total = 0;
        for (int i = b; i < e; i++)
            m += mass_of(x[i], mx, inv_t);
        const unsigned long long before = block_scan_u64(m, &total, sh);
        const unsigned long long target = (unsigned long long)((double)p.u * (double)total);
        if (threadIdx.x == 0)
            sh->bcast = (unsigned long long)(V - 1);
        __syncthreads();
        if (target >= before && target < before + m) {
            unsigned long long run = before;
            for (int i = b; i < e; i++) {
                run += mass_of(x[i], mx, inv_t);
                if (target < run) {
                    sh->bcast = (unsigned long long)i;
                    break;
                }
            }
        }
        __syncthreads();
        return (int)sh->bcast;
    }
    /* best first: the key where the cumulative mass passes the target, then which of its ties */
    const unsigned long long w_tau = mass_of(float_of(tau), mx, inv_t);
    const unsigned long long kept = above(x, V, tau + 1, true, mx, inv_t, sh) + need * w_tau;
    const unsigned long long target = (unsigned long long)((double)p.u * (double)kept); /* < kept */
    unsigned long long m_above = 0;
    const uint32_t k = bisect(x, V, tau, kmax + 1, target + 1, true, mx, inv_t, &m_above, sh);
    const unsigned long long w = mass_of(float_of(k), mx, inv_t);
    unsigned long long r = (target - m_above) / w;
    if (k == tau && r >= need) /* rounding at the very end of the kept mass */
        r = need - 1;
    return nth_with_key(x, V, k, r, sh);
}

/* A slice of a row summarized: its best logit (lowest id among equals), the least key, and the sum of
 * its exponentials against its own maximum m. */
struct row_stats {
    float best, m, part;
    int arg;
    uint32_t kmin;
};

/* logits a block of the first pass: a row of Llama 3's 128,256 in 16 blocks (one block a row took
 * 25 us at batch 1 on the H200, the arithmetic of 128K exponentials on one SM); a multiple of 4, so
 * a slice starts at its row's alignment */
#define SAMPLE_SLICE 8192

/* The first pass: block (r, s) summarizes slice s of row r into st[r * slices + s]. Thread t takes
 * the fours of the slice's elements t, t + blockDim.x, ... in 16-byte loads where the row is aligned
 * (its vocabulary a multiple of 4), else 4-byte ones: the same elements a thread and the same order
 * whatever the row's place in the batch, so a row's sums are the same bits alone and in a batch. */
__global__ void __launch_bounds__(SAMPLE_THREADS) sample_stats_kernel(row_stats *st, const float *logits, int V)
{
    pdl_wait();
    pdl_trigger();
    __shared__ sample_smem sh;
    const int s0 = blockIdx.y * SAMPLE_SLICE, len = min(SAMPLE_SLICE, V - s0);
    const float *x = logits + (size_t)blockIdx.x * (size_t)V + s0;
    /* each thread sums its exponentials against its own running maximum, rescaled to the slice's at
     * the end */
    float best = -INFINITY, m = -INFINITY, part = 0.0f;
    int arg = 0x7fffffff;
    uint32_t kmin = 0xffffffffu;
    const auto see = [&](float l, int i) {
        if (l > best)
            best = l, arg = s0 + i;
        kmin = min(kmin, key_of(l));
        if (l > m) { /* a new running maximum (never NaN: l > m is false for one) */
            part = part * expf(m - l) + 1.0f;
            m = l;
        } else if (l != -INFINITY) { /* (-inf under a running -inf: nothing, not exp(NaN)) */
            part += expf(l - m);
        }
    };
    const int fours = len / 4;
    if (((uintptr_t)x & 15) == 0) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        for (int j = threadIdx.x; j < fours; j += blockDim.x) {
            const float4 v = __ldg(x4 + j);
            see(v.x, 4 * j), see(v.y, 4 * j + 1), see(v.z, 4 * j + 2), see(v.w, 4 * j + 3);
        }
    } else {
        for (int j = threadIdx.x; j < fours; j += blockDim.x) {
            const float *q = x + 4 * j;
            see(__ldg(q), 4 * j), see(__ldg(q + 1), 4 * j + 1), see(__ldg(q + 2), 4 * j + 2), see(__ldg(q + 3), 4 * j + 3);
        }
    }
    if ((int)threadIdx.x < len - 4 * fours)
        see(x[4 * fours + threadIdx.x], 4 * fours + threadIdx.x);
    block_best(&best, &arg, &sh);
    kmin = block_min_u32(kmin, &sh);
    part = m != -INFINITY ? part * expf(m - best) : 0.0f;
    part = block_sum(part, sh.f);
    if (threadIdx.x == 0)
        st[(size_t)blockIdx.x * gridDim.y + blockIdx.y] = row_stats{best, best, part, arg, kmin};
}

/* One block a row: the row's slices' summaries combined (in a fixed order), then the draw and the
 * top-n as rt_sample_with does them. */
__global__ void __launch_bounds__(SAMPLE_THREADS) sample_kernel(rt_sample_out *out, const float *logits, int V,
                                                                const rt_sample_row *rows, const row_stats *st,
                                                                int slices)
{
    pdl_wait();
    pdl_trigger();
    __shared__ sample_smem sh;
    const rt_sample_row p = rows[blockIdx.x];
    const float *x = logits + (size_t)blockIdx.x * (size_t)V;
    rt_sample_out *o = out + blockIdx.x;

    const bool mine = (int)threadIdx.x < slices;
    const row_stats sl = mine ? st[(size_t)blockIdx.x * slices + threadIdx.x]
                              : row_stats{-INFINITY, -INFINITY, 0.0f, 0x7fffffff, 0xffffffffu};
    float best = sl.best;
    int arg = sl.arg;
    block_best(&best, &arg, &sh);
    if (arg >= V) /* no logit above -inf (all -inf or NaN): id 0, as the host sampler gives */
        arg = 0;
    const float mx = best;
    const uint32_t kmin = block_min_u32(sl.kmin, &sh);
    const float part = sl.m != -INFINITY ? sl.part * expf(sl.m - mx) : 0.0f;
    const float lse = mx + logf(block_sum(part, sh.f));

    int token = arg;
    if (p.temperature >= RT_GREEDY_TEMPERATURE) {
        const float inv_t = (float)(1.0 / (double)p.temperature);
        token = draw(x, V, p, mx, inv_t, kmin, key_of(mx), &sh);
    }
    /* the top-n: n rounds of the best below the previous one in (logit desc, id asc) order */
    float pv = INFINITY;
    int pi = -1;
    const int n_top = min(p.n_logprobs, V);
    for (int r = 0; r < n_top; r++) {
        float v = -INFINITY;
        int id = 0x7fffffff;
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            const float l = x[i];
            if ((l < pv || (l == pv && i > pi)) && (l > v || (l == v && i < id)))
                v = l, id = i;
        }
        block_best(&v, &id, &sh);
        if (threadIdx.x == 0)
            o->top_ids[r] = id, o->top_logprobs[r] = v - lse;
        pv = v, pi = id;
    }
    if (threadIdx.x == 0) {
        o->token = token;
        o->logprob = x[token] - lse;
        o->n_top = n_top;
    }
}

extern "C" void cuda_sample(rt_backend *be, rt_sample_out *out, const float *logits, int n, int vocab,
                            const rt_sample_row *rows)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (n <= 0)
        return;
    const int slices = (vocab + SAMPLE_SLICE - 1) / SAMPLE_SLICE;
    static_assert(SAMPLE_SLICE % 4 == 0, "a slice starts at its row's alignment");
    if (slices > SAMPLE_THREADS) {
        cuda_fail(c, "cuda_sample", __FILE__, __LINE__, "the vocabulary has more slices than a block has threads");
        return;
    }
    if ((size_t)n * slices * sizeof(row_stats) > c->scratch_bytes) {
        cuda_fail(c, "cuda_sample", __FILE__, __LINE__, "the rows' slice summaries exceed the scratch");
        return;
    }
    row_stats *st = (row_stats *)c->scratch;
    cuda_launch(c, sample_stats_kernel, dim3((unsigned)n, (unsigned)slices), SAMPLE_THREADS, 0, st, logits, vocab);
    cuda_launch(c, sample_kernel, n, SAMPLE_THREADS, 0, out, logits, vocab, rows, (const row_stats *)st, slices);
    CUDA_LAUNCHED(c);
}
