#include "runtime/engine.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/kv_cache.h"

/* The step plan on the wire: a fixed header, then one int32 body. It goes from rank 0 to the
 * other ranks of stage 0 (a broadcast over their tp group) and down each pipeline chain ahead of
 * the hidden states: each rank hands it to the next stage before it computes, with a send that
 * does not wait, so a stage still busy with one step never holds up the plan of the next. */
enum { PLAN_STOP = 0, PLAN_STEP = 1 };
enum { H_KIND, H_TOKENS, H_SEQS, H_MAXBLK, H_LOGITS, H_BODY, H_LEN };
#define ROW_INTS 6 /* temperature bits, top_k, top_p bits, n_logprobs, rng lo, rng hi */

/* The block tables go as changes: every rank keeps the table each sequence had in the last plan
 * that named it, under the sequence's first block (a block belongs to one sequence at a time), and
 * a row goes as (first block, how many of the kept blocks it still starts with, the blocks after
 * them): three ints a sequence in a decode step, and one more a new block, instead of the whole
 * table (256 ints at 4K tokens of context). Rank 0 and every follower change their copies from
 * the same plans in the same order, so they stay equal; none trusts its copy beyond what the plan
 * says it kept. */
typedef struct known_tables {
    int32_t **row;   /* (n_keys) the kept table of the sequence whose first block is the key, or NULL */
    int32_t *len;    /* (n_keys) */
    int32_t *cap;    /* (n_keys) */
    int n_keys;      /* the pool's blocks and its padding block */
    size_t total;    /* ints kept in all */
    size_t limit;    /* past it every copy is dropped together (and the next plans send whole rows) */
} known_tables;

/* A step rank 0 has started and not yet collected: where its samples go. */
typedef struct flight {
    rt_step_sampling *rows; /* (n_logits) the caller's: the advanced rng states land here */
    rt_sample_out *out;     /* (n_logits) */
    int n_logits;
    int slot;               /* a single rank's: rt_forward_submit's read-back slot (-1: none) */
} flight;

struct rt_engine {
    rt_model *m;
    comm *comm;
    rt_engine_geometry geo;
    rt_kv_cache kv;
    rt_forward *fw;
    int32_t head[H_LEN]; /* the plan's header */
    int32_t *body;       /* the plan body, sized for the limits */
    size_t body_cap;
    rt_step_sampling *rows; /* (max_logits) followers' copy of the rows */
    rt_sample_out *out;     /* (max_logits) followers' samples */
    flight flights[RT_ENGINE_MAX_IN_FLIGHT]; /* rank 0: oldest at first */
    int first, n_flights;
    rt_engine_traffic traffic;
    known_tables known;
    int32_t *tables; /* (max_seqs, max_blocks) followers: the step's block tables, rebuilt */
};

static size_t body_ints(const rt_forward_limits *l)
{
    return 3 * (size_t)l->max_tokens + (size_t)l->max_seqs * (3 + (size_t)l->max_blocks) +
           (size_t)l->max_logits * (1 + ROW_INTS);
}

static void known_clear(known_tables *k)
{
    for (int i = 0; k->row && i < k->n_keys; i++) {
        free(k->row[i]);
        k->row[i] = NULL;
        k->len[i] = k->cap[i] = 0;
    }
    k->total = 0;
}

static void known_free(known_tables *k)
{
    known_clear(k);
    free(k->row);
    free(k->len);
    free(k->cap);
    memset(k, 0, sizeof *k);
}

/* Keeps row (len blocks, row[0] its key) as its sequence's table; a key among its later blocks
 * names a sequence that has ended (its block is this one's now): that copy goes. */
static int known_keep(known_tables *k, const int32_t *row, int len)
{
    const int key = row[0];
    for (int j = 1; j < len; j++)
        if (row[j] >= 0 && row[j] < k->n_keys && k->row[row[j]]) {
            k->total -= (size_t)k->len[row[j]];
            free(k->row[row[j]]);
            k->row[row[j]] = NULL;
            k->len[row[j]] = k->cap[row[j]] = 0;
        }
    if (len > k->cap[key]) {
        const int cap = len < 16 ? 16 : 2 * len;
        int32_t *r = realloc(k->row[key], (size_t)cap * sizeof *r);
        if (!r)
            return -1;
        k->row[key] = r;
        k->cap[key] = cap;
    }
    memcpy(k->row[key], row, (size_t)len * sizeof *row);
    k->total += (size_t)len - (size_t)k->len[key];
    k->len[key] = len;
    return 0;
}

