/* Shared pieces of the CUDA backend: the check macros, the backend's context, element loads and
 * stores in fp32 whatever the storage type, block reductions, and the dtype dispatch. */
#ifndef DINFER_RUNTIME_CUDA_COMMON_CUH
#define DINFER_RUNTIME_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include <type_traits>

extern "C" {
#include "base/err.h"
#include "runtime/backend.h"
}

/* both within the memory plan's 512 MiB reserve (launch/job.c) */
#define CUDA_SCRATCH_BYTES ((size_t)32 << 20)
#define CUDA_BLAS_WORKSPACE_BYTES ((size_t)32 << 20)

/* cuBLASLt's algorithm for one shape of FP8 product (cuda_fp8_gemm.cu), found once */
typedef struct cuda_fp8_algo {
    int m, n, k;
    bool ok;  /* false: cuBLASLt has none (the product takes another path) */
    bool vec; /* it applies the scales itself (outer-vector scaling, fast accumulation) */
    bool tuned; /* timed at load (kept when the cache makes room) */
    cublasLtMatmulAlgo_t algo;
} cuda_fp8_algo;
#define CUDA_FP8_ALGOS 128
#define CUDA_FP8_ALGO_PICKS 16 /* the heuristic's algorithms timed; DINFER_CUDA_FP8_ALGO below this */

/* Keys: a split of a decode context shorter than this costs more to combine than it saves (H100, batch
 * 1, prompt 128, 128 new: 1B 888.8 -> 901.9 tok/s at 32 against 64, 8B FP8 279.6 -> 283.3; 16 below 32
 * on the 1B). A multiple of 16 (cuda_backend.cu's switch). */
#define FA_MIN_SPLIT 32

