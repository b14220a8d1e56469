/* What the products of few rows do around themselves (rt_fusion, backend.h's matmul_fused): the
 * pieces the weight-streaming kernels share (a warp a weight row: cuda_matmul.cu's gemv_kernel and
 * cuda_qgemv.cuh's qgemv_kernel; cuda_qmma.cu's qmma_kernel uses fused_out). */
#ifndef DINFER_RUNTIME_CUDA_FUSION_CUH
#define DINFER_RUNTIME_CUDA_FUSION_CUH

#include "runtime/cuda/cuda_common.cuh"

/* The input is a norm's xg (its 1 / rms applied at the end), the product goes into the residual
 * stream, the SiLU-multiply of a gate row and its up row on the way out, or the QKV product's rows
 * rotated into q and the KV cache (backend.h's matmul_rope). */
enum { FUSE_NORM = 1, FUSE_RESIDUAL = 2, FUSE_SILU = 4, FUSE_ROPE = 8 };

/* With FUSE_ROPE: where rope_kv_write would put the QKV product's rows (cuda_rope_kv.cu), and how. */
struct fusion_rope {
    void *q, *kc, *vc;          /* q (n, nq * hd); the cache's k and v (16-bit, or FP8 codes) */
    const float *inv_freq;      /* (hd / 2) */
    const int32_t *pos, *slot;  /* (n) */
    const float *k_scale, *v_scale; /* an FP8 cache's static scales, one a KV head (NULL: 16-bit) */
    int nq, nkv, hd;
};

/* The kernels' view of an rt_fusion. */
struct fusion {
    const float *norm_ss;
    float eps;
    const void *next_g; /* with FUSE_RESIDUAL: the next norm's weight, NULL for none */
    void *xg;
    float *ss;
    fusion_rope rope;
    /* the next product's first weights, ahead_bytes of each region (ahead1 NULL: one region), asked
     * into L2 by the blocks from ahead_from on as they end (fused_ahead; ahead_bytes 0: none). Lost
     * (DINFER_CUDA_AHEAD, off) and kept for now: removing these fields alone moved the two-chain
     * residual int4 forms of qmma_kernel to a 12-byte spill, measured at -2.8% (H100, 8B AWQ batch 1);
     * with that kernel's f __grid_constant__ the removal spills nothing (ptxas; not yet run on a GPU) */
    const char *ahead0, *ahead1;
    unsigned ahead_bytes, ahead_from;
};

/* With FUSE_ROPE, the weight rows of a block's pairs: pair i (of `pairs` a block) is row j and its
 * rotation partner j + hd / 2 of one head, a head's first half taken by hd / 2 / pairs blocks in
 * turn (hd / 2 a multiple of pairs). The lower row of block `block`'s pair i. */
__device__ __forceinline__ int rope_row(const fusion &f, int pairs, int block, int i)
{
    const int per_head = f.rope.hd / 2 / pairs, head = block / per_head;
    return head * f.rope.hd + block % per_head * pairs + i;
}

/* The cos and sin of row r's rotation at token t's position (fp32 angle, as transformers computes
 * it; a row of the second half takes its partner's). The kernels take them before their wait: the
 * positions are the step's inputs, copied before its first kernel, not the kernel ahead's output
 * (the decode attention reads them there too). */
__device__ __forceinline__ float2 rope_angle(const fusion &f, int t, int r)
{
    float sn, co;
    sincosf((float)__ldg(f.rope.pos + t) * __ldg(f.rope.inv_freq + r % (f.rope.hd / 2)), &sn, &co);
    return make_float2(co, sn);
}

/* With FUSE_ROPE, row `row`'s angles for tokens 0 .. R - 1 (those below n); nothing otherwise.
 * Kept in shared memory, a slot a warp, from before the kernel's wait to its epilogue, by the lane
 * that rotates the row there (lane 0: fused_store), so no register holds them through the product's
 * loop (in registers they spilled the one-row FP8 weight-streaming kernel, 40 registers at 6 blocks
 * an SM). The same thread writes and reads its slot: no barrier. */
