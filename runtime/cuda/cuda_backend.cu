/* The CUDA backend: device memory through cudaMalloc, one stream per rank, a cuBLAS handle, and
 * the op table of the .cu files beside this one, for F32, BF16 or F16 storage. */
#include <stdlib.h>
#include <string.h>

#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/cuda_ops.h"

void cuda_fail(cuda_ctx *c, const char *call, const char *file, int line, const char *msg)
{
    cudaGetLastError(); /* consumed here, so no later launch check reports it as its own */
    if (c->failed)
        return; /* the first failure is the cause; later ones follow from it */
    c->failed = true;
    base_errf(&c->err, "rank %d: %s failed at %s:%d: %s", c->rank, call, file, line, msg);
}

static int cuda_check(rt_backend *be, base_err *err)
{
    cuda_ctx *c = cuda_ctx_of(be);
    return c->failed ? base_err_copy(err, &c->err) : 0;
}

static void *cuda_alloc(rt_backend *be, size_t bytes)
{
    cuda_ctx *c = cuda_ctx_of(be);
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 256) != cudaSuccess) {
        cudaGetLastError(); /* out of memory is reported by the caller, not fatal here */
        return NULL;
    }
    (void)c;
    return p;
}

static void cuda_free(rt_backend *be, void *p)
{
    CUDA_CHECK(cuda_ctx_of(be), cudaFree(p));
}

static void cuda_upload(rt_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (!bytes)
        return;
    /* the host buffer is reused at once by the caller: wait for the copy */
    CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
}

static void *cuda_host_alloc(rt_backend *be, size_t bytes)
{
    (void)be;
    void *p = NULL;
    if (cudaMallocHost(&p, bytes ? bytes : 64) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cuda_host_free(rt_backend *be, void *p)
{
    CUDA_CHECK(cuda_ctx_of(be), cudaFreeHost(p));
}

static void cuda_upload_async(rt_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (bytes)
        CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
}

static void cuda_download(rt_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (!bytes)
        return;
    CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
}

static void cuda_download_mark(rt_backend *be, void *dst, const void *src, size_t bytes, int slot)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (!c->marks[slot])
        CUDA_CHECK(c, cudaEventCreateWithFlags(&c->marks[slot], cudaEventDisableTiming));
    if (bytes)
        CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(c, cudaEventRecord(c->marks[slot], c->stream));
}

static void cuda_wait_mark(rt_backend *be, int slot)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (c->marks[slot])
        CUDA_CHECK(c, cudaEventSynchronize(c->marks[slot]));
}

static void cuda_sync(rt_backend *be)
{
    cuda_ctx *c = cuda_ctx_of(be);
    CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
}

static void cuda_graph_begin(rt_backend *be)
{
    cuda_ctx *c = cuda_ctx_of(be);
    CUDA_CHECK(c, cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
}

static void *cuda_graph_end(rt_backend *be)
{
    cuda_ctx *c = cuda_ctx_of(be);
    cudaGraph_t g = NULL;
    cudaGraphExec_t exec = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    if (e == cudaSuccess)
        e = cudaGraphInstantiate(&exec, g, 0);
    if (g)
        cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        cuda_fail(c, "capturing a step in a CUDA graph", __FILE__, __LINE__, cudaGetErrorString(e));
        return NULL;
    }
    return (void *)exec;
}

/* DINFER_CUDA_STEP_GAPS: replay i's events are slot i % 3; when it is launched, replay i - 1 has
 * its time read (its end waited for) and the gap between replays i - 2 and i - 1 too, where nothing
 * else was launched between them (a prompt's step is not a gap) */
static void gaps_launch(cuda_ctx *c, cudaGraphExec_t graph)
{
    const int i = c->gap_n++, a = (i + 2) % 3, b = (i + 1) % 3;
    float busy = 0.0f, idle = 0.0f;
    if (i >= 1 && cudaEventSynchronize(c->gap_end[a]) == cudaSuccess &&
        cudaEventElapsedTime(&busy, c->gap_start[a], c->gap_end[a]) == cudaSuccess)
        c->gap_busy_ms += busy;
    if (i >= 2 && c->gap_alone[a] && cudaEventElapsedTime(&idle, c->gap_end[b], c->gap_start[a]) == cudaSuccess)
        c->gap_idle_ms += idle, c->gap_idles++;
    c->gap_alone[i % 3] = c->n_launches == c->gap_launches;
    CUDA_CHECK(c, cudaEventRecord(c->gap_start[i % 3], c->stream));
    CUDA_CHECK(c, cudaGraphLaunch(graph, c->stream));
    CUDA_CHECK(c, cudaEventRecord(c->gap_end[i % 3], c->stream));
    c->gap_launches = c->n_launches;
}

