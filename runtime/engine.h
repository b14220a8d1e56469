/* The engine runs steps of a job over every rank: rank 0 (the coordinator) decides each step and
 * broadcasts its plan (tokens, positions, KV block tables, sampling of each logit row); every rank
 * runs its part of the forward pass; the last stage's tp rank 0 samples and returns the tokens to
 * rank 0. On a single rank (no comm) a step is just forward + sample. */
#ifndef DINFER_RUNTIME_ENGINE_H
#define DINFER_RUNTIME_ENGINE_H

#include <stdint.h>

#include "comm/comm.h"
#include "runtime/forward.h"
#include "runtime/sampler.h"

/* What every rank must allocate identically: the KV pool and the step limits. */
typedef struct rt_engine_geometry {
    int32_t n_blocks;
    int32_t block_size;
    rt_forward_limits lim;
} rt_engine_geometry;

/* Traffic of decode steps (every token a sequence's only token in the step), per rank. */
typedef struct rt_engine_traffic {
    uint64_t decode_tokens;
    uint64_t tp_bytes, pp_bytes, world_bytes;
} rt_engine_traffic;

typedef struct rt_engine rt_engine;

int rt_engine_create(rt_engine **out, rt_model *m, comm *c, const rt_engine_geometry *g, base_err *err);
void rt_engine_destroy(rt_engine *e);
const rt_engine_geometry *rt_engine_geom(const rt_engine *e);
rt_model *rt_engine_model(rt_engine *e);
rt_engine_traffic rt_engine_get_traffic(const rt_engine *e);

#define RT_ENGINE_MAX_IN_FLIGHT 16

/* Rank 0: starts a step over every rank: sends its plan and runs rank 0's part of it. rows
 * (b->n_logits) say how each logit row is sampled; rows and out (b->n_logits) belong to the step
 * until rt_engine_collect returns it: the samples land in out and the advanced rng states in rows.
 * When another rank samples (pp > 1) several steps may be in flight, each over other sequences
 * (a sequence's next token needs its last one), so each stage of the pipeline works on a
 * different step. */
int rt_engine_submit(rt_engine *e, const rt_batch *b, rt_step_sampling *rows, rt_sample_out *out, base_err *err);
/* Rank 0: waits for the oldest step in flight to end and fills its rows and out. */
int rt_engine_collect(rt_engine *e, base_err *err);
/* Steps rank 0 may have in flight at once: 1 when rank 0 samples itself (pp = 1), beside a chained one
 * (rt_engine_chains). */
int rt_engine_max_in_flight(const rt_engine *e);
/* Whether a step may chain its tokens to the one in flight (rt_batch.chain): a single rank that
 * samples whole rows, so two steps may be in flight, the second taking the first's samples on the
 * device before the host has read them. */
bool rt_engine_chains(const rt_engine *e);
int rt_engine_in_flight(const rt_engine *e);
/* Rank 0, with nothing in flight: submit and collect one step. */
int rt_engine_step(rt_engine *e, const rt_batch *b, rt_step_sampling *rows, rt_sample_out *out, base_err *err);
/* Ranks other than 0: follow rank 0's steps until it calls rt_engine_finish. */
int rt_engine_follow(rt_engine *e, base_err *err);
/* Rank 0: releases the followers. */
int rt_engine_finish(rt_engine *e, base_err *err);

#endif
