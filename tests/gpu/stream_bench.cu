/* How fast can an SM stream weights it only reads? (not a test; a measuring tool for the GPU
 * machine, built by hand: nvcc -O3 -arch=sm_90 -o /tmp/stream_bench tests/gpu/stream_bench.cu)
 *
 * Reads a product's bytes (8, 29 and 64 MB: the 8B shape's int4 output, down and gate/up weights)
 * from a 2 GB buffer at a new offset each run (so that L2 never holds them) three ways, and prints
 * each one's time and bandwidth:
 *   ldg      every thread 16-byte loads, 4 in flight, over many blocks (the register-staged form)
 *   cpasync  a persistent block an SM (or two), its 256 threads staging chunks into a ring of
 *            shared-memory slots by cp.async, S chunks in flight
 *   bulk     the same ring filled by the copy engine (cp.async.bulk, one instruction a chunk,
 *            completing on an mbarrier): no registers and no threads held by the loads
 * The consumers only fold the words into a checksum, so each figure is the read stream's own.
 * Then a decode step's weight reads as the layers chain them (`chain`): each layer's four products'
 * bytes (the 8B shape in int4 and FP8) read by four ldg kernels in turn, 32 layers captured in a
 * CUDA graph, each kernel a programmatic dependent launch whose blocks issue their first loads
 * before griddepcontrol.wait (as the products do), and the same without: the least a step's
 * products can cost with a kernel a product; then the same reads in the grids dinfer's one-row
 * kernels have for those products (their blocks, threads and blocks an SM, each block reading its
 * own tile), to tell what the launch shapes cost from what the math and the epilogues do. */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CK(x)                                                                                                      \
    do {                                                                                                           \
        cudaError_t e_ = (x);                                                                                      \
        if (e_ != cudaSuccess) {                                                                                   \
            fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));                             \
            exit(1);                                                                                               \
        }                                                                                                          \
    } while (0)

__device__ __forceinline__ uint32_t smem_u32(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

__global__ void ldg_kernel(const uint4 *src, size_t n16, unsigned *out)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    unsigned acc = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n16; i += 4 * stride) {
        uint4 v[4];
#pragma unroll
        for (int u = 0; u < 4; u++)
            v[u] = i + u * stride < n16 ? __ldg(src + i + u * stride) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < 4; u++)
            acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    if (acc == 0x12345678u)
        out[0] = acc;
}

/* Words i, i + stride, ... below end folded into the checksum, the first 4 loads a thread before the
 * wait on the kernel ahead (as the products issue theirs) */
__device__ __forceinline__ void read_chained(const uint4 *src, size_t i, size_t stride, size_t end, unsigned *out)
{
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; u++)
        v[u] = i + u * stride < end ? __ldg(src + i + u * stride) : make_uint4(0, 0, 0, 0);
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;\n" ::);
    unsigned acc = 0;
    for (;;) {
#pragma unroll
        for (int u = 0; u < 4; u++)
            acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
        i += 4 * stride;
        if (i >= end)
            break;
#pragma unroll
        for (int u = 0; u < 4; u++)
            v[u] = i + u * stride < end ? __ldg(src + i + u * stride) : make_uint4(0, 0, 0, 0);
    }
    if (acc == 0x12345678u)
        out[0] = acc;
}

/* ldg_kernel's reads, chained */
__global__ void chain_kernel(const uint4 *src, size_t n16, unsigned *out)
{
    read_chained(src, (size_t)blockIdx.x * blockDim.x + threadIdx.x, (size_t)gridDim.x * blockDim.x, n16, out);
}

/* the same over a block's own tile (per words a block, as a product's block reads its rows) */
__global__ void tile_kernel(const uint4 *src, size_t per, size_t n16, unsigned *out)
{
    const size_t end = (blockIdx.x + 1) * per < n16 ? (blockIdx.x + 1) * per : n16;
    read_chained(src, blockIdx.x * per + threadIdx.x, blockDim.x, end, out);
}

template <int S, int SB>
__global__ void __launch_bounds__(256) cpasync_kernel(const uint8_t *src, size_t n_chunks, unsigned *out)
{
    extern __shared__ __align__(128) uint8_t sm[];
    const size_t mine = n_chunks > blockIdx.x ? (n_chunks - blockIdx.x + gridDim.x - 1) / gridDim.x : 0;
    const auto issue = [&](size_t k) {
        const uint8_t *g = src + (blockIdx.x + k * gridDim.x) * (size_t)SB;
        uint8_t *d = sm + (k % S) * SB;
        for (int i = threadIdx.x; i < SB / 16; i += blockDim.x)
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(d + 16 * i)), "l"(g + 16 * i));
    };
#pragma unroll
    for (int s = 0; s < S - 1; s++) {
        if (s < (int)mine)
            issue(s);
        asm volatile("cp.async.commit_group;\n" ::);
    }
    unsigned acc = 0;
    for (size_t k = 0; k < mine; k++) {
        if (k + S - 1 < mine)
            issue(k + S - 1);
        asm volatile("cp.async.commit_group;\n" ::);
        asm volatile("cp.async.wait_group %0;\n" ::"n"(S - 1));
        __syncthreads();
        const uint4 *p = reinterpret_cast<const uint4 *>(sm + (k % S) * SB);
        for (int i = threadIdx.x; i < SB / 16; i += blockDim.x) {
            const uint4 v = p[i];
            acc ^= v.x ^ v.y ^ v.z ^ v.w;
        }
        __syncthreads();
    }
    if (acc == 0x12345678u)
        out[0] = acc;
}

