/* out(n, N) = x(n, K) . W(N, K)^T (+ bias) for a quantized W (rt_tensor_quant: FP8 e4m3 or unsigned
 * integer codes of 8 or 4 bits, a scale per row and group of columns, zero points or not).
 *
 * Up to QGEMV_MAX_ROWS rows of x (decode at small batch): one pass over the codes. BF16 with int4
 * codes in groups of 128 columns or more (up to QMMA_MAX_ROWS rows), or FP8 codes at 2 rows or
 * more: on the tensor cores (qmma_kernel; int4 of 17 rows on, qmma_tile_kernel). Otherwise a warp per
 * weight row in 16-byte loads (16 codes of 8 bits, 32 of 4) dequantized in registers in fp32: a
 * load's codes lie in one group (the group a multiple of the load's columns), so each load's partial
 * dot product is scaled once.
 *
 * More rows, FP8 codes with a scale a row, BF16 activations: FP8 tensor cores through cuBLASLt
 * (cuda_fp8_gemm.cu).
 *
 * Every other product (int8, int4 above QMMA_MAX_ROWS or in smaller groups, FP8 of block scales,
 * F32, F16): the weights dequantized into the backend's scratch a slab of rows at a time, each slab
 * a cuBLAS product into its columns of out. */
#include <cuda_fp8.h>

#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_fusion.cuh"
#include "runtime/cuda/cuda_ops.h"

#define QGEMV_MAX_ROWS 16
#define QGEMV_WARPS 8
#define QGEMV_AHEAD 4 /* 16-byte loads in flight a lane (8: 90 registers, a fifth slower) */

/* An unsigned byte b as the float 2^23 + b: its bits as a float's low mantissa bits under the
 * exponent of 2^23 (a byte permute instead of a conversion instruction, which runs at a quarter of
 * the rate of arithmetic; measured: no faster end to end, the kernel being bound elsewhere). */
__device__ __forceinline__ float magic_byte(uint32_t word, int byte)
{
    return __uint_as_float(__byte_perm(word, 0x4B000000u, 0x7540u | (uint32_t)byte));
}

/* The 16-byte load's codes (E of them) as values, without the scale: the FP8 number, or
 * code - zero (zoff = 2^23 + zero: the subtraction is exact). */
template <bool FP8, int BITS>
__device__ __forceinline__ void dequant16(const uint4 &raw, float zoff, float *w)
{
    const uint32_t u[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if constexpr (FP8) {
            const float2 a = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(u[i] & 0xffffu), __NV_E4M3)));
            const float2 b = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(u[i] >> 16), __NV_E4M3)));
            w[4 * i] = a.x, w[4 * i + 1] = a.y, w[4 * i + 2] = b.x, w[4 * i + 3] = b.y;
        } else if constexpr (BITS == 8) {
#pragma unroll
            for (int b = 0; b < 4; b++)
                w[4 * i + b] = magic_byte(u[i], b) - zoff;
        } else { /* RT_INT4_PAIRS: nibble j of the word holds column 2j (j < 4) or 2j - 7: byte b's low
                  * nibble (nibble 2b) columns 0, 4, 1, 5, its high one (2b + 1) columns 2, 6, 3, 7 */
            const uint32_t lo = u[i] & 0x0F0F0F0Fu, hi = (u[i] >> 4) & 0x0F0F0F0Fu;
            constexpr int col_lo[4] = {0, 4, 1, 5}, col_hi[4] = {2, 6, 3, 7};
#pragma unroll
            for (int b = 0; b < 4; b++)
                w[8 * i + col_lo[b]] = magic_byte(lo, b) - zoff, w[8 * i + col_hi[b]] = magic_byte(hi, b) - zoff;
        }
    }
}

/* R: rows of x the kernel is built for (n <= R are computed). K a multiple of E, the group a
 * multiple of E (or n_groups 1). F: FUSE_* bits, f what they need (cuda_fusion.cuh). */
