#include "runtime/scheduler.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/kv_cache.h"
#include "base/clock.h"

#define RING 1024     /* finished requests kept for the latency percentiles */
#define RATE_RING 512 /* steps kept for the tokens/s window */
#define RATE_WINDOW 10.0

typedef struct seq {
    uint64_t id;
    int32_t *tokens;   /* (prompt_len + max_tokens) prompt, then the generated tokens */
    int prompt_len, n_gen, max_tokens;
    int n_computed;    /* tokens whose k and v are in the cache */
    int pending;       /* tokens after those in steps not yet collected */
    rt_sampling sampling;
    rt_rng rng;
    bool ignore_eos;
    int32_t *stop_ids;
    int n_stop;
    double deadline, arrival, first_token;
    int32_t *blocks;   /* (max_blocks) physical ids of its logical blocks */
    int n_blocks;
    int in_flight;     /* steps not yet collected that hold it: its next token is not known yet */
    int out_row;       /* its logit row in the last step submitted, if that one holds it (else -1) */
} seq;

typedef struct entry { /* one sequence's share of a step */
    seq *s;            /* NULL once it ended while its step was in flight */
    int take;
    bool wants_logits;
    bool chained;      /* one token, the one the step in flight samples for it (run-ahead) */
} entry;

/* A step submitted to the engine and not yet collected. */
typedef struct flight {
    entry *entries;        /* (max_seqs) */
    int n;
    rt_step_sampling *rows; /* (max_seqs) */
    rt_sample_out *outs;    /* (max_seqs) */
    int tokens, prefill;
} flight;

struct rt_sched {
    rt_engine *e;
    const rt_config *cfg;
    rt_sched_options opt;
    rt_sched_emit_fn emit;
    void *ctx;
    rt_kv_blocks pool;
    int block_size, max_blocks;
    seq **waiting;     /* FIFO; preempted sequences go back to the front */
    int n_waiting, cap_waiting;
    seq **running;     /* in admission order */
    int n_running;
    seq **snapshot;    /* (max_seqs) scratch copy of running */
    entry *entries;    /* (max_seqs) the step being formed */
    int32_t *tok, *pos, *sidx, *lrow, *tables; /* step arrays */
    int depth;         /* steps in flight at most over different sequences (pipeline parallelism) */
    bool ahead;        /* run-ahead: a step chained to the one in flight (rt_sched_options.run_ahead) */
    int slots;         /* flights: depth, or 2 with run-ahead */
    int32_t *chain;    /* (max_batch_tokens) the step's rt_batch.chain */
    int prompt_cycles; /* rt_sched_share's spread of new prompts */
    int prompt_floor;  /* and its least prompt tokens a cycle */
    flight flights[RT_ENGINE_MAX_IN_FLIGHT]; /* (depth) oldest at first */
    int first, n_flights;
    /* statistics */
    uint64_t steps, step_tokens, preemptions, finished, overlapped;
    double ttft[RING], tpot[RING];
    int n_lat;
    double rate_t[RATE_RING];
    int rate_n[RATE_RING];
    int n_rate;
    int last_tokens, last_prefill;
    int got_tokens, got_prefill; /* the step the last rt_sched_step collected */
    bool waits_collected;        /* a call's time is the collected step's: run-ahead on a device backend */
};

rt_engine_geometry rt_sched_geometry(const rt_config *cfg, const rt_sched_options *opt, int n_blocks, int bs)
{
    return (rt_engine_geometry){
        .n_blocks = n_blocks, .block_size = bs,
        .lim = {.max_tokens = opt->max_batch_tokens, .max_seqs = opt->max_seqs,
                .max_blocks = rt_kv_blocks_for(cfg->max_pos, bs), .max_logits = opt->max_seqs},
    };
}