static void cuda_graph_launch(rt_backend *be, void *graph)
{
    cuda_ctx *c = cuda_ctx_of(be);
    cuda_trace_replay(c);
    if (c->gaps)
        gaps_launch(c, (cudaGraphExec_t)graph);
    else
        CUDA_CHECK(c, cudaGraphLaunch((cudaGraphExec_t)graph, c->stream));
}

static void cuda_graph_free(rt_backend *be, void *graph)
{
    CUDA_CHECK(cuda_ctx_of(be), cudaGraphExecDestroy((cudaGraphExec_t)graph));
}

static void cuda_destroy(rt_backend *be)
{
    cuda_ctx *c = cuda_ctx_of(be);
    cuda_trace_close(c);
    if (c->gaps) {
        /* the last replay's time is not read: n - 1 replays timed */
        if (c->gap_n >= 2 && c->gap_idles > 0)
            fprintf(stderr, "rank %d: %d step graphs replayed: %.1f us of device time each, %.1f us idle between "
                            "two in a row (%d such gaps: %.2f%% of the device's time)\n", c->rank, c->gap_n,
                    1e3 * c->gap_busy_ms / (c->gap_n - 1), 1e3 * c->gap_idle_ms / c->gap_idles, c->gap_idles,
                    100.0 * (c->gap_idle_ms / c->gap_idles) /
                        (c->gap_idle_ms / c->gap_idles + c->gap_busy_ms / (c->gap_n - 1)));
        for (int i = 0; i < 3; i++)
            cudaEventDestroy(c->gap_start[i]), cudaEventDestroy(c->gap_end[i]);
    }
    for (int i = 0; i < 2; i++)
        if (c->marks[i])
            cudaEventDestroy(c->marks[i]);
    cublasDestroy(c->blas);
    cublasLtDestroy(c->lt);
    cudaFree(c->scratch);
    cudaFree(c->blas_ws);
    cudaStreamDestroy(c->stream);
    free(c);
    free(be);
}

#define CUDA_OPS(name_, dt_)                                                                          \
    {                                                                                                 \
        .name = name_, .act_dtype = dt_, .host_memory = false, .quant_matmul = true, .alloc = cuda_alloc,   \
        .free = cuda_free,                                                                            \
        .upload = cuda_upload, .download = cuda_download, .sync = cuda_sync, .host_alloc = cuda_host_alloc,             \
        .host_free = cuda_host_free, .upload_async = cuda_upload_async, .download_mark = cuda_download_mark, .wait_mark = cuda_wait_mark, .embedding = cuda_embedding,            \
        .prepare_weight = cuda_prepare_weight,                                                        \
        .matmul = cuda_matmul, .fuses = cuda_fuses, .matmul_fused = cuda_matmul_fused, .norm_begin = cuda_norm_begin, .rmsnorm = cuda_rmsnorm, .add_rmsnorm = cuda_add_rmsnorm,             \
        .rope_kv_write = cuda_rope_kv_write, .attention = cuda_attention, .rope_attention = cuda_rope_attention, .matmul_rope = cuda_matmul_rope, .add = cuda_add,           \
        .silu_mul = cuda_silu_mul, .gather_rows = cuda_gather_rows, .gather_cols = cuda_gather_cols,  \
        .to_f32 = cuda_to_f32, .matmul_f32 = cuda_matmul_f32,                                         \
        .sample = cuda_sample, .graph_begin = cuda_graph_begin, .graph_end = cuda_graph_end,          \
        .graph_launch = cuda_graph_launch, .graph_free = cuda_graph_free, .check = cuda_check, .destroy = cuda_destroy,                                                \
    }

static const rt_backend_ops ops_f32 = CUDA_OPS("cuda (f32)", RT_F32);
static const rt_backend_ops ops_bf16 = CUDA_OPS("cuda (bf16)", RT_BF16);
static const rt_backend_ops ops_f16 = CUDA_OPS("cuda (f16)", RT_F16);

