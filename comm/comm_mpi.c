/* The MPI backend of comm.h: host memory, MPI_COMM_WORLD split into tp and pp groups with
 * MPI_Comm_split. Errors are returned (MPI_ERRORS_RETURN), never fatal inside MPI. */
#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm/comm.h"

#include "comm/comm_impl.h"
#include "base/clock.h"

#define MAX_PENDING 64 /* background sends before comm_isend waits for the oldest */

static void pending_drop(comm *c);

size_t comm_dtype_size(comm_dtype t)
{
    return t == COMM_U8 ? 1 : t == COMM_BF16 || t == COMM_F16 ? 2 : 4;
}

static MPI_Datatype mpi_type(comm_dtype t)
{
    switch (t) {
    case COMM_F32: return MPI_FLOAT;
    case COMM_I32: return MPI_INT32_T;
    case COMM_U8: return MPI_UINT8_T;
    case COMM_BF16:
    case COMM_F16: return MPI_UINT16_T; /* moved, never summed, by MPI */
    }
    return MPI_DATATYPE_NULL;
}

int comm_fail_mpi(const comm *c, base_err *err, const char *call, int rc)
{
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return base_errf(err, "rank %d: %s failed: %s", c->topo.rank, call, msg);
}

#define MPI_TRY(g, call)                                       \
    do {                                                       \
        int rc_ = (call);                                      \
        if (rc_ != MPI_SUCCESS)                                \
            return comm_fail_mpi((g)->owner, err, #call, rc_); \
    } while (0)

static int init_group(comm *c, comm_group *g, MPI_Comm mc, uint64_t *bytes)
{
    g->owner = c;
    g->mc = mc;
    g->bytes = bytes;
    MPI_Comm_set_errhandler(mc, MPI_ERRORS_RETURN);
    MPI_Comm_size(mc, &g->size);
    MPI_Comm_rank(mc, &g->rank);
    return 0;
}

int comm_mpi_create(comm **out, int tp, int pp, int stage, int tp_rank, base_err *err)
{
    int world, rank;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (tp < 1 || pp < 1 || (long)tp * pp != world) /* the same verdict on every rank */
        return base_errf(err, "the job has %d ranks but tp=%d x pp=%d needs %ld", world, tp, pp, (long)tp * pp);
    int bad = stage < 0 || stage >= pp || tp_rank < 0 || tp_rank >= tp;
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    if (bad)
        return base_errf(err, "rank %d: a rank was placed outside tp=%d x pp=%d (this one at stage %d, tp rank %d)",
                         rank, tp, pp, stage, tp_rank);
    comm *c = calloc(1, sizeof *c);
    if (!c)
        return base_errf(err, "out of memory");
    c->chunk = INT_MAX;
    c->topo = (comm_topology){.world_size = world, .rank = rank, .tp = tp, .pp = pp,
                              .stage = stage, .tp_rank = tp_rank,
                              .world = &c->world, .tp_group = &c->tp, .pp_group = &c->pp};
    MPI_Comm dup, tpc, ppc;
    if (MPI_Comm_dup(MPI_COMM_WORLD, &dup) != MPI_SUCCESS ||
        MPI_Comm_split(MPI_COMM_WORLD, stage, tp_rank, &tpc) != MPI_SUCCESS ||
        MPI_Comm_split(MPI_COMM_WORLD, tp_rank, stage, &ppc) != MPI_SUCCESS) {
        free(c);
        return base_errf(err, "rank %d: cannot create the tp and pp communicators", rank);
    }
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_rank(node, &c->topo.local_rank);
        MPI_Comm_size(node, &c->topo.local_size);
        MPI_Comm_free(&node);
    } else {
        c->topo.local_rank = 0;
        c->topo.local_size = 1;
    }
    init_group(c, &c->world, dup, &c->counters.world_bytes);
    init_group(c, &c->tp, tpc, &c->counters.tp_bytes);
    init_group(c, &c->pp, ppc, &c->counters.pp_bytes);
    /* two ranks at one place show as a group of the wrong size somewhere */
    int wrong = c->tp.size != tp || c->pp.size != pp;
    MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    if (wrong) {
        comm_destroy(c);
        return base_errf(err, "rank %d: two ranks were given the same place in tp=%d x pp=%d", rank, tp, pp);
    }
    *out = c;
    return 0;
}