template <int F, int R>
struct rope_angles {
    static __device__ __forceinline__ float2 *slot(int r)
    {
        __shared__ float2 cs[32][(F & FUSE_ROPE) != 0 ? R : 1];
        return &cs[threadIdx.x >> 5][r];
    }
    __device__ __forceinline__ rope_angles(const fusion &f, int row, int n)
    {
        if constexpr ((F & FUSE_ROPE) != 0)
            if ((threadIdx.x & 31) == 0)
#pragma unroll
                for (int r = 0; r < R; r++)
                    *slot(r) = r < n ? rope_angle(f, r, row) : make_float2(1.0f, 0.0f);
    }
    /* row's angles for token r (lane 0 only) */
    __device__ __forceinline__ float2 cs(int r) const { return *slot(r); }
};

/* Rows r and r + hd / 2 of token t's QKV product (a and b, bias included) where rope_kv_write would
 * put them: rounded to T first (its kernel reads the product as stored), then a q or k pair rotated
 * by cs (rope_angle) into q or the token's KV slot, a v pair copied there (FP8 cache: codes under
 * the KV head's static scale, saturating). */
template <typename T>
__device__ __forceinline__ void fused_rope_pair(const fusion &f, int t, int r, float a, float b, float2 cs)
{
    const fusion_rope &p = f.rope;
    const int hd = p.hd, head = r / hd, j = r % hd;
    a = as_stored<T>(a), b = as_stored<T>(b);
    if (head < p.nq + p.nkv) {
        const float a0 = a;
        a = a0 * cs.x - b * cs.y, b = b * cs.x + a0 * cs.y;
    }
    if (head < p.nq) {
        T *d = (T *)p.q + ((int64_t)t * p.nq + head) * hd + j;
        st(d, a), st(d + hd / 2, b);
        return;
    }
    const bool is_k = head < p.nq + p.nkv;
    const int h = head - p.nq - (is_k ? 0 : p.nkv);
    const int64_t at = ((int64_t)__ldg(p.slot + t) * p.nkv + h) * hd + j;
    if (p.k_scale) {
        const float s = __ldg((is_k ? p.k_scale : p.v_scale) + h);
        uint8_t *d = (uint8_t *)(is_k ? p.kc : p.vc) + at;
        d[0] = __nv_cvt_float_to_fp8(a / s, __NV_SATFINITE, __NV_E4M3);
        d[hd / 2] = __nv_cvt_float_to_fp8(b / s, __NV_SATFINITE, __NV_E4M3);
    } else {
        T *d = (T *)(is_k ? p.kc : p.vc) + at;
        st(d, a), st(d + hd / 2, b);
    }
}

/* A block's share of f's ahead regions asked into L2 (cp.async.bulk.prefetch: no registers, no
 * wait), by its first thread, once the block's own weights have arrived: the next product's blocks
 * cannot be resident beside this one's (their registers), so without it HBM idles from this
 * product's last loads until they launch. Only the blocks of the last wave (ahead_from on) ask, so
 * that a product of several waves does not slow its own stream. */
__device__ __forceinline__ void fused_ahead_issue(const fusion &f)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const unsigned b = blockIdx.x + gridDim.x * blockIdx.y, nb = gridDim.x * gridDim.y;
    if (f.ahead_bytes == 0 || threadIdx.x != 0 || b < f.ahead_from)
        return;
    const unsigned share = (f.ahead_bytes / (nb - f.ahead_from) + 15) / 16 * 16, at = (b - f.ahead_from) * share;
    if (at >= f.ahead_bytes)
        return;
    const unsigned len = min(share, f.ahead_bytes - at);
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(f.ahead0 + at), "r"(len) : "memory");
    if (f.ahead1)
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(f.ahead1 + at), "r"(len) : "memory");
#endif
}

