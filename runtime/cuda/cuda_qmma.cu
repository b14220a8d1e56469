/* The quantized products of BF16 activations on the tensor cores: int4 codes up to QMMA_MAX_ROWS
 * rows of x, FP8 codes of 2 to QGEMV_MAX_ROWS (cuda_qmatmul.cu says which product goes where).
 *
 * The fp32 kernel (cuda_qgemv.cu) spends about five instructions on each code (unpack, convert, subtract the
 * zero, multiply-add, and the activation's conversion): at 4 bits a code that is as much time as
 * reading it. Here a warp takes 16 weight rows and feeds mma.m16n8k16 (bf16 in, fp32 out) with
 * codes turned into exact bf16 pairs by a few bit operations, up to 16 tokens as the 8-column B
 * operand (one or two products a step), so the products cost an instruction per 256 codes. (FP8
 * codes first went the same way through conversion instructions, f16 and fp32 to bf16, and ran
 * slower than the fp32 kernel; now by bit operations too, fp8_pair*.) A dot product
 * does not depend on the order of its terms: each lane reads 32 consecutive columns of its two rows
 * (16 bytes each) and the activations are gathered in the same order. Each 128-column
 * chunk lies in one group, so its sum is scaled once, in fp32, as the fp32 kernel does. The 8 warps
 * of a block split the columns (chunk w, w + 8, ...) and add their sums in shared memory. */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_fusion.cuh"

#define QMMA_WARPS 8
#ifndef QMMA_CHAINS
#define QMMA_CHAINS 2 /* int4: accumulators a chunk's 16 products take in turn. With one, each product waited for the
                       * one before (a tensor-core product's latency, 16 a chunk, 64 a warp in a one-wave product
                       * whose codes are all staged before its wait: the chain its blocks run after their
                       * release); two halve it. H100, 8B AWQ batch 1: 433.0 -> 442.9 tok/s. Four spill. */
#endif
#ifndef QMMA_QKV_CHAINS
#define QMMA_QKV_CHAINS 0 /* 1: the QKV product's staged forms take QMMA_CHAINS too, the RoPE form's angles kept in
                           * shared memory through the loop (measuring: H100, 8B AWQ batch 1 +0.3%, 429.9 -> 431.3,
                           * beside a build whose residual forms spilled; not yet against this one) */
#endif
#ifndef QMMA_STAGES
#define QMMA_STAGES 4 /* chunks whose codes are in flight ahead of the math, through shared memory (2 in
                        * registers before: 24 warps an SM with 2 KB each in flight; the 8B shape's one-row
                        * gate/up product ran at 1.8 TB/s) */
#endif

__device__ __forceinline__ uint32_t bf16x2_bits(__nv_bfloat162 v)
{
    return *reinterpret_cast<uint32_t *>(&v);
}

__device__ __forceinline__ __nv_bfloat162 bits_bf16x2(uint32_t v)
{
    return *reinterpret_cast<__nv_bfloat162 *>(&v);
}

/* Two int4 codes (bits 0-3 and 16-19 of w) as the bf16 pair 128 + code, exactly: the bf16 0x4300 with
 * the code in its low mantissa bits. (w & 0x000F000F) | 0x43004300 in one instruction (LOP3's table
 * 0xEA: (a & b) | c), which the compiler made two. */
__device__ __forceinline__ uint32_t int4_biased(uint32_t w)
{
    uint32_t r;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(w), "n"(0x000F000F), "n"(0x43004300));
    return r;
}

/* A word of int4 codes in RT_INT4_PAIRS order as four bf16 pairs 128 + code: columns (0, 1), (2, 3),
 * (4, 5), (6, 7), each pair the A operand's two columns of a row (and x's 16-byte load of the same
 * 8 columns the B operand's, as it is). */
__device__ __forceinline__ void int4_word(uint32_t u, uint32_t p[4])
{
    p[0] = int4_biased(u), p[1] = int4_biased(u >> 4), p[2] = int4_biased(u >> 8), p[3] = int4_biased(u >> 12);
}

/* Two e4m3 codes (bytes 0 and 2 of w) as an exact bf16 pair of their values times 2^-120: the sign
 * to bit 15, exponent and mantissa under bf16's (bias 127 against e4m3's 7); a subnormal code lands
 * on the bf16 subnormal of the same value times 2^-120. No conversion instruction. */
__device__ __forceinline__ uint32_t fp8_pair02(uint32_t w)
{
    return ((w << 4) & 0x07F007F0u) | ((w << 8) & 0x80008000u);
}

/* The same for bytes 1 and 3. */
__device__ __forceinline__ uint32_t fp8_pair13(uint32_t w)
{
    return ((w >> 4) & 0x07F007F0u) | (w & 0x80008000u);
}

/* A chunk's scales and zero points of a lane's two weight rows, loaded with its codes (loaded where
 * they are used, the scales of each chunk, a new group every 128 columns, were a memory round trip
 * of their own after the codes'). */