int rt_sched_create(rt_sched **out, rt_engine *e, const rt_sched_options *opt, rt_sched_emit_fn emit, void *ctx,
                    base_err *err)
{
    const rt_engine_geometry *g = rt_engine_geom(e);
    if (opt->max_batch_tokens < 1 || opt->max_seqs < 1 || opt->max_batch_tokens > g->lim.max_tokens ||
        opt->max_seqs > g->lim.max_seqs || opt->max_seqs > g->lim.max_logits)
        return base_errf(err, "scheduler: %d tokens and %d sequences per step do not fit the engine's %d and %d",
                       opt->max_batch_tokens, opt->max_seqs, g->lim.max_tokens, g->lim.max_seqs);
    int ahead = opt->run_ahead;
    if (ahead == 0) { /* the default: on a device (a host backend has no device to keep busy), DINFER_RUN_AHEAD */
        const char *env = getenv("DINFER_RUN_AHEAD");
        if (env && strcmp(env, "0") != 0 && strcmp(env, "1") != 0)
            return base_errf(err, "DINFER_RUN_AHEAD is '%.32s': 0 (each step waits for the one before to be read "
                                  "back) or 1 (the next step starts first, where the engine can chain it; the "
                                  "default on a GPU)", env);
        ahead = env ? (env[0] == '1' ? 1 : -1) : rt_engine_model(e)->be->ops->host_memory ? -1 : 1;
    }
    rt_sched *s = calloc(1, sizeof *s);
    if (!s)
        return base_errf(err, "out of memory");
    s->e = e;
    s->cfg = &rt_engine_model(e)->cfg;
    s->opt = *opt;
    s->emit = emit;
    s->ctx = ctx;
    s->block_size = g->block_size;
    s->max_blocks = g->lim.max_blocks;
    const int most = rt_engine_max_in_flight(e);
    s->depth = opt->pipeline_depth < 1 ? 1 : opt->pipeline_depth > most ? most : opt->pipeline_depth;
    s->ahead = ahead > 0 && s->depth == 1 && rt_engine_chains(e);
    s->slots = s->ahead ? 2 : s->depth;
    s->waits_collected = s->ahead && !rt_engine_model(e)->be->ops->host_memory;
    /* by default a pipeline on a host backend spreads prompts (a step costs about its tokens, so
     * the spread keeps the stages' steps even). A GPU step has large fixed costs (a step of a few
     * hundred tokens takes about a decode step's time), so there the spread multiplied the steps:
     * pp=2 on one H200 ran 2.2-2.5x slower end to end with it. Prompts go in whole steps on a GPU,
     * as before the spread; stages on GPUs of their own are not yet measured */
    if (opt->prompt_spread > 0) {
        s->prompt_cycles = opt->prompt_spread;
        s->prompt_floor = opt->prompt_spread > 1 ? RT_SCHED_PROMPT_FLOOR : 0;
    } else {
        const rt_backend *be = rt_engine_model(e)->be;
        s->prompt_cycles = s->depth > 1 && be && be->ops->host_memory ? RT_SCHED_PROMPT_CYCLES : 1;
    }
    size_t T = (size_t)opt->max_batch_tokens, S = (size_t)opt->max_seqs;
    s->running = calloc(S, sizeof *s->running);
    s->snapshot = calloc(S, sizeof *s->snapshot);
    s->entries = calloc(S, sizeof *s->entries);
    s->tok = malloc(3 * T * sizeof *s->tok);
    s->lrow = malloc(S * sizeof *s->lrow);
    s->tables = malloc(S * (size_t)s->max_blocks * sizeof *s->tables);
    bool ok = s->running && s->snapshot && s->entries && s->tok && s->lrow && s->tables;
    s->chain = malloc(T * sizeof *s->chain);
    ok = ok && s->chain;
    for (int i = 0; i < s->slots && ok; i++) {
        flight *f = &s->flights[i];
        f->entries = calloc(S, sizeof *f->entries);
        f->rows = calloc(S, sizeof *f->rows);
        f->outs = calloc(S, sizeof *f->outs);
        ok = f->entries && f->rows && f->outs;
    }
    if (!ok || rt_kv_blocks_init(&s->pool, g->n_blocks, err)) {
        rt_sched_destroy(s);
        return base_errf(err, "scheduler: out of memory");
    }
    s->pos = s->tok + T;
    s->sidx = s->pos + T;
    *out = s;
    return 0;
}

static void seq_free(seq *q)
{
    if (!q)
        return;
    free(q->tokens);
    free(q->stop_ids);
    free(q->blocks);
    free(q);
}

