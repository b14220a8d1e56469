/* out(n, N) = x(n, K) . W(N, K)^T (+ bias) on the FP8 tensor cores through cuBLASLt, for FP8 codes
 * with a scale a row (per tensor or channel) and BF16 activations, above the rows the weight-
 * streaming kernels take (cuda_qmatmul.cu takes every other quantized product).
 *
 * The activations are quantized to e4m3 a token at a time (its largest magnitude / 448), the
 * product of codes is taken in fp32, multiplied by its token's and its weight row's scales by
 * cuBLASLt itself from FP8_VEC_MIN_ROWS tokens (outer-vector scaling, with fast accumulation; below
 * that, or where a cuBLASLt has no algorithm for it, a pass over the output does it) and written in
 * BF16 (F16's range is too short for an unscaled product of codes, up to 448^2 K): W8A8, as vLLM
 * runs an FP8 checkpoint. DINFER_CUDA_FP8_GEMM=0 turns it off, DINFER_CUDA_FP8_VEC=0 takes the pass
 * at every size.
 *
 * Fused (backend.h's matmul_fused, up to FP8_FUSE_MAX_ROWS tokens): the product of codes goes to
 * the scratch and one pass (fp8_epilogue_kernel) scales it and does what rt_fusion says, the norm's
 * 1 / rms, the SiLU-multiply or the residual add with the next norm's xg and squares, in place of
 * the scaling pass and the op after it (RMSNorm, SiLU-multiply): the layer's chain at batch 64 as
 * at batch 1. */
#include <cublasLt.h>
#include <cuda_fp8.h>

#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_fusion.cuh"

/* Row t of x (n, K) as e4m3 codes and a scale (its largest magnitude / 448): a block a row, 16
 * bytes of x a load (K a multiple of 8); the second pass reads the row again from L1 / L2. */
template <typename T>
__global__ void quantize_rows_kernel(uint8_t *codes, float *scales, const T *x, int K)
{
    constexpr int V = 16 / sizeof(T);
    pdl_wait();
    pdl_trigger();
    __shared__ float red[32];
    const uint4 *xr = (const uint4 *)(x + (int64_t)blockIdx.x * K);
    const int nv = K / V;
    float amax = 0.0f;
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
        const uint4 u = xr[i];
        const T *e = (const T *)&u;
#pragma unroll
        for (int j = 0; j < V; j++)
            amax = fmaxf(amax, fabsf(ld(&e[j])));
    }
    amax = block_max(amax, red);
    const float s = amax > 0.0f ? amax / 448.0f : 1.0f, inv = 1.0f / s;
    if (threadIdx.x == 0)
        scales[blockIdx.x] = s;
    __nv_fp8x2_storage_t *cr = (__nv_fp8x2_storage_t *)(codes + (int64_t)blockIdx.x * K);
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
        const uint4 u = xr[i];
        const T *e = (const T *)&u;
        __nv_fp8x2_storage_t pk[V / 2];
#pragma unroll
        for (int j = 0; j < V / 2; j++)
            pk[j] = __nv_cvt_float2_to_fp8x2(make_float2(ld(&e[2 * j]) * inv, ld(&e[2 * j + 1]) * inv),
                                             __NV_SATFINITE, __NV_E4M3);
#pragma unroll
        for (int j = 0; j < V / 2; j++)
            cr[(int64_t)i * (V / 2) + j] = pk[j];
    }
}

/* out (n, N), the product of codes, times its token's and its weight row's scales (+ bias): only
 * where cuBLASLt cannot apply the scales itself. A thread 16 bytes of a row (N a multiple of 8), a
 * grid row a token. */