struct qscale {
    float s0, s1;
    unsigned short z0, z1;
};

/* A chunk of a lane's two weight rows: its 16-byte load of each, with the scales. */
struct qchunk : qscale {
    uint4 w0, w1;
};

/* Where a lane's two rows r0 and r1 read their chunks: at column chunk ch of CH columns, the lane's
 * (c) 16 bytes of each. A row past the weight's last (ok0, ok1 false) reads the last row, and a chunk
 * from end on the last chunk: values computed and never stored, in place of a predicate on each load. */
template <int CH>
struct qrows {
    const uint4 *p0, *p1;
    const float *sc0, *sc1;
    const unsigned short *zp0, *zp1;
    int last, gshift; /* the last chunk; a chunk's group ch >> gshift (-1: ch * CH / group) */
    int gs;           /* a group's stride in the scales */
    int group, n_groups;

    __device__ __forceinline__ qrows(const uint8_t *codes, const float *scales, const uint16_t *zeros, int r0, int r1,
                                     bool ok0, bool ok1, int N, int64_t row_bytes, int c, int end, int group_,
                                     int n_groups_)
        : last(end - 1), group(group_), n_groups(n_groups_)
    {
        r0 = ok0 ? r0 : N - 1, r1 = ok1 ? r1 : N - 1;
        p0 = reinterpret_cast<const uint4 *>(codes + (int64_t)r0 * row_bytes) + c;
        p1 = reinterpret_cast<const uint4 *>(codes + (int64_t)r1 * row_bytes) + c;
        /* int4 (RT_INT4_PAIRS): scales group-major, a chunk's 8 rows of g one sector; FP8 row-major */
        const int64_t o0 = CH == 128 ? r0 : (int64_t)r0 * n_groups, o1 = CH == 128 ? r1 : (int64_t)r1 * n_groups;
        gs = CH == 128 ? N : 1;
        sc0 = scales + o0, sc1 = scales + o1;
        zp0 = zeros ? zeros + o0 : nullptr;
        zp1 = zeros ? zeros + o1 : nullptr;
        const int cpg = n_groups == 1 ? 0 : group / CH; /* chunks a group */
        gshift = n_groups == 1 ? 31 : (cpg & (cpg - 1)) == 0 ? __ffs(cpg) - 1 : -1;
    }

    /* chunk ch (from end on, the last) of CH columns: its scales into d */
    __device__ __forceinline__ void scales_of(int ch, qscale &d) const
    {
        ch = ch < last ? ch : last;
        const int gi = (gshift >= 0 ? ch >> gshift : ch * CH / group) * gs;
        d.s0 = __ldg(sc0 + gi);
        d.s1 = __ldg(sc1 + gi);
        d.z0 = zp0 ? __ldg(zp0 + gi) : (unsigned short)8;
        d.z1 = zp1 ? __ldg(zp1 + gi) : (unsigned short)8;
    }

    /* the same, and its codes into d */
    __device__ __forceinline__ void fetch(int ch, qchunk &d) const
    {
        scales_of(ch, d);
        ch = ch < last ? ch : last;
        d.w0 = __ldg(p0 + (int64_t)ch * 4);
        d.w1 = __ldg(p1 + (int64_t)ch * 4);
    }

    /* the same's codes into shared memory (cp.async: no registers held while they are in flight) */
    __device__ __forceinline__ void stage(int ch, uint4 *d0, uint4 *d1) const
    {
        ch = ch < last ? ch : last;
        cp_async16(d0, p0 + (int64_t)ch * 4, true);
        cp_async16(d1, p1 + (int64_t)ch * 4, true);
    }
};

/* F: FUSE_* bits, f what they need (cuda_fusion.cuh): with FUSE_SILU a block's rows r0 are gate
 * rows and r1 the up rows that go with them, with FUSE_ROPE r1 the rotation partners of r0. FP8:
 * e4m3 codes (a chunk 64 columns, a lane's 16 of them one load): the weights enter the products as
 * value * 2^-120 (fp8_pair*) and the activations as value * 2^100 (exact; an activation from 2^28
 * on would overflow bf16), so a chunk's sums sit at 2^-20 of their value, far from fp32's
 * subnormals; the chunk's scale carries the 2^20 back. Otherwise int4 codes (a chunk 128 columns,
 * a lane's 32 one load). */
template <int NT, bool XS, int NW>
struct qmma_smem {
    uint4 staged[QMMA_STAGES][NW][2][32]; /* each lane's codes of its chunks in flight */
    uint4 xs[XS ? QMMA_STAGES : 1][XS ? NW : 1][16]; /* their activations (XS) */
    float red[NW][NT * 4][32];            /* the warps' sums */
};

