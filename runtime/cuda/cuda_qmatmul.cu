/* out(n, N) = x(n, K) . W(N, K)^T (+ bias) for a quantized W (rt_tensor_quant: FP8 e4m3 or unsigned
 * integer codes of 8 or 4 bits, a scale per row and group of columns, zero points or not).
 *
 * Which kernel takes a product (this file chooses; the kernels are in their own files):
 *
 * Up to QGEMV_MAX_ROWS rows of x (decode at small batch): one pass over the codes. BF16 with int4
 * codes in groups of 128 columns or more (up to QMMA_MAX_ROWS rows), or FP8 codes at 2 rows or
 * more: on the tensor cores (cuda_qmma.cu: qmma_kernel; int4 of 17 rows on, qmma_tile_kernel).
 * Otherwise a warp per weight row, the codes dequantized in registers in fp32 (cuda_qgemv.cu).
 *
 * More rows, FP8 codes with a scale a row, BF16 activations: FP8 tensor cores through cuBLASLt
 * (cuda_fp8_gemm.cu).
 *
 * Every other product (int8, int4 above QMMA_MAX_ROWS or in smaller groups, FP8 of block scales,
 * F32, F16): the weights dequantized into the backend's scratch a slab of rows at a time, each slab
 * a cuBLAS product into its columns of out (here, with the loader's reordering of int4 codes). */
#include <cuda_fp8.h>

#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"

/* ---- int4 codes in the order the kernels read ---- */

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
 * RT_INT4_PAIRS order, in place, and their scales and zero points group-major; FP8 weights' shapes
 * get their cuBLASLt algorithms (cuda_fp8_prepare); every other weight as it is. A failed launch
 * stays on the backend: the loader's check after the weights reports it. */
extern "C" int cuda_prepare_weight(rt_backend *be, rt_tensor *w)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (w->q.kind == RT_QK_FP8)
        cuda_fp8_prepare(c, w);
    if (w->q.kind != RT_QK_INT || w->q.bits != 4 || w->layout != RT_ROWS || w->cols % 8)
        return 0;
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
    const uint8_t *cr = codes + r * (BITS == 4 ? K / 2 : K); /* int4: K even */
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

/* The same, 8 columns of one group a thread (K and the group multiples of 8): one load of their
 * codes (a 32-bit word of int4 in RT_INT4_PAIRS order, or 8 bytes of int8 / FP8), one scale and
 * zero, the 8 values stored at once (16 bytes of BF16): a warp writes 512 contiguous bytes where
 * dequant_kernel's threads wrote 2 bytes each. The values are dequant_kernel's, bit for bit. Grid:
 * (rows, word blocks of the row). */
template <typename T, bool FP8, int BITS>
__global__ void dequant8_kernel(T *out, const uint8_t *codes, const float *scales, const uint16_t *zeros, int64_t r0,
                                int N, int K, int group, int n_groups, bool pairs)
{
    pdl_wait(); /* out (the scratch) may still be read by the product ahead */
    pdl_trigger();
    const int wd = (int)(blockIdx.y * blockDim.x + threadIdx.x);
    if (wd >= K / 8)
        return;
    const int64_t r = r0 + blockIdx.x, gs = pairs ? N : 1;
    const int g = wd * 8 / group;
    const float s = (scales + (pairs ? r : r * n_groups))[g * gs];
    const float z = zeros ? (float)(zeros + (pairs ? r : r * n_groups))[g * gs] : (float)(1 << (BITS - 1));
    float v[8];
    if constexpr (BITS == 4) { /* column 2i at nibble i, 2i + 1 at nibble i + 4 */
        const uint32_t u = reinterpret_cast<const uint32_t *>(codes + r * (K / 2))[wd];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            v[2 * i] = ((float)((u >> (4 * i)) & 0xFu) - z) * s;
            v[2 * i + 1] = ((float)((u >> (4 * i + 16)) & 0xFu) - z) * s;
        }
    } else {
        const uint2 u = reinterpret_cast<const uint2 *>(codes + r * K)[wd];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const uint8_t b = (uint8_t)(((j < 4 ? u.x : u.y) >> (8 * (j & 3))) & 0xFFu);
            if constexpr (FP8)
                v[j] = __half2float(__half(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3))) * s;
            else
                v[j] = ((float)b - z) * s;
        }
    }
    union {
        T t[8];
        uint4 u[sizeof(T) / 2];
    } o;
#pragma unroll
    for (int j = 0; j < 8; j++)
        st(&o.t[j], v[j]);
    uint4 *dst = reinterpret_cast<uint4 *>(out + (int64_t)blockIdx.x * K + wd * 8);