/* The weight row of warp `warp` of a block of WARPS. With FUSE_SILU, N counts the gate and up rows:
 * the block's first WARPS / 2 warps take gate rows, the others the up rows that go with them, and
 * *valid says whether the pair exists (an idle warp reads row 0's pair and writes nothing); with
 * FUSE_ROPE likewise a row and its rotation partner (rope_row). */
template <int F, int WARPS>
__device__ __forceinline__ int fused_row(const fusion &f, int N, int warp, bool *valid)
{
    if constexpr ((F & FUSE_ROPE) != 0) { /* the same halves: a row and its rotation partner */
        const int row = rope_row(f, WARPS / 2, (int)blockIdx.x, warp % (WARPS / 2)) + (warp < WARPS / 2 ? 0 : f.rope.hd / 2);
        *valid = row < N;
        return *valid ? row : 0;
    } else if constexpr ((F & FUSE_SILU) != 0) {
        const int j = blockIdx.x * (WARPS / 2) + warp % (WARPS / 2);
        *valid = j < N / 2;
        return (*valid ? j : 0) + (warp < WARPS / 2 ? 0 : N / 2);
    } else {
        const int row = blockIdx.x * WARPS + warp;
        *valid = row < N;
        return *valid ? row : 0;
    }
}

/* The weight row of warp `warp` of a block of WARPS when S consecutive warps share a row (split_sum
 * meets their sums), and whether it exists (an idle group reads row 0 and writes nothing). */
template <int S, int WARPS>
__device__ __forceinline__ int split_row(int N, int warp, bool *valid)
{
    const int row = blockIdx.x * (WARPS / S) + warp / S;
    *valid = row < N;
    return *valid ? row : 0;
}

/* Blocks of `warps` warps for N weight rows. */
template <int F>
static inline unsigned fused_blocks(int N, int warps)
{
    const int outs = (F & FUSE_SILU) != 0 ? N / 2 : N, per = (F & FUSE_SILU) != 0 ? warps / 2 : warps;
    return (unsigned)((outs + per - 1) / per);
}

/* Row r's 1 / rms from the norm's sum of squares over K. */
__device__ __forceinline__ float fused_inv_rms(const fusion &f, int r, int K)
{
    return rsqrtf(__ldg(f.norm_ss + r * RT_FUSION_SS_STRIDE) / (float)K + f.eps);
}

/* Element (r, row) of a product that is not a SiLU's: y (bias included) written, or added to the
 * residual stream with the next norm's xg alongside; returns the square the next norm's sum takes
 * (0 when none: the caller adds a block's squares to f.ss at once, fused_squares). */
template <typename T, int F>
__device__ __forceinline__ float fused_out(T *out, const fusion &f, int r, int row, int N, float y)
{
    T *o = &out[(int64_t)r * N + row];
    if constexpr ((F & FUSE_RESIDUAL) != 0) {
        T sum; /* rounded to storage: the next norm reads the residual stream as stored */
        st(&sum, ld(o) + y);
        *o = sum;
        if (f.next_g) {
            const float v = ld(&sum);
            st(&((T *)f.xg)[(int64_t)r * N + row], v * ld(&((const T *)f.next_g)[row]));
            return v * v;
        }
    } else {
        st(o, y);
    }
    return 0.0f;
}

/* Adds q, one square a row of x, to row r's sum of squares: one atomic a row and block, each row's
 * sum on a cache line of its own (thousands of same-line atomics a product serialize: measured up to
 * twice the product's time). The block's warps give their rows' squares in part[warp][r]; every
 * thread calls it. */
template <int R, int WARPS>
__device__ __forceinline__ void fused_squares(const fusion &f, float (*part)[R], int n)
{
    __syncthreads();
    const int t = threadIdx.x;
    if (t < R && t < n) {
        float q = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; w++)
            q += part[w][t];
        atomicAdd(f.ss + t * RT_FUSION_SS_STRIDE, q);
    }
}