template <typename T>
__global__ void scale_out_kernel(T *out, const float *xs, const float *ws, const T *bias, int N)
{
    constexpr int V = 16 / sizeof(T);
    pdl_wait();
    pdl_trigger();
    const int col = (blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (col >= N)
        return;
    uint4 *o = reinterpret_cast<uint4 *>(out + (int64_t)blockIdx.y * N + col);
    uint4 u = *o, bu = bias ? *reinterpret_cast<const uint4 *>(bias + col) : make_uint4(0, 0, 0, 0);
    T *e = reinterpret_cast<T *>(&u);
    const T *be = reinterpret_cast<const T *>(&bu);
    const float s = xs[blockIdx.y];
#pragma unroll
    for (int j = 0; j < V; j++)
        st(&e[j], ld(&e[j]) * s * __ldg(ws + col + j) + (bias ? ld(&be[j]) : 0.0f));
    *o = u;
}

/* The fused products' pass (the scaling pass's place), outputs j .. j + 7 of token t: d (n, N) the
 * products of codes, s the token's scale (with the norm's 1 / rms), ws the weight rows'. F as
 * cuda_fusion.cuh's: out (n, N / 2) = silu(gate) * up, or the residual stream += the product with
 * the next norm's xg, or out = the product; the same roundings as the weight-streaming kernels'
 * (fused_out). v: the values stored that a next product reads (act, or xg with a next norm), as
 * stored; returns the squares of the residual stream's new values (with a next norm). */
template <int F>
__device__ __forceinline__ float epi8(__nv_bfloat16 *out, const __nv_bfloat16 *d, float s, const float *ws,
                                      const __nv_bfloat16 *bias, const fusion &f, int t, int j, int N, float *v)
{
    const __nv_bfloat16 *dr = d + (int64_t)t * N;
    float a[8], wa[8], sq = 0.0f;
    load_vec<__nv_bfloat16, 8>(dr + j, a);
    load_vec<float, 8>(ws + j, wa);
    if constexpr ((F & FUSE_SILU) != 0) {
        float b[8], wb[8];
        load_vec<__nv_bfloat16, 8>(dr + N / 2 + j, b);
        load_vec<float, 8>(ws + N / 2 + j, wb);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const float g = a[e] * s * wa[e], u = b[e] * s * wb[e];
            v[e] = __bfloat162float(__float2bfloat16(g / (1.0f + expf(-g)) * u));
        }
        store_vec<__nv_bfloat16, 8>(out + (int64_t)t * (N / 2) + j, v);
    } else {
        float y[8] = {};
        if (bias)
            load_vec<__nv_bfloat16, 8>(bias + j, y);
#pragma unroll
        for (int e = 0; e < 8; e++)
            y[e] += a[e] * s * wa[e];
        __nv_bfloat16 *o = out + (int64_t)t * N + j;
        if constexpr ((F & FUSE_RESIDUAL) != 0) {
            /* the sum rounded to storage: the next norm reads the residual stream as stored */
            const uint4 raw = *reinterpret_cast<const uint4 *>(o);
            const __nv_bfloat16 *r = reinterpret_cast<const __nv_bfloat16 *>(&raw);
#pragma unroll
            for (int e = 0; e < 8; e++)
                y[e] = __bfloat162float(__float2bfloat16(ld(&r[e]) + y[e]));
            store_vec<__nv_bfloat16, 8>(o, y);
            if (f.next_g) {
                load_vec<__nv_bfloat16, 8>((const __nv_bfloat16 *)f.next_g + j, v);
#pragma unroll
                for (int e = 0; e < 8; e++)
                    sq += y[e] * y[e], v[e] = __bfloat162float(__float2bfloat16(v[e] * y[e]));
                store_vec<__nv_bfloat16, 8>((__nv_bfloat16 *)f.xg + (int64_t)t * N + j, v);
            }
        } else {
            store_vec<__nv_bfloat16, 8>(o, y);
        }
    }
    return sq;
}