/* NW: warps a tile (QMMA_WARPS, or QMMA_WIDE_WARPS for the one-token int4 products qmma_as gives them) */
#define QMMA_WIDE_WARPS 12
template <int NT, int F, bool FP8, bool XS = false, int NW = QMMA_WARPS>
__global__ void __launch_bounds__(NW * 32, NW != QMMA_WARPS ? 2 : NT == 1 ? (FP8 ? 4 : 3) : 2) /* 64, 80, 128 registers
                                                                                                  * at most; wide 80 */
    qmma_kernel(__nv_bfloat16 *out, const __nv_bfloat16 *x, const uint8_t *codes, const float *scales,
                const uint16_t *zeros, const __nv_bfloat16 *bias, fusion f, int n, int N, int K, int group,
                int n_groups)
{
    static_assert(!XS || (NT == 1 && !FP8), "activations staged for one token of int4 codes");
    static_assert((F & FUSE_ROPE) == 0 || NT == 1, "the rotation's angles of one token tile");
    static_assert(NW == QMMA_WARPS || XS, "more warps a tile only for one staged token");
    extern __shared__ __align__(16) unsigned char qmma_sm[];
    qmma_smem<NT, XS, NW> &sm = *reinterpret_cast<qmma_smem<NT, XS, NW> *>(qmma_sm);
    auto &red = sm.red;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const int tb = blockIdx.x * NT * 8; /* the block's first token (blocks of one weight tile run together) */
    int r0 = blockIdx.y * 16 + g, r1 = r0 + 8;
    bool ok0 = r0 < N, ok1 = r1 < N;
    if constexpr ((F & FUSE_SILU) != 0) {
        r0 = blockIdx.y * 8 + g, r1 = r0 + N / 2;
        ok0 = ok1 = r0 < N / 2;
    } else if constexpr ((F & FUSE_ROPE) != 0) { /* r1 the rotation partner of r0 */
        r0 = rope_row(f, 8, (int)blockIdx.y, g), r1 = r0 + f.rope.hd / 2;
        ok0 = ok1 = r0 < N;
    }
    /* a lane's 32 (FP8: 16) columns of a row in a chunk: one 16-byte load, 4 of them a chunk's row */
    constexpr int CH = FP8 ? 64 : 128;
    const int64_t row_bytes = FP8 ? K : K / 2;
    const int chunks = K / CH;
    const qrows<CH> rows(codes, scales, zeros, r0, r1, ok0, ok1, N, row_bytes, c, chunks, group, n_groups);
    /* the lane's activations: token tb + 8t + g, its columns of a chunk from c * CH / 4 on. The lanes
     * of tokens from n on load none (zeros: those columns of the product are never stored), so at one
     * row 4 lanes of 32 load x, not every lane the same 16 bytes (8B shape, H100: the int4 one-row
     * products ~1% faster, batch 1 355.2 -> 357.6 tok/s) */
    const __nv_bfloat16 *xr[NT];
    bool xon[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const int tok = tb + t * 8 + g;
        xr[t] = x + (int64_t)(tok < n ? tok : n - 1) * K + c * (CH / 4);
        xon[t] = tok < n;
    }
    constexpr int nw = NW; /* warps a tile (4, each warp twice the chunks, 6 blocks an SM: the 8B shape's
                            * one-row gate/up product 27.5 -> 31.2 us) */
    const int mine = warp < chunks ? (chunks - 1 - warp) / nw + 1 : 0; /* chunks warp, warp + nw, ... */
    /* a lane's codes of its next QMMA_STAGES chunks in flight to its own slots of shared memory (no
     * other lane reads them: no barrier), their scales in registers */
    auto &staged = sm.staged;
    qscale sq[QMMA_STAGES];
#pragma unroll
    for (int a = 0; a < QMMA_STAGES; a++) {
        const int ch = warp + a * nw;
        rows.stage(ch, &staged[a][warp][0][lane], &staged[a][warp][1][lane]);
        cp_async_commit();
        rows.scales_of(ch, sq[a]);
    }
    /* XS (one token): the chunk's 128 activations staged beside its codes, by lanes 0-15, so that the
     * math reads them from shared memory: loaded where used, each chunk waited on an L2 round trip
     * (the kernel ahead wrote x; a block's warps take different chunks, so few are L1 hits). H100, 8B
     * int4: the layer's four one-row products 68.5 -> 59.3 us, batch 1 371.8 -> 414.3 tok/s */
    auto &xs = sm.xs;
    const auto stage_x = [&](int ch, int a) {
        if constexpr (XS) {
            ch = ch < chunks - 1 ? ch : chunks - 1;
            if (lane < 16)
                cp_async16(&xs[a][warp][lane], x + (int64_t)ch * CH + lane * 8, true);
        }
    };
    float2 rcs[2] = {}; /* FUSE_ROPE: the angles of the lane's row r0 at its tokens (rope_angle) */
    __shared__ float2 rcs_sm[QMMA_QKV_CHAINS ? 32 : 1][2]; /* QMMA_QKV_CHAINS: there instead (warp 0's lanes) */
    if constexpr ((F & FUSE_ROPE) != 0)
#pragma unroll
        for (int i = 0; i < 2; i++)
            if (warp == 0 && tb + 2 * c + i < n) /* warp 0 stores */
                rcs[i] = rope_angle(f, tb + 2 * c + i, r0);
    if constexpr ((F & FUSE_ROPE) != 0 && QMMA_QKV_CHAINS != 0)
        if (warp == 0)
#pragma unroll
            for (int i = 0; i < 2; i++)
                rcs_sm[lane][i] = rcs[i];
    pdl_wait();
    pdl_trigger();
    if constexpr (XS) { /* one group after the codes' (the first chunk waits for all of them) */
#pragma unroll
        for (int a = 0; a < QMMA_STAGES; a++)
            stage_x(warp + a * nw, a);
        cp_async_commit();
    }
    float acc[NT][4];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    for (int i0 = 0; i0 < mine; i0 += QMMA_STAGES) {
#pragma unroll
        for (int a = 0; a < QMMA_STAGES; a++) {
            if (i0 + a >= mine)
                break;
            const int ch = warp + (i0 + a) * nw;
            if (XS && i0 == 0 && a == 0)
                cp_async_wait<0>(); /* the first chunks' activations, the group after their codes' */
            else
                cp_async_wait<QMMA_STAGES - 1>(); /* chunk ch's group: one committed a chunk, past the end too */
            if (XS)
                __syncwarp(); /* the other lanes' copies of x */
            const uint4 w0 = staged[a][warp][0][lane], w1 = staged[a][warp][1][lane];
            const qscale in = sq[a];
            float d[NT][4];
#pragma unroll
            for (int t = 0; t < NT; t++)
                d[t][0] = d[t][1] = d[t][2] = d[t][3] = 0.0f;
            if constexpr (FP8) {
                /* word q: columns 4q .. 4q + 3 of the lane's (byte j the column j): pairs (0, 2) and
                 * (1, 3), one product, the activations gathered alike */
                const __nv_bfloat162 up = __floats2bfloat162_rn(0x1p100f, 0x1p100f);
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const uint32_t u0 = (&w0.x)[q], u1 = (&w1.x)[q];
                    const uint32_t wa[4] = {fp8_pair02(u0), fp8_pair02(u1), fp8_pair13(u0), fp8_pair13(u1)};
#pragma unroll
                    for (int t = 0; t < NT; t++) {
                        const uint2 xv = xon[t] ? __ldg(reinterpret_cast<const uint2 *>(xr[t] + ch * CH + 4 * q)) : make_uint2(0, 0);
                        mma16816<__nv_bfloat16>(d[t], wa, bf16x2_bits(__hmul2(bits_bf16x2(__byte_perm(xv.x, xv.y, 0x5410)), up)),
                                                bf16x2_bits(__hmul2(bits_bf16x2(__byte_perm(xv.x, xv.y, 0x7632)), up)));
                    }
                }
                const float s0 = in.s0 * 0x1p20f, s1 = in.s1 * 0x1p20f;
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    acc[t][0] += s0 * d[t][0], acc[t][1] += s0 * d[t][1];
                    acc[t][2] += s1 * d[t][2], acc[t][3] += s1 * d[t][3];
                }
            } else {
                /* the codes enter as 128 + code (int4_word) and the zero as one more product a step, of
                 * the weight -(128 + zero) (the bf16 0xC300 with the zero in its mantissa) with the same
                 * activations: sum (code - zero) x = sum (128 + code) x - (128 + zero) sum x, eight
                 * tensor-core instructions a chunk in place of 32 subtractions */
                const uint32_t z0 = 0xC300u | in.z0, z1 = 0xC300u | in.z1;
                /* the same pair twice, made two ways so that the compiler keeps the four in one register
                 * quad for the chunk's 8 products instead of copying two into a quad before each */
                const uint32_t za[4] = {z0 * 0x10001u, z1 * 0x10001u, __byte_perm(z0, 0, 0x1010),
                                        __byte_perm(z1, 0, 0x1010)};
                /* chain 0 is d. One chain in the QKV product's forms (but with QMMA_QKV_CHAINS: the RoPE
                 * form's angles took registers through the loop and two chains spilled; its sums must be the
                 * unfused form's bits) and where the activations are not staged (the products of 2 to 16
                 * tokens, not measured with two; the one-token form there spilled 4 bytes) */
                constexpr int CHN =
                    !XS || (!QMMA_QKV_CHAINS && ((F & FUSE_ROPE) != 0 || F == FUSE_NORM)) ? 1 : QMMA_CHAINS;
                float e[CHN][NT][4];
#pragma unroll
                for (int k = 1; k < CHN; k++)
#pragma unroll
                    for (int t = 0; t < NT; t++)
                        e[k][t][0] = e[k][t][1] = e[k][t][2] = e[k][t][3] = 0.0f;
                const auto chain = [&](int j, int t) -> float(&)[4] {
                    return j % CHN == 0 ? d[t] : e[j % CHN][t];
                };
                /* word q: columns 8q .. 8q + 7 of the lane's, RT_INT4_PAIRS: two steps, columns 0-3 then
                 * 4-7, x's 16-byte load of the same columns the B operands as it is */
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    uint32_t p0[4], p1[4];
                    int4_word((&w0.x)[q], p0);
                    int4_word((&w1.x)[q], p1);
                    const uint32_t a0[4] = {p0[0], p1[0], p0[1], p1[1]}, a1[4] = {p0[2], p1[2], p0[3], p1[3]};
#pragma unroll
                    for (int t = 0; t < NT; t++) {
                        const uint4 xv = XS       ? xs[a][warp][c * 4 + q]
                                         : xon[t] ? __ldg(reinterpret_cast<const uint4 *>(xr[t] + ch * CH + 8 * q))
                                                  : make_uint4(0, 0, 0, 0);
                        mma16816<__nv_bfloat16>(chain(0, t), a0, xv.x, xv.y);
                        mma16816<__nv_bfloat16>(chain(1, t), za, xv.x, xv.y);
                        mma16816<__nv_bfloat16>(chain(2, t), a1, xv.z, xv.w);
                        mma16816<__nv_bfloat16>(chain(3, t), za, xv.z, xv.w);
                    }
                }
#pragma unroll
                for (int k = 1; k < CHN; k++)
#pragma unroll
                    for (int t = 0; t < NT; t++)
#pragma unroll
                        for (int i = 0; i < 4; i++)
                            d[t][i] += e[k][t][i];
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    acc[t][0] += in.s0 * d[t][0], acc[t][1] += in.s0 * d[t][1];
                    acc[t][2] += in.s1 * d[t][2], acc[t][3] += in.s1 * d[t][3];
                }
            }
            /* the slot again, QMMA_STAGES chunks on if the warp has one: after the math that read it
             * (the compiler keeps the shared loads above this line); a group committed a chunk all the
             * same, empty past the end */
            asm volatile("" ::: "memory");
            if (XS)
                __syncwarp(); /* every lane has read the slot's x */
            if (i0 + a + QMMA_STAGES < mine) {
                const int next = ch + QMMA_STAGES * nw;
                rows.stage(next, &staged[a][warp][0][lane], &staged[a][warp][1][lane]);
                stage_x(next, a);
                rows.scales_of(next, sq[a]);
            }
            cp_async_commit();
        }
    }
    cp_async_wait<0>(); /* no copy into the block's shared memory outlives it */
    fused_ahead_issue(f);
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int i = 0; i < 4; i++)
            red[warp][t * 4 + i][lane] = acc[t][i];
    __syncthreads();
    cuda_trace_mark(); /* every warp's chunks done */
    if (warp != 0)
        return;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float v[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            v[i] = 0.0f;
#pragma unroll
            for (int w = 0; w < nw; w++)
                v[i] += red[w][t * 4 + i][lane];
        }
        /* d's layout: v[0], v[1] row r0 at tokens 2c, 2c + 1; v[2], v[3] row r1 */
        const int t0 = tb + t * 8 + 2 * c;
        if constexpr ((F & FUSE_NORM) != 0)
