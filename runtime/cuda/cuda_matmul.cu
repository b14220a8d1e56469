/* out(n, N) = x(n, K) . W(N, K)^T (+ bias), fp32 accumulation.
 *
 * Up to GEMV_MAX_ROWS rows of x (decode at small batch) the product is a pass over the weights,
 * which is all its cost: a warp per weight row streams it in 16-byte loads, each load used for
 * every row of x, then reduces across the warp. Larger products go to cuBLAS. Row-major on our side
 * is column-major transposed on cuBLAS's: out^T (N x n) = W^T^T (N x K) . x^T (K x n). */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_fusion.cuh"
#include "runtime/cuda/cuda_ops.h"

#define GEMV_MAX_ROWS 8
#define GEMV_WARPS 8
#ifndef GEMV_PRE
#define GEMV_PRE 2 /* a lane's loads issued before pdl_wait, even (4 and 8: the 1B step 2-3% slower) */
#endif

/* R: rows of x the kernel is built for (n <= R are computed). F: FUSE_* bits, f what they need
 * (cuda_fusion.cuh). S: warps a weight row (its K split S ways, the partial sums met in shared
 * memory; DINFER_CUDA_GEMV_SPLIT; not with FUSE_SILU, whose warps pair gate and up). */
template <typename T, int R, int F, int S = 1>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(T *out, const T *x, const T *w, const T *bias, fusion f, int n, int N, int K)
{
    constexpr int PER = 16 / (int)sizeof(T);
    static_assert(S == 1 || (F & FUSE_SILU) == 0, "a SiLU pair is two warps of one block");
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, part = warp % S;
    bool valid;
    int row;
    if constexpr (S == 1) {
        row = fused_row<F, GEMV_WARPS>(f, N, warp, &valid);
        if ((F & (FUSE_SILU | FUSE_RESIDUAL | FUSE_ROPE)) == 0 && !valid) /* those three meet at a barrier */
            return;
    } else {
        row = split_row<S, GEMV_WARPS>(N, warp, &valid);
    }
    const int kend = (part + 1) * (K / S); /* this warp's part of the row: [kend - K / S, kend) */
    const T *wr = w + (int64_t)row * K;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++)
        acc[r] = 0.0f;
    /* acc += the weights at k (and at k + 32 * PER) times x's */
    auto step2 = [&](const uint4 &a, const uint4 &b, int k) {
        float w0[PER], w1[PER];
        raw_to_float<T, PER>(&a, w0);
        raw_to_float<T, PER>(&b, w1);
#pragma unroll
        for (int r = 0; r < R; r++) {
            if (r < n) {
                float x0[PER], x1[PER];
                load_vec<T, PER>(x + (int64_t)r * K + k, x0);
                load_vec<T, PER>(x + (int64_t)r * K + k + 32 * PER, x1);
#pragma unroll
                for (int j = 0; j < PER; j++)
                    acc[r] += w0[j] * x0[j] + w1[j] * x1[j];
            }
        }
    };
    auto step1 = [&](const uint4 &a, int k) {
        float w0[PER];
        raw_to_float<T, PER>(&a, w0);
#pragma unroll
        for (int r = 0; r < R; r++) {
            if (r < n) {
                float x0[PER];
                load_vec<T, PER>(x + (int64_t)r * K + k, x0);
#pragma unroll
                for (int j = 0; j < PER; j++)
                    acc[r] += w0[j] * x0[j];
            }
        }
    };
    const uint4 *wv = reinterpret_cast<const uint4 *>(wr);
    /* 16-byte loads of the weight row: GEMV_PRE of a lane's issued before pdl_wait (weights are
     * constant), while the kernel ahead may still run, then four in flight a lane and step. Keep an
     * eye on ptxas -v here: this form holds 40 registers at one row (6 blocks an SM) where the
     * SiLU-fused variants of an earlier one held 46 (5), and the 1B step was 5-11% slower for it */
    int k = kend - K / S + lane * PER;
    const rope_angles<F, R> ra(f, row, n);
    uint4 pre[GEMV_PRE];
#pragma unroll
    for (int i = 0; i < GEMV_PRE; i++)
        pre[i] = k + i * 32 * PER < kend ? __ldg(wv + k / PER + 32 * i) : make_uint4(0, 0, 0, 0);
    pdl_wait();
    pdl_trigger();