void rt_sched_destroy(rt_sched *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_waiting; i++)
        seq_free(s->waiting[i]);
    for (int i = 0; i < s->n_running; i++)
        seq_free(s->running[i]);
    free(s->waiting);
    free(s->running);
    free(s->snapshot);
    free(s->entries);
    free(s->tok);
    free(s->lrow);
    free(s->tables);
    free(s->chain);
    for (int i = 0; i < RT_ENGINE_MAX_IN_FLIGHT; i++)
        free(s->flights[i].entries), free(s->flights[i].rows), free(s->flights[i].outs);
    rt_kv_blocks_destroy(&s->pool);
    free(s);
}

static int blocks_for(const rt_sched *s, int n_tokens)
{
    return rt_kv_blocks_for(n_tokens, s->block_size);
}

static int len_of(const seq *q)
{
    return q->prompt_len + q->n_gen;
}

static bool is_live(const rt_sched *s, uint64_t id)
{
    for (int i = 0; i < s->n_waiting; i++)
        if (s->waiting[i]->id == id)
            return true;
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i]->id == id)
            return true;
    return false;
}

static int push_waiting(rt_sched *s, seq *q, bool front)
{
    if (s->n_waiting == s->cap_waiting) {
        int cap = s->cap_waiting ? 2 * s->cap_waiting : 64;
        seq **nw = realloc(s->waiting, (size_t)cap * sizeof *nw);
        if (!nw)
            return -1;
        s->waiting = nw;
        s->cap_waiting = cap;
    }
    if (front) {
        memmove(s->waiting + 1, s->waiting, (size_t)s->n_waiting * sizeof *s->waiting);
        s->waiting[0] = q;
    } else {
        s->waiting[s->n_waiting] = q;
    }
    s->n_waiting++;
    return 0;
}

int rt_sched_check(const rt_config *c, const rt_sched_request *r, base_err *err)
{
    if (r->prompt_len < 1)
        return base_errf(err, "the prompt is empty");
    for (int i = 0; i < r->prompt_len; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= c->vocab_size)
            return base_errf(err, "prompt token %d is outside the vocabulary [0, %d)", r->prompt[i], c->vocab_size);
    for (int i = 0; i < r->n_stop; i++)
        if (r->stop_ids[i] < 0 || r->stop_ids[i] >= c->vocab_size)
            return base_errf(err, "stop token %d is outside the vocabulary [0, %d)", r->stop_ids[i], c->vocab_size);
    if (r->max_tokens < 1)
        return base_errf(err, "max_tokens must be at least 1");
    if ((long)r->prompt_len + r->max_tokens > c->max_pos)
        return base_errf(err, "prompt (%d tokens) + max_tokens (%d) exceeds the context length %d", r->prompt_len,
                       r->max_tokens, c->max_pos);
    const char *bad = rt_sampling_check(&r->sampling);
    return bad ? base_errf(err, "%s", bad) : 0;
}

int rt_sched_add(rt_sched *s, const rt_sched_request *r, int *status, base_err *err)
{
    *status = RT_STATUS_INVALID_ARGUMENT;
    if (rt_sched_check(s->cfg, r, err))
        return -1;
    if (is_live(s, r->id))
        return base_errf(err, "request id %llu is already live", (unsigned long long)r->id);
    int need = blocks_for(s, r->prompt_len + r->max_tokens - 1);
    if (need > s->pool.n_blocks) {
        *status = RT_STATUS_RESOURCE_EXHAUSTED;
        return base_errf(err, "the request needs %d KV blocks and the whole cache has %d", need, s->pool.n_blocks);
    }
    seq *q = calloc(1, sizeof *q);
    if (q) {
        q->tokens = malloc((size_t)(r->prompt_len + r->max_tokens) * sizeof *q->tokens);
        q->blocks = malloc((size_t)s->max_blocks * sizeof *q->blocks);
        q->stop_ids = malloc((size_t)(r->n_stop ? r->n_stop : 1) * sizeof *q->stop_ids);
    }
    if (!q || !q->tokens || !q->blocks || !q->stop_ids) {
        seq_free(q);
        *status = RT_STATUS_RESOURCE_EXHAUSTED;
        return base_errf(err, "out of memory");
    }
    memcpy(q->tokens, r->prompt, (size_t)r->prompt_len * sizeof *q->tokens);
    if (r->n_stop)
        memcpy(q->stop_ids, r->stop_ids, (size_t)r->n_stop * sizeof *q->stop_ids);
    q->id = r->id;
    q->prompt_len = r->prompt_len;
    q->max_tokens = r->max_tokens;
    q->sampling = r->sampling;
    rt_rng_seed(&q->rng, r->sampling.seed);
    q->ignore_eos = r->ignore_eos;
    q->n_stop = r->n_stop;
    q->deadline = r->deadline;
    q->arrival = base_now();
    if (push_waiting(s, q, false)) {
        seq_free(q);
        *status = RT_STATUS_RESOURCE_EXHAUSTED;
        return base_errf(err, "out of memory");
    }
    *status = RT_STATUS_OK;
    return 0;
}