#pragma unroll
            for (int i = 0; i < 2; i++)
                if (t0 + i < n) {
                    const float inv = fused_inv_rms(f, t0 + i, K);
                    v[i] *= inv, v[i + 2] *= inv;
                }
        if constexpr ((F & FUSE_SILU) != 0) {
#pragma unroll
            for (int i = 0; i < 2; i++)
                if (t0 + i < n && ok0)
                    out[(int64_t)(t0 + i) * (N / 2) + r0] = __float2bfloat16(v[i] / (1.0f + expf(-v[i])) * v[i + 2]);
        } else if constexpr ((F & FUSE_ROPE) != 0) {
            const float b0 = bias ? __bfloat162float(bias[r0]) : 0.0f, b1 = bias ? __bfloat162float(bias[r1]) : 0.0f;
#pragma unroll
            for (int i = 0; i < 2; i++)
                if (t0 + i < n && ok0)
                    fused_rope_pair<__nv_bfloat16>(f, t0 + i, r0, v[i] + b0, v[i + 2] + b1,
                                                   QMMA_QKV_CHAINS ? rcs_sm[lane][i] : rcs[i]);
        } else {
            float q[2] = {0.0f, 0.0f}; /* the squares of tokens t0 and t0 + 1 */
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int tok = t0 + (i & 1), row = i < 2 ? r0 : r1;
                if (tok < n && row < N)
                    q[i & 1] += fused_out<__nv_bfloat16, F>(out, f, tok, row, N,
                                                            v[i] + (bias ? __bfloat162float(bias[row]) : 0.0f));
            }
            if constexpr ((F & FUSE_RESIDUAL) != 0) {
                if (f.next_g) { /* the block's 16 rows summed over the lanes of one c, one atomic a token */
#pragma unroll
                    for (int i = 0; i < 2; i++) {
#pragma unroll
                        for (int o = 4; o < 32; o <<= 1)
                            q[i] += __shfl_xor_sync(0xffffffffu, q[i], o);
                        if (g == 0 && t0 + i < n)
                            atomicAdd(f.ss + (t0 + i) * RT_FUSION_SS_STRIDE, q[i]);
                    }
                }
            }
        }
    }
    cuda_trace_end();
}