template <int S, int SB>
__global__ void __launch_bounds__(256) bulk_kernel(const uint8_t *src, size_t n_chunks, unsigned *out)
{
    extern __shared__ __align__(128) uint8_t sm[];
    __shared__ __align__(8) uint64_t full[S];
    const size_t mine = n_chunks > blockIdx.x ? (n_chunks - blockIdx.x + gridDim.x - 1) / gridDim.x : 0;
    if (threadIdx.x == 0) {
        for (int s = 0; s < S; s++)
            asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(smem_u32(&full[s])));
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    const auto issue = [&](size_t k) {
        const uint8_t *g = src + (blockIdx.x + k * gridDim.x) * (size_t)SB;
        const uint32_t bar = smem_u32(&full[k % S]);
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(SB) : "memory");
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                         smem_u32(sm + (k % S) * SB)),
                     "l"(g), "r"(SB), "r"(bar)
                     : "memory");
    };
    if (threadIdx.x == 0)
        for (int s = 0; s < S && s < (int)mine; s++)
            issue(s);
    unsigned acc = 0;
    for (size_t k = 0; k < mine; k++) {
        const uint32_t bar = smem_u32(&full[k % S]), parity = (uint32_t)((k / S) & 1);
        asm volatile("{\n\t.reg .pred p;\n"
                     "W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n\t"
                     "@!p bra W;\n}\n" ::"r"(bar),
                     "r"(parity)
                     : "memory");
        const uint4 *p = reinterpret_cast<const uint4 *>(sm + (k % S) * SB);
        for (int i = threadIdx.x; i < SB / 16; i += blockDim.x) {
            const uint4 v = p[i];
            acc ^= v.x ^ v.y ^ v.z ^ v.w;
        }
        __syncthreads();
        if (threadIdx.x == 0 && k + S < mine)
            issue(k + S);
    }
    if (acc == 0x12345678u)
        out[0] = acc;
}

static const size_t BUF = (size_t)2 << 30;
static const size_t CHAIN_BUF = (size_t)8 << 30;

/* A product's launch as dinfer's kernel has it: blocks, threads, and at most per_sm of them an SM
 * (the registers' limit there, imposed here by shared memory); blocks 0: chain_kernel's grid. */
struct shape {
    unsigned blocks, threads, per_sm;
};

/* 32 layers of the four products' bytes, each kernel `per_sm` blocks an SM (or as `sh` says), in a
 * graph; us a layer */
static double chain(const uint8_t *buf, unsigned *out, const size_t bytes[4], int sms, int per_sm, bool pdl,
                    const shape *sh = nullptr)
{
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    size_t off = 0;
    for (int l = 0; l < 32; l++)
        for (int p = 0; p < 4; p++) {
            cudaLaunchConfig_t cfg = {};
            cudaLaunchAttribute at[1];
            cfg.gridDim = dim3((unsigned)(sms * per_sm)), cfg.blockDim = dim3(256), cfg.stream = st;
            at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
            at[0].val.programmaticStreamSerializationAllowed = 1;
            cfg.attrs = at, cfg.numAttrs = pdl ? 1 : 0;
            if (sh) {
                const size_t n16 = bytes[p] / 16;
                cfg.gridDim = dim3(sh[p].blocks), cfg.blockDim = dim3(sh[p].threads);
                cfg.dynamicSmemBytes = (size_t)(227 / sh[p].per_sm - 1) * 1024;
                CK(cudaLaunchKernelEx(&cfg, tile_kernel, reinterpret_cast<const uint4 *>(buf + off),
                                      (n16 + sh[p].blocks - 1) / sh[p].blocks, n16, out));
            } else {
                CK(cudaLaunchKernelEx(&cfg, chain_kernel, reinterpret_cast<const uint4 *>(buf + off), bytes[p] / 16,
                                      out));
            }
            off += (bytes[p] + 4095) & ~(size_t)4095;
        }
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    CK(cudaGraphLaunch(ge, st));
    CK(cudaEventRecord(a, st));
    const int reps = 10;
    for (int r = 0; r < reps; r++)
        CK(cudaGraphLaunch(ge, st));
    CK(cudaEventRecord(b, st));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaStreamDestroy(st));
    return ms * 1e3 / reps / 32;
}

template <typename L>
static double time_runs(size_t bytes, L launch)
{
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    const int reps = 20;
    size_t off = 0;
    launch(off); /* warm up */
    CK(cudaDeviceSynchronize());
    CK(cudaEventRecord(a));
    for (int r = 0; r < reps; r++) {
        off = (off + bytes + 4096) % (BUF - bytes);
        off &= ~(size_t)4095;
        launch(off);
    }
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    CK(cudaGetLastError());
    return ms * 1e3 / reps; /* us a run */
}

