/* The CPU backend: device memory is host memory, ops are the OpenMP kernels of cpu_ops.h. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "runtime/cpu/cpu_ops.h"

#define HUGE_PAGE ((size_t)2 << 20)

static void *cpu_alloc(rt_backend *be, size_t bytes)
{
    (void)be;
    void *p = NULL;
    /* 64-byte alignment for vector loads; large buffers (weights, KV cache) on 2 MiB boundaries
     * and backed by transparent huge pages: a fraction of the page faults and TLB misses */
    size_t align = bytes >= HUGE_PAGE ? HUGE_PAGE : 64;
    size_t n = (bytes + align - 1) & ~(align - 1);
    if (posix_memalign(&p, align, n ? n : 64) != 0)
        return NULL;
    if (align == HUGE_PAGE)
        madvise(p, n, MADV_HUGEPAGE);
    return p;
}

static void cpu_free(rt_backend *be, void *p)
{
    (void)be;
    free(p);
}

static void cpu_copy(rt_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes)
        memcpy(dst, src, bytes);
}

static void cpu_sync(rt_backend *be)
{
    (void)be;
}

static void cpu_to_f32(rt_backend *be, float *out, const void *x, size_t n)
{
    cpu_copy(be, out, x, n * sizeof(float));
}

static int cpu_check(rt_backend *be, base_err *err)
{
    (void)be, (void)err; /* host ops cannot fail once their memory is allocated */
    return 0;
}

static void cpu_destroy(rt_backend *be)
{
    free(be);
}

#define CPU_OPS(...)                                                                                   \
    {                                                                                                  \
        .name = "cpu", .act_dtype = RT_F32, .host_memory = true, .quant_matmul = true, .alloc = cpu_alloc, \
        .free = cpu_free, .upload = cpu_copy, .upload_async = cpu_copy, .prepare_weight = cpu_prepare_weight, \
        .host_alloc = cpu_alloc, .host_free = cpu_free, .download = cpu_copy, .sync = cpu_sync,            \
        .embedding = cpu_embedding, .matmul = cpu_matmul, .rmsnorm = cpu_rmsnorm,                          \
        .add_rmsnorm = cpu_add_rmsnorm, .rope_kv_write = cpu_rope_kv_write, .attention = cpu_attention,    \
        .add = cpu_add, .silu_mul = cpu_silu_mul, .gather_rows = cpu_gather_rows,                          \
        .gather_cols = cpu_gather_cols, .to_f32 = cpu_to_f32,                                              \
        .check = cpu_check, .destroy = cpu_destroy, __VA_ARGS__                                            \
    }

static const rt_backend_ops cpu_ops = CPU_OPS(.fuses = NULL);
/* DINFER_CPU_FUSE=1: small steps run the fused chain as the GPU does (to test it without a GPU) */
static const rt_backend_ops cpu_ops_fused =
    CPU_OPS(.fuses = cpu_fuses, .matmul_fused = cpu_matmul_fused, .norm_begin = cpu_norm_begin);

rt_backend *rt_cpu_backend_create(int n_threads)
{
    rt_backend *be = calloc(1, sizeof *be);
    if (!be)
        return NULL;
    const char *fuse = getenv("DINFER_CPU_FUSE");
    be->ops = fuse && strcmp(fuse, "1") == 0 ? &cpu_ops_fused : &cpu_ops;
    if (n_threads > 0)
        omp_set_num_threads(n_threads);
    return be;
}
