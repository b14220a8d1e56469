/* The quantized product of up to QGEMV_MAX_ROWS rows of x on the CUDA cores, any storage type
 * (cuda_qmatmul.cu says which product goes where): a warp per weight row in 16-byte loads (16 codes
 * of 8 bits, 32 of 4) dequantized in registers in fp32: a load's codes lie in one group (the group a
 * multiple of the load's columns), so each load's partial dot product is scaled once.
 *
 * Templates over the storage type T, each instantiated in a file of its own (cuda_qgemv.cu BF16,
 * cuda_qgemv_f16.cu, cuda_qgemv_f32.cu): in one file they took 43 s to compile, 4x the next
 * longest file of the build. */
#ifndef DINFER_RUNTIME_CUDA_QGEMV_CUH
#define DINFER_RUNTIME_CUDA_QGEMV_CUH

#include <cuda_fp8.h>

#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_fusion.cuh"

#define QGEMV_WARPS 8
#ifndef QGEMV_ONE_ROW_FP8_BLOCKS
/* blocks an SM the one-row FP8 kernel is built for: 40 registers and no spill (46 left to the compiler:
 * H200 8B batch 1 318.9 against 320.6) */
#define QGEMV_ONE_ROW_FP8_BLOCKS 6
#endif
#define QGEMV_AHEAD 4 /* 16-byte loads in flight a lane (8 in every product: 90 registers, a fifth slower) */
/* ... and in the one-row FP8 products of at most 4 blocks an SM (the 8B's output and down products:
 * one wave of 512 blocks), where 64 registers cost no occupancy (DINFER_CUDA_QGEMV_DEEP; H100, 8B FP8
 * batch 1: 280 -> 284 tok/s, the output product alone 10.4 -> 9.7 us) */
#define QGEMV_DEEP 8
#define QGEMV_DEEP_BLOCKS 4 /* blocks an SM the deep form is built for, and the most a product it takes has */

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
 * multiple of E (or n_groups 1). F: FUSE_* bits, f what they need (cuda_fusion.cuh). A: 16-byte
 * loads in flight a lane, QGEMV_AHEAD or QGEMV_DEEP (one row of FP8 only, QGEMV_DEEP_BLOCKS an SM). */
template <typename T, int R, bool FP8, int BITS, int F, int A = QGEMV_AHEAD>
__global__ void __launch_bounds__(QGEMV_WARPS * 32, R == 1 && FP8 ? (A > QGEMV_AHEAD ? QGEMV_DEEP_BLOCKS : QGEMV_ONE_ROW_FP8_BLOCKS) : 1)
    qgemv_kernel(T *out, const T *x, const uint8_t *codes, const float *scales, const uint16_t *zeros, const T *bias,
                 fusion f, int n, int N, int K, int group, int n_groups)
{
    constexpr int E = BITS == 4 ? 32 : 16; /* codes a 16-byte load holds */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    bool valid;
    const int row = fused_row<F, QGEMV_WARPS>(f, N, warp, &valid);
    if ((F & (FUSE_SILU | FUSE_RESIDUAL | FUSE_ROPE)) == 0 && !valid) /* those three meet at a barrier */
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
    /* A loads in flight a lane in one set of registers, each slot loaded again once its codes are
     * used (a current and a next set of 4 held 64 registers at one FP8 row: 4 blocks an SM); the first
     * loads go out before pdl_wait (the codes are constant) */
    const rope_angles<F, R> ra(f, row, n);
    uint4 buf[A];
    float buf_s[A], buf_z[A];
#pragma unroll
    for (int u = 0; u < A; u++) {
        buf[u] = lane + 32 * u < loads ? __ldg(wv + lane + 32 * u) : make_uint4(0, 0, 0, 0);
        scale_of(lane + 32 * u, buf_s[u], buf_z[u]);
    }
    pdl_wait();
    pdl_trigger();
    for (int j0 = lane; j0 < loads; j0 += 32 * A) {
#pragma unroll
        for (int u = 0; u < A; u++) {
            const int j = j0 + 32 * u;
            if (j < loads) {
                const int k = j * E;
                const float s = buf_s[u];
                float w[E];
                dequant16<FP8, BITS>(buf[u], FP8 ? 0.0f : buf_z[u], w);
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
                const int jn = j + 32 * A;
                buf[u] = jn < loads ? __ldg(wv + jn) : make_uint4(0, 0, 0, 0);
                scale_of(jn, buf_s[u], buf_z[u]);
            }
        }
    }
    fused_ahead_issue(f);
    cuda_trace_mark(); /* the first warp's row done */
    fused_store<T, R, F, QGEMV_WARPS>(out, acc, bias, f, n, N, K, row, valid, ra);
    cuda_trace_end();
}