/* A thread 8 consecutive outputs of token blockIdx.y. */
template <int F>
__global__ void fp8_epilogue_kernel(__nv_bfloat16 *out, const __nv_bfloat16 *d, const float *xs, const float *ws,
                                    const __nv_bfloat16 *bias, fusion f, int N, int K)
{
    pdl_wait();
    pdl_trigger();
    const int t = blockIdx.y, outs = (F & FUSE_SILU) != 0 ? N / 2 : N;
    const int j = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
    float s = xs[t], v[8], sq = 0.0f;
    if constexpr ((F & FUSE_NORM) != 0)
        s *= fused_inv_rms(f, t, K);
    if (j < outs)
        sq = epi8<F>(out, d, s, ws, bias, f, t, j, N, v);
    if constexpr ((F & FUSE_RESIDUAL) != 0) {
        __shared__ float red[32];
        if (f.next_g) { /* every thread of the block: a barrier inside */
            sq = block_sum(sq, red);
            if (threadIdx.x == 0)
                atomicAdd(f.ss + t * RT_FUSION_SS_STRIDE, sq);
        }
    }
}

/* The same a block a token (blockIdx.x), the values the next product reads (act, or xg) then
 * quantized as quantize_rows_kernel does (the same codes and scale: its largest magnitude over the
 * stored values, / 448) into codes (n, outs) and scales: the next product's activations ready
 * (DINFER_CUDA_FP8_PREP=1). */
template <int F>
__global__ void fp8_epilogue_rows_kernel(__nv_bfloat16 *out, const __nv_bfloat16 *d, const float *xs, const float *ws,
                                         const __nv_bfloat16 *bias, fusion f, int N, int K, uint8_t *codes,
                                         float *scales)
{
    pdl_wait();
    pdl_trigger();
    __shared__ float red[32];
    const int t = blockIdx.x, outs = (F & FUSE_SILU) != 0 ? N / 2 : N;
    float s = xs[t], v[8], sq = 0.0f, amax = 0.0f;
    if constexpr ((F & FUSE_NORM) != 0)
        s *= fused_inv_rms(f, t, K);
    for (int j = threadIdx.x * 8; j < outs; j += blockDim.x * 8) {
        sq += epi8<F>(out, d, s, ws, bias, f, t, j, N, v);
#pragma unroll
        for (int e = 0; e < 8; e++)
            amax = fmaxf(amax, fabsf(v[e]));
    }
    if constexpr ((F & FUSE_RESIDUAL) != 0) {
        sq = block_sum(sq, red);
        if (threadIdx.x == 0)
            atomicAdd(f.ss + t * RT_FUSION_SS_STRIDE, sq);
    }
    amax = block_max(amax, red); /* its barriers: the row's values written, for every thread to read */
    const float sc = amax > 0.0f ? amax / 448.0f : 1.0f, inv = 1.0f / sc;
    if (threadIdx.x == 0)
        scales[t] = sc;
    const __nv_bfloat16 *src = (F & FUSE_SILU) != 0 ? out + (int64_t)t * outs : (const __nv_bfloat16 *)f.xg + (int64_t)t * N;
    __nv_fp8x2_storage_t *cr = (__nv_fp8x2_storage_t *)(codes + (int64_t)t * outs);
    for (int j = threadIdx.x * 8; j < outs; j += blockDim.x * 8) {
        const uint4 raw = *reinterpret_cast<const uint4 *>(src + j); /* written in this kernel: not __ldg */
        const __nv_bfloat16 *e = reinterpret_cast<const __nv_bfloat16 *>(&raw);
#pragma unroll
        for (int k = 0; k < 4; k++)
            cr[j / 2 + k] = __nv_cvt_float2_to_fp8x2(make_float2(ld(&e[2 * k]) * inv, ld(&e[2 * k + 1]) * inv),
                                                     __NV_SATFINITE, __NV_E4M3);
    }
}

/* The product's description: the weight's codes (transposed) times the tokens' codes. vec: cuBLASLt
 * multiplies each result by its weight row's and its token's scales (outer-vector scaling) and
 * accumulates without periodic promotion (fast accumulation, as vLLM's FP8 kernels run); NULL when
 * this cuBLASLt cannot describe it. */