/* *on from the environment variable name (dflt when unset); -1 naming it when it is neither 0 nor 1. */
static int env_switch(const char *name, const char *meaning, bool *on, base_err *err, bool dflt = true)
{
    const char *e = getenv(name);
    if (e && strcmp(e, "0") != 0 && strcmp(e, "1") != 0) {
        base_errf(err, "%s is '%.32s': %s", name, e, meaning);
        return -1;
    }
    *on = e ? e[0] == '1' : dflt;
    return 0;
}

/* *v from the environment variable name (left as it is when unset): an integer from lo to hi; -1
 * naming it and `meaning` otherwise. */
static int env_int(const char *name, int lo, int hi, const char *meaning, int *v, base_err *err)
{
    const char *e = getenv(name);
    if (!e)
        return 0;
    char *end = NULL;
    const long x = strtol(e, &end, 10);
    if (end == e || *end || x < lo || x > hi) {
        base_errf(err, "%s is '%.32s': %s, %d to %d", name, e, meaning, lo, hi);
        return -1;
    }
    *v = (int)x;
    return 0;
}

/* *v from the environment variable name (left as it is when unset): one digit of `digits`; -1
 * naming it and `meaning` otherwise. */
static int env_digit(const char *name, const char *digits, const char *meaning, int *v, base_err *err)
{
    const char *e = getenv(name);
    if (e && (strlen(e) != 1 || !strchr(digits, e[0]))) {
        base_errf(err, "%s is '%.32s': %s (the default %d)", name, e, meaning, *v);
        return -1;
    }
    if (e)
        *v = e[0] - '0';
    return 0;
}