/* Whether the tensor-core kernel takes this product: BF16, int4 codes in whole 128-column chunks
 * of one group each, up to QMMA_MAX_ROWS rows (above 16 unfused, qmma_tiles below; where its
 * partial sums do not fit the scratch, this kernel a block a weight tile and 16 tokens, the blocks
 * of one tile side by side so that its codes come from HBM once); or FP8 codes in 64-column
 * ones, 2 to 16 rows. One FP8 row stays on the fp32 kernel (its four loads a lane in flight: the 8B
 * decode at batch 1 ran 306.0 tok/s there against 263.9 here); at 8 rows this kernel took the 8B
 * shape's products in 42.7 us (gate and up) and 30.7 us (down) where the fp32 kernel took 152.3 and
 * 149.6 us (H200; 2 to 7 rows not measured). More FP8 rows go to cuBLASLt. */
bool cuda_qmma_fits(const cuda_ctx *c, const void *x, const rt_tensor *w, int n)
{
    const rt_tensor_quant *q = &w->q;
    const bool int4 = q->kind == RT_QK_INT && q->bits == 4 && w->layout == RT_INT4_PAIRS && n <= QMMA_MAX_ROWS,
               fp8 = q->kind == RT_QK_FP8 && c->qmma_fp8 && n >= 2 && n <= QGEMV_MAX_ROWS;
    const int64_t ch = fp8 ? 64 : 128;
    return c->gemv && c->qmma && c->dt == RT_BF16 && (int4 || fp8) && w->cols % ch == 0 && w->rows / 16 < 65535 &&
           (q->n_groups == 1 || q->group % ch == 0) && (uintptr_t)x % 16 == 0 && (uintptr_t)w->data % 16 == 0;
}

