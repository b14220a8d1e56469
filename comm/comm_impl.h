/* The comm structures, shared by the MPI backend and the NCCL device path. Not part of the
 * interface: nothing outside comm/ includes this. */
#ifndef DINFER_COMM_IMPL_H
#define DINFER_COMM_IMPL_H

#include <mpi.h>

#include "comm/comm.h"

struct comm_group {
    comm *owner;
    MPI_Comm mc;
    int size, rank;
    uint64_t *bytes; /* the counter this group's traffic adds to */
    void *nccl;      /* ncclComm_t of this group when the device path is on */
};

/* A background send (comm_isend): its requests and its own copy of the bytes. */
typedef struct comm_pending {
    struct comm_pending *next;
    comm_group *g;
    int n_req;
    MPI_Request *req; /* (n_req) one a chunk */
} comm_pending;

/* The CUDA IPC all-reduce's state (comm_ipc.cu), NULL when off. */
#define COMM_IPC_MAX_RANKS 8
typedef struct comm_ipc comm_ipc;

struct comm {
    comm_topology topo;
    comm_group world, tp, pp;
    comm_counters counters;
    size_t chunk;
    void *stream;     /* cudaStream_t of the device path */
    double timeout_s; /* of every device-path operation */
    int device_path;
    const char *last_op; /* the device path's latest operation, named when a wait fails */
    comm_pending *pending, *pending_tail; /* background sends, oldest first */
    int n_pending;
    comm_ipc *ipc;
};

/* "rank R: CALL failed: MPI's message" into err; returns -1. */
int comm_fail_mpi(const comm *c, base_err *err, const char *call, int rc);
void comm_nccl_destroy(comm *c);
void comm_ipc_destroy(comm *c);
/* Waits for the stream, then whether a CUDA IPC wait ran out of time (the path without NCCL). */
int comm_ipc_finish(comm *c);
/* Lets MPI move the background sends along (a rank waiting on its GPU must not hold up a peer
 * that waits for one of them); frees those that completed. */
int comm_progress(comm *c, base_err *err);

#endif
