/* Offline generation: a fixed set of prompts run to completion as one continuously batched job
 * (dinfer-run, benchmarks, tests), scheduled on rank 0 and run by an engine over every rank. Each step takes up to max_batch_tokens tokens:
 * one decode token per running sequence and prefill chunks of the others. */
#ifndef DINFER_RUNTIME_GENERATE_H
#define DINFER_RUNTIME_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/sampler.h"

typedef struct rt_gen_request {
    const int32_t *prompt; /* (prompt_len) token ids */
    int prompt_len;
    int max_tokens;        /* tokens to generate, >= 1 */
    rt_sampling sampling;
    bool ignore_eos;
} rt_gen_request;

typedef struct rt_gen_result {
    int32_t *tokens;       /* (n_tokens) generated ids, an end-of-sequence id included */
    float *logprobs;       /* (n_tokens) log-softmax of each chosen token */
    int n_tokens;
    const char *finish_reason; /* "length" or "stop" */
} rt_gen_result;

typedef struct rt_gen_stats {
    double prefill_seconds; /* steps that held prefill tokens */
    double decode_seconds;  /* steps of decode tokens only */
    long prefill_tokens;    /* prompt tokens processed */
    long decode_tokens;     /* tokens fed in decode-only steps */
    int steps;
    long steps_overlapped;  /* steps started while another was in flight (pipeline parallelism, run-ahead) */
    bool run_ahead;         /* the scheduler ran ahead (rt_sched_options.run_ahead) */
} rt_gen_stats;

typedef struct rt_gen_options {
    int max_batch_tokens; /* tokens per step */
    int block_size;       /* KV block size in tokens */
} rt_gen_options;

/* Checks the requests against the model and gives the KV blocks of a pool that holds every one of
 * them at once (the n_blocks of the job's geometry). */
int rt_gen_kv_blocks(const rt_config *cfg, const rt_gen_request *reqs, int n, int block_size, int32_t *n_blocks,
                     base_err *err);

/* Rank 0: runs the requests to completion on an engine whose pool has rt_gen_kv_blocks, with up to
 * pipeline_depth steps in flight (rt_sched_options). results (n) are filled; free them with
 * rt_gen_result_free. */
int rt_generate(rt_engine *e, const rt_gen_request *reqs, int n, int pipeline_depth, rt_gen_result *results,
                rt_gen_stats *stats, base_err *err);

/* A single-rank convenience: geometry, engine, generate. */
int rt_generate_local(rt_model *m, const rt_gen_request *reqs, int n, const rt_gen_options *opt,
                      rt_gen_result *results, rt_gen_stats *stats, base_err *err);
void rt_gen_result_free(rt_gen_result *r);

#endif