#pragma unroll
    for (int i = 0; i < GEMV_PRE; i += 2) {
        if (k + 32 * PER < kend) {
            step2(pre[i], pre[i + 1], k);
            k += 64 * PER;
        } else if (k < kend) {
            step1(pre[i], k);
            k += 32 * PER;
        }
    }
    for (; k + 96 * PER < kend; k += 128 * PER) { /* four loads in flight a lane, then the pairs' order */
        const uint4 a0 = __ldg(wv + k / PER), a1 = __ldg(wv + k / PER + 32), a2 = __ldg(wv + k / PER + 64),
                    a3 = __ldg(wv + k / PER + 96);
        step2(a0, a1, k);
        step2(a2, a3, k + 64 * PER);
    }
    for (; k + 32 * PER < kend; k += 64 * PER)
        step2(__ldg(wv + k / PER), __ldg(wv + k / PER + 32), k);
    if (k < kend)
        step1(__ldg(wv + k / PER), k);
    if constexpr (S > 1)
        split_sum<R, S, GEMV_WARPS>(acc, valid);
    cuda_trace_mark(); /* the first warp's row done */
    fused_store<T, R, F, GEMV_WARPS>(out, acc, bias, f, n, N, K, row, valid, ra);
    cuda_trace_end();
}

template <int F, typename T>
static void gemv_rows(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const T *bias, const fusion &f, int n)
{
    const int N = (int)w->rows, K = (int)w->cols;
    const unsigned blocks = fused_blocks<F>(N, GEMV_WARPS);
#define GEMV_LAUNCH(R)                                                                                             \
    cuda_launch(c, gemv_kernel<T, R, F>, blocks, GEMV_WARPS * 32, 0, (T *)out, (const T *)x, (const T *)w->data, bias, \
                f, n, N, K)
    if constexpr ((F & FUSE_ROPE) != 0) {
        GEMV_LAUNCH(1); /* one row of x: all cuda_matmul_rope gives */
    } else {
        const int S = c->gemv_split;
        if constexpr ((F & FUSE_SILU) == 0) {
            /* a row split over S warps: one row of x, a product of fewer than 3 blocks an SM (the 1B's
             * QKV, output and down products: ~2 blocks of 8 warps an SM resident, too few loads in
             * flight; the 8B's have 512 and more), whole loads in each part */
            if (S > 1 && n <= 1 && blocks < 3u * (unsigned)c->n_sms && K % (S * (16 / (int)sizeof(T))) == 0) {
                const unsigned sb = (unsigned)((N + GEMV_WARPS / S - 1) / (GEMV_WARPS / S));
                if (S == 2)
                    cuda_launch(c, gemv_kernel<T, 1, F, 2>, sb, GEMV_WARPS * 32, 0, (T *)out, (const T *)x,
                                (const T *)w->data, bias, f, n, N, K);
                else
                    cuda_launch(c, gemv_kernel<T, 1, F, 4>, sb, GEMV_WARPS * 32, 0, (T *)out, (const T *)x,
                                (const T *)w->data, bias, f, n, N, K);
                return;
            }
        }
        if (n <= 1)
            GEMV_LAUNCH(1);
        else if (n <= 2)
            GEMV_LAUNCH(2);
        else if (n <= 4)
            GEMV_LAUNCH(4);
        else
            GEMV_LAUNCH(8);
    }
#undef GEMV_LAUNCH
}

template <typename T>
static void gemv(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
                 const rt_fusion *f)
{
    const T *b = bias && bias->data ? (const T *)bias->data : NULL;
    FUSED_DISPATCH(fused_bits(f), gemv_rows, c, out, x, w, b, fused_args(f), n);
}

/* Whether the weight-streaming kernel takes this product: few rows, whole 16-byte loads. */
static bool gemv_fits(const cuda_ctx *c, const void *out, const void *x, const rt_tensor *w, int n)
{
    const size_t es = rt_dtype_size(c->dt);
    return c->gemv && n <= GEMV_MAX_ROWS && (size_t)w->cols * es % 16 == 0 && (uintptr_t)x % 16 == 0 &&
           (uintptr_t)w->data % 16 == 0 && (uintptr_t)out % es == 0;
}

template <typename T>
__global__ void add_bias_kernel(T *out, const T *bias, int64_t N, int64_t total)
{
    pdl_wait();
    pdl_trigger();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        st(&out[i], ld(&out[i]) + ld(&bias[i % N]));
}

template <typename T>
static void add_bias(cuda_ctx *c, void *out, const void *bias, int64_t N, int64_t total)
{
    cuda_launch(c, add_bias_kernel<T>, cuda_blocks((size_t)total, 256), 256, 0, (T *)out, (const T *)bias, N, total);
}

void cuda_add_bias(cuda_ctx *c, void *out, const void *bias, int64_t N, int64_t total)
{
    CUDA_DISPATCH(c->dt, add_bias, c, out, bias, N, total);
}

