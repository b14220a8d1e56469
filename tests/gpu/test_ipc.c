/* The CUDA IPC all-reduce (comm_ipc.cu) against the sum computed on the host, under mpirun -np 2
 * (or more) on one host: every rank builds every rank's message from its seed, so each knows the
 * expected result (fp32 sums in rank order, then the message type). F32 and BF16, message sizes
 * that are not multiples of anything, enough repetitions to reuse both slots several times, and
 * the same reduction replayed from a CUDA graph. Exits 77 (skip) without a GPU. */
#include <cuda_runtime.h>
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"

static float value(int rank, size_t i, int rep)
{
    uint32_t h = (uint32_t)(rank * 2654435761u) ^ (uint32_t)(i * 40503u) ^ (uint32_t)(rep * 97u);
    h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
    return (float)(h % 2001) / 1000.0f - 1.0f;
}

static uint16_t to_bf16(float f) /* round to nearest even */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static float from_bf16(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        printf("no CUDA device: skipped\n");
        MPI_Finalize();
        return 77;
    }
    int world = 0, me = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    cudaSetDevice(me % n_dev);
    base_err err = {0};
    comm *c = NULL;
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    const size_t max_count = 262144; /* 1 MB of F32 */
    if (comm_mpi_create(&c, world, 1, 0, me, &err) || comm_ipc_enable(c, s, max_count * 4, 30, &err) != 0) {
        fprintf(stderr, "rank %d: %s\n", me, err.msg[0] ? err.msg : "CUDA IPC not taken");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    comm_group *g = comm_topo(c)->tp_group;
    const size_t counts[] = {1, 7, 1000, 4099, max_count};
    /* BF16 messages of the largest size hold twice the elements */
    float *host = malloc(max_count * 4), *want = malloc(2 * max_count * sizeof *want);
    void *dev = NULL;
    cudaMalloc(&dev, max_count * 4);
    int bad = 0;
    for (int bf = 0; bf < 2; bf++)
        for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++)
            for (int rep = 0; rep < 5; rep++) {
                const size_t n = bf && counts[k] == max_count ? max_count * 2 : counts[k];
                const size_t es = bf ? 2 : 4;
                for (size_t i = 0; i < n; i++) {
                    float sum = 0.0f;
                    for (int r = 0; r < world; r++) {
                        const float v = bf ? from_bf16(to_bf16(value(r, i, rep))) : value(r, i, rep);
                        sum += v;
                    }
                    want[i] = bf ? from_bf16(to_bf16(sum)) : sum;
                    const float mine = value(me, i, rep);
                    if (bf)
                        ((uint16_t *)host)[i] = to_bf16(mine);
                    else
                        host[i] = mine;
                }
                /* on the reduction's stream: a pageable cudaMemcpy may return before its DMA is done */
                cudaMemcpyAsync(dev, host, n * es, cudaMemcpyHostToDevice, s);
                const int graph = rep >= 3; /* the last two repetitions from a captured graph */
                cudaGraph_t gr = NULL;
                cudaGraphExec_t ex = NULL;
                if (graph)
                    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
                if (comm_ipc_allreduce_sum(g, dev, n, bf ? COMM_BF16 : COMM_F32, &err)) {
                    fprintf(stderr, "rank %d: %s\n", me, err.msg);
                    MPI_Abort(MPI_COMM_WORLD, 1);
                }
                if (graph) {
                    cudaStreamEndCapture(s, &gr);
                    cudaGraphInstantiate(&ex, gr, 0);
                    cudaGraphLaunch(ex, s);
                }
                if (cudaStreamSynchronize(s) != cudaSuccess || comm_ipc_timed_out(c)) {
                    fprintf(stderr, "rank %d: the all-reduce failed: %s\n", me, cudaGetErrorString(cudaGetLastError()));
                    MPI_Abort(MPI_COMM_WORLD, 1);
                }
                if (graph)
                    cudaGraphExecDestroy(ex), cudaGraphDestroy(gr);
                cudaMemcpy(host, dev, n * es, cudaMemcpyDeviceToHost);
                for (size_t i = 0; i < n; i++) {
                    const float got = bf ? from_bf16(((uint16_t *)host)[i]) : host[i];
                    if (got != want[i]) {
                        if (bad++ < 5)
                            fprintf(stderr, "rank %d: %s count %zu rep %d [%zu]: %g, want %g\n", me,
                                    bf ? "bf16" : "f32", n, rep, i, got, want[i]);
                    }
                }
            }
    /* the reduction with the residual add and RMSNorm after it: x exactly as the add leaves it,
     * the norm's output within rounding of the host's (its sum of squares runs in another order) */
    const int shapes[][2] = {{1, 4096}, {3, 100}, {64, 4096}, {5, 1000}};
    float *xh = malloc(max_count * 4), *wh = malloc(4096 * 4), *outh = malloc(max_count * 4);
    void *xd = NULL, *wd = NULL;
    cudaMalloc(&xd, max_count * 4);
    cudaMalloc(&wd, 4096 * 4);
    for (int bf = 0; bf < 2; bf++)
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
            const int rows = shapes[k][0], dim = shapes[k][1];
            const size_t n = (size_t)rows * (size_t)dim, es = bf ? 2 : 4;
            /* x and w the same on every rank (as the residual stream and the norm's weight are) */
            for (size_t i = 0; i < n; i++) {
                const float v = value(99, i, (int)k);
                if (bf)
                    ((uint16_t *)xh)[i] = to_bf16(v);
                else
                    xh[i] = v;
                const float d = value(me, i, 7 + (int)k);
                if (bf)
                    ((uint16_t *)host)[i] = to_bf16(d);
                else
                    host[i] = d;
            }
            for (int i = 0; i < dim; i++) {
                const float v = 1.0f + 0.5f * value(98, (size_t)i, 0);
                if (bf)
                    ((uint16_t *)wh)[i] = to_bf16(v);
                else
                    wh[i] = v;
            }
            cudaMemcpyAsync(dev, host, n * es, cudaMemcpyHostToDevice, s);
            cudaMemcpyAsync(xd, xh, n * es, cudaMemcpyHostToDevice, s);
            cudaMemcpyAsync(wd, wh, (size_t)dim * es, cudaMemcpyHostToDevice, s);
            if (comm_ipc_allreduce_add_rmsnorm(g, dev, xd, dev, wd, rows, dim, 1e-5f, bf ? COMM_BF16 : COMM_F32, &err)) {
                fprintf(stderr, "rank %d: %s\n", me, err.msg);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            if (cudaStreamSynchronize(s) != cudaSuccess || comm_ipc_timed_out(c)) {
                fprintf(stderr, "rank %d: the fused all-reduce failed\n", me);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            cudaMemcpy(outh, dev, n * es, cudaMemcpyDeviceToHost);
            cudaMemcpy(want, xd, n * es, cudaMemcpyDeviceToHost); /* the device's x */
            for (int r = 0; r < rows; r++) {
                float ss = 0.0f, xr[4096];
                for (int i = 0; i < dim; i++) {
                    const size_t j = (size_t)r * (size_t)dim + (size_t)i;
                    float sum = 0.0f;
                    for (int q = 0; q < world; q++)
                        sum += bf ? from_bf16(to_bf16(value(q, j, 7 + (int)k))) : value(q, j, 7 + (int)k);
                    const float x0 = bf ? from_bf16(((uint16_t *)xh)[j]) : xh[j];
                    xr[i] = bf ? from_bf16(to_bf16(x0 + from_bf16(to_bf16(sum)))) : x0 + sum;
                    ss += xr[i] * xr[i];
                    const float got = bf ? from_bf16(((uint16_t *)want)[j]) : want[j];
                    if (got != xr[i] && bad++ < 5)
                        fprintf(stderr, "rank %d: add_rmsnorm %s %dx%d x[%zu]: %g, want %g\n", me, bf ? "bf16" : "f32",
                                rows, dim, j, got, xr[i]);
                }
                const float inv = 1.0f / sqrtf(ss / (float)dim + 1e-5f);
                for (int i = 0; i < dim; i++) {
                    const size_t j = (size_t)r * (size_t)dim + (size_t)i;
                    const float w = bf ? from_bf16(((uint16_t *)wh)[i]) : wh[i];
                    const float ref = w * (xr[i] * inv), got = bf ? from_bf16(((uint16_t *)outh)[j]) : outh[j];
                    if (fabsf(got - ref) > (bf ? 1e-2f : 1e-5f) * (1.0f + fabsf(ref)) && bad++ < 5)
                        fprintf(stderr, "rank %d: add_rmsnorm %s %dx%d out[%zu]: %g, want %g\n", me, bf ? "bf16" : "f32",
                                rows, dim, j, got, ref);
                }
            }
        }
    free(xh), free(wh), free(outh);
    cudaFree(xd), cudaFree(wd);
    free(host), free(want);
    cudaFree(dev);
    comm_destroy(c);
    int any = 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (me == 0)
        printf("CUDA IPC all-reduce over %d ranks: %s (%d wrong elements)\n", world, any ? "FAILED" : "ok", any);
    MPI_Finalize();
    return any ? 1 : 0;
}