void comm_destroy(comm *c)
{
    if (!c)
        return;
    comm_nccl_destroy(c);
    comm_ipc_destroy(c);
    while (c->pending) { /* a job ending on an error: what its peers never received is dropped */
        comm_pending *p = c->pending;
        int done = 0;
        MPI_Testall(p->n_req, p->req, &done, MPI_STATUSES_IGNORE);
        if (done) {
            pending_drop(c);
            continue;
        }
        /* MPI may still read a send it was told to let go of: its copy stays allocated */
        for (int i = 0; i < p->n_req; i++)
            MPI_Request_free(&p->req[i]);
        c->pending = p->next;
        c->n_pending--;
    }
    c->pending_tail = NULL;
    MPI_Comm_free(&c->world.mc);
    MPI_Comm_free(&c->tp.mc);
    MPI_Comm_free(&c->pp.mc);
    free(c);
}

const comm_topology *comm_topo(const comm *c) { return &c->topo; }
comm_counters comm_get_counters(const comm *c) { return c->counters; }
void comm_reset_counters(comm *c) { memset(&c->counters, 0, sizeof c->counters); }
void comm_add_counters(comm *c, const comm_counters *d)
{
    c->counters.tp_bytes += d->tp_bytes, c->counters.pp_bytes += d->pp_bytes;
    c->counters.world_bytes += d->world_bytes, c->counters.calls += d->calls;
}
void comm_set_chunk_elems(comm *c, size_t n) { c->chunk = n > 0 && n < INT_MAX ? n : INT_MAX; }
int comm_group_size(const comm_group *g) { return g->size; }
int comm_group_rank(const comm_group *g) { return g->rank; }

static void count(comm_group *g, size_t bytes)
{
    *g->bytes += bytes;
    g->owner->counters.calls++;
}

int comm_allreduce_sum(comm_group *g, void *buf, size_t n, comm_dtype t, base_err *err)
{
    if (g->size == 1)
        return 0;
    if (t == COMM_BF16 || t == COMM_F16) {
        return base_errf(err, "rank %d: MPI cannot sum 16-bit floats", g->owner->topo.rank);
    }
    count(g, n * comm_dtype_size(t));
    char *p = buf;
    for (size_t done = 0; done < n;) {
        size_t k = n - done < g->owner->chunk ? n - done : g->owner->chunk;
        MPI_TRY(g, MPI_Allreduce(MPI_IN_PLACE, p + done * comm_dtype_size(t), (int)k, mpi_type(t), MPI_SUM, g->mc));
        done += k;
    }
    return 0;
}

int comm_bcast(comm_group *g, void *buf, size_t n, comm_dtype t, int root, base_err *err)
{
    if (g->size == 1)
        return 0;
    if (g->rank == root)
        count(g, n * comm_dtype_size(t));
    char *p = buf;
    for (size_t done = 0; done < n;) {
        size_t k = n - done < g->owner->chunk ? n - done : g->owner->chunk;
        MPI_TRY(g, MPI_Bcast(p + done * comm_dtype_size(t), (int)k, mpi_type(t), root, g->mc));
        done += k;
    }
    return 0;
}

/* Waits for req as a follower waits for its next step: spinning (yielding the core) for the first
 * COMM_IDLE_SPIN_S seconds, then napping 200 us between polls. */
static int wait_idle(comm_group *g, MPI_Request *req, base_err *err)
{
    double start = 0;
    for (long polls = 0;; polls++) {
        int done = 0;
        MPI_TRY(g, MPI_Test(req, &done, MPI_STATUS_IGNORE));
        if (done)
            return 0;
        if (polls < 2000)
            continue;
        if (polls == 2000)
            start = base_now();
        if ((polls & 63) != 0 || base_now() - start < COMM_IDLE_SPIN_S) {
            sched_yield();
        } else {
            struct timespec nap = {0, 200000};
            nanosleep(&nap, NULL);
        }
    }
}