template <int F>
static void qmma_as(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const __nv_bfloat16 *bias,
                    const fusion &f, int n)
{
    const rt_tensor_quant *q = &w->q;
    const int N = (int)w->rows, K = (int)w->cols;
    const unsigned tiles = (unsigned)(((F & FUSE_SILU) != 0 ? (N / 2 + 7) / 8 : (N + 15) / 16));
    const dim3 grid1(1, tiles), grid2((unsigned)(n + 15) / 16, tiles);
#define QMMA_LAUNCH(NT, FP8, XS, NW)                                                                              \
    do {                                                                                                           \
        const size_t shm = sizeof(qmma_smem<NT, XS, NW>);                                                          \
        if (shm > 48 * 1024)                                                                                       \
            CUDA_CHECK(c, cudaFuncSetAttribute(qmma_kernel<NT, F, FP8, XS, NW>,                                    \
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm));            \
        fusion fa = f;                                                                                             \
        fused_ahead_wave(c, fa, qmma_kernel<NT, F, FP8, XS, NW>, (NT == 1 ? grid1 : grid2).x * tiles, NW * 32,     \
                         shm);                                                                                     \
        cuda_launch(c, qmma_kernel<NT, F, FP8, XS, NW>, NT == 1 ? grid1 : grid2, NW * 32, shm,                     \
                    (__nv_bfloat16 *)out, (const __nv_bfloat16 *)x, (const uint8_t *)w->data,                      \
                    (const float *)q->scales, (const uint16_t *)q->zeros, bias, fa, n, N, K, (int)q->group,        \
                    (int)q->n_groups);                                                                             \
    } while (0)
    const bool fp8 = q->kind == RT_QK_FP8;
    /* a one-token product of at most two tiles an SM (the 8B shape's output and down products, 256
     * tiles) has two 8-warp blocks an SM, 16 of the 24 warps its registers allow (H200: the down
     * product latency-bound, DRAM at 35%, 15 warps active). With 64 chunks or more a tile (the down
     * product, 112) its tiles take 12 warps each, two blocks an SM (H100, 8B int4: the down product
     * in the layer 17.2 -> 14.9 us, batch 1 415.3 -> 424.4 tok/s); the output product's 32 chunks
     * a tile lost (6.2 -> 7.2 us: a warp 2 or 3 chunks), and 16 warps a tile lost on both (64
     * registers; batch 1 409.0 against 416.3 at 12 and 414.9 at 8 on both products) */
    const bool wide = n == 1 && c->qmma_xs && c->qmma_wide && tiles <= 2u * (unsigned)c->n_sms && K >= 64 * 128;
    if constexpr ((F & FUSE_ROPE) != 0) /* one int4 token, staged: all cuda_qmma_rope gives */
        QMMA_LAUNCH(1, false, true, QMMA_WARPS);
    else if (n <= 8 && fp8)
        QMMA_LAUNCH(1, true, false, QMMA_WARPS);
    else if (fp8)
        QMMA_LAUNCH(2, true, false, QMMA_WARPS);
    else if (wide)
        QMMA_LAUNCH(1, false, true, QMMA_WIDE_WARPS);
    else if (n == 1 && c->qmma_xs)
        QMMA_LAUNCH(1, false, true, QMMA_WARPS);
    else if (n <= 8)
        QMMA_LAUNCH(1, false, false, QMMA_WARPS);
    else
        QMMA_LAUNCH(2, false, false, QMMA_WARPS);
#undef QMMA_LAUNCH
}