/* After a plan: past the limit, every copy goes (on every rank, as the plans are the same). */
static void known_trim(known_tables *k)
{
    if (k->total > k->limit)
        known_clear(k);
}

static int sampler_rank(const rt_engine *e)
{
    return e->comm ? e->m->shard.sampler_rank : 0; /* the plan's choice */
}

static int my_rank(const rt_engine *e)
{
    return e->comm ? comm_topo(e->comm)->rank : 0;
}

int rt_engine_create(rt_engine **out, rt_model *m, comm *c, const rt_engine_geometry *g, base_err *err)
{
    rt_engine *e = calloc(1, sizeof *e);
    if (!e)
        return base_errf(err, "out of host memory");
    e->m = m;
    e->comm = c;
    e->geo = *g;
    const int L = g->lim.max_logits;
    e->body_cap = body_ints(&g->lim);
    e->body = malloc(e->body_cap * sizeof *e->body);
    e->rows = calloc((size_t)(L ? L : 1), sizeof *e->rows);
    e->out = calloc((size_t)(L ? L : 1), sizeof *e->out);
    const rt_forward_limits *lim = &g->lim;
    e->tables = malloc(((size_t)lim->max_seqs * (size_t)lim->max_blocks + 1) * sizeof *e->tables);
    known_tables *k = &e->known;
    k->n_keys = g->n_blocks + 1;
    k->row = calloc((size_t)k->n_keys, sizeof *k->row);
    k->len = calloc((size_t)k->n_keys, sizeof *k->len);
    k->cap = calloc((size_t)k->n_keys, sizeof *k->cap);
    k->limit = 4 * (size_t)k->n_keys + (size_t)lim->max_seqs * (size_t)lim->max_blocks; /* a few times the pool */
    if (!e->body || !e->rows || !e->out || !e->tables || !k->row || !k->len || !k->cap) {
        rt_engine_destroy(e);
        return base_errf(err, "out of host memory");
    }
    if (rt_kv_cache_for_model(&e->kv, m, g->n_blocks, g->block_size, err) ||
        rt_forward_create(&e->fw, m, &e->kv, &g->lim, c, err)) {
        rt_engine_destroy(e);
        return -1;
    }
    *out = e;
    return 0;
}

void rt_engine_destroy(rt_engine *e)
{
    if (!e)
        return;
    rt_forward_destroy(e->fw);
    if (e->kv.layers)
        rt_kv_cache_destroy(&e->kv);
    free(e->body);
    free(e->rows);
    free(e->out);
    free(e->tables);
    known_free(&e->known);
    free(e);
}

const rt_engine_geometry *rt_engine_geom(const rt_engine *e) { return &e->geo; }
rt_model *rt_engine_model(rt_engine *e) { return e->m; }
rt_engine_traffic rt_engine_get_traffic(const rt_engine *e) { return e->traffic; }

static int32_t f2i(float f)
{
    int32_t i;
    memcpy(&i, &f, 4);
    return i;
}

static float i2f(int32_t i)
{
    float f;
    memcpy(&f, &i, 4);
    return f;
}

