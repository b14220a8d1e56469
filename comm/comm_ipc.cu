/* A one-shot all-reduce over CUDA IPC for the ranks of a tensor-parallel group on one host (issue
 * 14): each rank owns a device buffer of two message slots and a flag; the buffers are exported
 * with cudaIpcGetMemHandle, the handles exchanged over MPI and mapped by every peer. A reduction is
 * one kernel on the compute stream: copy the message into this rank's slot, publish the epoch,
 * wait for every peer's, sum every rank's slot in rank order (the same order on every rank: the
 * results agree bit for bit) in fp32. The epoch lives in device memory (a graph replays the
 * kernel), and a rank overwrites its slot for epoch e only once every peer has published e - 1
 * (in stream order it has then finished reading e - 2, the slot's last use). CUDA IPC also maps
 * between processes on one GPU, which is how it is tested on a machine of one GPU (gpu.ipc,
 * gpu.golden.llama_gqa.2x1*); machines of several GPUs have not run it yet. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "comm/comm_impl.h"
}

#define IPC_HEAD 256     /* bytes before the slots: the published epoch at 0 */
#define IPC_BLOCKS_MAX 64
#define IPC_THREADS 512

struct comm_ipc {
    int n, me;
    size_t slot_bytes;
    char *mine;                      /* this rank's buffer (IPC_HEAD + 2 slots) */
    char *peer[COMM_IPC_MAX_RANKS];  /* every rank's buffer as mapped here (mine at me) */
    char **d_peer;                   /* the same, in device memory */
    unsigned long long *epoch;       /* device: the last epoch this rank finished */
    unsigned int *arrive;            /* device: blocks of the current kernel done copying */
    volatile unsigned int *h_flag;   /* pinned, mapped: raised by a kernel whose wait ran out of time */
    unsigned int *d_flag;            /* the same, as the device sees it */
    int blocks;
    double timeout_s;
};

__device__ __forceinline__ unsigned long long ld_acquire_sys(const unsigned long long *p)
{
    unsigned long long v;
    asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ void st_release_sys(unsigned long long *p, unsigned long long v)
{
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

__device__ __forceinline__ unsigned long long now_ns()
{
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* Thread 0 of the block waits until every rank's published epoch is >= e (false on timeout,
 * after raising the flag the host reads). */
__device__ bool wait_epochs(char *const *peer, int n, unsigned long long e, unsigned long long limit_ns,
                            unsigned int *flag)
{
    __shared__ int ok;
    if (threadIdx.x == 0) {
        ok = 1;
        const unsigned long long t0 = now_ns();
        for (int r = 0; r < n && ok; r++)
            while (ld_acquire_sys((const unsigned long long *)peer[r]) < e) {
                if (now_ns() - t0 > limit_ns) {
                    *(volatile unsigned int *)flag = 1;
                    __threadfence_system();
                    ok = 0;
                    break;
                }
                __nanosleep(100);
            }
    }
    __syncthreads();
    return ok != 0;
}

template <typename T> __device__ __forceinline__ float to_f(T v) { return (float)v; }
template <> __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v) { return (T)v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f(float v) { return __float2bfloat16(v); }
template <> __device__ __forceinline__ __half from_f(float v) { return __float2half(v); }

/* The exchange of a reduction: this rank's message (count elements of buf) into its slot for the
 * epoch, published, and every peer's published. The slot's offset in every rank's buffer, or 0
 * when a wait ran out of time (the flag is raised). */
template <typename T>
__device__ size_t ipc_exchange(char *const *peer, int n, int me, const T *buf, size_t count, size_t slot_bytes,
                               const unsigned long long *epoch, unsigned int *arrive, unsigned long long limit_ns,
                               unsigned int *flag)
{
    const unsigned long long e = *(const volatile unsigned long long *)epoch + 1;
    char *mine = peer[me];
    /* my slot for e was last read at e - 2: every peer past e - 1 has finished that */
    if (!wait_epochs(peer, n, e - 1, limit_ns, flag))
        return 0;
    const size_t slot = IPC_HEAD + (size_t)(e & 1) * slot_bytes;
    T *out = (T *)(mine + slot);
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride)
        out[i] = buf[i];
    /* the last block to finish copying publishes e */
    __threadfence_system();
    __syncthreads();
    if (threadIdx.x == 0 && atomicAdd(arrive, 1u) == gridDim.x - 1) {
        *arrive = 0;
        st_release_sys((unsigned long long *)mine, e);
    }
    if (!wait_epochs(peer, n, e, limit_ns, flag))
        return 0;
    return slot;
}

/* Element i of the sum, in rank order in fp32, rounded to T (every rank the same bits). */
template <typename T> __device__ __forceinline__ float ipc_sum(char *const *peer, int n, size_t slot, size_t i)
{
    float s = 0.0f;
    for (int r = 0; r < n; r++)
        s += to_f(((const T *)(peer[r] + slot))[i]);
    return to_f(from_f<T>(s));
}

template <typename T>
__global__ void __launch_bounds__(IPC_THREADS)
    ipc_allreduce_kernel(char *const *peer, int n, int me, T *buf, size_t count, size_t slot_bytes,
                         unsigned long long *epoch, unsigned int *arrive, unsigned long long limit_ns, unsigned int *flag)
{
    const size_t slot = ipc_exchange(peer, n, me, buf, count, slot_bytes, epoch, arrive, limit_ns, flag);
    if (!slot)
        return;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride)
        buf[i] = from_f<T>(ipc_sum<T>(peer, n, slot, i));
}

