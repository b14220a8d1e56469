/* The transformer forward pass of one rank over one step's batch, written against the backend op
 * table. A batch mixes sequences in prefill (many tokens) and decode (one token); every token's k
 * and v go into the paged KV cache, and logits are produced only for the rows asked for. */
#ifndef DINFER_RUNTIME_FORWARD_H
#define DINFER_RUNTIME_FORWARD_H

#include <stdint.h>

#include "comm/comm.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"
#include "runtime/sampler.h"

/* One step's tokens, in host memory. */
typedef struct rt_batch {
    int n_tokens;
    const int32_t *tokens;       /* (n_tokens) */
    const int32_t *pos;          /* (n_tokens) position in its sequence */
    const int32_t *seq;          /* (n_tokens) index of its sequence in block_tables */
    int n_seqs;
    const int32_t *block_tables; /* (n_seqs, max_blocks): physical block ids */
    int max_blocks;              /* row stride of block_tables */
    int n_logits;
    const int32_t *logit_rows;   /* (n_logits) token rows whose next-token logits are wanted */
    const int32_t *chain;        /* (n_tokens) or NULL: where chain[t] >= 0, token t is the one the step
                                  * before sampled for its logit row chain[t] (tokens[t] unread), so a
                                  * step can start before the host has read the one before it
                                  * (rt_forward_chains) */
} rt_batch;

/* Limits a forward context is sized for. */
typedef struct rt_forward_limits {
    int max_tokens; /* tokens per step */
    int max_seqs;   /* sequences per step */
    int max_blocks; /* blocks per sequence */
    int max_logits; /* logit rows per step */
    bool host_logits; /* sample on the host even where the backend samples: rt_forward_host_logits
                       * then gives each step's logits (quality tools) */
} rt_forward_limits;

typedef struct rt_forward rt_forward;

/* Allocates the activation workspace for lim on the model's backend. With a comm (NULL on a single
 * rank), the step is this rank's part of a tp x pp job whose shard is m->shard: all-reduces over
 * the tp group, hidden states from the previous and to the next stage over the pp group, and the
 * vocab-parallel logits gathered on the last stage's tp rank 0. */
int rt_forward_create(rt_forward **out, rt_model *m, rt_kv_cache *kv, const rt_forward_limits *lim, comm *c,
                      base_err *err);
void rt_forward_destroy(rt_forward *fw);

/* Device bytes rt_forward_create allocates for a shard and limits (the memory plan's workspace). */
size_t rt_forward_workspace_bytes(const rt_config *c, const rt_shard *s, const rt_forward_limits *lim, rt_dtype dt);

/* How one logit row is sampled; rng is advanced by the step. */
typedef struct rt_step_sampling {
    rt_sampling params;
    rt_rng rng;
} rt_step_sampling;

/* Runs the step; collective over every rank of the job. On the last stage's tp rank 0 (the
 * sampling rank), each logit row i is sampled as rows[i] says into out[i] (rows[i].rng advanced):
 * on the device when the backend has a sampler and the rank holds the whole vocabulary, else from
 * the logits on the host. rows and out are read only there. Fails, naming
 * the problem, when the batch exceeds the limits or holds a token id, position or block id out of
 * range (every rank sees the same batch and refuses it before any collective), or when a
 * collective fails. */
int rt_forward_step(rt_forward *fw, const rt_batch *b, rt_step_sampling *rows, rt_sample_out *out, base_err *err);

/* Whether a batch may chain its tokens to the step before (rt_batch.chain): a single rank that
 * samples whole rows, on the device or in host memory. */
bool rt_forward_chains(const rt_forward *fw);

/* rt_forward_step in two halves on a single rank: submit returns once the step is queued, its samples
 * in out already (*slot -1, or slot NULL: rt_forward_step) or on their way from the device (*slot 0 or
 * 1, the last two submitted taking different slots); collect waits for them and writes them to out. rows are advanced by
 * submit. Another step (a chained one) may be submitted before the one before it is collected;
 * collect them in order. */
int rt_forward_submit(rt_forward *fw, const rt_batch *b, rt_step_sampling *rows, rt_sample_out *out, int *slot,
                      base_err *err);
int rt_forward_collect(rt_forward *fw, rt_sample_out *out, int n_logits, int slot, base_err *err);

/* After a step on a rank that sampled whole rows on the host (a single rank without a device
 * sampler): its (n_logits, vocab) fp32 logits, valid until the next step; else NULL. For scoring
 * a text (perplexity), where the next token is known rather than drawn. */
const float *rt_forward_host_logits(const rt_forward *fw);

#endif