static void release_blocks(rt_sched *s, seq *q)
{
    rt_kv_blocks_free(&s->pool, q->n_blocks, q->blocks);
    q->n_blocks = 0;
}

static void remove_running(rt_sched *s, int i)
{
    memmove(s->running + i, s->running + i + 1, (size_t)(s->n_running - i - 1) * sizeof *s->running);
    s->n_running--;
}

/* q ends while a step holding it is in flight: that step's result for it is dropped. Its blocks
 * may go to another sequence at once: every rank runs the steps in order, so what the step in
 * flight writes there lands before anything a later step writes or reads. */
static void forget_in_flight(rt_sched *s, const seq *q)
{
    for (int i = 0; i < s->n_flights && q->in_flight; i++) {
        flight *f = &s->flights[(s->first + i) % s->slots];
        for (int j = 0; j < f->n; j++)
            if (f->entries[j].s == q)
                f->entries[j].s = NULL;
    }
}

static void end_with_error(rt_sched *s, seq *q, int status, const char *message)
{
    forget_in_flight(s, q);
    rt_sched_event ev = {.kind = RT_EV_ERROR, .id = q->id, .status = status, .message = message,
                         .prompt_tokens = q->prompt_len, .completion_tokens = q->n_gen};
    release_blocks(s, q);
    s->emit(s->ctx, &ev);
    seq_free(q);
}

int rt_sched_cancel(rt_sched *s, uint64_t id, int status, const char *message)
{
    for (int i = 0; i < s->n_waiting; i++)
        if (s->waiting[i]->id == id) {
            seq *q = s->waiting[i];
            memmove(s->waiting + i, s->waiting + i + 1, (size_t)(s->n_waiting - i - 1) * sizeof *s->waiting);
            s->n_waiting--;
            end_with_error(s, q, status, message);
            return 0;
        }
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i]->id == id) {
            seq *q = s->running[i];
            remove_running(s, i);
            end_with_error(s, q, status, message);
            return 0;
        }
    return -1;
}

void rt_sched_cancel_waiting(rt_sched *s, int status, const char *message)
{
    while (s->n_waiting > 0) {
        seq *q = s->waiting[--s->n_waiting];
        end_with_error(s, q, status, message);
    }
}

bool rt_sched_has_work(const rt_sched *s)
{
    return s->n_waiting > 0 || s->n_running > 0 || s->n_flights > 0;
}

int rt_sched_in_flight(const rt_sched *s)
{
    return s->n_flights;
}

int rt_sched_running(const rt_sched *s)
{
    return s->n_running;
}

static void expire_deadlines(rt_sched *s, double now)
{
    for (int i = 0; i < s->n_waiting; i++)
        if (s->waiting[i]->deadline > 0 && now > s->waiting[i]->deadline)
            rt_sched_cancel(s, s->waiting[i--]->id, RT_STATUS_DEADLINE_EXCEEDED, "the request's deadline passed");
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i]->deadline > 0 && now > s->running[i]->deadline)
            rt_sched_cancel(s, s->running[i--]->id, RT_STATUS_DEADLINE_EXCEEDED, "the request's deadline passed");
}

/* Recompute-preemption: the sequence keeps its tokens and sampling state, loses its cache. */
static void preempt(rt_sched *s, int i)
{
    seq *q = s->running[i];
    release_blocks(s, q);
    q->n_computed = 0;
    remove_running(s, i);
    push_waiting(s, q, true); /* cannot fail: the queue has room for what left it */
    s->preemptions++;
}