typedef struct cuda_ctx {
    int device;
    int rank;              /* for messages */
    rt_dtype dt;           /* activations, weights and KV cache */
    cudaStream_t stream;
    cublasHandle_t blas;
    int n_sms;             /* streaming multiprocessors of the device */
    void *scratch;         /* (scratch_bytes) ops' temporary results within one op (split attention) */
    size_t scratch_bytes;
    void *blas_ws;         /* cuBLAS's workspace */
    bool gemv;             /* products of few rows use the weight-streaming kernel (DINFER_CUDA_GEMV=0: cuBLAS) */
    int gemv_split;        /* its one-row products of few blocks: warps a weight row (DINFER_CUDA_GEMV_SPLIT: 1, 2 (default) or 4) */
    bool gemv_pair;        /* the one-row FP8 gate/up product two weight rows a warp (DINFER_CUDA_GEMV_PAIR=0 off) */
    bool qgemv_deep;       /* one-row FP8 products of one wave: 8 loads in flight a lane, not 4 (DINFER_CUDA_QGEMV_DEEP=0 off) */
    int ahead, ahead_mb;   /* products asking L2 for the next one's weights as they end (DINFER_CUDA_AHEAD: 1 output,
                            * 2 down, 4 gate/up; 0), at most ahead_mb MB (cuda_fusion.cuh's fused_ahead) */
    bool fuse;             /* products of few rows take their norm, residual add or SiLU (DINFER_CUDA_FUSE=0 off) */
    bool logits_f32;       /* cuBLAS writes the LM head's logits in fp32 (DINFER_CUDA_LOGITS_F32=0: a pass converts) */
    bool pdl;              /* kernels launch before the one ahead of them ends (Hopper on; DINFER_CUDA_PDL=0 off) */
    bool fp8_gemm;         /* FP8 weights take FP8 tensor cores above the GEMV's rows (Hopper on; DINFER_CUDA_FP8_GEMM=0 off) */
    bool fp8_vec;          /* cuBLASLt scales its FP8 products itself where it can (DINFER_CUDA_FP8_VEC=0: a pass does) */
    bool fp8_prep;         /* a fused FP8 product's epilogue quantizes the next one's activations (DINFER_CUDA_FP8_PREP=1) */
    const void *prep_src;  /* whose codes an epilogue readied (cuda_fp8_gemm.cu), for prep_n tokens of prep_k */
    int prep_n, prep_k;
    bool qmma;             /* BF16 products of few rows with int4 or FP8 codes on the tensor cores (DINFER_CUDA_QMMA=0 off) */
    bool qmma_fp8;         /* FP8 codes there too (DINFER_CUDA_QMMA_FP8=0: the fp32 kernel) */
    bool qmma_xs;          /* one token's activations staged with the codes there (DINFER_CUDA_QMMA_XS=0 off) */
    bool qmma_wide;        /* one-token int4 products of few long tiles: 12 warps a tile, not 8 (DINFER_CUDA_QMMA_WIDE=0 off) */
    cublasLtHandle_t lt;
    cuda_fp8_algo fp8_algos[CUDA_FP8_ALGOS];
    int n_fp8_algos, fp8_next; /* shapes known; where the next one goes (the oldest, once all are in use) */
    int fp8_pick;          /* which of cuBLASLt's heuristic's FP8 algorithms (DINFER_CUDA_FP8_ALGO; -1: the fastest, timed) */
    void *tune_flush;      /* while cuda_fp8_prepare times them: 64 MB written between runs to flush the L2 (or NULL) */
    bool failed;           /* a call failed: err holds the first failure (sticky) */
    base_err err;
    /* measuring (DINFER_CUDA_STEP_GAPS=1): each graph replay between two events, the device's time
     * in each replay and idle between them summed, printed when the backend goes */
    bool gaps;
    cudaEvent_t gap_start[3], gap_end[3];
    bool gap_alone[3];         /* replay i's slot: nothing was launched between replay i - 1 and it */
    unsigned long n_launches, gap_launches; /* cuda_launch's kernels; their count after the last replay */
    int gap_n, gap_idles;
    double gap_busy_ms, gap_idle_ms;
    cudaEvent_t marks[2];      /* download_mark's slots (created on first use) */
    int fa_min_split;          /* the fewest keys a split of a decode context (FA_MIN_SPLIT; DINFER_CUDA_FA_MIN_SPLIT) */
    bool fa_cluster;           /* a split context's parts combined in a cluster of its splits (DINFER_CUDA_FA_CLUSTER=0 off) */
    bool fa_pre;               /* a decode step's earlier keys loaded before the wait (DINFER_CUDA_FA_PRE=0 off) */
    bool rope_fuse;            /* a decode step's RoPE and KV write in its attention (DINFER_CUDA_ROPE_FUSE=1) */
    bool qkv_rope;             /* the RoPE and KV write in the QKV product's last step (DINFER_CUDA_QKV_ROPE=0 off) */
    struct cuda_trace_buf *trace; /* DINFER_CUDA_TRACE builds, DINFER_CUDA_TRACE_OUT set: the records' buffer */
    int trace_replay, trace_from, trace_to; /* graph replays so far; those recorded: [from, to) */
    char *trace_out;
} cuda_ctx;

/* The step trace (cuda_trace.cu): read DINFER_CUDA_TRACE_OUT (an error where it is set in a build
 * without tracing), switch the recording before each graph replay, write the file at the end. */
int cuda_trace_open(cuda_ctx *c, base_err *err);
void cuda_trace_replay(cuda_ctx *c);
void cuda_trace_close(cuda_ctx *c);

/* The product with a quantized weight (cuda_qmatmul.cu), and out(total / N, N) += bias (N). */
void cuda_qmatmul(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n);
void cuda_add_bias(cuda_ctx *c, void *out, const void *bias, int64_t N, int64_t total);
/* The product of FP8 weights with a scale a row and BF16 activations on the FP8 tensor cores
 * (cuBLASLt, cuda_fp8_gemm.cu); false, out untouched, where it does not take it (the backend not
 * BF16, other weights or shapes, DINFER_CUDA_FP8_GEMM=0, no cuBLASLt algorithm). */
