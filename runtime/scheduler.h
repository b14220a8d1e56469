/* Continuous batching on rank 0. Requests wait in a queue; each step the scheduler takes one
 * decode token from every running sequence, then prefill chunks of sequences still reading their
 * prompt, then admits waiting requests while the step's token budget (max_batch_tokens), the
 * sequence limit and the free KV blocks allow. KV blocks are handed out as sequences grow; when
 * none is left, the most recently admitted sequence is preempted by recomputation (its blocks
 * freed, its prompt and tokens so far prefilled again later), so admission never deadlocks. New
 * requests join the running batch at the next step; cancellation frees a sequence's blocks at
 * once. Events (tokens, completions, errors) go to the caller's callback. */
#ifndef DINFER_RUNTIME_SCHEDULER_H
#define DINFER_RUNTIME_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/engine.h"
#include "runtime/sampler.h"

/* Status codes of finished requests (gRPC's numbers). */
enum {
    RT_STATUS_OK = 0,
    RT_STATUS_CANCELLED = 1,
    RT_STATUS_INVALID_ARGUMENT = 3,
    RT_STATUS_DEADLINE_EXCEEDED = 4,
    RT_STATUS_NOT_FOUND = 5,
    RT_STATUS_ALREADY_EXISTS = 6,
    RT_STATUS_RESOURCE_EXHAUSTED = 8,
    RT_STATUS_INTERNAL = 13,
    RT_STATUS_UNAVAILABLE = 14,
};

typedef struct rt_sched_request {
    uint64_t id;             /* unique among live requests; chosen by the caller */
    const int32_t *prompt;   /* copied */
    int prompt_len;
    int max_tokens;
    rt_sampling sampling;
    bool ignore_eos;
    const int32_t *stop_ids; /* copied; generation stops after one of these */
    int n_stop;
    double deadline;         /* monotonic seconds; 0: none */
} rt_sched_request;

typedef enum rt_sched_event_kind {
    RT_EV_TOKEN,
    RT_EV_DONE,
    RT_EV_ERROR,
} rt_sched_event_kind;

typedef struct rt_sched_event {
    rt_sched_event_kind kind;
    uint64_t id;
    const rt_sample_out *sample;  /* TOKEN */
    const char *finish_reason;    /* DONE: "length" or "stop" */
    int status;                   /* ERROR */
    const char *message;          /* ERROR */
    int prompt_tokens, completion_tokens;
    double ttft_seconds, total_seconds; /* DONE: from arrival */
    bool *stop;                   /* TOKEN: the receiver sets *stop to end the request here ("stop") */
} rt_sched_event;

typedef void (*rt_sched_emit_fn)(void *ctx, const rt_sched_event *ev);

typedef struct rt_sched_options {
    int max_batch_tokens; /* tokens per step */
    int max_seqs;         /* running sequences */
    int pipeline_depth;   /* steps in flight at once, each over other sequences (pipeline parallelism:
                           * pp keeps every stage busy); at most rt_engine_max_in_flight, < 1 means 1 */
    int prompt_spread;    /* new prompts spread over this many cycles beside the running decodes
                           * (rt_sched_share), at least RT_SCHED_PROMPT_FLOOR tokens a cycle; 1: whole
                           * steps; 0: the default (whole steps, except RT_SCHED_PROMPT_CYCLES without
                           * the floor for a pipeline on a host backend) */
    int run_ahead;        /* 1: on a single rank, each decode step is queued before the host has read the
                           * one before (its tokens taken from that step's samples on the device), so the
                           * device does not wait for the host between steps; a sequence that ends there
                           * wastes its row of the next step. -1: off. 0: the default, DINFER_RUN_AHEAD=0|1,
                           * else on where the backend is a device (H100, 1B batch 1: the device's idle time
                           * between two steps 16.5 -> 11.9 us, decode +0.3%; the 8B's unchanged) */
} rt_sched_options;

typedef struct rt_sched_stats {
    int waiting, running;
    int kv_blocks_used, kv_blocks_free, kv_block_size;
    uint64_t steps, step_tokens, preemptions, finished;
    uint64_t steps_overlapped; /* steps started while another was in flight (pipeline parallelism, run-ahead) */
    int in_flight;             /* steps in flight now */
    double tokens_per_second; /* generated tokens over the last 10 s */
    double ttft_p50, ttft_p99, tpot_p50, tpot_p99; /* seconds, over the last 1024 requests */
} rt_sched_stats;