int comm_bcast_idle(comm_group *g, void *buf, size_t n, comm_dtype t, int root, base_err *err)
{
    if (g->size == 1)
        return 0;
    if (n > g->owner->chunk) /* only small control messages wait idly */
        return comm_bcast(g, buf, n, t, root, err);
    if (g->rank == root)
        count(g, n * comm_dtype_size(t));
    MPI_Request req;
    MPI_TRY(g, MPI_Ibcast(buf, (int)n, mpi_type(t), root, g->mc, &req));
    return wait_idle(g, &req, err);
}

int comm_recv_idle(comm_group *g, void *buf, size_t n, comm_dtype t, int peer, base_err *err)
{
    if (n > g->owner->chunk)
        return comm_recv(g, buf, n, t, peer, err);
    MPI_Request req;
    MPI_TRY(g, MPI_Irecv(buf, (int)n, mpi_type(t), peer, 0, g->mc, &req));
    return wait_idle(g, &req, err);
}

static void pending_drop(comm *c)
{
    comm_pending *p = c->pending;
    c->pending = p->next;
    if (!c->pending)
        c->pending_tail = NULL;
    c->n_pending--;
    free(p);
}

/* Frees the background sends that have completed, oldest first; with wait, waits for the oldest
 * (all of them when wait_all). */
static int reap(comm *c, int wait, int wait_all, base_err *err)
{
    while (c->pending) {
        comm_pending *p = c->pending;
        int done = 0, rc;
        if (wait || wait_all)
            rc = MPI_Waitall(p->n_req, p->req, MPI_STATUSES_IGNORE), done = 1;
        else
            rc = MPI_Testall(p->n_req, p->req, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) {
            pending_drop(c);
            return comm_fail_mpi(c, err, "a background MPI_Isend", rc);
        }
        if (!done)
            return 0;
        pending_drop(c);
        wait = 0;
    }
    return 0;
}

int comm_isend(comm_group *g, const void *buf, size_t n, comm_dtype t, int peer, base_err *err)
{
    comm *c = g->owner;
    if (reap(c, c->n_pending >= MAX_PENDING, 0, err))
        return -1;
    count(g, n * comm_dtype_size(t));
    const size_t bytes = n * comm_dtype_size(t), chunks = n ? (n + c->chunk - 1) / c->chunk : 1;
    const size_t head = (sizeof(comm_pending) + chunks * sizeof(MPI_Request) + 15) / 16 * 16;
    comm_pending *p = malloc(head + bytes);
    if (!p)
        return base_errf(err, "rank %d: out of memory for a send of %zu bytes", c->topo.rank, bytes);
    *p = (comm_pending){.g = g, .req = (MPI_Request *)(p + 1)};
    char *data = (char *)p + head;
    if (bytes)
        memcpy(data, buf, bytes);
    for (size_t done = 0; done < n || p->n_req == 0;) {
        size_t k = n - done < c->chunk ? n - done : c->chunk;
        int rc = MPI_Isend(data + done * comm_dtype_size(t), (int)k, mpi_type(t), peer, 0, g->mc, &p->req[p->n_req]);
        if (rc != MPI_SUCCESS) {
            MPI_Waitall(p->n_req, p->req, MPI_STATUSES_IGNORE);
            free(p);
            return comm_fail_mpi(c, err, "MPI_Isend", rc);
        }
        p->n_req++;
        done += k;
    }
    if (c->pending_tail)
        c->pending_tail->next = p;
    else
        c->pending = p;
    c->pending_tail = p;
    c->n_pending++;
    return 0;
}

int comm_progress(comm *c, base_err *err)
{
    return reap(c, 0, 0, err);
}

int comm_flush(comm *c, base_err *err)
{
    return reap(c, 1, 1, err);
}

int comm_send(comm_group *g, const void *buf, size_t n, comm_dtype t, int peer, base_err *err)
{
    count(g, n * comm_dtype_size(t));
    const char *p = buf;
    for (size_t done = 0; done < n;) {
        size_t k = n - done < g->owner->chunk ? n - done : g->owner->chunk;
        MPI_TRY(g, MPI_Send(p + done * comm_dtype_size(t), (int)k, mpi_type(t), peer, 0, g->mc));
        done += k;
    }
    return 0;
}