static bool is_running(const rt_sched *s, const seq *q)
{
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i] == q)
            return true;
    return false;
}

static bool in_step(const rt_sched *s, int n_entries, const seq *q)
{
    for (int i = 0; i < n_entries; i++)
        if (s->entries[i].s == q)
            return true;
    return false;
}

/* Gives q blocks for its first n tokens when the pool is short by preempting the sequences admitted
 * after it, latest first, that are neither in this step nor in one in flight: the earliest admitted
 * always makes progress, so two sequences that cannot both fit do not take turns undoing each
 * other's work. When every later sequence is busy, q keeps its blocks and sits this step out; when
 * there is none, q itself goes back to the queue. False when q does not run in this step. */
static bool grow(rt_sched *s, seq *q, int n, int n_entries)
{
    int need = blocks_for(s, n) - q->n_blocks, me = 0;
    while (me < s->n_running && s->running[me] != q)
        me++;
    while (need > s->pool.n_free) {
        int victim = -1;
        bool busy = false;
        for (int i = s->n_running - 1; i > me && victim < 0; i--)
            if (s->running[i]->in_flight || in_step(s, n_entries, s->running[i]))
                busy = true;
            else
                victim = i;
        if (victim < 0) {
            if (!busy && me < s->n_running)
                preempt(s, me);
            return false;
        }
        preempt(s, victim);
    }
    if (need > 0) {
        rt_kv_blocks_alloc(&s->pool, need, q->blocks + q->n_blocks);
        q->n_blocks += need;
    }
    return true;
}

int rt_sched_share(long in_flight, long now, long prompts, int prompt_seqs, int depth, int max_batch_tokens,
                   int cycles, int floor)
{
    long share;
    if (in_flight == 0 && now == 0 && prompt_seqs <= 1) {
        share = prompts; /* nothing to keep busy beside it: its chunks follow one another anyway */
    } else {
        long spread = (prompts + cycles - 1) / cycles, least = prompts < floor ? prompts : floor;
        share = (in_flight + now + (spread > least ? spread : least) + depth - 1) / depth;
    }
    return share < 1 ? 1 : share < max_batch_tokens ? (int)share : max_batch_tokens;
}

/* A sequence's tokens still to compute: due in this cycle (a decode, or the recomputation of a
 * preempted sequence, which in small chunks would lose its blocks again before it is done) or a
 * new prompt. */
static void count_work(const seq *q, long *now, long *prompts, int *prompt_seqs)
{
    const int left = len_of(q) - q->n_computed - q->pending;
    if (q->n_gen > 0) {
        *now += left;
    } else {
        *prompts += left;
        (*prompt_seqs)++;
    }
}

/* Run-ahead: whether q, held by the step in flight, may be in the next step too: with the token that
 * step samples for it (it gives q a logit row, and the token will not be q's last), or else with the
 * next chunk of its prompt. */
static bool continues(const rt_sched *s, const seq *q)
{
    return s->ahead && q->in_flight == 1 && (q->out_row < 0 || q->n_gen + 1 < q->max_tokens);
}

/* rt_sched_share over this scheduler's state (a backlog beyond what the cycles spread still fills
 * whole steps, so the count stops there). */
static int even_share(const rt_sched *s)
{
    long in_flight = 0, now = 0, prompts = 0;
    int prompt_seqs = 0;
    for (int i = 0; i < s->n_flights && !s->ahead; i++) /* run-ahead's step in flight is the one before */
        in_flight += s->flights[(s->first + i) % s->slots].tokens;
    for (int i = 0; i < s->n_running; i++) {
        const seq *q = s->running[i];
        if (q->in_flight && !continues(s, q))
            continue;
        if (q->in_flight && q->out_row >= 0)
            now++; /* its chained decode */
        else
            count_work(q, &now, &prompts, &prompt_seqs);
    }
    const long most = (long)s->prompt_cycles * s->depth * s->opt.max_batch_tokens;
    for (int i = 0; i < s->n_waiting && now + prompts < most; i++)
        count_work(s->waiting[i], &now, &prompts, &prompt_seqs);
    return rt_sched_share(in_flight, now, prompts, prompt_seqs, s->depth, s->opt.max_batch_tokens, s->prompt_cycles,
                          s->prompt_floor);
}