/* A weight row read by S consecutive warps of a block (each a part of its K): their sums met in
 * shared memory, the total in lane 0 of the row's first warp (acc zero elsewhere, so fused_store's
 * warp sum gives it) and valid only there. Every thread calls it. */
template <int R, int S, int WARPS>
__device__ __forceinline__ void split_sum(float *acc, bool &valid)
{
    __shared__ float red[WARPS][R];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int r = 0; r < R; r++) {
        const float v = warp_sum(acc[r]);
        if (lane == 0)
            red[warp][r] = v;
    }
    __syncthreads();
    const bool first = warp % S == 0 && lane == 0;
#pragma unroll
    for (int r = 0; r < R; r++) {
        float t = 0.0f;
        if (first)
#pragma unroll
            for (int p = 0; p < S; p++)
                t += red[warp + p][r];
        acc[r] = t;
    }
    valid = valid && warp % S == 0;
}

/* The end of a warp's row: acc (the lane's partial sums for each row of x) summed over the warp,
 * then out written as F says. Every thread of the block calls it (FUSE_SILU meets at a barrier). */
template <typename T, int R, int F, int WARPS>
__device__ __forceinline__ void fused_store(T *out, const float *acc, const T *bias, const fusion &f, int n, int N,
                                            int K, int row, bool valid, const rope_angles<F, R> &ra)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float v[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        v[r] = warp_sum(acc[r]);
        if constexpr ((F & FUSE_NORM) != 0)
            if (r < n)
                v[r] *= fused_inv_rms(f, r, K);
    }
    if constexpr ((F & FUSE_ROPE) != 0) { /* the partner rows' sums to the first half's warps */
        constexpr int HW = WARPS / 2;
        __shared__ float hi[HW][R];
        if (warp >= HW && lane == 0)
#pragma unroll
            for (int r = 0; r < R; r++)
                hi[warp - HW][r] = v[r] + (bias ? ld(&bias[row]) : 0.0f);
        __syncthreads();
        if (warp < HW && lane == 0 && valid)
#pragma unroll
            for (int r = 0; r < R; r++)
                if (r < n)
                    fused_rope_pair<T>(f, r, row, v[r] + (bias ? ld(&bias[row]) : 0.0f), hi[warp][r], ra.cs(r));
    } else if constexpr ((F & FUSE_SILU) != 0) {
        constexpr int HW = WARPS / 2;
        __shared__ float up[HW][R];
        if (warp >= HW && lane == 0)
#pragma unroll
            for (int r = 0; r < R; r++)
                up[warp - HW][r] = v[r];
        __syncthreads();
        if (warp < HW && lane == 0 && valid)
#pragma unroll
            for (int r = 0; r < R; r++)
                if (r < n)
                    st(&out[(int64_t)r * (N / 2) + row], v[r] / (1.0f + expf(-v[r])) * up[warp][r]);
    } else {
        __shared__ float part[(F & FUSE_RESIDUAL) != 0 ? WARPS : 1][R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            float q = 0.0f;
            if (lane == 0 && r < n && valid)
                q = fused_out<T, F>(out, f, r, row, N, v[r] + (bias ? ld(&bias[row]) : 0.0f));
            if constexpr ((F & FUSE_RESIDUAL) != 0)
                if (lane == 0)
                    part[warp][r] = q;
        }
        if constexpr ((F & FUSE_RESIDUAL) != 0)
            if (f.next_g)
                fused_squares<R, WARPS>(f, part, n);
    }
}

/* The F bits of rt_fusion f (NULL: none), and the kernels' view of it. A residual product takes no
 * norm and no SiLU (cuda_matmul_fused refuses the mix), so these four and 0 are all there are. */
static inline int fused_bits(const rt_fusion *f)
{
    if (!f)
        return 0;
    return (f->norm_ss ? FUSE_NORM : 0) | (f->residual ? FUSE_RESIDUAL : 0) | (f->silu ? FUSE_SILU : 0);
}

