/* Helpers for the MPI executables: every rank reaches the same verdict after each start-up phase
 * (config, plan, shard loading), and when any rank failed, rank 0 prints the first failing rank's
 * message (which names the rank and the file) and every rank exits, none left waiting in a
 * collective. */
#ifndef DINFER_LAUNCH_JOB_H
#define DINFER_LAUNCH_JOB_H

#include <stdio.h>

#include "comm/comm.h"
#include "launch/job_flags.h"
#include "partition/plan.h"
#include "base/err.h"
#include "runtime/engine.h"
#include "runtime/model.h"


/* A rank's loaded share of the model and the memory it uses. */
typedef struct job_model {
    rt_config cfg;
    rt_engine_geometry geo;      /* the job's step limits, built once from the flags and config.json;
                                    geo.n_blocks (the KV pool) is the caller's to set */
    plan plan;
    rt_backend *be;
    rt_model model;
    int threads;
    bool on_gpu;
    rt_dtype dtype;              /* activations and weights */
    char device[160];            /* "cpu" or "cuda:0 NVIDIA H100 ..." */
    size_t gpu_total, gpu_budget; /* bytes; budget = fraction x total */
    size_t weight_bytes, workspace_bytes;
} job_model;

/* Collective start-up of every MPI executable: config.json, the step geometry (the flags'
 * --max-batch-tokens and --block-size, sched's sequences per step, the context), the plan (refused
 * before any weight is read), the device (GPU local_rank % visible GPUs) and its memory plan
 * (weights + the workspace of the geometry must fit in the budget, checked before loading), then
 * this rank's shard, and NCCL between ranks that each have a GPU. Prints the device and memory of
 * every rank (rank 0, in rank order), and with --verbose each rank's shard. Returns 0, or -1 on
 * every rank after rank 0 printed what failed where. */
int job_load(comm *c, const char *prog, const job_flags *f, int max_seqs, job_model *out);

/* Rank 0 learns where every rank runs: hosts (world, 64 bytes each) and pids, filled on rank 0
 * only (others may pass NULL). Collective. */
int job_roster(comm *c, char (*hosts)[64], int *pids);

/* Bytes of KV cache this rank can still hold under its budget (GPU), or SIZE_MAX (CPU). */
size_t job_kv_budget(const job_model *m);
void job_model_free(job_model *m);

/* Collective over the world. rc is this rank's result (0 or -1, with err filled). Returns 0 when
 * every rank succeeded; else -1 on every rank, after rank 0 has printed "prog: rank R (host H):
 * message" for each failed rank, the lowest first. */
int job_agree(comm *c, const char *prog, int rc, const base_err *err);

/* Rank 0 prints one line per rank, in rank order, of what each rank wrote into line. */
int job_print_by_rank(comm *c, FILE *f, const char *line);

/* A failure after start-up, when the other ranks may be inside a collective: prints
 * "prog: rank R (host H): message" and aborts the whole job. */
void job_abort(comm *c, const char *prog, const base_err *err) __attribute__((noreturn));

/* OpenMP threads for this rank: requested when > 0, else OMP_NUM_THREADS when set, else this
 * host's cores shared among its ranks. */
int job_threads(const comm *c, int requested);

#endif