/* Packs b and rows into the header and e->body. */
static int pack(rt_engine *e, const rt_batch *b, const rt_step_sampling *rows, int32_t *h, base_err *err)
{
    const int T = b->n_tokens, nl = b->n_logits, W = b->max_blocks;
    size_t tab = (size_t)b->n_seqs * (3 + (size_t)W); /* the most the rows' changes take */
    size_t n = 3 * (size_t)T + tab + (size_t)nl * (1 + ROW_INTS);
    if (T < 0 || nl < 0 || b->n_seqs < 0 || W < 0 || W > e->geo.lim.max_blocks || n > e->body_cap)
        return base_errf(err, "step of %d tokens, %d sequences x %d blocks, %d logits exceeds the job's limits", T,
                       b->n_seqs, W, nl);
    int32_t *p = e->body;
    memcpy(p, b->tokens, (size_t)T * 4), p += T;
    memcpy(p, b->pos, (size_t)T * 4), p += T;
    memcpy(p, b->seq, (size_t)T * 4), p += T;
    known_tables *k = &e->known;
    for (int i = 0; i < b->n_seqs; i++) { /* each row as a change of what the followers keep */
        const int32_t *row = b->block_tables + (size_t)i * (size_t)W;
        int len = 0;
        while (len < W && row[len] >= 0)
            len++;
        for (int j = 0; j < W; j++) /* what every rank's forward would refuse is refused before it goes */
            if (j < len ? row[j] >= e->geo.n_blocks : row[j] != -1)
                return base_errf(err, "block table row %d: block id %d at %d (a row is ids below %d, then -1s)", i,
                                 row[j], j, e->geo.n_blocks);
        if (len == 0) {
            p[0] = -1, p[1] = 0, p[2] = 0, p += 3;
            continue;
        }
        const int32_t *kept = k->row[row[0]];
        int same = 0;
        while (kept && same < len && same < k->len[row[0]] && kept[same] == row[same])
            same++;
        p[0] = row[0], p[1] = same, p[2] = len - same;
        memcpy(p + 3, row + same, (size_t)(len - same) * 4);
        p += 3 + (len - same);
        if (known_keep(k, row, len))
            return base_errf(err, "out of host memory keeping block tables");
    }
    known_trim(k);
    memcpy(p, b->logit_rows, (size_t)nl * 4), p += nl;
    for (int i = 0; i < nl; i++, p += ROW_INTS) {
        const rt_step_sampling *r = &rows[i];
        p[0] = f2i(r->params.temperature);
        p[1] = r->params.top_k;
        p[2] = f2i(r->params.top_p);
        p[3] = r->params.n_logprobs;
        p[4] = (int32_t)(uint32_t)r->rng.state;
        p[5] = (int32_t)(uint32_t)(r->rng.state >> 32);
    }
    h[H_KIND] = PLAN_STEP;
    h[H_TOKENS] = T;
    h[H_SEQS] = b->n_seqs;
    h[H_MAXBLK] = b->max_blocks;
    h[H_LOGITS] = nl;
    h[H_BODY] = (int32_t)(p - e->body);
    return 0;
}

/* The plan in e->head / e->body as a batch; the block tables rebuilt from their changes. Fails
 * when the plan does not fit what this rank allocated or keeps (ranks out of step). */
static int unpack(rt_engine *e, const int32_t *h, rt_batch *b, base_err *err)
{
    const int T = h[H_TOKENS], nl = h[H_LOGITS], S = h[H_SEQS], W = h[H_MAXBLK];
    const int32_t *p = e->body, *end = e->body + h[H_BODY];
    const rt_forward_limits *lim = &e->geo.lim;
    if (T < 0 || T > lim->max_tokens || S < 0 || S > lim->max_seqs || W < 0 || W > lim->max_blocks ||
        3 * (size_t)T + 3 * (size_t)S + (size_t)nl * (1 + ROW_INTS) > (size_t)h[H_BODY])
        return base_errf(err, "a step plan of %d tokens, %d sequences x %d blocks does not fit this rank's limits", T,
                         S, W);
    *b = (rt_batch){.n_tokens = T, .n_seqs = S, .max_blocks = W, .n_logits = nl, .block_tables = e->tables};
    b->tokens = p, p += T;
    b->pos = p, p += T;
    b->seq = p, p += T;
    known_tables *k = &e->known;
    for (int i = 0; i < S; i++) {
        int32_t *row = e->tables + (size_t)i * (size_t)W;
        if (end - p < 3)
            return base_errf(err, "a step plan ends inside its block tables");
        const int key = p[0], same = p[1], more = p[2];
        p += 3;
        int len = 0;
        if (key >= 0) {
            if (key >= k->n_keys || same < 0 || more < 0 || same + more > W || same > k->len[key] || end - p < more)
                return base_errf(err, "a step plan's block table for block %d (keeping %d of %d, %d more) is not "
                                      "what this rank kept: ranks out of step", key, same, k->len[key], more);
            if (same) /* none kept: no copy (there may be no row to copy from) */
                memcpy(row, k->row[key], (size_t)same * sizeof *row);
            if (more)
                memcpy(row + same, p, (size_t)more * sizeof *row);
            p += more;
            len = same + more;
            if (len > 0 && known_keep(k, row, len))
                return base_errf(err, "out of host memory keeping block tables");
        }
        for (int j = len; j < W; j++)
            row[j] = -1;
    }
    known_trim(k);
    if (end - p < (ptrdiff_t)nl * (1 + ROW_INTS))
        return base_errf(err, "a step plan ends before its sampling rows");
    b->logit_rows = p, p += nl;
    for (int i = 0; i < nl; i++, p += ROW_INTS) {
        rt_step_sampling *r = &e->rows[i];
        r->params = (rt_sampling){.temperature = i2f(p[0]), .top_k = p[1], .top_p = i2f(p[2]), .n_logprobs = p[3]};
        r->rng.state = (uint64_t)(uint32_t)p[4] | (uint64_t)(uint32_t)p[5] << 32;
    }
    return 0;
}

