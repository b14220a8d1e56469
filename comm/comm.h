/* One communication interface for the runtime, whatever carries the bytes: MPI over host memory
 * (CPU ranks, control messages) now, NCCL over device memory in the GPU issue. The forward pass
 * calls these and never sees MPI or NCCL. comm depends on nothing else of dinfer's.
 *
 * Every call is collective over its group (send/recv: over the pair) and returns 0, or -1 with err
 * (base's error type, as everywhere in dinfer) saying which call failed on which rank and why.
 * Counts are elements, size_t; messages of more than INT_MAX elements are split into chunks. */
#ifndef DINFER_COMM_H
#define DINFER_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef enum comm_dtype {
    COMM_F32 = 0,
    COMM_I32,
    COMM_U8,
    COMM_BF16, /* device paths only for reductions; MPI moves them as 16-bit words */
    COMM_F16,
} comm_dtype;

size_t comm_dtype_size(comm_dtype t);

typedef struct comm comm;
typedef struct comm_group comm_group;

/* The groups of a tp x pp job, from the places the caller gave each rank. */
typedef struct comm_topology {
    int world_size, rank;
    int tp, pp;
    int stage, tp_rank;
    int local_rank, local_size; /* among the ranks on this host (GPU binding, thread counts) */
    comm_group *world; /* every rank */
    comm_group *tp_group; /* the tp ranks of this stage, in tp_rank order */
    comm_group *pp_group; /* the ranks of every stage with this tp_rank, in stage order */
} comm_topology;

/* Byte counters of what this rank handed to each group (payloads, both directions of a send
 * counted once, at the sender; a collective counted as its buffer size). */
typedef struct comm_counters {
    uint64_t tp_bytes, pp_bytes, world_bytes;
    uint64_t calls;
} comm_counters;

/* MPI backend over MPI_COMM_WORLD (MPI must be initialized). This rank sits at (stage, tp_rank), as
 * the partition plan places it (comm does not decide the layout); the groups are built from every
 * rank's place. Fails when the world size is not tp x pp or two ranks claim one place. Collective. */
int comm_mpi_create(comm **out, int tp, int pp, int stage, int tp_rank, base_err *err);
void comm_destroy(comm *c);

const comm_topology *comm_topo(const comm *c);
comm_counters comm_get_counters(const comm *c);
void comm_reset_counters(comm *c);
/* Adds d to the counters: what a replayed CUDA graph's collectives moved (the host enqueued them
 * once, at capture). */
void comm_add_counters(comm *c, const comm_counters *d);
/* Largest element count one underlying call carries (INT_MAX by default; tests lower it). */
void comm_set_chunk_elems(comm *c, size_t n);

int comm_group_size(const comm_group *g);
int comm_group_rank(const comm_group *g);

int comm_allreduce_sum(comm_group *g, void *buf, size_t count, comm_dtype t, base_err *err);
int comm_bcast(comm_group *g, void *buf, size_t count, comm_dtype t, int root, base_err *err);
/* As comm_bcast (and matched only by comm_bcast_idle on the other ranks), but a rank that waits
 * polls as comm_recv_idle does: for ranks following the coordinator. */
int comm_bcast_idle(comm_group *g, void *buf, size_t count, comm_dtype t, int root, base_err *err);
/* recv (size * count) = every rank's count elements of send, in group rank order. */
int comm_allgather(comm_group *g, const void *send, void *recv, size_t count, comm_dtype t, base_err *err);
/* On root, recv = rank i's counts[i] elements, in rank order; counts is read on root only. */
int comm_gatherv(comm_group *g, const void *send, size_t count, void *recv, const size_t *counts, int root,
                 comm_dtype t, base_err *err);
int comm_send(comm_group *g, const void *buf, size_t count, comm_dtype t, int peer, base_err *err);
int comm_recv(comm_group *g, void *buf, size_t count, comm_dtype t, int peer, base_err *err);
/* A send that never waits for the receiver: the bytes are copied and move in the background, so
 * the caller may reuse buf at once (a pipeline stage hands a step on and starts the next while
 * the next stage is still busy). Matched by comm_recv / comm_recv_idle, in order with the
 * group's other sends to that peer. A failure of a background send is returned by a later
 * comm_isend or comm_flush of the same comm. */