/* The one-row FP8 gate/up product (a scale a row), a gate row and its up row a warp
 * (DINFER_CUDA_GEMV_PAIR, on by default). A warp a row streams an FP8 row of the 8B shape (4 KB) as
 * 8 loads a lane: its loads in flight ramp up and drain for every 8, and the blocks turn over after
 * a few round trips. Here each lane loads the same columns of both rows together (one pipeline twice
 * as long), the activations loaded and converted once for both, and the SiLU-multiply needs no
 * barrier between warps. Measured on an H100 (bench_matmul --fused, 8B shape, one row): gate/up 46.5
 * -> 43.4 us (84% -> 91% of the copy bandwidth); the FP8 QKV product and every BF16 product were
 * slower paired (BF16 gate/up 76.8 -> 79.3 us on the 8B shape, 24.2 -> 25.2 on the 1B's), so they
 * keep a warp a row. Like the other kernels' SiLU-multiply products, it adds no bias. */
#define PAIR_WARPS 8
#ifndef PAIR_AHEAD
#define PAIR_AHEAD 3  /* 16-byte loads of each row in flight a lane (2 at 6 blocks an SM: gate/up 44.2 us) */
#define PAIR_BLOCKS 5 /* blocks an SM it is built for (48 registers) */
#endif

/* Warp `item`: gate row item and its up row item + N / 2 (N counts both), one output. K a multiple
 * of 16. */
template <typename T, int F>
__global__ void __launch_bounds__(PAIR_WARPS * 32, PAIR_BLOCKS)
    qgemv_pair_kernel(T *out, const T *x, const uint8_t *codes, const float *scales, fusion f, int N, int K)
{
    static_assert((F & FUSE_SILU) != 0, "a gate row and its up row");
    constexpr int E = 16; /* codes a 16-byte load holds */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, item = blockIdx.x * PAIR_WARPS + warp;
    if (item >= N / 2)
        return;
    const uint4 *pa = reinterpret_cast<const uint4 *>(codes + (int64_t)item * K),
                *pb = reinterpret_cast<const uint4 *>(codes + (int64_t)(item + N / 2) * K);
    const int loads = K / E;
    uint4 a[PAIR_AHEAD], b[PAIR_AHEAD];
#pragma unroll
    for (int u = 0; u < PAIR_AHEAD; u++) {
        const int j = lane + 32 * u;
        a[u] = j < loads ? __ldg(pa + j) : make_uint4(0, 0, 0, 0);
        b[u] = j < loads ? __ldg(pb + j) : make_uint4(0, 0, 0, 0);
    }
    pdl_wait();
    pdl_trigger();
    float acc_a = 0.0f, acc_b = 0.0f;
    for (int j0 = lane; j0 < loads; j0 += 32 * PAIR_AHEAD) {
#pragma unroll
        for (int u = 0; u < PAIR_AHEAD; u++) {
            const int j = j0 + 32 * u;
            if (j < loads) {
                float xv[E], wa[E], wb[E];
                load_vec<T, E>(x + (int64_t)j * E, xv);
                dequant16<true, 8>(a[u], 0.0f, wa);
                dequant16<true, 8>(b[u], 0.0f, wb);
#pragma unroll
                for (int e = 0; e < E; e++)
                    acc_a += wa[e] * xv[e], acc_b += wb[e] * xv[e];
                const int jn = j + 32 * PAIR_AHEAD;
                a[u] = jn < loads ? __ldg(pa + jn) : make_uint4(0, 0, 0, 0);
                b[u] = jn < loads ? __ldg(pb + jn) : make_uint4(0, 0, 0, 0);
            }
        }
    }
    fused_ahead_issue(f);
    cuda_trace_mark(); /* the first warp's pair done */
    float g = warp_sum(acc_a) * __ldg(scales + item), up = warp_sum(acc_b) * __ldg(scales + item + N / 2);
    if constexpr ((F & FUSE_NORM) != 0) {
        const float inv = fused_inv_rms(f, 0, K);
        g *= inv, up *= inv;
    }
    if (lane == 0)
        st(&out[item], g / (1.0f + expf(-g)) * up);
    cuda_trace_end();
}