#pragma unroll
    for (int i = 0; i < (int)(sizeof(T) / 2); i++)
        dst[i] = o.u[i];
}

/* Rows r0 .. r0 + rows - 1 of w's values into out: 8 columns a thread where a word holds them in
 * order or in pairs (by8), else a column a thread (int4 of RT_ROWS packs column j at nibble j). */
template <typename T, bool FP8, int BITS>
static void dequant(cuda_ctx *c, T *out, const rt_tensor *w, bool by8, int r0, int rows, int group)
{
    const int N = (int)w->rows, K = (int)w->cols;
    const rt_tensor_quant *q = &w->q;
    const dim3 grid = by8 ? dim3((unsigned)rows, (unsigned)((K / 8 + 255) / 256)) : dim3((unsigned)rows);
    cuda_launch(c, by8 ? dequant8_kernel<T, FP8, BITS> : dequant_kernel<T, FP8, BITS>, grid, 256, 0, out,
                (const uint8_t *)w->data, (const float *)q->scales, (const uint16_t *)q->zeros, (int64_t)r0, N, K,
                group, (int)q->n_groups, w->layout == RT_INT4_PAIRS);
}

template <typename T>
static void slabs(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, int n)
{
    const int N = (int)w->rows, K = (int)w->cols;
    const rt_tensor_quant *q = &w->q;
    int slab = (int)(c->scratch_bytes / ((size_t)K * sizeof(T)));
    /* whole tiles of 128 rows: a slab of ragged rows (1,170 of the 8B down product's 14,336 columns)
     * left every later slab's output unaligned for cuBLAS (int4 down at 8,192 rows 3.74 -> 1.25 ms) */
    if (slab > 128)
        slab = slab / 128 * 128;
    slab = slab < N ? slab : N;
    if (slab < 1) {
        cuda_fail(c, "dequantizing a weight", __FILE__, __LINE__, "a row does not fit the backend's scratch");
        return;
    }
    const float one = 1.0f, zero = 0.0f;
    const cudaDataType_t t = cuda_blas_type(c->dt);
    T *wd = (T *)c->scratch;
    const int group = (int)(q->n_groups == 1 ? K : q->group);
    const bool by8 = K % 8 == 0 && group % 8 == 0 && (uintptr_t)w->data % 8 == 0 &&
                     (q->kind == RT_QK_FP8 || q->bits == 8 || w->layout == RT_INT4_PAIRS);
    for (int r0 = 0; r0 < N; r0 += slab) {
        const int rows = N - r0 < slab ? N - r0 : slab;
        if (q->kind == RT_QK_FP8)
            dequant<T, true, 8>(c, wd, w, by8, r0, rows, group);
        else if (q->bits == 8)
            dequant<T, false, 8>(c, wd, w, by8, r0, rows, group);
        else
            dequant<T, false, 4>(c, wd, w, by8, r0, rows, group);
        CUDA_LAUNCHED(c);
        CUBLAS_CHECK(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, K, &one, wd, t, K, x, t, K, &zero,
                                     (T *)out + r0, t, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
}

template <typename T>
static void qmatmul(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n)
{
    if (cuda_qmma_fits(c, x, w, n)) {
        if (n <= QGEMV_MAX_ROWS || !cuda_qmma_tiles(c, out, x, w, bias, n))
            cuda_qmma(c, out, x, w, bias, n, (const rt_fusion *)NULL);
        return;
    }
    if (cuda_qgemv_fits(c, x, w, n)) {
        cuda_qgemv(c, out, x, w, bias, n, (const rt_fusion *)NULL);
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

/* Up to QGEMV_MAX_ROWS rows the weight-streaming kernels fuse; above, FP8 codes on cuBLASLt (int4 of
 * 17 to 64 rows stays unfused: its tile kernel, qmma_tiles, has no fusion). */
template <typename T>
static void qfused(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
                   const rt_fusion *f)
{
    if (n > QGEMV_MAX_ROWS)
        cuda_fp8_gemm_fused(c, out, x, w, bias, f, n);
    else if (cuda_qmma_fits(c, x, w, n))
        cuda_qmma(c, out, x, w, bias, n, f);
    else
        cuda_qgemv(c, out, x, w, bias, n, f);
}

bool cuda_qmatmul_fuses(cuda_ctx *c, const rt_tensor *w, int n)
{
    if (n > QGEMV_MAX_ROWS)
        return cuda_fp8_fuses(c, w, n);
    return cuda_qmma_fits(c, w->data, w, n) || cuda_qgemv_fits(c, w->data, w, n);
}

void cuda_qmatmul_fused(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias,
                        const rt_fusion *f, int n)
{
    CUDA_DISPATCH(c->dt, qfused, c, out, x, w, bias, n, f);
}