static comm_counters counters_now(const rt_engine *e)
{
    return e->comm ? comm_get_counters(e->comm) : (comm_counters){0};
}

/* Decode steps' traffic (every sequence has its one token): this rank's sends during its part of
 * the step, the plan's and the samples' bytes counted as control (world) whatever group carried
 * them. */
static void account(rt_engine *e, const int32_t *h, comm_counters before, uint64_t ctl_tp, uint64_t ctl_pp)
{
    if (!e->comm || h[H_TOKENS] != h[H_LOGITS])
        return;
    comm_counters now = comm_get_counters(e->comm);
    e->traffic.decode_tokens += (uint64_t)h[H_TOKENS];
    e->traffic.tp_bytes += now.tp_bytes - before.tp_bytes - ctl_tp;
    e->traffic.pp_bytes += now.pp_bytes - before.pp_bytes - ctl_pp;
    e->traffic.world_bytes += now.world_bytes - before.world_bytes + ctl_tp + ctl_pp;
}

/* Bytes of the plan in e->head / e->body (the body only with a step). */
static uint64_t plan_bytes(const rt_engine *e)
{
    return (H_LEN + (e->head[H_KIND] == PLAN_STEP ? (uint64_t)e->head[H_BODY] : 0)) * sizeof(int32_t);
}

/* Hands the plan in e->head / e->body to the next stage (when there is one); *ctl_pp counts it. */
static int pass_on(rt_engine *e, uint64_t *ctl_pp, base_err *err)
{
    const comm_topology *t = comm_topo(e->comm);
    if (t->stage + 1 >= t->pp)
        return 0;
    const bool step = e->head[H_KIND] == PLAN_STEP;
    if (comm_isend(t->pp_group, e->head, H_LEN, COMM_I32, t->stage + 1, err) ||
        (step && comm_isend(t->pp_group, e->body, (size_t)e->head[H_BODY], COMM_I32, t->stage + 1, err)))
        return -1;
    *ctl_pp = plan_bytes(e);
    return 0;
}

/* Rank 0: sends the plan in e->head / e->body to the rest of stage 0 and down the pipeline. */
static int send_plan(rt_engine *e, uint64_t *ctl_tp, uint64_t *ctl_pp, base_err *err)
{
    const comm_topology *t = comm_topo(e->comm);
    *ctl_tp = *ctl_pp = 0;
    if (t->tp > 1) {
        const bool step = e->head[H_KIND] == PLAN_STEP;
        if (comm_bcast_idle(t->tp_group, e->head, H_LEN, COMM_I32, 0, err) ||
            (step && comm_bcast(t->tp_group, e->body, (size_t)e->head[H_BODY], COMM_I32, 0, err)))
            return -1;
        *ctl_tp = plan_bytes(e);
    }
    return pass_on(e, ctl_pp, err);
}

/* Ranks other than 0: the next plan, from rank 0 (stage 0) or from the previous stage. */
static int receive_plan(rt_engine *e, base_err *err)
{
    const comm_topology *t = comm_topo(e->comm);
    int32_t *h = e->head;
    const bool first = t->stage == 0;
    if (first ? comm_bcast_idle(t->tp_group, h, H_LEN, COMM_I32, 0, err)
              : comm_recv_idle(t->pp_group, h, H_LEN, COMM_I32, t->stage - 1, err))
        return -1;
    if (h[H_KIND] == PLAN_STOP)
        return 0;
    if (h[H_KIND] != PLAN_STEP || h[H_BODY] < 0 || (size_t)h[H_BODY] > e->body_cap || h[H_LOGITS] < 0 ||
        h[H_LOGITS] > e->geo.lim.max_logits)
        return base_errf(err, "rank %d: a step plan of %d ints and %d logit rows exceeds the %zu ints and %d rows "
                         "this rank allocated", t->rank, h[H_BODY], h[H_LOGITS], e->body_cap, e->geo.lim.max_logits);
    return first ? comm_bcast(t->tp_group, e->body, (size_t)h[H_BODY], COMM_I32, 0, err)
                 : comm_recv(t->pp_group, e->body, (size_t)h[H_BODY], COMM_I32, t->stage - 1, err);
}