/* Blocks for q's first n tokens from the free ones only, for a sequence in flight (which grow could
 * preempt): false when there are too few. */
static bool grow_free(rt_sched *s, seq *q, int n)
{
    const int need = blocks_for(s, n) - q->n_blocks;
    if (need > s->pool.n_free)
        return false;
    if (need > 0) {
        rt_kv_blocks_alloc(&s->pool, need, q->blocks + q->n_blocks);
        q->n_blocks += need;
    }
    return true;
}

/* Chooses this step's sequences and token counts, among those not in a step in flight (with
 * run-ahead, decodes chained to it too). */
static int form_step(rt_sched *s)
{
    int n = 0, budget = s->depth > 1 || s->prompt_cycles > 1 ? even_share(s) : s->opt.max_batch_tokens;
    const int most = s->opt.max_seqs;
    /* running sequences: decodes first, then prompt chunks; a sequence preempted on the way
     * (to make room for an earlier one) drops out of the snapshot */
    seq **snap = s->snapshot;
    for (int pass = 0; pass < 2; pass++) {
        int m = s->n_running;
        memcpy(snap, s->running, (size_t)m * sizeof *snap);
        for (int i = 0; i < m && budget > 0 && n < most; i++) {
            seq *q = snap[i];
            if (!is_running(s, q) || (q->in_flight && !continues(s, q)) || in_step(s, n, q))
                continue;
            const int base = q->n_computed + q->pending; /* its next token's position */
            if (q->in_flight && q->out_row >= 0) {       /* the token the step in flight samples */
                if (pass == 0 && grow_free(s, q, base + 1)) {
                    s->entries[n++] = (entry){q, 1, true, true};
                    budget--;
                }
                continue;
            }
            int left = len_of(q) - base;
            bool decode = left == 1 && q->n_gen > 0;
            if (decode != (pass == 0))
                continue;
            int take = left < budget ? left : budget;
            if (!(q->in_flight ? grow_free(s, q, base + take) : grow(s, q, base + take, n)))
                continue;
            s->entries[n++] = (entry){q, take, base + take == len_of(q), false};
            budget -= take;
        }
    }
    /* admissions, first come first served, while the budget and the free blocks allow */
    while (s->n_waiting > 0 && s->n_running < s->opt.max_seqs && budget > 0 && n < most) {
        seq *q = s->waiting[0];
        int left = len_of(q) - q->n_computed;
        int take = left < budget ? left : budget;
        if (blocks_for(s, q->n_computed + take) - q->n_blocks > s->pool.n_free)
            break;
        memmove(s->waiting, s->waiting + 1, (size_t)(s->n_waiting - 1) * sizeof *s->waiting);
        s->n_waiting--;
        s->running[s->n_running++] = q;
        grow(s, q, q->n_computed + take, n);
        s->entries[n++] = (entry){q, take, q->n_computed + take == len_of(q), false};
        budget -= take;
    }
    return n;
}

static void record_rate(rt_sched *s, double t, int n_tokens)
{
    int i = s->n_rate % RATE_RING;
    s->rate_t[i] = t;
    s->rate_n[i] = n_tokens;
    s->n_rate++;
}

static void finish(rt_sched *s, int run_index, const char *reason, double now)
{
    seq *q = s->running[run_index];
    rt_sched_event ev = {.kind = RT_EV_DONE, .id = q->id, .finish_reason = reason, .prompt_tokens = q->prompt_len,
                         .completion_tokens = q->n_gen, .ttft_seconds = q->first_token - q->arrival,
                         .total_seconds = now - q->arrival};
    int k = (int)(s->finished % RING);
    s->ttft[k] = ev.ttft_seconds;
    s->tpot[k] = q->n_gen > 1 ? (now - q->first_token) / (q->n_gen - 1) : 0.0;
    s->n_lat = s->n_lat < RING ? s->n_lat + 1 : RING;
    s->finished++;
    remove_running(s, run_index);
    forget_in_flight(s, q); /* a step chained to the one that ended it */
    release_blocks(s, q);
    s->emit(s->ctx, &ev);
    seq_free(q);
}