template <typename T, int R, bool FP8, int BITS, int F>
__global__ void __launch_bounds__(QGEMV_WARPS * 32)
    qgemv_kernel(T *out, const T *x, const uint8_t *codes, const float *scales, const uint16_t *zeros, const T *bias,
                 fusion f, int n, int N, int K, int group, int n_groups)
{
    constexpr int E = BITS == 4 ? 32 : 16; /* codes a 16-byte load holds */
    const int lane = threadIdx.x & 31;
    bool valid;
    const int row = fused_row<F, QGEMV_WARPS>(N, threadIdx.x >> 5, &valid);
    if ((F & (FUSE_SILU | FUSE_RESIDUAL)) == 0 && !valid) /* those two meet at a barrier */
        return;
    const int loads = K / E;
    const uint4 *wv = reinterpret_cast<const uint4 *>(codes + (int64_t)row * (K / 8 * BITS));
    /* a row's scales: int4's group-major (RT_INT4_PAIRS: group gi at gi * N), the others' row-major */
    const int64_t gs = BITS == 4 ? N : 1;
    const float *sr = scales + (BITS == 4 ? (int64_t)row : (int64_t)row * n_groups);
    const uint16_t *zr = zeros ? zeros + (BITS == 4 ? (int64_t)row : (int64_t)row * n_groups) : nullptr;
    const float zdef = 8388608.0f + (float)(1 << (BITS - 1)); /* 2^23 + the zero (dequant16's zoff) */
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++)
        acc[r] = 0.0f;
    /* load j's scale and zero offset (zdef without zero points): with groups, loaded with the codes
     * (where they are used, each was a memory round trip after the codes'); one scale a row is
     * loaded once */
    const float s_row = __ldg(sr), z_row = FP8 || !zr ? zdef : 8388608.0f + (float)__ldg(zr);
    const auto scale_of = [&](int j, float &s, float &z) {
        if (n_groups == 1 || j >= loads) {
            s = s_row, z = z_row;
        } else {
            const int gi = j * E / group;
            s = __ldg(sr + gi * gs), z = FP8 || !zr ? zdef : 8388608.0f + (float)__ldg(zr + gi * gs);
        }
    };
    /* the first loads go out before pdl_wait (the codes are constant) */
    uint4 next[QGEMV_AHEAD];
    float next_s[QGEMV_AHEAD], next_z[QGEMV_AHEAD];
#pragma unroll
    for (int u = 0; u < QGEMV_AHEAD; u++) {
        next[u] = lane + 32 * u < loads ? __ldg(wv + lane + 32 * u) : make_uint4(0, 0, 0, 0);
        scale_of(lane + 32 * u, next_s[u], next_z[u]);
    }
    pdl_wait();
    pdl_trigger();
    for (int j0 = lane; j0 < loads; j0 += 32 * QGEMV_AHEAD) {
        uint4 cur[QGEMV_AHEAD];
        float cur_s[QGEMV_AHEAD], cur_z[QGEMV_AHEAD];
#pragma unroll
        for (int u = 0; u < QGEMV_AHEAD; u++) {
            cur[u] = next[u], cur_s[u] = next_s[u], cur_z[u] = next_z[u];
            const int j = j0 + 32 * (QGEMV_AHEAD + u);
            next[u] = j < loads ? __ldg(wv + j) : make_uint4(0, 0, 0, 0);
            scale_of(j, next_s[u], next_z[u]);
        }
#pragma unroll
        for (int u = 0; u < QGEMV_AHEAD; u++) {
            const int j = j0 + 32 * u;
            if (j < loads) {
                const int k = j * E;
                const float s = cur_s[u], z = FP8 ? 0.0f : cur_z[u];
                float w[E];
                dequant16<FP8, BITS>(cur[u], z, w);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    if (r < n) {
                        float xv[E];
                        load_vec<T, E>(x + (int64_t)r * K + k, xv);
                        float p = 0.0f;
#pragma unroll
                        for (int e = 0; e < E; e++)
                            p += w[e] * xv[e];
                        acc[r] += s * p;
                    }
                }
            }
        }
    }
    fused_store<T, R, F, QGEMV_WARPS>(out, acc, bias, f, n, N, K, row, valid);
}