static cublasLtMatmulDesc_t fp8_desc(bool vec)
{
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    const int8_t fast = 1;
    cublasLtMatmulDesc_t op = NULL;
    bool ok = cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) == CUBLAS_STATUS_SUCCESS;
    if (vec)
        ok = ok &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof mode) ==
                 CUBLAS_STATUS_SUCCESS &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof mode) ==
                 CUBLAS_STATUS_SUCCESS &&
             cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast) ==
                 CUBLAS_STATUS_SUCCESS;
    if (!ok && op) {
        cublasLtMatmulDescDestroy(op);
        op = NULL;
    }
    return op;
}

/* The descriptions a product made (any of them NULL), destroyed. */
static void lt_release(cublasLtMatmulDesc_t ops[2], cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                       cublasLtMatrixLayout_t ld)
{
    if (la)
        cublasLtMatrixLayoutDestroy(la);
    if (lb)
        cublasLtMatrixLayoutDestroy(lb);
    if (ld)
        cublasLtMatrixLayoutDestroy(ld);
    for (int v = 0; v < 2; v++)
        if (ops[v])
            cublasLtMatmulDescDestroy(ops[v]);
}

/* The cached algorithm of an (m, n, k) product, NULL when not known yet. */
static const cuda_fp8_algo *fp8_cached(const cuda_ctx *c, int m, int n, int k)
{
    for (int i = 0; i < c->n_fp8_algos; i++)
        if (c->fp8_algos[i].m == m && c->fp8_algos[i].n == n && c->fp8_algos[i].k == k)
            return &c->fp8_algos[i];
    return NULL;
}

/* b bytes rounded up to whole 256-byte blocks (where the scratch's parts start) */
static size_t whole256(size_t b)
{
    return (b + 255) / 256 * 256;
}

/* Bytes of the codes and scales of n tokens of K activations, each part in whole 256-byte blocks. */
static size_t codes_bytes(int n, int K)
{
    return whole256((size_t)n * K) + whole256((size_t)n * sizeof(float));
}

/* The scratch of a fused product of n tokens: their codes, their scales, then the products of codes
 * (n, N); with DINFER_CUDA_FP8_PREP, the top of the scratch kept for the activations an epilogue
 * readies for the next product (at most max(N, K) a token: this product's input or its output).
 * 0 when it does not fit (the caller does not fuse). */
static size_t fused_d_offset(const cuda_ctx *c, int n, int N, int K)
{
    const size_t need = codes_bytes(n, K) + (size_t)n * N * sizeof(__nv_bfloat16) +
                        (c->fp8_prep ? codes_bytes(n, N > K ? N : K) : 0);
    return need <= c->scratch_bytes ? codes_bytes(n, K) : 0;
}

#define FP8_VEC_MIN_ROWS 512
#define FP8_TUNE_FLUSH ((size_t)64 << 20) /* written between timed runs: more than the L2 holds */

/* Which of the heuristic's found algorithms runs the (m, n, k) product of weight a fastest, timed on
 * the device at load (the codes zero, the results into the scratch; the L2 flushed before each
 * run by writing c->tune_flush, as a step's weights arrive from memory): the heuristic's first is up to 1.4x slower than
 * the best at 64 tokens (bench_matmul, the 8B shape's output product on an H100). 0 (the first)
 * when it cannot time them: inside a capture, an epilogue's readied codes waiting in the scratch,
 * or too little scratch. */