/* Forms a step and hands it to the engine; false when there was nothing to run. */
static int submit(rt_sched *s, bool *submitted, base_err *err)
{
    *submitted = false;
    int n = form_step(s);
    if (n == 0)
        return 0;
    flight *f = &s->flights[(s->first + s->n_flights) % s->slots];
    /* run-ahead's step in flight: a chained row's rng is the one that step advanced */
    const flight *before = s->n_flights ? &s->flights[(s->first + s->n_flights - 1) % s->slots] : NULL;
    int width = 1, T = 0, nl = 0, prefill = 0;
    bool chained = false;
    for (int i = 0; i < n; i++)
        width = s->entries[i].s->n_blocks > width ? s->entries[i].s->n_blocks : width;
    for (int i = 0; i < n; i++) {
        entry *en = &s->entries[i];
        seq *q = en->s;
        const int base = q->n_computed + q->pending;
        /* a chained row draws after q's row in flight: from its rng as that step advanced it */
        const rt_rng rng = en->chained ? before->rows[q->out_row].rng : q->rng;
        if (en->chained) { /* the token the step in flight samples for q, at the position after its last */
            s->tok[T] = 0;
            s->pos[T] = base;
            s->sidx[T] = i;
            s->chain[T++] = q->out_row;
            chained = true;
        } else {
            if (!(en->take == 1 && q->n_gen > 0 && en->wants_logits))
                prefill += en->take;
            for (int j = 0; j < en->take; j++, T++) {
                s->tok[T] = q->tokens[base + j];
                s->pos[T] = base + j;
                s->sidx[T] = i;
                s->chain[T] = -1;
            }
        }
        q->pending += en->take;
        for (int j = 0; j < width; j++)
            s->tables[(size_t)i * width + j] = j < q->n_blocks ? q->blocks[j] : -1;
        q->out_row = -1;
        if (en->wants_logits) {
            s->lrow[nl] = T - 1;
            f->rows[nl] = (rt_step_sampling){q->sampling, rng};
            q->out_row = nl;
            nl++;
        }
        f->entries[i] = *en;
        q->in_flight++;
    }
    f->n = n, f->tokens = T, f->prefill = prefill;
    s->last_tokens = T, s->last_prefill = prefill;
    rt_batch b = {.n_tokens = T, .tokens = s->tok, .pos = s->pos, .seq = s->sidx, .n_seqs = n,
                  .block_tables = s->tables, .max_blocks = width, .n_logits = nl, .logit_rows = s->lrow,
                  .chain = chained ? s->chain : NULL};
    s->overlapped += s->n_flights > 0;
    s->n_flights++;
    *submitted = true;
    return rt_engine_submit(s->e, &b, f->rows, f->outs, err);
}

/* Takes the oldest step in flight back from the engine and emits its tokens. */
static int collect(rt_sched *s, base_err *err)
{
    flight *f = &s->flights[s->first];
    s->first = (s->first + 1) % s->slots;
    s->n_flights--;
    s->got_tokens = f->tokens, s->got_prefill = f->prefill;
    for (int i = 0; i < f->n; i++)
        if (f->entries[i].s)
            f->entries[i].s->in_flight--;
    if (rt_engine_collect(s->e, err))
        return -1;
    const double now = base_now();
    s->steps++;
    s->step_tokens += (uint64_t)f->tokens;
    int k = 0; /* the step's logit row */
    for (int i = 0; i < f->n; i++) {
        entry *en = &f->entries[i];
        seq *q = en->s;
        if (!en->wants_logits) {
            if (q)
                q->n_computed += en->take, q->pending -= en->take;
            continue;
        }
        const rt_sample_out *o = &f->outs[k];
        const rt_rng rng = f->rows[k++].rng;
        if (!q)
            continue; /* it ended while the step was in flight */
        q->n_computed += en->take, q->pending -= en->take;
        q->rng = rng;
        q->tokens[len_of(q)] = o->token;
        q->n_gen++;
        if (q->n_gen == 1)
            q->first_token = now;
        bool stop = false; /* a stop string the receiver matched on the text */
        rt_sched_event ev = {.kind = RT_EV_TOKEN, .id = q->id, .sample = o, .stop = &stop};
        s->emit(s->ctx, &ev);
        const char *reason = stop ? "stop" : NULL;
        if (!q->ignore_eos && rt_config_is_eos(s->cfg, o->token))
            reason = "stop";
        for (int j = 0; j < q->n_stop && !reason; j++)
            if (q->stop_ids[j] == o->token)
                reason = "stop";
        if (!reason && q->n_gen == q->max_tokens)
            reason = "length";
        if (reason)
            for (int r = 0; r < s->n_running; r++)
                if (s->running[r] == q) {
                    finish(s, r, reason, now);
                    break;
                }
    }
    record_rate(s, now, k);
    return 0;
}