void cuda_qmma(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
                 const rt_fusion *f)
{
    const __nv_bfloat16 *b = bias && bias->data ? (const __nv_bfloat16 *)bias->data : NULL;
    fusion a = fused_args(f);
    fused_ahead(c, f, a);
    FUSED_DISPATCH(fused_bits(f), qmma_as, c, out, x, w, b, a, n);
}

bool cuda_qmma_rope(cuda_ctx *c, const void *x, const rt_tensor *w, const __nv_bfloat16 *bias, const fusion &f)
{
    if (!cuda_qmma_fits(c, x, w, 1) || w->q.kind != RT_QK_INT || !c->qmma_xs)
        return false;
    qmma_as<FUSE_NORM | FUSE_ROPE>(c, nullptr, x, w, bias, f, 1);
    return true;
}

/* ---- int4 products of 17 to QMMA_MAX_ROWS rows: weight tiles sharing the activations ----
 *
 * qmma_kernel's blocks each take 16 weight rows and read all of x for them: at 64 rows the 8B
 * shape's gate/up product read 940 MB of activations from L2 for 58 MB of codes (L2-bound, 217 us).
 * Here the warps of a block take different rows (16 each, QT_WARPS of them) over the same chunk of
 * x, which the block stages in shared memory (cp.async, two buffers) for every token at once (NT
 * tiles of 8): x is read once a block of 16 * QT_WARPS rows, the codes once. K is split as well
 * until each SM has QT_BLOCKS_PER_SM blocks (the 8B shape's output and down products have 64 tiles,
 * gate/up 448); the splits write fp32 partial sums to the scratch and qt_reduce_kernel adds them in
 * split order (the same bits whatever the schedule) with the bias. A lane's codes, fragments and
 * chunk scales are qmma_kernel's. */
#define QT_WARPS 4
/* blocks an SM the splits of K aim at: on the H200 at 64 rows, 8B shape, 1 / 2 / 4 / 8 gave gate/up in
 * 149 / 149 / 123 / 121 us, down 97 / 62 / 61 / 60 us, batch-64 decode 6,267 (2) and 6,731 (4) tok/s */
#define QT_BLOCKS_PER_SM 4
#define QT_XPAD 8 /* bf16 padding a token's row of a staged chunk: a warp's 16-byte reads in 4 wavefronts */