bool cuda_fp8_gemm(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n);
/* The same fused (backend.h's matmul_fused) from QGEMV_MAX_ROWS + 1 to FP8_FUSE_MAX_ROWS tokens, where
 * cuda_fp8_fuses says so (its scratch fits, cuBLASLt has an algorithm). */
#define FP8_FUSE_MAX_ROWS 256
bool cuda_fp8_fuses(cuda_ctx *c, const rt_tensor *w, int n);
void cuda_fp8_prepare(cuda_ctx *c, const rt_tensor *w);
void cuda_fp8_gemm_fused(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias,
                         const rt_fusion *f, int n);
/* backend.h's fuses and matmul_fused for a quantized w (the chain's activations 16-byte aligned). */
bool cuda_qmatmul_fuses(cuda_ctx *c, const rt_tensor *w, int n);
void cuda_qmatmul_fused(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias,
                        const rt_fusion *f, int n);
/* The kernels cuda_qmatmul chooses from. The weight-streaming one (cuda_qgemv.cu): up to
 * QGEMV_MAX_ROWS rows of x, any storage type, fused as f says (NULL: not). */
#define QGEMV_MAX_ROWS 16
bool cuda_qgemv_fits(const cuda_ctx *c, const void *x, const rt_tensor *w, int n);
void cuda_qgemv(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
                const rt_fusion *f);
/* The tensor-core ones (cuda_qmma.cu), BF16: int4 codes up to QMMA_MAX_ROWS rows, FP8 codes of 2 to
 * QGEMV_MAX_ROWS; cuda_qmma_tiles for int4 above QGEMV_MAX_ROWS (false, nothing done, where its
 * partial sums do not fit the scratch). */
#define QMMA_MAX_ROWS 64
bool cuda_qmma_fits(const cuda_ctx *c, const void *x, const rt_tensor *w, int n);
void cuda_qmma(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n,
               const rt_fusion *f);
bool cuda_qmma_tiles(cuda_ctx *c, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n);

/* Keeps the first failure of the backend: "rank R: CALL failed at FILE:LINE: MESSAGE". */
void cuda_fail(cuda_ctx *c, const char *call, const char *file, int line, const char *msg);

static inline cuda_ctx *cuda_ctx_of(rt_backend *be)
{
    return (cuda_ctx *)be->impl;
}

/* A failed CUDA or cuBLAS call inside an op cannot be handed back through the op table (ops return
 * nothing): the first failure is kept on the backend, naming the call, where and the rank, and the
 * op returns. The forward pass asks the backend once per step (ops->check) and fails the step;
 * the executable decides to stop the job. Library code never exits. */
