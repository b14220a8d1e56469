/* The device path of comm: NCCL communicators for the tp groups and the pipeline chains, their
 * unique ids broadcast over MPI, non-blocking initialization, operations enqueued on the stream
 * without a wait, and one wait a step that polls the stream and NCCL's asynchronous errors, so a
 * missing or dead peer becomes an error that names the rank and the operation after the timeout,
 * never a hang. */
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "comm/comm_impl.h"
#include "base/clock.h"

static int nccl_fail(const comm *c, base_err *err, const char *what, const char *why)
{
    return base_errf(err, "rank %d: NCCL %s failed: %s", c->topo.rank, what, why);
}

/* Waits for a communicator to leave ncclInProgress (initialization), polling its asynchronous
 * error; aborts it on error or timeout. */
static int wait_init(comm *c, ncclComm_t nc, const char *what, base_err *err)
{
    const double deadline = base_now() + c->timeout_s;
    for (long polls = 0;; polls++) {
        ncclResult_t async = ncclSuccess;
        ncclResult_t q = ncclCommGetAsyncError(nc, &async);
        if (q != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
            ncclCommAbort(nc);
            return nccl_fail(c, err, what, ncclGetErrorString(q != ncclSuccess ? q : async));
        }
        if (async == ncclSuccess)
            return 0;
        if (base_now() > deadline) {
            ncclCommAbort(nc);
            char why[96];
            snprintf(why, sizeof why, "did not finish within %.0f s (--comm-timeout): a peer is missing or stuck",
                     c->timeout_s);
            return nccl_fail(c, err, what, why);
        }
        if (polls > 1000) {
            struct timespec nap = {0, 20000};
            nanosleep(&nap, NULL);
        }
    }
}

static int init_group(comm *c, comm_group *g, const char *name, base_err *err)
{
    if (g->size == 1)
        return 0;
    ncclUniqueId id;
    if (g->rank == 0 && ncclGetUniqueId(&id) != ncclSuccess)
        return nccl_fail(c, err, name, "ncclGetUniqueId");
    int rc = MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, g->mc);
    if (rc != MPI_SUCCESS)
        return comm_fail_mpi(c, err, "MPI_Bcast of the NCCL id", rc);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclComm_t nc;
    ncclResult_t r = ncclCommInitRankConfig(&nc, g->size, id, g->rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress)
        return nccl_fail(c, err, name, ncclGetErrorString(r));
    char what[64];
    snprintf(what, sizeof what, "initialization of the %s communicator", name);
    if (wait_init(c, nc, what, err))
        return -1;
    g->nccl = nc;
    return 0;
}

int comm_nccl_enable(comm *c, void *stream, double timeout_s, base_err *err)
{
    c->stream = stream;
    c->timeout_s = timeout_s > 0 ? timeout_s : 120;
    c->last_op = "operation";
    if (init_group(c, &c->tp, "tensor-parallel", err) || init_group(c, &c->pp, "pipeline", err))
        return -1;
    c->device_path = 1;
    return 0;
}

/* Every communicator closed and the device path off; after a failure (abort) what is in flight is
 * cut instead of waited for. */
static void close_comms(comm *c, bool abort)
{
    comm_group *gs[2] = {&c->tp, &c->pp};
    for (int i = 0; i < 2; i++)
        if (gs[i]->nccl) {
            if (abort)
                ncclCommAbort((ncclComm_t)gs[i]->nccl);
            else
                ncclCommDestroy((ncclComm_t)gs[i]->nccl);
            gs[i]->nccl = NULL;
        }
    c->device_path = 0;
}

void comm_nccl_destroy(comm *c)
{
    close_comms(c, false);
}

int comm_has_device_path(const comm *c)
{
    return c->device_path;
}

static ncclDataType_t nccl_type(comm_dtype t)
{
    switch (t) {
    case COMM_F32: return ncclFloat32;
    case COMM_I32: return ncclInt32;
    case COMM_U8: return ncclUint8;
    case COMM_BF16: return ncclBfloat16;
    case COMM_F16: return ncclFloat16;
    }
    return ncclFloat32;
}