template <typename T, bool FP8, int BITS, int F>
static void qgemv_as(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const T *bias, const fusion &f, int n)
{
    const int N = (int)w->rows, K = (int)w->cols;
    const unsigned blocks = fused_blocks<F>(N, QGEMV_WARPS);
    const rt_tensor_quant *q = &w->q;
#define QGEMV_LAUNCH(R)                                                                                          \
    cuda_launch(c, qgemv_kernel<T, R, FP8, BITS, F>, blocks, QGEMV_WARPS * 32, 0, (T *)out, (const T *)x,         \
                (const uint8_t *)w->data, (const float *)q->scales, (const uint16_t *)q->zeros, bias, f, n, N, K,   \
                (int)q->group, (int)q->n_groups)
    if (n <= 1)
        QGEMV_LAUNCH(1);
    else if (n <= 2)
        QGEMV_LAUNCH(2);
    else if (n <= 4)
        QGEMV_LAUNCH(4);
    else if (n <= 8)
        QGEMV_LAUNCH(8);
    else
        QGEMV_LAUNCH(16);
#undef QGEMV_LAUNCH
}

template <int F, typename T>
static void qgemv_fused(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const T *bias, const fusion &f,
                        int n)
{
    if (w->q.kind == RT_QK_FP8)
        qgemv_as<T, true, 8, F>(c, out, x, w, bias, f, n);
    else if (w->q.bits == 8)
        qgemv_as<T, false, 8, F>(c, out, x, w, bias, f, n);
    else
        qgemv_as<T, false, 4, F>(c, out, x, w, bias, f, n);
}

template <typename T>
static void qgemv(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
                  const rt_fusion *f)
{
    const T *b = bias && bias->data ? (const T *)bias->data : NULL;
    FUSED_DISPATCH(fused_bits(f), qgemv_fused, c, out, x, w, b, fused_args(f), n);
}

/* ---- the same on the tensor cores (BF16 activations, int4 or FP8 codes) ----
 *
 * The fp32 kernel above spends about five instructions on each code (unpack, convert, subtract the
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
#define QMMA_WARPS 8
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
 * rows and r1 the up rows that go with them. FP8: e4m3 codes (a chunk 64 columns, a lane's 16 of
 * them one load): the weights enter the products as value * 2^-120 (fp8_pair*) and the activations
 * as value * 2^100 (exact; an activation from 2^28 on would overflow bf16), so a chunk's sums sit
 * at 2^-20 of their value, far from fp32's subnormals; the chunk's scale carries the 2^20 back.
 * Otherwise int4 codes (a chunk 128 columns, a lane's 32 one load). */
template <int NT, int F, bool FP8>
__global__ void __launch_bounds__(QMMA_WARPS * 32, NT == 1 ? (FP8 ? 4 : 3) : 2) /* 64, 80, 128 registers at most */
    qmma_kernel(__nv_bfloat16 *out, const __nv_bfloat16 *x, const uint8_t *codes, const float *scales,
                const uint16_t *zeros, const __nv_bfloat16 *bias, fusion f, int n, int N, int K, int group,
                int n_groups)
{
    __shared__ float red[QMMA_WARPS][NT * 4][32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const int tb = blockIdx.x * NT * 8; /* the block's first token (blocks of one weight tile run together) */
    int r0 = blockIdx.y * 16 + g, r1 = r0 + 8;
    bool ok0 = r0 < N, ok1 = r1 < N;
    if constexpr ((F & FUSE_SILU) != 0) {
        r0 = blockIdx.y * 8 + g, r1 = r0 + N / 2;
        ok0 = ok1 = r0 < N / 2;
    }
    /* a lane's 32 (FP8: 16) columns of a row in a chunk: one 16-byte load, 4 of them a chunk's row */
    constexpr int CH = FP8 ? 64 : 128;
    const int64_t row_bytes = FP8 ? K : K / 2;
    const int chunks = K / CH;
    const qrows<CH> rows(codes, scales, zeros, r0, r1, ok0, ok1, N, row_bytes, c, chunks, group, n_groups);
    /* the lane's activations: token tb + 8t + g (from n on, token n - 1: those columns of the product
     * are never stored), its columns of a chunk from c * CH / 4 on */
    const __nv_bfloat16 *xr[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const int tok = tb + t * 8 + g;
        xr[t] = x + (int64_t)(tok < n ? tok : n - 1) * K + c * (CH / 4);
    }
    constexpr int nw = QMMA_WARPS; /* warps a tile (4, each warp twice the chunks, 6 blocks an SM: the 8B
                                    * shape's one-row gate/up product 27.5 -> 31.2 us) */
    const int mine = warp < chunks ? (chunks - 1 - warp) / nw + 1 : 0; /* chunks warp, warp + nw, ... */
    /* a lane's codes of its next QMMA_STAGES chunks in flight to its own slots of shared memory (no
     * other lane reads them: no barrier), their scales in registers */
    __shared__ uint4 staged[QMMA_STAGES][QMMA_WARPS][2][32];
    qscale sq[QMMA_STAGES];
#pragma unroll
    for (int a = 0; a < QMMA_STAGES; a++) {
        const int ch = warp + a * nw;
        rows.stage(ch, &staged[a][warp][0][lane], &staged[a][warp][1][lane]);
        cp_async_commit();
        rows.scales_of(ch, sq[a]);
    }
    pdl_wait();
    pdl_trigger();
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
            cp_async_wait<QMMA_STAGES - 1>(); /* chunk ch's group: one committed a chunk, past the end too */
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
                        const uint2 xv = __ldg(reinterpret_cast<const uint2 *>(xr[t] + ch * CH + 4 * q));
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
                        const uint4 xv = __ldg(reinterpret_cast<const uint4 *>(xr[t] + ch * CH + 8 * q));
                        mma16816<__nv_bfloat16>(d[t], a0, xv.x, xv.y);
                        mma16816<__nv_bfloat16>(d[t], za, xv.x, xv.y);
                        mma16816<__nv_bfloat16>(d[t], a1, xv.z, xv.w);
                        mma16816<__nv_bfloat16>(d[t], za, xv.z, xv.w);
                    }
                }
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
            if (i0 + a + QMMA_STAGES < mine) {
                const int next = ch + QMMA_STAGES * nw;
                rows.stage(next, &staged[a][warp][0][lane], &staged[a][warp][1][lane]);
                rows.scales_of(next, sq[a]);
            }
            cp_async_commit();
        }
    }
    cp_async_wait<0>(); /* no copy into the block's shared memory outlives it */
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int i = 0; i < 4; i++)
            red[warp][t * 4 + i][lane] = acc[t][i];
    __syncthreads();
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
}