#define CUDA_CHECK(ctx, call)                                                     \
    do {                                                                          \
        cudaError_t e_ = (call);                                                  \
        if (e_ != cudaSuccess) {                                                  \
            cuda_fail((ctx), #call, __FILE__, __LINE__, cudaGetErrorString(e_)); \
            return;                                                               \
        }                                                                         \
    } while (0)

#define CUBLAS_CHECK(ctx, call)                                                      \
    do {                                                                             \
        cublasStatus_t s_ = (call);                                                  \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                           \
            cuda_fail((ctx), #call, __FILE__, __LINE__, cublasGetStatusString(s_)); \
            return;                                                                  \
        }                                                                            \
    } while (0)

/* After every launch: a bad configuration shows up here, not at the next sync. */
#define CUDA_LAUNCHED(ctx) CUDA_CHECK(ctx, cudaGetLastError())
/* The same as a function, for callers that return a value (CUDA_CHECK returns nothing). */
static inline void cuda_launched(cuda_ctx *c)
{
    CUDA_LAUNCHED(c);
}

/* Programmatic dependent launch (compute capability 9.0 on): every kernel of the backend is
 * launched by cuda_launch, so it may start while the kernel ahead of it in the stream still runs;
 * it calls pdl_wait() before it touches any memory another kernel writes or reads (that waits for
 * the kernel ahead to finish and its writes to show), and may only read constant data (weights)
 * before. pdl_trigger() lets the next kernel launch once every block of this one has called it:
 * its blocks then sit resident at their own pdl_wait, and the launch gap between the two is gone.
 * Both are no-ops for a kernel launched the ordinary way. */
#ifdef DINFER_CUDA_TRACE
/* Measuring a step's kernels as they run (built with -DDINFER_CUDA_TRACE=ON; DINFER_CUDA_TRACE_OUT
 * names the file, cuda_trace.cu): each block's first thread records when it reached pdl_wait and
 * when it passed it (the kernel ahead done), and, in a kernel that calls cuda_trace_end, when the
 * block's work ended, on the global nanosecond timer, with the launch (%gridid: the same for a graph
 * node's every replay), block, SM and grid shape. A record's slot is taken before the wait, from
 * its SM's own counter (one counter for all cost a step ~15%), so that little lands after it.
 * tests/gpu/trace_step.py reads the file. Off (the default build), none of it is compiled. */
#define CUDA_TRACE_SMS 160 /* SM ids recorded (%smid below this) */
typedef struct cuda_trace_rec {
    unsigned long long t_pre, t_post, t_end, grid; /* t_end 0: no cuda_trace_end */
    unsigned long long t_mark, t_mark2;            /* cuda_trace_mark's and cuda_trace_mark2's times (0: none) */
    unsigned block;
    unsigned short sm, pad;
    unsigned short gx, gy, gz, bx;
} cuda_trace_rec;
typedef struct cuda_trace_buf {
    unsigned on, cap, pad[30];          /* records kept while on, up to cap an SM */
    unsigned n[CUDA_TRACE_SMS][32];     /* an SM's records taken (past cap too), a cache line each */
    cuda_trace_rec rec[1];              /* SM s's at s * cap */
} cuda_trace_buf;
/* each translation unit's own pointer to the buffer (no relocatable device code), set by the
 * function it registers (cuda_trace.cu calls them all) */
static __device__ cuda_trace_buf *cuda_trace_dev;
void cuda_trace_register(void (*arm)(cuda_trace_buf *));
[[maybe_unused]] static const int cuda_trace_registered = (cuda_trace_register([](cuda_trace_buf *b) {
                                                              cudaMemcpyToSymbol(cuda_trace_dev, &b, sizeof b);
                                                          }),
                                                          0);

__device__ __forceinline__ unsigned long long cuda_trace_now()
{
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* the block's record, taken at pdl_wait (cuda_trace_end writes its end there): an index into
 * rec, or ~0u */
__device__ __forceinline__ unsigned &cuda_trace_slot()
{
    __shared__ unsigned slot;
    return slot;
}

/* now into field f of the block's record, by its first thread (if pdl_wait took one) */
__device__ __forceinline__ void cuda_trace_stamp(unsigned long long cuda_trace_rec::*f)
{
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
        const unsigned i = cuda_trace_slot();
        if (i != ~0u)
            cuda_trace_dev->rec[i].*f = cuda_trace_now();
    }
}
#endif

/* A block's work done: its end for the trace (nothing in other builds). Only in kernels whose first
 * thread passes pdl_wait before it, and reaches it once. */
__device__ __forceinline__ void cuda_trace_end()
{
#ifdef DINFER_CUDA_TRACE
    cuda_trace_stamp(&cuda_trace_rec::t_end);
#endif
}

/* A point between the wait and the end (the block's math done, before its epilogue) for the trace,
 * under the same conditions as cuda_trace_end (nothing in other builds). */
__device__ __forceinline__ void cuda_trace_mark()
{
#ifdef DINFER_CUDA_TRACE
    cuda_trace_stamp(&cuda_trace_rec::t_mark);
#endif
}

/* A second point after cuda_trace_mark (the split attention: its cluster's barrier passed, every
 * block's state written to the blocks that combine it), under the same conditions. */
__device__ __forceinline__ void cuda_trace_mark2()
{
#ifdef DINFER_CUDA_TRACE
    cuda_trace_stamp(&cuda_trace_rec::t_mark2);
#endif
}

__device__ __forceinline__ void pdl_wait()
{
#ifdef DINFER_CUDA_TRACE
    cuda_trace_buf *b = nullptr;
    unsigned i = ~0u, sm = 0;
    unsigned long long t0 = 0;
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
        b = cuda_trace_dev;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
        if (b && *(volatile unsigned *)&b->on && sm < CUDA_TRACE_SMS) {
            i = atomicAdd(&b->n[sm][0], 1u);
            t0 = cuda_trace_now();
        } else {
            b = nullptr;
        }
    }
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
#ifdef DINFER_CUDA_TRACE
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
        unsigned slot = ~0u;
        if (b && i < b->cap) {
            slot = sm * b->cap + i;
            unsigned long long grid;
            asm volatile("mov.u64 %0, %%gridid;" : "=l"(grid));
            cuda_trace_rec r;
            r.t_pre = t0, r.t_post = cuda_trace_now(), r.t_end = 0, r.t_mark = 0, r.t_mark2 = 0, r.grid = grid;
            r.block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
            r.sm = (unsigned short)sm, r.pad = 0;
            r.gx = (unsigned short)gridDim.x, r.gy = (unsigned short)gridDim.y, r.gz = (unsigned short)gridDim.z;
            r.bx = (unsigned short)blockDim.x;
            b->rec[slot] = r;
        }
        cuda_trace_slot() = slot;
    }