/* An operation just issued: its immediate result, then the communicator's state. A
 * non-blocking communicator may answer ncclInProgress before the operation is on the stream, and
 * takes no other call until it is: polled here until it is enqueued (not until it has run: that
 * is comm_dev_wait's, once a step), at most timeout_s. */
static int enqueued(comm_group *g, ncclResult_t r, const char *what, base_err *err)
{
    comm *c = g->owner;
    const double deadline = base_now() + c->timeout_s;
    ncclResult_t async = r;
    while (r == ncclSuccess || r == ncclInProgress) {
        r = ncclCommGetAsyncError((ncclComm_t)g->nccl, &async);
        if (r != ncclSuccess || async != ncclInProgress)
            break;
        if (base_now() > deadline) {
            close_comms(c, true);
            return nccl_fail(c, err, what, "was not enqueued within --comm-timeout");
        }
    }
    if (r == ncclSuccess)
        r = async;
    if (r != ncclSuccess) {
        close_comms(c, true);
        return nccl_fail(c, err, what, ncclGetErrorString(r));
    }
    c->last_op = what;
    return 0;
}

int comm_dev_wait(comm *c, base_err *err)
{
    if (!c->device_path && !c->ipc)
        return 0;
    comm_group *gs[2] = {&c->tp, &c->pp};
    const double deadline = base_now() + c->timeout_s;
    for (long polls = 0;; polls++) {
        for (int i = 0; i < 2; i++) {
            ncclResult_t async = ncclSuccess;
            if (!gs[i]->nccl)
                continue;
            ncclResult_t q = ncclCommGetAsyncError((ncclComm_t)gs[i]->nccl, &async);
            if (q != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
                close_comms(c, true);
                return nccl_fail(c, err, c->last_op, ncclGetErrorString(q != ncclSuccess ? q : async));
            }
        }
        cudaError_t s = cudaStreamQuery((cudaStream_t)c->stream);
        if (s == cudaSuccess && !comm_ipc_timed_out(c))
            return 0;
        /* the next stage may be waiting for this rank's step plan before it receives our send */
        if (comm_progress(c, err))
            return -1;
        if (s != cudaErrorNotReady && s != cudaSuccess)
            return nccl_fail(c, err, c->last_op, cudaGetErrorString(s));
        if (base_now() > deadline || comm_ipc_timed_out(c)) {
            close_comms(c, true);
            char why[96];
            snprintf(why, sizeof why, "did not finish within %.0f s (--comm-timeout): a peer is missing or stuck",
                     c->timeout_s);
            return nccl_fail(c, err, c->last_op, why);
        }
        if (polls > 1000) {
            struct timespec nap = {0, 20000};
            nanosleep(&nap, NULL);
        }
    }
}

int comm_dev_allreduce_sum(comm_group *g, void *buf, size_t n, comm_dtype t, base_err *err)
{
    if (g->size == 1)
        return 0;
    *g->bytes += n * comm_dtype_size(t);
    g->owner->counters.calls++;
    return enqueued(g, ncclAllReduce(buf, buf, n, nccl_type(t), ncclSum, (ncclComm_t)g->nccl, (cudaStream_t)g->owner->stream),
                    "all-reduce", err);
}

int comm_dev_send(comm_group *g, const void *buf, size_t n, comm_dtype t, int peer, base_err *err)
{
    *g->bytes += n * comm_dtype_size(t);
    g->owner->counters.calls++;
    return enqueued(g, ncclSend(buf, n, nccl_type(t), peer, (ncclComm_t)g->nccl, (cudaStream_t)g->owner->stream), "send",
                    err);
}

int comm_dev_recv(comm_group *g, void *buf, size_t n, comm_dtype t, int peer, base_err *err)
{
    return enqueued(g, ncclRecv(buf, n, nccl_type(t), peer, (ncclComm_t)g->nccl, (cudaStream_t)g->owner->stream),
                    "receive", err);
}