extern "C" void cuda_matmul(rt_backend *be, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (n <= 0)
        return;
    if (w->q.kind) {
        cuda_qmatmul(c, out, x, w, bias, n);
        return;
    }
    if (gemv_fits(c, out, x, w, n)) {
        CUDA_DISPATCH(c->dt, gemv, c, out, x, w, bias, n, (const rt_fusion *)NULL);
        CUDA_LAUNCHED(c);
        return;
    }
    const int N = (int)w->rows, K = (int)w->cols;
    const float one = 1.0f, zero = 0.0f;
    const cudaDataType_t t = cuda_blas_type(c->dt);
    /* CUBLAS_COMPUTE_32F: fp32 accumulation, and no TF32 shortcut for fp32 inputs */
    CUBLAS_CHECK(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, n, K, &one, w->data, t, K, x, t, K, &zero,
                                 out, t, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (bias && bias->data) {
        cuda_add_bias(c, out, bias->data, (int64_t)N, (int64_t)N * n);
        CUDA_LAUNCHED(c);
    }
}

/* The LM head of more rows than the weight-streaming kernel takes, 16-bit weights: cuBLAS's fp32
 * accumulators go out as they are, which spares the 16-bit logits' write and to_f32's pass over
 * them (at 64 rows of a 128,256-word vocabulary: 16 MB written, then 16 MB read and 33 MB written). */
extern "C" bool cuda_matmul_f32(rt_backend *be, float *out, const void *x, const rt_tensor *w, int n)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (!c->logits_f32 || n <= 0 || w->q.kind || c->dt == RT_F32 || gemv_fits(c, out, x, w, n))
        return false;
    const int N = (int)w->rows, K = (int)w->cols;
    const float one = 1.0f, zero = 0.0f;
    const cudaDataType_t t = cuda_blas_type(c->dt);
    const cublasStatus_t st = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, n, K, &one, w->data, t, K, x, t, K,
                                           &zero, out, CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) /* sticky: check reports it */
        cuda_fail(c, "cublasGemmEx (fp32 logits)", __FILE__, __LINE__, cublasGetStatusString(st));
    return true;
}

extern "C" bool cuda_fuses(rt_backend *be, const rt_tensor *w, int n)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (!c->fuse || n <= 0)
        return false;
    /* the chain's activations are the workspace's buffers, 16-byte aligned like the weights */
    return w->q.kind ? cuda_qmatmul_fuses(c, w, n) : gemv_fits(c, w->data, w->data, w, n);
}

extern "C" void cuda_matmul_fused(rt_backend *be, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias,
                                  const rt_fusion *f, int n)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (w->q.kind)
        cuda_qmatmul_fused(c, out, x, w, bias, f, n);
    else
        CUDA_DISPATCH(c->dt, gemv, c, out, x, w, bias, n, f);
    CUDA_LAUNCHED(c);
}

/* The chain's QKV product with rope_kv_write's work in its last step (backend.h's matmul_rope): one
 * token (a decode step at batch 1) at BF16, a block's rows pairs of a head's row and its rotation
 * partner (cuda_fusion.cuh's rope_row), so that each pair meets in one block. Not taken: more rows
 * (their kernels' other forms would each need the epilogue), 16-bit caches other than the
 * activations' type, an FP8 cache's dynamic scales (a head's largest magnitude, over the blocks of
 * its rows: rope_kv_fp8_kernel), and heads whose half is not a whole number of 8 pairs. The RoPE
 * kernel's launch and its place on the layer's chain are what this saves (DINFER_CUDA_QKV_ROPE).
 * On by default (8B batch 1 on an H100: AWQ int4 on the tensor-core kernel 419.5 -> 425.6 tok/s,
 * FP8 on the weight-streaming one 297.3 -> 301.3 once the rotation's angles left its registers,
 * BF16 184.0 -> 184.8). */
extern "C" bool cuda_matmul_rope(rt_backend *be, void *q, const void *x, const rt_tensor *w, const rt_tensor *bias,
                                 const rt_fusion *f, int n, const float *inv_freq, const rt_attn_batch *b,
                                 const rt_attn_shape *s, rt_kv_layer *kv)
{
    cuda_ctx *c = cuda_ctx_of(be);
    const int hd = s->head_dim;
    if (!c->qkv_rope || n != 1 || c->dt != RT_BF16 || !f || !f->norm_ss || f->residual || f->silu || hd % 16 != 0 ||
        w->rows != (int64_t)(s->n_heads + 2 * s->n_kv_heads) * hd || (kv->k_scale && kv->scale_stride != 0) ||
        !cuda_fuses(be, w, n))
        return false;
    fusion a = fused_args(f);
    a.rope = {q, kv->k, kv->v, inv_freq, b->pos, b->slot, kv->k_scale, kv->v_scale, s->n_heads, s->n_kv_heads, hd};
    const __nv_bfloat16 *bb = bias && bias->data ? (const __nv_bfloat16 *)bias->data : nullptr;
    if (!w->q.kind)
        gemv_rows<FUSE_NORM | FUSE_ROPE, __nv_bfloat16>(c, nullptr, x, w, bb, a, 1);
    else if (!cuda_qmma_rope(c, x, w, bb, a))
        cuda_qgemv_rope(c, x, w, bb, a);
    cuda_launched(c);
    return true;
}