#endif
}

__device__ __forceinline__ void pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::);
#endif
}

/* kernel<<<grid, block, shm, c->stream>>>(args...), as a programmatic dependent launch when c->pdl,
 * its blocks in clusters of cluster_z consecutive blocks along z when cluster_z > 1 (compute
 * capability 9.0 on); a failed launch is kept on the backend (ops->check reports it). */
template <typename... P, typename... A>
static inline void cuda_launch_at(cuda_ctx *c, const char *file, int line, unsigned cluster_z, void (*kernel)(P...),
                                  dim3 grid, dim3 block, size_t shm, A &&...args)
{
    cudaLaunchAttribute at[2];
    unsigned n = 0;
    if (c->pdl) {
        at[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[n++].val.programmaticStreamSerializationAllowed = 1;
    }
    if (cluster_z > 1) {
        at[n].id = cudaLaunchAttributeClusterDimension;
        at[n].val.clusterDim.x = 1, at[n].val.clusterDim.y = 1, at[n++].val.clusterDim.z = cluster_z;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = shm, cfg.stream = c->stream;
    cfg.attrs = at, cfg.numAttrs = n;
    const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, static_cast<A &&>(args)...);
    c->n_launches++;
    if (e != cudaSuccess)
        cuda_fail(c, "cudaLaunchKernelEx", file, line, cudaGetErrorString(e));
}
#define cuda_launch(c, ...) cuda_launch_at((c), __FILE__, __LINE__, 1u, __VA_ARGS__)
#define cuda_launch_cluster(c, cluster_z, ...) cuda_launch_at((c), __FILE__, __LINE__, (cluster_z), __VA_ARGS__)

__device__ __forceinline__ float ld(const float *p) { return *p; }
__device__ __forceinline__ float ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ float ld(const __half *p) { return __half2float(*p); }
/* An FP8 e4m3 code of the KV cache: ld gives its value (the caller applies the scale). */
struct fp8_e4m3 {
    uint8_t b;
};
__device__ __forceinline__ float ld(const fp8_e4m3 *p)
{
    return __half2float(__half(__nv_cvt_fp8_to_halfraw(p->b, __NV_E4M3)));
}
__device__ __forceinline__ void st(float *p, float v) { *p = v; }
__device__ __forceinline__ void st(__nv_bfloat16 *p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void st(__half *p, float v) { *p = __float2half(v); }
/* v as st stores it in T and ld reads it back (rounded to T) */
template <typename T>
__device__ __forceinline__ float as_stored(float v)
{
    T x;
    st(&x, v);
    return ld(&x);
}

/* E consecutive elements at p (16-byte aligned) as floats, in 16-byte loads through the read-only
 * cache: the vector loads of the bandwidth-bound kernels (attention, the weight-streaming GEMV). */
template <typename T, int E>
__device__ __forceinline__ void load_vec(const T *p, float *o)
{
    constexpr int PER = 16 / (int)sizeof(T), NV = E / PER;
    static_assert(NV * PER == E, "whole 16-byte loads");
#pragma unroll
    for (int v = 0; v < NV; v++) {
        const uint4 raw = __ldg(reinterpret_cast<const uint4 *>(p) + v);
        const T *e = reinterpret_cast<const T *>(&raw);
#pragma unroll
        for (int j = 0; j < PER; j++)
            o[v * PER + j] = ld(&e[j]);
    }
}

/* E floats stored as consecutive elements of T at p (16-byte aligned), rounded as st rounds, in
 * 16-byte stores. */
template <typename T, int E>
__device__ __forceinline__ void store_vec(T *p, const float *v)
{
    constexpr int PER = 16 / (int)sizeof(T), NV = E / PER;
    static_assert(NV * PER == E, "whole 16-byte stores");
#pragma unroll
    for (int k = 0; k < NV; k++) {
        uint4 raw;
        T *e = reinterpret_cast<T *>(&raw);
#pragma unroll
        for (int j = 0; j < PER; j++)
            st(&e[j], v[k * PER + j]);
        reinterpret_cast<uint4 *>(p)[k] = raw;
    }
}

/* The same in two halves, so that several loads can be in flight before any is used: the raw
 * 16-byte vectors first (E * sizeof(T) / 16 of them), then their elements as floats. */
template <typename T, int E>
__device__ __forceinline__ void load_raw(const T *p, uint4 *raw)
{
#pragma unroll
    for (int v = 0; v < E * (int)sizeof(T) / 16; v++)
        raw[v] = __ldg(reinterpret_cast<const uint4 *>(p) + v);
}

template <typename T, int E>
__device__ __forceinline__ void raw_to_float(const uint4 *raw, float *o)
{
    constexpr int PER = 16 / (int)sizeof(T);
#pragma unroll
    for (int v = 0; v < E / PER; v++) {
        const T *e = reinterpret_cast<const T *>(&raw[v]);
#pragma unroll
        for (int j = 0; j < PER; j++)
            o[v * PER + j] = ld(&e[j]);
    }
}

__device__ __forceinline__ uint32_t smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes from global to shared memory, or 16 zero bytes when !ok (src is not read then) */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool ok)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(ok ? 16 : 0));
}