/* Whether the tensor-core kernel takes this product: BF16, int4 codes in whole 128-column chunks
 * of one group each, up to QMMA_MAX_ROWS rows (above 16 unfused, qmma_tiles below; where its
 * partial sums do not fit the scratch, this kernel a block a weight tile and 16 tokens, the blocks
 * of one tile side by side so that its codes come from HBM once); or FP8 codes in 64-column
 * ones, 2 to 16 rows. One FP8 row stays on the fp32 kernel (its four loads a lane in flight: the 8B
 * decode at batch 1 ran 306.0 tok/s there against 263.9 here); at 8 rows this kernel took the 8B
 * shape's products in 42.7 us (gate and up) and 30.7 us (down) where the fp32 kernel took 152.3 and
 * 149.6 us (H200; 2 to 7 rows not measured). More FP8 rows go to cuBLASLt. */
#define QMMA_MAX_ROWS 64
static bool qmma_fits(const cuda_ctx *c, const void *x, const rt_tensor *w, int n)
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
#define QMMA_LAUNCH(NT, FP8)                                                                                       \
    cuda_launch(c, qmma_kernel<NT, F, FP8>, NT == 1 ? grid1 : grid2, QMMA_WARPS * 32, 0, (__nv_bfloat16 *)out,     \
                (const __nv_bfloat16 *)x, (const uint8_t *)w->data, (const float *)q->scales,                      \
                (const uint16_t *)q->zeros, bias, f, n, N, K, (int)q->group, (int)q->n_groups)
    const bool fp8 = q->kind == RT_QK_FP8;
    if (n <= 8 && fp8)
        QMMA_LAUNCH(1, true);
    else if (fp8)
        QMMA_LAUNCH(2, true);
    else if (n <= 8)
        QMMA_LAUNCH(1, false);
    else
        QMMA_LAUNCH(2, false);
#undef QMMA_LAUNCH
}