__device__ float ipc_block_sum(float v)
{
    __shared__ float part[IPC_THREADS / 32];
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0)
        part[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0.0f;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++)
        s += part[w];
    __syncthreads(); /* part is reused by the next row */
    return s;
}

/* The reduction of delta (rows x dim), then x += the sum and out = rmsnorm(x) * w, a block a row:
 * the same roundings as the reduction followed by the backend's add_rmsnorm (the sum rounded to
 * T, x + it rounded to T, the squares of the rounded values in fp32). out may be delta. */
template <typename T>
__global__ void __launch_bounds__(IPC_THREADS)
    ipc_add_rmsnorm_kernel(char *const *peer, int n, int me, const T *delta, T *x, T *out, const T *w, int rows,
                           int dim, float eps, size_t slot_bytes, unsigned long long *epoch, unsigned int *arrive,
                           unsigned long long limit_ns, unsigned int *flag)
{
    const size_t slot = ipc_exchange(peer, n, me, delta, (size_t)rows * (size_t)dim, slot_bytes, epoch, arrive,
                                     limit_ns, flag);
    if (!slot)
        return;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        T *xr = x + (size_t)r * (size_t)dim;
        float ss = 0.0f;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            const T v = from_f<T>(to_f(xr[i]) + ipc_sum<T>(peer, n, slot, (size_t)r * (size_t)dim + (size_t)i));
            xr[i] = v;
            ss += to_f(v) * to_f(v);
        }
        const float inv = rsqrtf(ipc_block_sum(ss) / (float)dim + eps);
        T *orow = out + (size_t)r * (size_t)dim;
        for (int i = threadIdx.x; i < dim; i += blockDim.x)
            orow[i] = from_f<T>(to_f(w[i]) * (to_f(xr[i]) * inv));
    }
}

/* After every block of the reduction: the epoch it used is done. */
__global__ void ipc_epoch_kernel(unsigned long long *epoch)
{
    *epoch += 1;
}

/* Why this rank cannot take the IPC path, into err (the caller says it or falls back). */
static int ipc_not_taken(const comm *c, base_err *err, const char *what, cudaError_t e)
{
    base_errf(err, "rank %d: CUDA IPC %s failed: %s", c->topo.rank, what, cudaGetErrorString(e));
    return 1;
}

static void ipc_free(comm_ipc *p)
{
    for (int r = 0; r < p->n; r++)
        if (r != p->me && p->peer[r])
            cudaIpcCloseMemHandle(p->peer[r]);
    cudaFree(p->d_peer);
    cudaFree(p->mine);
    cudaFree(p->epoch);
    if (p->h_flag)
        cudaFreeHost((void *)p->h_flag);
    free(p);
}

/* Whether every rank of the tp group got through a set-up stage (e: this rank's result of its
 * CUDA call step): 0 when all did; else p freed and 1 with the reason in err (this rank's error,
 * or that a peer could not do peer_failed), or -1 when MPI failed. */