static int fp8_tune(cuda_ctx *c, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                    cublasLtMatrixLayout_t ld, const void *a, int m, int n, int k,
                    const cublasLtMatmulHeuristicResult_t *res, int found)
{
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    const size_t dat = codes_bytes(n, k);
    if (found < 2 || !a || c->prep_src || cudaStreamIsCapturing(c->stream, &cap) != cudaSuccess ||
        cap != cudaStreamCaptureStatusNone || dat + (size_t)m * n * sizeof(__nv_bfloat16) > c->scratch_bytes)
        return 0;
    uint8_t *b = (uint8_t *)c->scratch;
    void *d = b + dat, *flush = c->tune_flush;
    cudaEvent_t e0 = NULL, e1 = NULL;
    int best = 0;
    float best_ms = 0.0f;
    const float one = 1.0f, zero = 0.0f;
    if (cudaEventCreate(&e0) == cudaSuccess && cudaEventCreate(&e1) == cudaSuccess &&
        cudaMemsetAsync(b, 0, (size_t)n * k, c->stream) == cudaSuccess)
        for (int i = 0; i < found; i++) {
            float ms = 0.0f;
            bool ok = true;
            for (int rep = 0; rep < 3 && ok; rep++) { /* the first run warms up */
                float t = 0.0f;
                ok = (!flush || cudaMemsetAsync(flush, rep, FP8_TUNE_FLUSH, c->stream) == cudaSuccess) &&
                     cudaEventRecord(e0, c->stream) == cudaSuccess &&
                     cublasLtMatmul(c->lt, op, &one, a, la, b, lb, &zero, d, ld, d, ld, &res[i].algo, c->blas_ws,
                                    CUDA_BLAS_WORKSPACE_BYTES, c->stream) == CUBLAS_STATUS_SUCCESS &&
                     cudaEventRecord(e1, c->stream) == cudaSuccess && cudaEventSynchronize(e1) == cudaSuccess &&
                     cudaEventElapsedTime(&t, e0, e1) == cudaSuccess;
                if (rep > 0)
                    ms += t;
            }
            if (ok && (best_ms == 0.0f || ms < best_ms))
                best = i, best_ms = ms;
        }
    (void)cudaGetLastError(); /* an algorithm that failed to run was passed over */
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    return best;
}

/* Token counts whose algorithms are timed at load: the decode graphs' row buckets (2^i and 3 x 2^i)
 * from 16 to FP8_FUSE_MAX_ROWS. */
static bool tuned_rows(int n)
{
    const int p = n % 3 == 0 ? n / 3 : n;
    return n >= 16 && n <= FP8_FUSE_MAX_ROWS && (p & (p - 1)) == 0;
}

/* cuBLASLt's algorithm for an (m, n, k) FP8 product of weight a, found once: with outer-vector
 * scaling where it has one (*vec), else plain; tune (at load): the fastest of the heuristic's offers
 * as fp8_tune times them (DINFER_CUDA_FP8_ALGO=i: its i-th instead, for measuring). The caller sets
 * the scales' pointers first (without them cuBLASLt 13.1 on the H200 finds no outer-vector
 * algorithm). */
