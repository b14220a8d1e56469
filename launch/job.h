/* Helpers for the MPI executables: every rank reaches the same verdict after each start-up phase
 * (config, plan, shard loading), and when any rank failed, rank 0 prints the first failing rank's
 * message (which names the rank and the file) and every rank exits, none left waiting in a
 * collective. */
#ifndef DINFER_LAUNCH_JOB_H
#define DINFER_LAUNCH_JOB_H

#include <stdio.h>

#include "comm/comm.h"
#include "partition/plan.h"
#include "runtime/err.h"
#include "runtime/model.h"

/* A rank's loaded share of the model. */
typedef struct job_model {
    rt_config cfg;
    plan plan;
    rt_backend *be;
    rt_model model;
    int threads;
} job_model;

/* Collective start-up of every MPI executable: config.json, the plan (refused before any weight is
 * read), then this rank's shard on the CPU backend. With verbose, rank 0 prints every rank's
 * shard and bytes loaded. Returns 0, or -1 on every rank after rank 0 printed what failed where. */
int job_load(comm *c, const char *prog, const char *dir, int tp, int pp, const int *layers_per_stage,
             int threads, bool verbose, job_model *out);
void job_model_free(job_model *m);

/* Collective over the world. rc is this rank's result (0 or -1, with err filled). Returns 0 when
 * every rank succeeded; else -1 on every rank, after rank 0 has printed "prog: rank R (host H):
 * message" for each failed rank, the lowest first. */
int job_agree(comm *c, const char *prog, int rc, const rt_err *err);

/* Rank 0 prints one line per rank, in rank order, of what each rank wrote into line. */
int job_print_by_rank(comm *c, FILE *f, const char *line);

/* A failure after start-up, when the other ranks may be inside a collective: prints
 * "prog: rank R (host H): message" and aborts the whole job. */
void job_abort(comm *c, const char *prog, const rt_err *err) __attribute__((noreturn));

/* OpenMP threads for this rank: requested when > 0, else OMP_NUM_THREADS when set, else this
 * host's cores shared among its ranks. */
int job_threads(const comm *c, int requested);

#endif