static void qmma(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
                 const rt_fusion *f)
{
    const __nv_bfloat16 *b = bias && bias->data ? (const __nv_bfloat16 *)bias->data : NULL;
    FUSED_DISPATCH(fused_bits(f), qmma_as, c, out, x, w, b, fused_args(f), n);
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
static bool qmma_tiles(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n)
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

/* Whether the weight-streaming kernel takes this product: few rows, whole loads in one group each. */
static bool qgemv_fits(const cuda_ctx *c, const void *x, const rt_tensor *w, int n)
{
    const int64_t E = w->q.bits == 4 ? 32 : 16;
    return c->gemv && n <= QGEMV_MAX_ROWS && (w->q.bits != 4 || w->layout == RT_INT4_PAIRS) && w->cols % E == 0 &&
           (w->q.n_groups == 1 || w->q.group % E == 0) && (uintptr_t)x % 16 == 0 && (uintptr_t)w->data % 16 == 0;
}

/* ---- int4 codes in the order the kernels above read ---- */

/* each 32-bit word's nibbles from column order (nibble j the column j) to RT_INT4_PAIRS' */
__global__ void int4_pairs_kernel(uint32_t *words, int64_t n)
{
    pdl_wait();
    pdl_trigger();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const uint32_t u = words[i];
        uint32_t v = 0;
#pragma unroll
        for (int j = 0; j < 8; j++) /* column j to nibble j / 2 + 4 (j & 1) */
            v |= ((u >> (4 * j)) & 0xFu) << (4 * ((j >> 1) + 4 * (j & 1)));
        words[i] = v;
    }
}

/* out (cols, rows) = in (rows, cols) */
template <typename T>
__global__ void transpose_kernel(T *out, const T *in, int64_t rows, int64_t cols)
{
    pdl_wait();
    pdl_trigger();
    const int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[(i % cols) * rows + i / cols] = in[i];
}

/* A (rows, cols) matrix group-major in new device memory, the old freed; false when out of memory. */
template <typename T>
static bool group_major(cuda_ctx *c, rt_backend *be, T **m, int64_t rows, int64_t cols)
{
    T *t = (T *)be->ops->alloc(be, (size_t)(rows * cols) * sizeof(T));
    if (!t)
        return false;
    cuda_launch(c, transpose_kernel<T>, (unsigned)cuda_blocks((size_t)(rows * cols), 256), 256, 0, t, (const T *)*m,
                rows, cols);
    be->ops->free(be, *m); /* cudaFree waits for the transposition */
    *m = t;
    return true;
}

/* backend.h's prepare_weight: int4 codes of whole words a row (columns a multiple of 8) in
 * RT_INT4_PAIRS order, in place, and their scales and zero points group-major; every other weight
 * as it is. A failed launch stays on the backend: the loader's check after the weights reports it. */
extern "C" int cuda_prepare_weight(rt_backend *be, rt_tensor *w)
{
    if (w->q.kind != RT_QK_INT || w->q.bits != 4 || w->layout != RT_ROWS || w->cols % 8)
        return 0;
    cuda_ctx *c = cuda_ctx_of(be);
    const int64_t words = w->rows * w->cols / 8;
    cuda_launch(c, int4_pairs_kernel, (unsigned)cuda_blocks((size_t)words, 256), 256, 0, (uint32_t *)w->data, words);
    if (!group_major(c, be, &w->q.scales, w->rows, w->q.n_groups) ||
        (w->q.zeros && !group_major(c, be, &w->q.zeros, w->rows, w->q.n_groups)))
        return -1;
    w->layout = RT_INT4_PAIRS;
    return 0;
}

/* ---- dequantized slabs through cuBLAS ---- */

/* out (rows, K) = rows r0 .. r0 + rows - 1 of the weight's values: a block per row. pairs: int4 codes
 * in RT_INT4_PAIRS order, scales and zero points group-major (N rows). */
template <typename T, bool FP8, int BITS>
__global__ void dequant_kernel(T *out, const uint8_t *codes, const float *scales, const uint16_t *zeros, int64_t r0,
                               int N, int K, int group, int n_groups, bool pairs)
{
    pdl_wait(); /* out (the scratch) may still be read by the product ahead */
    pdl_trigger();
    const int64_t r = r0 + blockIdx.x, gs = pairs ? N : 1;
    const uint8_t *cr = codes + r * (K / 8 * BITS);
    const float *sr = scales + (pairs ? r : r * n_groups);
    const uint16_t *zr = zeros ? zeros + (pairs ? r : r * n_groups) : nullptr;
    T *o = out + (int64_t)blockIdx.x * K;
    for (int col = threadIdx.x; col < K; col += blockDim.x) {
        const int g = col / group;
        float v;
        if constexpr (FP8) {
            v = __half2float(__half(__nv_cvt_fp8_to_halfraw(cr[col], __NV_E4M3)));
        } else {
            int nib = col; /* the nibble holding column col */
            if (pairs)
                nib = (col & ~7) + ((col & 7) >> 1) + 4 * (col & 1);
            const int code = BITS == 4 ? (cr[nib / 2] >> (4 * (nib & 1))) & 0xf : cr[col];
            v = (float)code - (zr ? (float)zr[g * gs] : (float)(1 << (BITS - 1)));
        }
        st(&o[col], v * sr[g * gs]);
    }
}