int comm_recv(comm_group *g, void *buf, size_t n, comm_dtype t, int peer, base_err *err)
{
    char *p = buf;
    for (size_t done = 0; done < n;) {
        size_t k = n - done < g->owner->chunk ? n - done : g->owner->chunk;
        MPI_TRY(g, MPI_Recv(p + done * comm_dtype_size(t), (int)k, mpi_type(t), peer, 0, g->mc, MPI_STATUS_IGNORE));
        done += k;
    }
    return 0;
}

/* Both gathers go chunk by chunk: in each round rank i contributes up to `chunk` elements of its
 * remaining data, the round's pieces land in a staging buffer and are copied into place. */
static int gather_rounds(comm_group *g, const void *send, size_t count_self, void *recv, const size_t *counts,
                         int root, comm_dtype t, base_err *err)
{
    comm *c = g->owner;
    const size_t es = comm_dtype_size(t);
    const int all = root < 0;
    size_t most = 0;
    for (int i = 0; counts && i < g->size; i++)
        most = counts[i] > most ? counts[i] : most;
    /* everyone must agree on the number of rounds: the largest contribution decides */
    uint64_t m = all || g->rank == root ? most : 0;
    MPI_TRY(g, MPI_Allreduce(MPI_IN_PLACE, &m, 1, MPI_UINT64_T, MPI_MAX, g->mc));
    most = (size_t)m;
    int *rc = NULL, *rd = NULL;
    char *stage = NULL;
    size_t *offs = NULL;
    if (all || g->rank == root) {
        rc = malloc((size_t)g->size * sizeof *rc);
        rd = malloc((size_t)g->size * sizeof *rd);
        offs = malloc((size_t)g->size * sizeof *offs);
        stage = malloc((size_t)g->size * (c->chunk < most ? c->chunk : (most ? most : 1)) * es);
        if (!rc || !rd || !offs || !stage) {
            free(rc), free(rd), free(offs), free(stage);
            return base_errf(err, "rank %d: out of memory in a gather", c->topo.rank);
        }
        offs[0] = 0;
        for (int i = 1; i < g->size; i++)
            offs[i] = offs[i - 1] + counts[i - 1];
    }
    int ret = 0;
    for (size_t done = 0; done < most || (most == 0 && done == 0); done += c->chunk) {
        size_t mine = count_self > done ? count_self - done : 0;
        mine = mine < c->chunk ? mine : c->chunk;
        int pos = 0;
        for (int i = 0; rc && i < g->size; i++) {
            size_t left = counts[i] > done ? counts[i] - done : 0;
            rc[i] = (int)(left < c->chunk ? left : c->chunk);
            rd[i] = pos;
            pos += rc[i];
        }
        const char *sp = (const char *)send + done * es;
        int r = all ? MPI_Allgatherv(sp, (int)mine, mpi_type(t), stage, rc, rd, mpi_type(t), g->mc)
                    : MPI_Gatherv(sp, (int)mine, mpi_type(t), stage, rc, rd, mpi_type(t), root, g->mc);
        if (r != MPI_SUCCESS) {
            ret = comm_fail_mpi(c, err, all ? "MPI_Allgatherv" : "MPI_Gatherv", r);
            break;
        }
        for (int i = 0; rc && i < g->size; i++)
            memcpy((char *)recv + (offs[i] + done) * es, stage + (size_t)rd[i] * es, (size_t)rc[i] * es);
        if (most == 0)
            break;
    }
    free(rc), free(rd), free(offs), free(stage);
    return ret;
}

int comm_allgather(comm_group *g, const void *send, void *recv, size_t n, comm_dtype t, base_err *err)
{
    if (g->size == 1) {
        memcpy(recv, send, n * comm_dtype_size(t));
        return 0;
    }
    count(g, n * comm_dtype_size(t));
    size_t *counts = malloc((size_t)g->size * sizeof *counts);
    if (!counts) {
        return base_errf(err, "rank %d: out of memory", g->owner->topo.rank);
    }
    for (int i = 0; i < g->size; i++)
        counts[i] = n;
    int rc = gather_rounds(g, send, n, recv, counts, -1, t, err);
    free(counts);
    return rc;
}