template <int S, int SB>
static void ring(const char *name, bool bulk, const uint8_t *buf, unsigned *out, size_t bytes, int sms, int per_sm)
{
    const size_t shm = (size_t)S * SB;
    if (bulk)
        CK(cudaFuncSetAttribute(bulk_kernel<S, SB>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm));
    else
        CK(cudaFuncSetAttribute(cpasync_kernel<S, SB>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm));
    const size_t n = bytes / SB;
    const double us = time_runs(bytes, [&](size_t off) {
        if (bulk)
            bulk_kernel<S, SB><<<sms * per_sm, 256, shm>>>(buf + off, n, out);
        else
            cpasync_kernel<S, SB><<<sms * per_sm, 256, shm>>>(buf + off, n, out);
    });
    printf("  %-8s %d a SM, %2d x %5d B in flight: %7.2f us  %6.0f GB/s\n", name, per_sm, S, SB, us,
           (double)n * SB / us / 1e3);
}

int main()
{
    int sms = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    uint8_t *buf;
    unsigned *out;
    CK(cudaMalloc(&buf, BUF));
    CK(cudaMalloc(&out, 4096));
    CK(cudaMemset(buf, 0x5a, BUF));
    const size_t sizes[] = {(size_t)8 << 20, (size_t)29 << 20, (size_t)64 << 20};
    for (size_t bytes : sizes) {
        printf("%zu MB (%d SMs):\n", bytes >> 20, sms);
        for (int bps : {4, 8, 16}) {
            const double us = time_runs(bytes, [&](size_t off) {
                ldg_kernel<<<sms * bps, 256>>>(reinterpret_cast<const uint4 *>(buf + off), bytes / 16, out);
            });
            printf("  ldg      %d blocks a SM, 4 loads a thread: %7.2f us  %6.0f GB/s\n", bps, us, bytes / us / 1e3);
        }
        ring<4, 16384>("cpasync", false, buf, out, bytes, sms, 1);
        ring<8, 16384>("cpasync", false, buf, out, bytes, sms, 1);
        ring<4, 8192>("cpasync", false, buf, out, bytes, sms, 2);
        ring<4, 16384>("bulk", true, buf, out, bytes, sms, 1);
        ring<8, 16384>("bulk", true, buf, out, bytes, sms, 1);
        ring<12, 16384>("bulk", true, buf, out, bytes, sms, 1);
        ring<8, 8192>("bulk", true, buf, out, bytes, sms, 1);
        ring<16, 8192>("bulk", true, buf, out, bytes, sms, 1);
        ring<6, 16384>("bulk", true, buf, out, bytes, sms, 2);
        ring<8, 4096>("bulk", true, buf, out, bytes, sms, 2);
    }
    CK(cudaFree(buf));
    uint8_t *big;
    CK(cudaMalloc(&big, CHAIN_BUF));
    CK(cudaMemset(big, 0x5a, CHAIN_BUF));
    /* QKV, output, gate/up, down: codes and scales (int4: groups of 128, fp32 scales, 16-bit zeros) */
    const size_t mb = 1 << 20;
    const size_t int4[4] = {13 * mb + 400 * 1024, 8 * mb + 800 * 1024, 64 * mb, 32 * mb};
    const size_t fp8[4] = {24 * mb, 16 * mb, 112 * mb, 56 * mb};
    /* the grids of dinfer's one-row kernels for these products (8B shape): int4 on the tensor cores
     * (QKV, output, gate/up 16 rows a block, 3 an SM; down 12 warps, 2 an SM), FP8 weight-streaming
     * (8 rows a block: QKV 6 an SM, output and down the deep form, 4; gate/up paired, 5) */
    const shape int4_sh[4] = {{384, 256, 3}, {256, 256, 3}, {1792, 256, 3}, {256, 384, 2}};
    const shape fp8_sh[4] = {{768, 256, 6}, {512, 256, 4}, {1792, 256, 5}, {512, 256, 4}};
    CK(cudaFuncSetAttribute(tile_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 226 * 1024));
    for (int f = 0; f < 2; f++) {
        const size_t *by = f ? fp8 : int4;
        const double bytes = (double)(by[0] + by[1] + by[2] + by[3]);
        printf("a layer's four products, %s (%.1f MB), 32 layers in a graph:\n", f ? "FP8" : "int4", bytes / mb);
        for (int per_sm : {2, 4, 8})
            for (int pdl = 1; pdl >= 0; pdl--) {
                const double us = chain(big, out, by, sms, per_sm, pdl);
                printf("  %d blocks an SM, %-9s %7.2f us a layer  %6.0f GB/s\n", per_sm, pdl ? "early:" : "no PDL:", us,
                       bytes / us / 1e3);
            }
        for (int pdl = 1; pdl >= 0; pdl--) {
            const double us = chain(big, out, by, sms, 0, pdl, f ? fp8_sh : int4_sh);
            printf("  dinfer's grids, %-9s %7.2f us a layer  %6.0f GB/s\n", pdl ? "early:" : "no PDL:", us,
                   bytes / us / 1e3);
        }
    }
    return 0;
}