template <typename T, bool FP8, int BITS, int F>
static void qgemv_as(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const T *bias, const fusion &f, int n)
{
    const int N = (int)w->rows, K = (int)w->cols;
    const unsigned blocks = fused_blocks<F>(N, QGEMV_WARPS);
    const rt_tensor_quant *q = &w->q;
    if constexpr (FP8 && (F & FUSE_SILU) != 0) /* the gate/up product of one row, a scale a row: paired */
        if (c->gemv_pair && n <= 1 && q->n_groups == 1) {
            const unsigned pairs = (unsigned)((N / 2 + PAIR_WARPS - 1) / PAIR_WARPS);
            fusion fa = f;
            fused_ahead_wave(c, fa, qgemv_pair_kernel<T, F>, pairs, PAIR_WARPS * 32, 0);
            cuda_launch(c, qgemv_pair_kernel<T, F>, pairs, PAIR_WARPS * 32, 0, (T *)out, (const T *)x,
                        (const uint8_t *)w->data, (const float *)q->scales, fa, N, K);
            return;
        }
#define QGEMV_LAUNCH(R, A)                                                                                       \
    do {                                                                                                         \
        fusion fa = f;                                                                                           \
        fused_ahead_wave(c, fa, qgemv_kernel<T, R, FP8, BITS, F, A>, blocks, QGEMV_WARPS * 32, 0);               \
        cuda_launch(c, qgemv_kernel<T, R, FP8, BITS, F, A>, blocks, QGEMV_WARPS * 32, 0, (T *)out, (const T *)x,  \
                    (const uint8_t *)w->data, (const float *)q->scales, (const uint16_t *)q->zeros, bias, fa, n, N, \
                    K, (int)q->group, (int)q->n_groups);                                                         \
    } while (0)
    if constexpr ((F & FUSE_ROPE) != 0) { /* one row of x: all cuda_qgemv_rope gives */
        QGEMV_LAUNCH(1, QGEMV_AHEAD);
    } else {
        if constexpr (FP8 && (F & FUSE_SILU) == 0) /* one wave of blocks: more loads in flight a lane */
            if (c->qgemv_deep && n <= 1 && blocks <= (unsigned)(QGEMV_DEEP_BLOCKS * c->n_sms)) {
                QGEMV_LAUNCH(1, QGEMV_DEEP);
                return;
            }
        if (n <= 1)
            QGEMV_LAUNCH(1, QGEMV_AHEAD);
        else if (n <= 2)
            QGEMV_LAUNCH(2, QGEMV_AHEAD);
        else if (n <= 4)
            QGEMV_LAUNCH(4, QGEMV_AHEAD);
        else if (n <= 8)
            QGEMV_LAUNCH(8, QGEMV_AHEAD);
        else
            QGEMV_LAUNCH(16, QGEMV_AHEAD);
    }
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
    fusion a = fused_args(f);
    fused_ahead(c, f, a);
    FUSED_DISPATCH(fused_bits(f), qgemv_fused, c, out, x, w, b, a, n);
}

/* The instantiations (one a file). */
void cuda_qgemv_bf16(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
                     const rt_fusion *f);
void cuda_qgemv_f16(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
                    const rt_fusion *f);
void cuda_qgemv_f32(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
                    const rt_fusion *f);

#endif