typedef struct rt_sched rt_sched;

/* The scheduler drives an engine whose geometry has room for opt (max_tokens >= max_batch_tokens,
 * max_seqs, max_logits >= max_seqs, max_blocks covering the context). */
int rt_sched_create(rt_sched **out, rt_engine *e, const rt_sched_options *opt, rt_sched_emit_fn emit, void *ctx,
                    base_err *err);
void rt_sched_destroy(rt_sched *s);

/* The engine geometry a scheduler with opt needs for a model and a pool of n_blocks. */
rt_engine_geometry rt_sched_geometry(const rt_config *cfg, const rt_sched_options *opt, int n_blocks,
                                     int block_size);

/* Checks a request against the model (prompt, token ids, lengths, sampling); -1 with the reason. */
int rt_sched_check(const rt_config *cfg, const rt_sched_request *r, base_err *err);

/* Queues a request. Fails with the status (INVALID_ARGUMENT, RESOURCE_EXHAUSTED) and the reason in
 * err when it can never run; nothing is emitted then. */
int rt_sched_add(rt_sched *s, const rt_sched_request *r, int *status, base_err *err);
/* Ends a live request with an ERROR event of this status and message; -1 when id is not live. */
int rt_sched_cancel(rt_sched *s, uint64_t id, int status, const char *message);
/* Ends every request still waiting (not yet admitted) likewise. */
void rt_sched_cancel_waiting(rt_sched *s, int status, const char *message);
/* Requests waiting or running, or steps in flight. */
bool rt_sched_has_work(const rt_sched *s);
int rt_sched_in_flight(const rt_sched *s);
int rt_sched_running(const rt_sched *s);
/* Starts a step when the pipeline has room and there is work, else takes back (emitting its
 * events) the oldest step in flight. With a depth of 1: runs one whole step. Collective over every
 * rank of the engine. */
int rt_sched_step(rt_sched *s, base_err *err);
void rt_sched_get_stats(const rt_sched *s, rt_sched_stats *st);
/* With several steps in flight (pipeline parallelism): the tokens the next step may take. Stage k
 * works on step i while stage k - 1 works on step i + 1, so the smaller of the two leaves its stage
 * idle for the difference: every rise and fall of the step size costs the pipeline that much. The
 * share is, over the depth, the work due every cycle (in_flight: the tokens of the steps in flight;
 * now: the running sequences' next tokens and the recomputation of preempted ones) plus the new
 * prompts' tokens (prompts, of prompt_seqs sequences) spread over `cycles` cycles, but at least
 * `floor` of them a cycle: a wave of prompts raises the steps a little for several cycles instead
 * of doubling one or two. A lone prompt with nothing else to overlap takes whole steps; the share
 * is 1 to max_batch_tokens. With one step at a time (depth 1) the same spread lets a server's
 * sequences drift apart: a closed loop of clients that start together otherwise stays in waves,
 * each paying a whole prefill while nothing decodes, where a spread prompt rides along decode
 * steps (on a GPU such a step costs about its weights' reading, not its tokens).
 * The scheduler spreads prompts over rt_sched_options.prompt_spread cycles when given, with
 * RT_SCHED_PROMPT_FLOOR; by default over RT_SCHED_PROMPT_CYCLES without a floor for a pipeline
 * on a host backend (a step's cost grows with its tokens: issue 14's measured rule) and over 1
 * otherwise (a GPU: the spread multiplied a pipeline's steps, each costing about a decode step). */
#define RT_SCHED_PROMPT_CYCLES 8
#define RT_SCHED_PROMPT_FLOOR 128
int rt_sched_share(long in_flight, long now, long prompts, int prompt_seqs, int depth, int max_batch_tokens,
                   int cycles, int floor);

/* Tokens of the step the last rt_sched_step started (0 when none), and how many of them were
 * prompt (prefill) tokens. */
void rt_sched_last_step(const rt_sched *s, int *tokens, int *prefill_tokens);
/* The same for the step whose time the last rt_sched_step spent: the one it started, or with run-ahead
 * on a device backend the one it collected (it waits for that one; the one it started still runs). */
void rt_sched_last_timed(const rt_sched *s, int *tokens, int *prefill_tokens);
/* Whether the scheduler runs ahead (rt_sched_options.run_ahead, resolved). */
bool rt_sched_runs_ahead(const rt_sched *s);

#endif