int comm_isend(comm_group *g, const void *buf, size_t count, comm_dtype t, int peer, base_err *err);
/* Waits until every background send of c has been received. */
int comm_flush(comm *c, base_err *err);
/* As comm_recv, for a rank waiting on the next step of the job: while steps arrive it polls
 * without sleeping (yielding the core to other processes), and only after COMM_IDLE_SPIN_S
 * seconds without a message does it nap between polls, so an idle job does not burn its cores
 * and a busy one does not wait on naps. */
int comm_recv_idle(comm_group *g, void *buf, size_t count, comm_dtype t, int peer, base_err *err);
#define COMM_IDLE_SPIN_S 0.1
/* Logical OR of flag over the group: how every rank learns that one of them failed. */
int comm_any(comm_group *g, int flag, int *any, base_err *err);
/* Smallest value over the group (sizes every rank must agree on). */
int comm_min_i64(comm_group *g, int64_t *v, base_err *err);

/* ---- the device path: activations in GPU memory over NCCL ----
 * Collective over the world: one NCCL communicator per tp group and per pipeline chain (the pp
 * group), each group's first rank making the unique id and MPI broadcasting it; initialization
 * waits at most timeout_s. cuda_stream is the cudaStream_t the operations are ordered on: they are
 * enqueued there and return at once, the host never waiting on one (so a step's kernels and its
 * collectives run back to back, and a step can be captured in a CUDA graph); comm_dev_wait, once
 * a step, waits for what was enqueued, at most timeout_s, polling NCCL's asynchronous errors, and
 * a failure or timeout aborts the communicators and returns -1 naming the rank and the operation.
 * Needs one GPU per rank. */
int comm_nccl_enable(comm *c, void *cuda_stream, double timeout_s, base_err *err);
int comm_has_device_path(const comm *c);
int comm_dev_allreduce_sum(comm_group *g, void *buf, size_t count, comm_dtype t, base_err *err);
int comm_dev_send(comm_group *g, const void *buf, size_t count, comm_dtype t, int peer, base_err *err);
int comm_dev_recv(comm_group *g, void *buf, size_t count, comm_dtype t, int peer, base_err *err);
/* ---- a one-shot all-reduce over CUDA IPC, for the tp ranks of one host ----
 * Collective over the tp group: 0 when taken (each rank has mapped every peer's buffer of two
 * max_bytes slots); 1 when not, the reason in err (one rank in the group, more than 8, ranks on
 * other hosts, or a CUDA call that failed on some rank: the caller falls back to NCCL or to host
 * memory); -1 when MPI failed. The reduction is one kernel on cuda_stream (capturable in a graph),
 * summing in fp32 in rank order (every rank gets the same bits); a wait longer than timeout_s
 * raises a flag comm_dev_wait reports. Works between processes that share one GPU too. */
int comm_ipc_enable(comm *c, void *cuda_stream, size_t max_bytes, double timeout_s, base_err *err);
/* Whether the IPC path takes a message of bytes. */
int comm_has_ipc(const comm *c, size_t bytes);
int comm_ipc_allreduce_sum(comm_group *g, void *buf, size_t count, comm_dtype t, base_err *err);
/* The all-reduce of delta (rows x dim) with the residual add and RMSNorm after it in the same
 * kernel: x += the sum, out = rmsnorm(x) * w (eps), rounded as the two ops would (out may be delta;
 * rows * dim * the type's size at most comm_has_ipc's bytes). */
int comm_ipc_allreduce_add_rmsnorm(comm_group *g, const void *delta, void *x, void *out, const void *w, int rows,
                                   int dim, float eps, comm_dtype t, base_err *err);
int comm_ipc_timed_out(comm *c);

/* Waits until every operation enqueued on the stream so far has finished (0 at once without a
 * device path). */
int comm_dev_wait(comm *c, base_err *err);

#endif
