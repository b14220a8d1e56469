/* The partition plan: which layers, heads, FFN columns and vocabulary rows each rank of a
 * tp x pp job holds, and what that costs in memory. Pure functions of the model config: nothing
 * is read but config.json, and every impossible split is refused, with the reason, before any
 * weight is touched.
 *
 * Rank r is pipeline stage r / tp and tensor-parallel rank r % tp: a tp group is consecutive
 * ranks, so with ranks packed per node tensor parallelism stays inside a node. */
#ifndef DINFER_PARTITION_PLAN_H
#define DINFER_PARTITION_PLAN_H

#include <stddef.h>

#include "runtime/config.h"
#include "base/err.h"
#include "runtime/model.h"

#define PLAN_MAX_TP 1024
#define PLAN_MAX_PP 1024

/* Where world rank `rank` sits in a job of tensor-parallel width tp: its pipeline stage and its
 * place in the stage's tp group. The one definition of the rank layout (comm builds its groups
 * from it, the plan its shards). */
void plan_place(int tp, int rank, int *stage, int *tp_rank);
/* The world rank at (stage, tp_rank). */
int plan_rank_at(int tp, int stage, int tp_rank);

typedef struct plan_rank {
    int rank;
    int stage;                 /* pipeline stage (plan_place) */
    int tp_rank;               /* place in the stage's tp group */
    rt_shard shard;
    size_t weight_bytes;       /* in the plan's dtype */
    size_t kv_bytes_per_token; /* this rank's KV cache per token of context */
} plan_rank;

typedef struct plan {
    int tp, pp, world;
    rt_dtype dtype;            /* weight and KV type the estimates are made for */
    int *stage_layers;         /* (pp) layers of each stage */
    plan_rank *ranks;          /* (world) */
} plan;

/* Splits cfg over tp x pp ranks. layers_per_stage (pp entries) fixes the layer split; NULL spreads
 * the layers as evenly as possible, earlier stages taking the remainder (the last stage also
 * holds the LM head). Fails, naming the problem, when the split is impossible. */
int plan_make(plan *p, const rt_config *cfg, int tp, int pp, const int *layers_per_stage, rt_dtype dtype,
              base_err *err);
void plan_free(plan *p);

/* The split a launcher uses for `hosts` hosts of `per_host` GPUs (or CPU ranks) each: tensor
 * parallelism inside a host (the largest tp dividing per_host that the model allows), pipeline
 * parallelism across hosts and across the tp groups of a host (pp = hosts x per_host / tp), so
 * every GPU gets a rank. Fails, naming what the model allows, when no split uses them all. */
int plan_choose(const rt_config *cfg, int hosts, int per_host, int *tp, int *pp, base_err *err);

/* Fails unless the job's world size equals tp x pp. */
int plan_check_world(const plan *p, int world_size, base_err *err);

/* Bytes of tensor-parallel and pipeline traffic one rank sends per decoded token (one token of
 * one sequence), as payloads handed to the collectives: the all-reduces after the embedding, each
 * attention and each MLP; the hidden state to the next stage; a greedy row's part of the
 * vocab-parallel sampling (runtime/vocab_sample.h). */
size_t plan_comm_bytes_per_token(const plan *p, const rt_config *cfg, int rank);

#endif