int comm_gatherv(comm_group *g, const void *send, size_t n, void *recv, const size_t *counts, int root,
                 comm_dtype t, base_err *err)
{
    if (g->size == 1) {
        memcpy(recv, send, n * comm_dtype_size(t));
        return 0;
    }
    if (g->rank != root)
        count(g, n * comm_dtype_size(t));
    return gather_rounds(g, send, n, recv, g->rank == root ? counts : NULL, root, t, err);
}

int comm_any(comm_group *g, int flag, int *any, base_err *err)
{
    int v = flag != 0;
    MPI_TRY(g, MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_LOR, g->mc));
    *any = v;
    return 0;
}

int comm_min_i64(comm_group *g, int64_t *v, base_err *err)
{
    MPI_TRY(g, MPI_Allreduce(MPI_IN_PLACE, v, 1, MPI_INT64_T, MPI_MIN, g->mc));
    return 0;
}

#ifndef DINFER_HAVE_CUDA_IPC
/* Built without CUDA: no IPC all-reduce. */
int comm_ipc_enable(comm *c, void *stream, size_t max_bytes, double timeout_s, base_err *err)
{
    (void)c, (void)stream, (void)max_bytes, (void)timeout_s, (void)err;
    return 1;
}

void comm_ipc_destroy(comm *c)
{
    (void)c;
}

int comm_has_ipc(const comm *c, size_t bytes)
{
    (void)c, (void)bytes;
    return 0;
}

int comm_ipc_allreduce_sum(comm_group *g, void *buf, size_t count, comm_dtype t, base_err *err)
{
    (void)buf, (void)count, (void)t;
    return base_errf(err, "rank %d: this build has no CUDA IPC", g->owner->topo.rank);
}

int comm_ipc_allreduce_add_rmsnorm(comm_group *g, const void *delta, void *x, void *out, const void *w, int rows,
                                   int dim, float eps, comm_dtype t, base_err *err)
{
    (void)delta, (void)x, (void)out, (void)w, (void)rows, (void)dim, (void)eps, (void)t;
    return base_errf(err, "rank %d: this build has no CUDA IPC", g->owner->topo.rank);
}

int comm_ipc_timed_out(comm *c)
{
    (void)c;
    return 0;
}

int comm_ipc_finish(comm *c)
{
    (void)c;
    return 0;
}
#endif

#ifndef DINFER_HAVE_NCCL
/* Built without NCCL: no device path; device activations are staged through host memory. */
int comm_nccl_enable(comm *c, void *stream, double timeout_s, base_err *err)
{
    (void)stream, (void)timeout_s;
    return base_errf(err, "rank %d: this build has no NCCL", c->topo.rank);
}

void comm_nccl_destroy(comm *c)
{
    (void)c;
}

int comm_has_device_path(const comm *c)
{
    (void)c;
    return 0;
}

static int no_device_path(comm_group *g, base_err *err)
{
    return base_errf(err, "rank %d: no device path (built without NCCL)", g->owner->topo.rank);
}

int comm_dev_allreduce_sum(comm_group *g, void *buf, size_t n, comm_dtype t, base_err *err)
{
    (void)buf, (void)n, (void)t;
    return no_device_path(g, err);
}

int comm_dev_send(comm_group *g, const void *buf, size_t n, comm_dtype t, int peer, base_err *err)
{
    (void)buf, (void)n, (void)t, (void)peer;
    return no_device_path(g, err);
}

int comm_dev_recv(comm_group *g, void *buf, size_t n, comm_dtype t, int peer, base_err *err)
{
    (void)buf, (void)n, (void)t, (void)peer;
    return no_device_path(g, err);
}

int comm_dev_wait(comm *c, base_err *err)
{
    if (comm_ipc_finish(c))
        return base_errf(err, "rank %d: a CUDA IPC all-reduce did not finish within %.0f s (--comm-timeout): a peer "
                              "is missing or stuck", c->topo.rank, c->timeout_s);
    return 0;
}
#endif