int rt_sched_step(rt_sched *s, base_err *err)
{
    expire_deadlines(s, base_now());
    s->last_tokens = s->last_prefill = s->got_tokens = s->got_prefill = 0;
    bool submitted = false;
    if (s->n_flights < s->slots && submit(s, &submitted, err))
        return -1;
    /* run-ahead: the step before comes back once the next one is queued behind it (a chained step
     * needs no result of it), or when nothing else could start */
    if (s->ahead)
        return s->n_flights == 2 || (!submitted && s->n_flights > 0) ? collect(s, err) : 0;
    /* the oldest step comes back when nothing else could start, or at once with a depth of 1; a
     * deeper pipeline that is full gives it back on the next call (so the caller sees, between
     * calls, every step in flight) */
    if (s->n_flights > 0 && (!submitted || s->depth == 1))
        return collect(s, err);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void percentiles(const double *v, int n, double *p50, double *p99)
{
    double tmp[RING];
    memcpy(tmp, v, (size_t)n * sizeof *tmp);
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
    *p50 = n ? tmp[(n - 1) / 2] : 0.0;
    *p99 = n ? tmp[(int)((n - 1) * 0.99 + 0.5)] : 0.0;
}

void rt_sched_get_stats(const rt_sched *s, rt_sched_stats *st)
{
    memset(st, 0, sizeof *st);
    st->waiting = s->n_waiting;
    st->running = s->n_running;
    st->kv_blocks_free = s->pool.n_free;
    st->kv_blocks_used = s->pool.n_blocks - s->pool.n_free;
    st->kv_block_size = s->block_size;
    st->steps = s->steps;
    st->step_tokens = s->step_tokens;
    st->preemptions = s->preemptions;
    st->finished = s->finished;
    st->steps_overlapped = s->overlapped;
    st->in_flight = s->n_flights;
    double now = base_now(), oldest = now;
    long toks = 0;
    int have = s->n_rate < RATE_RING ? s->n_rate : RATE_RING;
    for (int i = 0; i < have; i++)
        if (now - s->rate_t[i] <= RATE_WINDOW) {
            toks += s->rate_n[i];
            oldest = s->rate_t[i] < oldest ? s->rate_t[i] : oldest;
        }
    double span = now - oldest;
    st->tokens_per_second = toks && span > 0 ? (double)toks / (span > 1.0 ? span : 1.0) : 0.0;
    percentiles(s->ttft, s->n_lat, &st->ttft_p50, &st->ttft_p99);
    /* tpot of single-token requests is not defined: leave them out */
    double tp[RING];
    int m = 0;
    for (int i = 0; i < s->n_lat; i++)
        if (s->tpot[i] > 0)
            tp[m++] = s->tpot[i];
    percentiles(tp, m, &st->tpot_p50, &st->tpot_p99);
}

void rt_sched_last_step(const rt_sched *s, int *tokens, int *prefill_tokens)
{
    *tokens = s->last_tokens;
    *prefill_tokens = s->last_prefill;
}

void rt_sched_last_timed(const rt_sched *s, int *tokens, int *prefill_tokens)
{
    if (!s->waits_collected)
        return rt_sched_last_step(s, tokens, prefill_tokens);
    *tokens = s->got_tokens;
    *prefill_tokens = s->got_prefill;
}

bool rt_sched_runs_ahead(const rt_sched *s)
{
    return s->ahead;
}
