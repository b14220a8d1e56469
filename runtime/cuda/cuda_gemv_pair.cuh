/* One row of x times a weight, two weight rows a warp (DINFER_CUDA_GEMV_PAIR, on by default): the
 * pair mode of the one-row weight-streaming kernels, taken by the FP8 gate/up product (cuda_qgemv.cuh).
 * A warp a row streams a row of 4 KB (the 8B shape's FP8 rows) as 8 loads a lane: the loads in flight
 * ramp up and drain for every 8, and the blocks turn over after a few round trips. Here each lane
 * loads the same columns of both rows together (one pipeline twice as long), the activations loaded
 * and converted once for both, and a gate row with its up row in one warp needs no barrier to meet
 * for the SiLU-multiply. Measured on an H100 (bench_matmul --fused, 8B shape, one row): FP8 gate/up
 * 46.5 -> 43.4 us (84% -> 91% of the copy bandwidth); the FP8 QKV product and every BF16 product were
 * slower paired (BF16 gate/up 76.8 -> 79.3 us on the 8B shape, 24.2 -> 25.2 on the 1B's), so they
 * keep a warp a row.
 *
 * WK: how a 16-byte load of the weight turns into E floats, and its BYTES a weight (cuda_qgemv.cuh's
 * PairFp8: e4m3 codes, a scale a row applied to the sum). The product's bias, if any, is not added
 * (the SiLU-multiply products of the other kernels take none either: cuda_fusion.cuh). */
#ifndef DINFER_RUNTIME_CUDA_GEMV_PAIR_CUH
#define DINFER_RUNTIME_CUDA_GEMV_PAIR_CUH

#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_fusion.cuh"

#define PAIR_WARPS 8
#ifndef PAIR_AHEAD
#define PAIR_AHEAD 3  /* 16-byte loads of each row in flight a lane (2 at 6 blocks an SM: gate/up 44.2 us) */
#define PAIR_BLOCKS 5 /* blocks an SM it is built for (48 registers) */
#endif

/* A warp's gate row `item` and its up row (item + N / 2: N counts both), one output. K a multiple of
 * WK::E. scales: a scale a row (NULL: none). */
template <typename T, typename WK, int F>
__global__ void __launch_bounds__(PAIR_WARPS * 32, PAIR_BLOCKS)
    gemv_pair_kernel(T *out, const T *x, const uint8_t *w, const float *scales, fusion f, int N, int K)
{
    static_assert((F & FUSE_SILU) != 0 && (F & FUSE_RESIDUAL) == 0, "a gate row and its up row");
    constexpr int E = WK::E;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, item = blockIdx.x * PAIR_WARPS + warp;
    if (item >= N / 2)
        return;
    const int64_t rbytes = (int64_t)K * WK::BYTES;
    const uint4 *pa = reinterpret_cast<const uint4 *>(w + (int64_t)item * rbytes),
                *pb = reinterpret_cast<const uint4 *>(w + (int64_t)(item + N / 2) * rbytes);
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
                WK::decode(a[u], wa);
                WK::decode(b[u], wb);
#pragma unroll
                for (int e = 0; e < E; e++)
                    acc_a += wa[e] * xv[e], acc_b += wb[e] * xv[e];
                const int jn = j + 32 * PAIR_AHEAD;
                a[u] = jn < loads ? __ldg(pa + jn) : make_uint4(0, 0, 0, 0);
                b[u] = jn < loads ? __ldg(pb + jn) : make_uint4(0, 0, 0, 0);
            }
        }
    }
    float g = warp_sum(acc_a), up = warp_sum(acc_b);
    if (scales)
        g *= __ldg(scales + item), up *= __ldg(scales + item + N / 2);
    if constexpr ((F & FUSE_NORM) != 0) {
        const float inv = fused_inv_rms(f, 0, K);
        g *= inv, up *= inv;
    }
    if (lane == 0)
        st(&out[item], g / (1.0f + expf(-g)) * up);
}

/* Launches the pair kernel for a one-row SiLU-multiply product (N counting the gate and up rows) when
 * c's pair mode is on; false when it does not take the product. */
template <typename T, typename WK, int F>
static bool gemv_pair(cuda_ctx *c, T *out, const T *x, const void *w, const float *scales, const fusion &f, int N,
                      int K)
{
    if constexpr ((F & FUSE_SILU) == 0) {
        return false;
    } else {
        if (!c->gemv_pair || K % WK::E != 0)
            return false;
        cuda_launch(c, gemv_pair_kernel<T, WK, F>, (unsigned)((N / 2 + PAIR_WARPS - 1) / PAIR_WARPS), PAIR_WARPS * 32,
                    0, out, x, (const uint8_t *)w, scales, f, N, K);
        return true;
    }
}

#endif