static int ipc_agree(comm *c, comm_ipc *p, cudaError_t e, const char *step, const char *peer_failed, base_err *err)
{
    int any = 0;
    if (comm_any(&c->tp, e != cudaSuccess, &any, err) != 0) {
        ipc_free(p);
        return -1;
    }
    if (!any)
        return 0;
    ipc_free(p);
    if (e != cudaSuccess)
        return ipc_not_taken(c, err, step, e);
    base_errf(err, "rank %d: a peer could not %s", c->topo.rank, peer_failed);
    return 1;
}

extern "C" int comm_ipc_enable(comm *c, void *stream, size_t max_bytes, double timeout_s, base_err *err)
{
    comm_group *g = &c->tp;
    if (g->size == 1)
        return 1;
    if (g->size > COMM_IPC_MAX_RANKS) {
        base_errf(err, "rank %d: CUDA IPC takes at most %d tensor-parallel ranks, not %d", c->topo.rank,
                  COMM_IPC_MAX_RANKS, g->size);
        return 1;
    }
    /* every rank of the group on this host */
    MPI_Comm local;
    int rc = MPI_Comm_split_type(g->mc, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
    if (rc != MPI_SUCCESS)
        return comm_fail_mpi(c, err, "MPI_Comm_split_type", rc);
    int local_size = 0;
    MPI_Comm_size(local, &local_size);
    MPI_Comm_free(&local);
    int elsewhere = 0;
    if (comm_any(g, local_size != g->size, &elsewhere, err) != 0)
        return -1;
    if (elsewhere) {
        base_errf(err, "rank %d: the tensor-parallel group spans hosts", c->topo.rank);
        return 1;
    }
    comm_ipc *p = (comm_ipc *)calloc(1, sizeof *p);
    if (!p)
        return base_errf(err, "rank %d: out of memory", c->topo.rank);
    p->n = g->size, p->me = g->rank, p->slot_bytes = (max_bytes + 255) / 256 * 256;
    p->timeout_s = timeout_s > 0 ? timeout_s : 120;
    const char *step = "cudaMalloc";
    cudaError_t e = cudaMalloc((void **)&p->mine, IPC_HEAD + 2 * p->slot_bytes);
    if (e == cudaSuccess)
        e = cudaMemset(p->mine, 0, IPC_HEAD);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&p->epoch, sizeof *p->epoch + sizeof *p->arrive);
    if (e == cudaSuccess)
        e = cudaMemset(p->epoch, 0, sizeof *p->epoch + sizeof *p->arrive);
    if (e == cudaSuccess && (step = "cudaHostAlloc", e = cudaHostAlloc((void **)&p->h_flag, sizeof *p->h_flag,
                                                                      cudaHostAllocMapped)) == cudaSuccess) {
        *p->h_flag = 0;
        e = cudaHostGetDevicePointer((void **)&p->d_flag, (void *)p->h_flag, 0);
    }
    cudaIpcMemHandle_t h, hs[COMM_IPC_MAX_RANKS];
    if (e == cudaSuccess && (step = "cudaIpcGetMemHandle", e = cudaIpcGetMemHandle(&h, p->mine)) == cudaSuccess)
        e = cudaDeviceSynchronize();
    if ((rc = ipc_agree(c, p, e, step, "set up CUDA IPC", err)) != 0)
        return rc;
    p->arrive = (unsigned int *)(p->epoch + 1);
    rc = MPI_Allgather(&h, (int)sizeof h, MPI_BYTE, hs, (int)sizeof h, MPI_BYTE, g->mc);
    if (rc != MPI_SUCCESS) {
        ipc_free(p);
        return comm_fail_mpi(c, err, "MPI_Allgather of the IPC handles", rc);
    }
    step = "cudaIpcOpenMemHandle";
    for (int r = 0; r < p->n && e == cudaSuccess; r++)
        if (r == p->me)
            p->peer[r] = p->mine;
        else
            e = cudaIpcOpenMemHandle((void **)&p->peer[r], hs[r], cudaIpcMemLazyEnablePeerAccess);
    if (e == cudaSuccess && (step = "cudaMalloc", e = cudaMalloc((void **)&p->d_peer, sizeof p->peer)) == cudaSuccess)
        e = cudaMemcpy(p->d_peer, p->peer, sizeof p->peer, cudaMemcpyHostToDevice);
    /* on failure no peer maps this rank's buffer once every rank has closed its mappings */
    if ((rc = ipc_agree(c, p, e, step, "map the CUDA IPC buffers", err)) != 0)
        return rc;
    int sms = 0, dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        sms = 1;
    p->blocks = sms < IPC_BLOCKS_MAX ? (sms > 0 ? sms : 1) : IPC_BLOCKS_MAX;
    c->ipc = p;
    c->stream = stream;
    c->timeout_s = p->timeout_s;
    c->last_op = "operation";
    return 0;
}