__device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

template <int N>
__device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* c += a b for one m16n8k16 tile */
template <typename T>
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    if constexpr (std::is_same<T, __nv_bfloat16>::value)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum or max over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
 * scratch holds 32 floats. */
__device__ __forceinline__ float block_sum(float v, float *scratch)
{
    v = warp_sum(v);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0)
        scratch[w] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float *scratch)
{
    v = warp_max(v);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0)
        scratch[w] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : -INFINITY;
    return warp_max(v);
}

/* Calls F<T>(args...) with T the storage type of dt. */
#define CUDA_DISPATCH(dt, F, ...)                                       \
    do {                                                                \
        switch (dt) {                                                   \
        case RT_F32: F<float>(__VA_ARGS__); break;                      \
        case RT_BF16: F<__nv_bfloat16>(__VA_ARGS__); break;             \
        case RT_F16: F<__half>(__VA_ARGS__); break;                     \
        }                                                               \
    } while (0)

/* cuBLAS's name for a storage type. */
static inline cudaDataType_t cuda_blas_type(rt_dtype t)
{
    return t == RT_BF16 ? CUDA_R_16BF : t == RT_F16 ? CUDA_R_16F : CUDA_R_32F;
}

static inline int cuda_blocks(size_t n, int threads)
{
    size_t b = (n + (size_t)threads - 1) / (size_t)threads;
    return (int)(b > 65535 * 16 ? 65535 * 16 : (b ? b : 1));
}

#endif