static bool fp8_algo(cuda_ctx *c, cublasLtMatmulDesc_t ops[2], cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                     cublasLtMatrixLayout_t ld, const void *a, int m, int n, int k, bool tune,
                     cublasLtMatmulAlgo_t *algo, bool *vec)
{
    if (const cuda_fp8_algo *a = fp8_cached(c, m, n, k)) {
        *algo = a->algo;
        *vec = a->vec;
        return a->ok;
    }
    /* outer-vector scaling from FP8_VEC_MIN_ROWS tokens: below, the plain product and the pass won end
     * to end (H200, 8B shape, batch-64 decode: 12,511 / 12,620 tok/s against 11,674 / 11,698 with it on
     * every product, 12,387 / 12,308 with it on all but the down product, which bench_matmul had at
     * 42.9 us against 29.9; the 64 x 128 prefill 57,446 / 57,718 against 63,440 / 61,267 with it) */
    const int first = n >= FP8_VEC_MIN_ROWS ? 1 : 0;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res[CUDA_FP8_ALGO_PICKS];
    int found = 0, took = -1;
    const size_t ws = CUDA_BLAS_WORKSPACE_BYTES;
    if (cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws) ==
            CUBLAS_STATUS_SUCCESS)
        for (int v = first; v >= 0 && took < 0; v--)
            if (ops[v] && cublasLtMatmulAlgoGetHeuristic(c->lt, ops[v], la, lb, ld, ld, pref, CUDA_FP8_ALGO_PICKS,
                                                         res, &found) == CUBLAS_STATUS_SUCCESS && found > 0)
                took = v;
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    const bool ok = took >= 0;
    *vec = took == 1;
    int pick = 0;
    if (ok && c->fp8_pick >= 0)
        pick = found - 1 < c->fp8_pick ? found - 1 : c->fp8_pick;
    else if (ok && took == 0 && tune)
        pick = fp8_tune(c, ops[0], la, lb, ld, a, m, n, k, res, found);
    if (ok)
        *algo = res[pick].algo;
    /* every step of a server mixing prompts may bring new token counts: the oldest shape not timed
     * at load makes room */
    for (int i = 0; i < CUDA_FP8_ALGOS && c->fp8_next < c->n_fp8_algos && c->fp8_algos[c->fp8_next].tuned; i++)
        c->fp8_next = (c->fp8_next + 1) % CUDA_FP8_ALGOS;
    c->fp8_algos[c->fp8_next] = (cuda_fp8_algo){m, n, k, ok, *vec, tune, ok ? *algo : cublasLtMatmulAlgo_t{}};
    c->fp8_next = (c->fp8_next + 1) % CUDA_FP8_ALGOS;
    c->n_fp8_algos += c->n_fp8_algos < CUDA_FP8_ALGOS;
    return ok;
}

/* Where the readied codes of n tokens of K activations lie (the scratch's top), and their scales. */
static uint8_t *prep_codes(const cuda_ctx *c, int n, int K)
{
    return (uint8_t *)c->scratch + c->scratch_bytes - codes_bytes(n, K);
}

static float *prep_scales(const cuda_ctx *c, int n, int K)
{
    return (float *)(prep_codes(c, n, K) + whole256((size_t)n * K));
}

template <int F>
static void fp8_epilogue(cuda_ctx *c, void *out, const void *d, const float *xs, const rt_tensor *w,
                         const rt_tensor *bias, const fusion &f, int n)
{
    const int N = (int)w->rows, K = (int)w->cols, outs = (F & FUSE_SILU) != 0 ? N / 2 : N;
    const __nv_bfloat16 *b = bias && bias->data ? (const __nv_bfloat16 *)bias->data : nullptr;
    if constexpr ((F & (FUSE_SILU | FUSE_RESIDUAL)) != 0) {
        const void *next = (F & FUSE_SILU) != 0 ? out : f.next_g ? f.xg : nullptr; /* what the next product reads */
        if (c->fp8_prep && next) { /* its activations readied here */
            cuda_launch(c, fp8_epilogue_rows_kernel<F>, (unsigned)n, 512, 0, (__nv_bfloat16 *)out,
                        (const __nv_bfloat16 *)d, xs, (const float *)w->q.scales, b, f, N, K,
                        prep_codes(c, n, outs), prep_scales(c, n, outs));
            c->prep_src = next, c->prep_n = n, c->prep_k = outs;
            return;
        }
    }
    cuda_launch(c, fp8_epilogue_kernel<F>, dim3((unsigned)(outs / 8 + 255) / 256, (unsigned)n), 256, 0,
                (__nv_bfloat16 *)out, (const __nv_bfloat16 *)d, xs, (const float *)w->q.scales, b, f, N, K);
}

/* false when cuBLASLt has no algorithm for the shape (the caller takes the slabs). fz: fused (the
 * tokens in one pass, fused_d_offset's layout of the scratch), else NULL. */