extern "C" void comm_ipc_destroy(comm *c)
{
    if (c->ipc)
        ipc_free(c->ipc);
    c->ipc = NULL;
}

extern "C" int comm_has_ipc(const comm *c, size_t bytes)
{
    return c->ipc && bytes <= c->ipc->slot_bytes;
}

/* After a reduction's kernel: the count, the epoch's advance behind it, and whether the launches
 * took. */
static int ipc_launched(comm_group *g, size_t count, comm_dtype t, base_err *err)
{
    comm *c = g->owner;
    *g->bytes += count * comm_dtype_size(t);
    c->counters.calls++;
    ipc_epoch_kernel<<<1, 1, 0, (cudaStream_t)c->stream>>>(c->ipc->epoch);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return base_errf(err, "rank %d: CUDA IPC all-reduce launch failed: %s", c->topo.rank, cudaGetErrorString(e));
    c->last_op = "CUDA IPC all-reduce";
    return 0;
}

extern "C" int comm_ipc_allreduce_sum(comm_group *g, void *buf, size_t count, comm_dtype t, base_err *err)
{
    comm *c = g->owner;
    comm_ipc *p = c->ipc;
    cudaStream_t s = (cudaStream_t)c->stream;
    const unsigned long long limit = (unsigned long long)(p->timeout_s * 1e9);
#define IPC_SUM(T)                                                                                                 \
    ipc_allreduce_kernel<T><<<p->blocks, IPC_THREADS, 0, s>>>(p->d_peer, p->n, p->me, (T *)buf, count, p->slot_bytes, \
                                                              p->epoch, p->arrive, limit, p->d_flag)
    switch (t) {
    case COMM_BF16:
        IPC_SUM(__nv_bfloat16);
        break;
    case COMM_F16:
        IPC_SUM(__half);
        break;
    case COMM_F32:
        IPC_SUM(float);
        break;
    default:
        return base_errf(err, "rank %d: CUDA IPC all-reduce of a type it does not sum", c->topo.rank);
    }
#undef IPC_SUM
    return ipc_launched(g, count, t, err);
}

extern "C" int comm_ipc_allreduce_add_rmsnorm(comm_group *g, const void *delta, void *x, void *out, const void *w,
                                              int rows, int dim, float eps, comm_dtype t, base_err *err)
{
    comm *c = g->owner;
    comm_ipc *p = c->ipc;
    cudaStream_t s = (cudaStream_t)c->stream;
    const unsigned long long limit = (unsigned long long)(p->timeout_s * 1e9);
#define IPC_ADD_NORM(T)                                                                                            \
    ipc_add_rmsnorm_kernel<T><<<p->blocks, IPC_THREADS, 0, s>>>(p->d_peer, p->n, p->me, (const T *)delta, (T *)x,   \
                                                                (T *)out, (const T *)w, rows, dim, eps,            \
                                                                p->slot_bytes, p->epoch, p->arrive, limit, p->d_flag)
    switch (t) {
    case COMM_BF16:
        IPC_ADD_NORM(__nv_bfloat16);
        break;
    case COMM_F16:
        IPC_ADD_NORM(__half);
        break;
    case COMM_F32:
        IPC_ADD_NORM(float);
        break;
    default:
        return base_errf(err, "rank %d: CUDA IPC all-reduce of a type it does not sum", c->topo.rank);
    }
#undef IPC_ADD_NORM
    return ipc_launched(g, (size_t)rows * (size_t)dim, t, err);
}

/* Whether a reduction's wait ran out of time (a kernel raised the flag; read without a CUDA call,
 * which could wait behind the stuck kernel): for comm_dev_wait. */
extern "C" int comm_ipc_timed_out(comm *c)
{
    return c->ipc && *c->ipc->h_flag != 0;
}

extern "C" int comm_ipc_finish(comm *c)
{
    if (!c->ipc)
        return 0;
    cudaStreamSynchronize((cudaStream_t)c->stream); /* each wait in the kernels ends by itself */
    return comm_ipc_timed_out(c);
}