static inline fusion fused_args(const rt_fusion *f)
{
    fusion a{};
    if (f) {
        a.norm_ss = f->norm_ss, a.eps = f->eps, a.xg = f->xg, a.ss = f->ss;
        a.next_g = f->residual && f->next_norm ? f->next_norm->data : nullptr;
    }
    return a;
}

/* The ahead hint of rt_fusion f in a (DINFER_CUDA_AHEAD selects the products: 1 a residual product
 * before a gate/up one, the output product; 2 the other residual ones, the down product; 4 the
 * SiLU ones): the first ahead_mb MB of its weight's codes (of each half's first rows for a gate/up
 * matrix), 16-byte aligned; every block asks (fused_ahead_wave narrows it to the last wave). */
static inline void fused_ahead(const cuda_ctx *c, const rt_fusion *f, fusion &a)
{
    a.ahead_bytes = 0;
    if (!f || !f->ahead || !f->ahead->data || !c->ahead)
        return;
    const int bit = f->silu ? 4 : !f->residual ? 0 : f->ahead_halves ? 1 : 2;
    if ((c->ahead & bit) == 0)
        return;
    const rt_tensor *w = f->ahead;
    const size_t row = w->q.kind == RT_QK_INT && w->q.bits == 4 ? (size_t)w->cols / 2
                       : w->q.kind                              ? (size_t)w->cols
                                                                : (size_t)w->cols * rt_dtype_size(w->dtype);
    const size_t whole = (size_t)w->rows * row, half = (size_t)(w->rows / 2) * row;
    size_t want = (size_t)c->ahead_mb << 20, have = whole;
    a.ahead0 = (const char *)w->data, a.ahead1 = nullptr;
    if (f->ahead_halves) {
        a.ahead1 = a.ahead0 + half, want /= 2, have = half;
        if ((uintptr_t)a.ahead1 % 16 != 0)
            return;
    }
    a.ahead_bytes = (unsigned)((want < have ? want : have) / 16 * 16);
    a.ahead_from = 0;
}

/* With an ahead hint: only the blocks of `blocks` that run in the last wave of kernel k (threads and
 * shm a block) ask for it. */
template <typename K>
static inline void fused_ahead_wave(cuda_ctx *c, fusion &a, K k, unsigned blocks, int threads, size_t shm)
{
    if (a.ahead_bytes == 0)
        return;
    int per = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, k, threads, shm) != cudaSuccess || per < 1)
        per = 1, cudaGetLastError();
    const unsigned slots = (unsigned)per * (unsigned)c->n_sms;
    a.ahead_from = blocks > slots ? blocks - slots : 0;
}

/* The chain's QKV product of one token at BF16 with FUSE_NORM | FUSE_ROPE (cuda_matmul_rope): on the
 * int4 tensor-core kernel (false: it does not take w) or the quantized weight-streaming one. */
bool cuda_qmma_rope(cuda_ctx *c, const void *x, const rt_tensor *w, const __nv_bfloat16 *bias, const fusion &f);
void cuda_qgemv_rope(cuda_ctx *c, const void *x, const rt_tensor *w, const __nv_bfloat16 *bias, const fusion &f);

/* Calls LAUNCH<F>(args...) with the compile-time F of bits. */
#define FUSED_DISPATCH(bits, LAUNCH, ...)                                                          \
    do {                                                                                            \
        switch (bits) {                                                                             \
        case FUSE_NORM: LAUNCH<FUSE_NORM>(__VA_ARGS__); break;                                      \
        case FUSE_RESIDUAL: LAUNCH<FUSE_RESIDUAL>(__VA_ARGS__); break;                              \
        case FUSE_SILU: LAUNCH<FUSE_SILU>(__VA_ARGS__); break;                                      \
        case FUSE_NORM | FUSE_SILU: LAUNCH<FUSE_NORM | FUSE_SILU>(__VA_ARGS__); break;              \
        default: LAUNCH<0>(__VA_ARGS__); break;                                                     \
        }                                                                                           \
    } while (0)

#endif