template <typename T>
static void slabs(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, int n)
{
    const int N = (int)w->rows, K = (int)w->cols;
    const rt_tensor_quant *q = &w->q;
    int slab = (int)(c->scratch_bytes / ((size_t)K * sizeof(T)));
    slab = slab < N ? slab : N;
    if (slab < 1) {
        cuda_fail(c, "dequantizing a weight", __FILE__, __LINE__, "a row does not fit the backend's scratch");
        return;
    }
    const float one = 1.0f, zero = 0.0f;
    const cudaDataType_t t = cuda_blas_type(c->dt);
    T *wd = (T *)c->scratch;
    for (int r0 = 0; r0 < N; r0 += slab) {
        const int rows = N - r0 < slab ? N - r0 : slab;
        const uint8_t *codes = (const uint8_t *)w->data;
        const uint16_t *zeros = (const uint16_t *)q->zeros;
        const int group = (int)(q->n_groups == 1 ? K : q->group), ng = (int)q->n_groups;
        const bool pairs = w->layout == RT_INT4_PAIRS;
        if (q->kind == RT_QK_FP8)
            cuda_launch(c, dequant_kernel<T, true, 8>, (unsigned)rows, 256, 0, wd, codes, (const float *)q->scales,
                        zeros, (int64_t)r0, N, K, group, ng, pairs);
        else if (q->bits == 8)
            cuda_launch(c, dequant_kernel<T, false, 8>, (unsigned)rows, 256, 0, wd, codes, (const float *)q->scales,
                        zeros, (int64_t)r0, N, K, group, ng, pairs);
        else
            cuda_launch(c, dequant_kernel<T, false, 4>, (unsigned)rows, 256, 0, wd, codes, (const float *)q->scales,
                        zeros, (int64_t)r0, N, K, group, ng, pairs);
        CUDA_LAUNCHED(c);
        CUBLAS_CHECK(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, K, &one, wd, t, K, x, t, K, &zero,
                                     (T *)out + r0, t, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
}

template <typename T>
static void qmatmul(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n)
{
    if (qmma_fits(c, x, w, n)) {
        if (n <= QGEMV_MAX_ROWS || !qmma_tiles(c, out, x, w, bias, n))
            qmma(c, out, x, w, bias, n, (const rt_fusion *)NULL);
        return;
    }
    if (qgemv_fits(c, x, w, n)) {
        qgemv<T>(c, out, x, w, bias, n, (const rt_fusion *)NULL);
        return;
    }
    if (n > QGEMV_MAX_ROWS && cuda_fp8_gemm(c, out, x, w, bias, n))
        return;
    slabs<T>(c, out, x, w, n);
    if (bias && bias->data)
        cuda_add_bias(c, out, bias->data, w->rows, w->rows * (int64_t)n);
}

void cuda_qmatmul(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n)
{
    CUDA_DISPATCH(c->dt, qmatmul, c, out, x, w, bias, n);
    CUDA_LAUNCHED(c);
}

template <typename T>
static void qfused(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
                   const rt_fusion *f)
{
    if (qmma_fits(c, x, w, n))
        qmma(c, out, x, w, bias, n, f);
    else
        qgemv<T>(c, out, x, w, bias, n, f);
}

bool cuda_qmatmul_fuses(const cuda_ctx *c, const rt_tensor *w, int n)
{
    return qmma_fits(c, w->data, w, n) || qgemv_fits(c, w->data, w, n);
}

void cuda_qmatmul_fused(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias,
                        const rt_fusion *f, int n)
{
    CUDA_DISPATCH(c->dt, qfused, c, out, x, w, bias, n, f);
}