int rt_engine_max_in_flight(const rt_engine *e)
{
    return sampler_rank(e) == 0 ? 1 : RT_ENGINE_MAX_IN_FLIGHT;
}

bool rt_engine_chains(const rt_engine *e)
{
    return rt_forward_chains(e->fw);
}

int rt_engine_in_flight(const rt_engine *e)
{
    return e->n_flights;
}

int rt_engine_submit(rt_engine *e, const rt_batch *b, rt_step_sampling *rows, rt_sample_out *out, base_err *err)
{
    const bool chains = rt_forward_chains(e->fw); /* a single rank: a chained step beside the one before */
    const int most = rt_engine_max_in_flight(e);
    if (e->n_flights >= (chains && most < 2 ? 2 : most))
        return base_errf(err, "a step was started with %d already in flight, the most this job allows",
                         e->n_flights);
    if (b->chain && (!chains || e->n_flights > 1))
        return base_errf(err, "a chained step follows the one step in flight on a single rank");
    comm_counters before = counters_now(e);
    uint64_t ctl_tp = 0, ctl_pp = 0;
    if (e->comm && comm_topo(e->comm)->world_size > 1 &&
        (pack(e, b, rows, e->head, err) || send_plan(e, &ctl_tp, &ctl_pp, err)))
        return -1;
    int slot = -1;
    if (rt_forward_submit(e->fw, b, rows, out, chains ? &slot : NULL, err))
        return -1;
    if (e->comm) {
        int32_t h[H_LEN] = {[H_TOKENS] = b->n_tokens, [H_LOGITS] = b->n_logits};
        account(e, h, before, ctl_tp, ctl_pp);
    }
    e->flights[(e->first + e->n_flights++) % RT_ENGINE_MAX_IN_FLIGHT] =
        (flight){.rows = rows, .out = out, .n_logits = b->n_logits, .slot = slot};
    return 0;
}

int rt_engine_collect(rt_engine *e, base_err *err)
{
    if (e->n_flights == 0)
        return base_errf(err, "no step in flight to collect");
    const flight f = e->flights[e->first];
    e->first = (e->first + 1) % RT_ENGINE_MAX_IN_FLIGHT;
    e->n_flights--;
    const int sr = sampler_rank(e);
    if (sr == 0)
        return rt_forward_collect(e->fw, f.out, f.n_logits, f.slot, err); /* sampled here */
    if (f.n_logits == 0)
        return 0;
    comm_group *w = comm_topo(e->comm)->world;
    return comm_recv(w, f.out, (size_t)f.n_logits * sizeof *f.out, COMM_U8, sr, err) ||
           comm_recv(w, f.rows, (size_t)f.n_logits * sizeof *f.rows, COMM_U8, sr, err);
}

int rt_engine_step(rt_engine *e, const rt_batch *b, rt_step_sampling *rows, rt_sample_out *out, base_err *err)
{
    if (e->n_flights > 0)
        return base_errf(err, "a whole step was asked for with %d others in flight", e->n_flights);
    return rt_engine_submit(e, b, rows, out, err) || rt_engine_collect(e, err) ? -1 : 0;
}

int rt_engine_follow(rt_engine *e, base_err *err)
{
    const int me = my_rank(e), sr = sampler_rank(e);
    comm_group *w = comm_topo(e->comm)->world;
    for (;;) {
        comm_counters before = counters_now(e);
        uint64_t ctl_pp = 0;
        if (receive_plan(e, err) || pass_on(e, &ctl_pp, err))
            return -1;
        if (e->head[H_KIND] == PLAN_STOP)
            return comm_flush(e->comm, err);
        rt_batch b;
        if (unpack(e, e->head, &b, err) || rt_forward_step(e->fw, &b, e->rows, e->out, err))
            return -1;
        const size_t nl = (size_t)b.n_logits;
        if (me == sr && nl > 0 &&
            (comm_isend(w, e->out, nl * sizeof *e->out, COMM_U8, 0, err) ||
             comm_isend(w, e->rows, nl * sizeof *e->rows, COMM_U8, 0, err)))
            return -1;
        account(e, e->head, before, 0, ctl_pp);
    }
}

int rt_engine_finish(rt_engine *e, base_err *err)
{
    if (!e->comm || comm_topo(e->comm)->world_size == 1)
        return 0;
    e->head[H_KIND] = PLAN_STOP;
    uint64_t ctl_tp, ctl_pp;
    return send_plan(e, &ctl_tp, &ctl_pp, err) || comm_flush(e->comm, err) ? -1 : 0;
}