template <int NT>
__global__ void __launch_bounds__(QT_WARPS * 32)
    qmma_tile_kernel(float *part, const __nv_bfloat16 *x, const uint8_t *codes, const float *scales,
                     const uint16_t *zeros, int n, int N, int K, int group, int n_groups, int split_chunks)
{
    __shared__ __align__(16) __nv_bfloat16 xs[2][NT * 8][128 + QT_XPAD];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const int r0 = (blockIdx.x * QT_WARPS + warp) * 16 + g, r1 = r0 + 8;
    const bool ok0 = r0 < N, ok1 = r1 < N;
    const int chunks = K / 128, ch0 = blockIdx.y * split_chunks;
    const int ch1 = ch0 + split_chunks < chunks ? ch0 + split_chunks : chunks;
    const qrows<128> rows(codes, scales, zeros, r0, r1, ok0, ok1, N, K / 2, c, ch1, group, n_groups);
    const auto fetch = [&](int ch, qchunk &d) { rows.fetch(ch, d); };
    /* chunk ch of every token into buffer b (tokens from n on as zeros), one commit group */
    const auto stage = [&](int ch, int b) {
        for (int i = threadIdx.x; i < NT * 8 * 16; i += QT_WARPS * 32) {
            const int tok = i >> 4, piece = i & 15;
            const bool ok = tok < n && ch < ch1;
            cp_async16(&xs[b][tok][piece * 8], ok ? x + (int64_t)tok * K + ch * 128 + piece * 8 : x, ok);
        }
        cp_async_commit();
    };
    qchunk a0, a1; /* the next two chunks' codes, in flight ahead of the math */
    fetch(ch0, a0);
    fetch(ch0 + 1, a1);
    pdl_wait();
    pdl_trigger();
    stage(ch0, 0);
    float acc[NT][4];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    for (int ch = ch0; ch < ch1; ch++) {
        const int b = (ch - ch0) & 1;
        stage(ch + 1, b ^ 1); /* an empty group past the end */
        const qchunk in = a0;
        a0 = a1;
        fetch(ch + 2, a1);
        cp_async_wait<1>();
        __syncthreads();
        const float z0f = 128.0f + (float)in.z0, z1f = 128.0f + (float)in.z1;
        const __nv_bfloat162 z0 = __floats2bfloat162_rn(z0f, z0f), z1 = __floats2bfloat162_rn(z1f, z1f);
        float d[NT][4];
#pragma unroll
        for (int t = 0; t < NT; t++)
            d[t][0] = d[t][1] = d[t][2] = d[t][3] = 0.0f;
#pragma unroll
        for (int q = 0; q < 4; q++) { /* the zero subtracted from the codes, not qmma_kernel's extra product:
                                       * at NT tiles of tokens a subtraction is cheaper than NT products */
            uint32_t p0[4], p1[4];
            int4_word((&in.w0.x)[q], p0);
            int4_word((&in.w1.x)[q], p1);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                p0[i] = bf16x2_bits(__hsub2(bits_bf16x2(p0[i]), z0));
                p1[i] = bf16x2_bits(__hsub2(bits_bf16x2(p1[i]), z1));
            }
            const uint32_t f0[4] = {p0[0], p1[0], p0[1], p1[1]}, f1[4] = {p0[2], p1[2], p0[3], p1[3]};
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const uint4 xv = *reinterpret_cast<const uint4 *>(&xs[b][t * 8 + g][c * 32 + 8 * q]);
                mma16816<__nv_bfloat16>(d[t], f0, xv.x, xv.y);
                mma16816<__nv_bfloat16>(d[t], f1, xv.z, xv.w);
            }
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            acc[t][0] += in.s0 * d[t][0], acc[t][1] += in.s0 * d[t][1];
            acc[t][2] += in.s1 * d[t][2], acc[t][3] += in.s1 * d[t][3];
        }
        __syncthreads(); /* buffer b is staged again two chunks on */
    }
    cp_async_wait<0>();
    /* d's layout: [0], [1] row r0 at tokens 2c, 2c + 1; [2], [3] row r1 */
    float *pp = part + (int64_t)blockIdx.y * n * N;
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int tok = t * 8 + 2 * c + (i & 1), row = i < 2 ? r0 : r1;
            if (tok < n && row < N)
                pp[(int64_t)tok * N + row] = acc[t][i];
        }
}

/* out (n, N) = the splits' partial sums (splits, n, N) added in order, + bias */
__global__ void qt_reduce_kernel(__nv_bfloat16 *out, const float *part, const __nv_bfloat16 *bias, int splits, int N,
                                 int64_t total)
{
    pdl_wait();
    pdl_trigger();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        float v = 0.0f;
        for (int s = 0; s < splits; s++)
            v += part[s * total + i];
        out[i] = __float2bfloat16(v + (bias ? __bfloat162float(bias[i % N]) : 0.0f));
    }
}

/* false when the partial sums do not fit the scratch (the caller takes another path) */
bool cuda_qmma_tiles(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n)
{
    const rt_tensor_quant *q = &w->q;
    const int N = (int)w->rows, K = (int)w->cols, chunks = K / 128;
    const int tiles = (N + 16 * QT_WARPS - 1) / (16 * QT_WARPS);
    /* splits of K until each SM has QT_BLOCKS_PER_SM blocks, within the scratch */
    int splits = (QT_BLOCKS_PER_SM * c->n_sms + tiles - 1) / tiles;
    splits = splits < chunks ? splits : chunks;
    while (splits > 1 && (size_t)splits * n * N * sizeof(float) > c->scratch_bytes)
        splits--;
    if ((size_t)splits * n * N * sizeof(float) > c->scratch_bytes)
        return false;
    const int split_chunks = (chunks + splits - 1) / splits;
    splits = (chunks + split_chunks - 1) / split_chunks;
    float *part = (float *)c->scratch;
    const dim3 grid((unsigned)tiles, (unsigned)splits);
#define QT_LAUNCH(NT)                                                                                              \
    cuda_launch(c, qmma_tile_kernel<NT>, grid, QT_WARPS * 32, 0, part, (const __nv_bfloat16 *)x,                    \
                (const uint8_t *)w->data, (const float *)q->scales, (const uint16_t *)q->zeros, n, N, K, (int)q->group, \
                (int)q->n_groups, split_chunks)
    if (n <= 32)
        QT_LAUNCH(4);
    else if (n <= 48)
        QT_LAUNCH(6);
    else
        QT_LAUNCH(8);
#undef QT_LAUNCH
    const int64_t total = (int64_t)n * N;
    cuda_launch(c, qt_reduce_kernel, (unsigned)cuda_blocks((size_t)total, 256), 256, 0, (__nv_bfloat16 *)out,
                (const float *)part, bias && bias->data ? (const __nv_bfloat16 *)bias->data : (const __nv_bfloat16 *)NULL,
                splits, N, total);
    return true;
}