template <typename T>
static bool fp8_gemm(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
                     const rt_fusion *fz)
{
    const int N = (int)w->rows, K = (int)w->cols;
    /* tokens a pass: their codes and scales within the scratch */
    int chunk = (int)(c->scratch_bytes / ((size_t)K + 64));
    chunk = fz ? n : (chunk / 16 * 16 < n ? chunk / 16 * 16 : n);
    uint8_t *xq = (uint8_t *)c->scratch;
    float *xs = (float *)(xq + whole256((size_t)chunk * K));
    T *d = fz ? (T *)((char *)c->scratch + fused_d_offset(c, n, N, K)) : nullptr;
    /* x's codes readied by the epilogue before (the one that wrote x, just now) */
    const bool ready = fz && c->prep_src == x && c->prep_n == n && c->prep_k == K;
    c->prep_src = nullptr;
    if (ready)
        xq = prep_codes(c, n, K), xs = prep_scales(c, n, K);
    const cudaDataType_t t = cuda_blas_type(c->dt);
    const bool has_bias = bias && bias->data;
    /* the outer-vector description only where fp8_algo may take it (a pass of FP8_VEC_MIN_ROWS tokens
     * or more needs n as many) */
    cublasLtMatmulDesc_t ops[2] = {fp8_desc(false), !fz && c->fp8_vec && n >= FP8_VEC_MIN_ROWS ? fp8_desc(true) : NULL};
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    bool ok = ops[0] && cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, K, N, K) == CUBLAS_STATUS_SUCCESS;
    for (int t0 = 0, laid = 0; ok && t0 < n; t0 += chunk) {
        const int rows = n - t0 < chunk ? n - t0 : chunk;
        if (rows != laid) { /* the first pass and a shorter last one */
            if (lb)
                cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(ld);
            lb = ld = NULL;
            ok = cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, K, rows, K) == CUBLAS_STATUS_SUCCESS &&
                 cublasLtMatrixLayoutCreate(&ld, t, N, rows, N) == CUBLAS_STATUS_SUCCESS;
            laid = rows;
        }
        /* the scales' pointers before the heuristic: without them it finds no algorithm for outer-vector
         * scaling (measured on the H200, cuBLASLt 13.1) */
        const void *wscale = w->q.scales;
        if (ops[1] &&
            (cublasLtMatmulDescSetAttribute(ops[1], CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &wscale, sizeof wscale) !=
                 CUBLAS_STATUS_SUCCESS ||
             cublasLtMatmulDescSetAttribute(ops[1], CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &xs, sizeof xs) !=
                 CUBLAS_STATUS_SUCCESS)) {
            ok = false;
            break;
        }
        cublasLtMatmulAlgo_t algo;
        bool vec = false;
        if (!ok || !fp8_algo(c, ops, la, lb, ld, w->data, N, rows, K, false, &algo, &vec)) {
            ok = false;
            break;
        }
        if (!ready)
            cuda_launch(c, quantize_rows_kernel<T>, (unsigned)rows, 256, 0, xq, xs, (const T *)x + (int64_t)t0 * K, K);
        const float one = 1.0f, zero = 0.0f;
        T *o = d ? d : (T *)out + (int64_t)t0 * N;
        const cublasStatus_t s = cublasLtMatmul(c->lt, ops[vec], &one, w->data, la, xq, lb, &zero, o, ld, o, ld,
                                                &algo, c->blas_ws, CUDA_BLAS_WORKSPACE_BYTES, c->stream);
        if (s != CUBLAS_STATUS_SUCCESS) {
            cuda_fail(c, "cublasLtMatmul (FP8)", __FILE__, __LINE__, cublasGetStatusString(s));
            break;
        }
        if (fz)
            FUSED_DISPATCH(fused_bits(fz), fp8_epilogue, c, out, d, xs, w, bias, fused_args(fz), n);
        else if (!vec)
            cuda_launch(c, scale_out_kernel<T>, dim3((unsigned)(N / (16 / sizeof(T)) + 255) / 256, (unsigned)rows), 256,
                        0, o, (const float *)xs, (const float *)w->q.scales,
                        has_bias ? (const T *)bias->data : (const T *)NULL, N);
        else if (has_bias)
            cuda_add_bias(c, o, bias->data, N, (int64_t)rows * N);
    }
    lt_release(ops, la, lb, ld);
    return ok;
}