extern "C" rt_backend *rt_cuda_backend_create(int device, rt_dtype dt, int rank, base_err *err)
{
    int n = rt_cuda_device_count();
    if (device < 0 || device >= n) {
        base_errf(err, "CUDA device %d requested, %d visible", device, n);
        return NULL;
    }
    if (cudaSetDevice(device) != cudaSuccess) {
        base_errf(err, "cannot use CUDA device %d: %s", device, cudaGetErrorString(cudaGetLastError()));
        return NULL;
    }
    /* the switches for measuring, each 0 or 1 */
    bool gemv, pdl, fp8_gemm, fp8_vec, fp8_prep, qmma, qmma_fp8, fuse, logits_f32, gaps, fa_cluster, fa_pre,
        qmma_xs, qmma_wide, rope_fuse, qkv_rope;
    if (env_switch("DINFER_CUDA_STEP_GAPS",
                   "1 (the device's time in each step graph and idle between them, printed at the end) or 0 (the "
                   "default)",
                   &gaps, err, false) ||
        env_switch("DINFER_CUDA_GEMV", "0 (every product through cuBLAS) or 1 (the default)", &gemv, err) ||
        env_switch("DINFER_CUDA_PDL", "0 (kernels wait for the one ahead to end) or 1 (the default)", &pdl, err) ||
        env_switch("DINFER_CUDA_FP8_GEMM",
                   "0 (FP8 weights dequantized for products of many rows) or 1 (the default: FP8 tensor cores)",
                   &fp8_gemm, err) ||
        env_switch("DINFER_CUDA_FP8_VEC",
                   "0 (cuBLASLt's FP8 products unscaled, then a scaling pass) or 1 (the default: cuBLASLt scales "
                   "them where it can)",
                   &fp8_vec, err) ||
        env_switch("DINFER_CUDA_FP8_PREP",
                   "1 (a fused FP8 product's pass quantizes the next product's activations) or 0 (the default: the "
                   "next product does)",
                   &fp8_prep, err, false) ||
        env_switch("DINFER_CUDA_QMMA",
                   "0 (quantized products of few rows in fp32 arithmetic) or 1 (the default: on the tensor cores)",
                   &qmma, err) ||
        env_switch("DINFER_CUDA_FA_CLUSTER",
                   "0 (a split decode context's parts combined by a second kernel) or 1 (the default: in a cluster "
                   "of the splits, up to 8)",
                   &fa_cluster, err) ||
        env_switch("DINFER_CUDA_FA_PRE",
                   "0 (decode attention loads every key after the kernel ahead ends) or 1 (the default: the keys "
                   "before the token's own before)",
                   &fa_pre, err) ||
        env_switch("DINFER_CUDA_ROPE_FUSE",
                   "1 (a decode step's RoPE and KV write in its attention kernel) or 0 (the default: a kernel of "
                   "their own)",
                   &rope_fuse, err, false) ||
        env_switch("DINFER_CUDA_QKV_ROPE",
                   "0 (a decode step's RoPE and KV write at batch 1 a kernel of their own) or 1 (the default: in "
                   "the QKV product's last step)",
                   &qkv_rope, err) ||
        env_switch("DINFER_CUDA_QMMA_XS",
                   "0 (the one-token int4 tensor-core products load the activations where used) or 1 (the default: "
                   "staged with the codes)",
                   &qmma_xs, err) ||
        env_switch("DINFER_CUDA_QMMA_WIDE",
                   "0 (one-token int4 products 8 warps a weight tile) or 1 (the default: 12 in those of at most two "
                   "tiles an SM and 64 chunks a tile)",
                   &qmma_wide, err) ||
        env_switch("DINFER_CUDA_QMMA_FP8",
                   "0 (FP8 products of few rows in fp32 arithmetic) or 1 (the default: on the tensor cores)",
                   &qmma_fp8, err) ||
        env_switch("DINFER_CUDA_FUSE",
                   "0 (the norms, residual adds and SiLU-multiply as kernels of their own) or 1 (the default: in the "
                   "products of few rows)",
                   &fuse, err) ||
        env_switch("DINFER_CUDA_LOGITS_F32",
                   "0 (the LM head's product in 16 bits, then a pass to fp32) or 1 (the default: cuBLAS writes "
                   "fp32 logits where it takes the head)",
                   &logits_f32, err))
        return NULL;
    /* measuring: the FP8 products take the heuristic's algorithm of this rank (the last it offers
     * when it offers fewer) instead of the fastest of them, timed */
    int fp8_pick = -1;
    /* the one-row weight-streaming products of few blocks split each row over this many warps (1B
     * batch 1 on an H100: 857 tok/s unsplit, 887 at 2, 848 at 4); the one-row FP8 gate/up product
     * two weight rows a warp (8B FP8 batch 1 on an H100: 271 tok/s off, 276 on) */
    int gemv_split = 2, gemv_pair = 1, qgemv_deep = 1, fa_min_split = FA_MIN_SPLIT / 16;
    /* measuring: which fused quantized products ask L2 for the next product's first weights at their
     * end (cuda_fusion.cuh's fused_ahead), and at most how many MB */
    int ahead = 0, ahead_mb = 16;
    if (env_int("DINFER_CUDA_FP8_ALGO", 0, CUDA_FP8_ALGO_PICKS - 1, "an index of cuBLASLt's FP8 algorithms",
                &fp8_pick, err) ||
        env_digit("DINFER_CUDA_FA_MIN_SPLIT", "1248", "the fewest keys a split of a decode context, in 16s: 1, 2, 4 or 8",
                  &fa_min_split, err) ||
        env_digit("DINFER_CUDA_GEMV_SPLIT", "124", "1, 2 or 4 warps a weight row", &gemv_split, err) ||
        env_digit("DINFER_CUDA_QGEMV_DEEP", "01",
                  "0 (4 loads in flight a lane) or 1 (8, in one-row FP8 products of at most 4 blocks an SM)",
                  &qgemv_deep, err) ||
        env_digit("DINFER_CUDA_GEMV_PAIR", "01",
                  "0 (a warp a weight row) or 1 (two rows a warp in the one-row FP8 gate/up product)", &gemv_pair,
                  err) ||
        env_int("DINFER_CUDA_AHEAD", 0, 7,
                "the fused quantized products that ask L2 for the next product's first weights as they end, a sum "
                "of 1 (the output product), 2 (the down product) and 4 (the gate/up product)",
                &ahead, err) ||
        env_int("DINFER_CUDA_AHEAD_MB", 1, 64, "megabytes of the next product's weights asked for at most", &ahead_mb,
                err))
        return NULL;
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof *c);
    rt_backend *be = (rt_backend *)calloc(1, sizeof *be);
    if (!c || !be) {
        free(c), free(be);
        base_errf(err, "out of memory");
        return NULL;
    }
    c->device = device;
    c->rank = rank;
    c->dt = dt;
    if (cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking) != cudaSuccess ||
        cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(c->blas, c->stream) != CUBLAS_STATUS_SUCCESS ||
        cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS) {
        base_errf(err, "cannot create a CUDA stream and cuBLAS handles on device %d", device);
        free(c), free(be);
        return NULL;
    }
    c->scratch_bytes = CUDA_SCRATCH_BYTES;
    c->gemv = gemv;
    c->gemv_split = gemv_split;
    c->gemv_pair = gemv_pair;
    c->qgemv_deep = qgemv_deep;
    c->ahead = ahead;
    c->ahead_mb = ahead_mb;
    c->fa_min_split = 16 * fa_min_split;
    c->fuse = fuse;
    c->logits_f32 = logits_f32;
    int cc_major = 0;
    if (cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess)
        cc_major = 0;
    c->pdl = pdl && cc_major >= 9;
    c->qmma = qmma && cc_major >= 8;
    c->qmma_fp8 = qmma_fp8;
    c->fa_cluster = fa_cluster && cc_major >= 9;
    c->fa_pre = fa_pre;
    c->rope_fuse = rope_fuse;
    c->qkv_rope = qkv_rope;
    c->qmma_xs = qmma_xs;
    c->qmma_wide = qmma_wide;
    c->fp8_gemm = fp8_gemm && cc_major >= 9;
    c->fp8_vec = fp8_vec;
    c->fp8_prep = fp8_prep;
    c->fp8_pick = fp8_pick;
    /* cuBLAS gets a workspace of its own up front: nothing is allocated while a step is captured */
    if (cudaDeviceGetAttribute(&c->n_sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaMalloc(&c->scratch, c->scratch_bytes) != cudaSuccess ||
        cudaMalloc(&c->blas_ws, CUDA_BLAS_WORKSPACE_BYTES) != cudaSuccess ||
        cublasSetWorkspace(c->blas, c->blas_ws, CUDA_BLAS_WORKSPACE_BYTES) != CUBLAS_STATUS_SUCCESS) {
        cudaGetLastError();
        cudaFree(c->scratch);
        cudaFree(c->blas_ws);
        base_errf(err, "cannot allocate the backend's %zu MiB of scratch on device %d",
                  (c->scratch_bytes + CUDA_BLAS_WORKSPACE_BYTES) >> 20, device);
        cublasDestroy(c->blas);
        cublasLtDestroy(c->lt);
        cudaStreamDestroy(c->stream);
        free(c), free(be);
        return NULL;
    }
    for (int i = 0; i < 3 && gaps; i++)
        if (cudaEventCreate(&c->gap_start[i]) != cudaSuccess || cudaEventCreate(&c->gap_end[i]) != cudaSuccess) {
            cudaGetLastError();
            gaps = false; /* measuring only: the backend runs without it */
        }
    c->gaps = gaps;
    /* fp32 stays fp32: no TF32 tensor-op shortcut */
    cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH);
    be->ops = dt == RT_BF16 ? &ops_bf16 : dt == RT_F16 ? &ops_f16 : &ops_f32;
    be->impl = c;
    if (cuda_trace_open(c, err)) {
        cuda_destroy(be);
        return NULL;
    }
    return be;
}

extern "C" int rt_cuda_mem_info(size_t *free_bytes, size_t *total_bytes)
{
    return cudaMemGetInfo(free_bytes, total_bytes) == cudaSuccess ? 0 : -1;
}

extern "C" void *rt_cuda_backend_stream(rt_backend *be)
{
    return (void *)cuda_ctx_of(be)->stream;
}

extern "C" double rt_cuda_copy_bandwidth(void)
{
    const size_t bytes = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
        cudaGetLastError();
        cudaFree(a);
        return 0.0;
    }
    cudaMemset(a, 1, bytes);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float best = 1e30f;
    for (int i = 0; i < 6; i++) { /* the first copy warms up; the best of the rest counts */
        cudaEventRecord(e0);
        cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        if (i > 0 && ms < best)
            best = ms;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    return 2.0 * (double)bytes / (best * 1e-3);
}