static bool fp8_fits(const cuda_ctx *c, const rt_tensor *w)
{
    return c->fp8_gemm && c->dt == RT_BF16 && w->q.kind == RT_QK_FP8 && w->q.n_groups == 1 && w->cols % 16 == 0 &&
           w->rows % 16 == 0;
}

bool cuda_fp8_gemm(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n)
{
    return fp8_fits(c, w) && fp8_gemm<__nv_bfloat16>(c, out, x, w, bias, n, NULL);
}

/* Whether cuda_fp8_gemm_fused takes w at n tokens: the FP8 path, its scratch in one pass, and an
 * algorithm for the shape (found now, once a shape, as the product itself would; timed when tune). */
static bool fp8_fuses(cuda_ctx *c, const rt_tensor *w, int n, bool tune)
{
    const int N = (int)w->rows, K = (int)w->cols;
    if (!fp8_fits(c, w) || n > FP8_FUSE_MAX_ROWS || !fused_d_offset(c, n, N, K))
        return false;
    if (const cuda_fp8_algo *a = fp8_cached(c, N, n, K)) /* asked every step a layer a product */
        return a->ok && !a->vec;
    cublasLtMatmulDesc_t ops[2] = {fp8_desc(false), NULL};
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulAlgo_t algo;
    bool vec = false;
    const bool ok = ops[0] && cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, K, N, K) == CUBLAS_STATUS_SUCCESS &&
                    cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, K, n, K) == CUBLAS_STATUS_SUCCESS &&
                    cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, N, n, N) == CUBLAS_STATUS_SUCCESS &&
                    fp8_algo(c, ops, la, lb, ld, w->data, N, n, K, tune, &algo, &vec);
    lt_release(ops, la, lb, ld);
    return ok && !vec;
}

bool cuda_fp8_fuses(cuda_ctx *c, const rt_tensor *w, int n)
{
    return fp8_fuses(c, w, n, false);
}

/* At load (prepare_weight), once a weight shape: its algorithms for the decode graphs' row counts
 * found and timed now, while the device has memory free for fp8_tune's flush and no step is
 * captured; the first of a shape's weights stands for the rest. */
void cuda_fp8_prepare(cuda_ctx *c, const rt_tensor *w)
{
    bool todo = false;
    for (int n = 16; n <= FP8_FUSE_MAX_ROWS && !todo; n++)
        todo = tuned_rows(n) && !fp8_cached(c, (int)w->rows, n, (int)w->cols);
    if (c->fp8_pick >= 0 || !todo)
        return;
    /* one flush buffer for the shape's row counts (each allocation waits for the device) */
    if (cudaMalloc(&c->tune_flush, FP8_TUNE_FLUSH) != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: the timing just runs with the L2 as it is */
        c->tune_flush = NULL;
    }
    for (int n = 16; n <= FP8_FUSE_MAX_ROWS; n++)
        if (tuned_rows(n) && !fp8_cached(c, (int)w->rows, n, (int)w->cols))
            fp8_fuses(c, w, n, true);
    if (c->tune_flush)
        cudaFree(c->tune_flush);
    c->tune_flush = NULL;
}

/* backend.h's matmul_fused on the FP8 tensor cores (where cuda_fp8_fuses said so). */
void cuda_fp8_gemm_fused(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias,
                         const rt_fusion *f, int n)
{
    if (!fp8_gemm<__nv_bfloat16>(c, out, x, w, bias, n, f))
        cuda_fail(c, "the fused FP8 product", __FILE__, __LINE__, "cuBLASLt took no algorithm it had offered");
}
