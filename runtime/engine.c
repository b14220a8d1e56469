#include "runtime/engine.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/kv_cache.h"

/* The step plan on the wire: a fixed header, then one int32 body. */
enum { PLAN_STOP = 0, PLAN_STEP = 1 };
enum { H_KIND, H_TOKENS, H_SEQS, H_MAXBLK, H_LOGITS, H_BODY, H_LEN };
#define ROW_INTS 6 /* temperature bits, top_k, top_p bits, n_logprobs, rng lo, rng hi */

struct rt_engine {
    rt_model *m;
    comm *comm;
    rt_engine_geometry geo;
    rt_kv_cache kv;
    rt_forward *fw;
    int32_t *body;       /* the plan body, sized for the limits */
    size_t body_cap;
    rt_step_sampling *rows; /* (max_logits) followers' copy of the rows */
    rt_sample_out *out;     /* (max_logits) followers' samples */
    rt_engine_traffic traffic;
};

static size_t body_ints(const rt_forward_limits *l)
{
    return 3 * (size_t)l->max_tokens + (size_t)l->max_seqs * (size_t)l->max_blocks +
           (size_t)l->max_logits * (1 + ROW_INTS);
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
    if (!e->body || !e->rows || !e->out) {
        rt_engine_destroy(e);
        return base_errf(err, "out of host memory");
    }
    if (rt_kv_cache_create(&e->kv, m->be, m->n_layers, g->n_blocks, g->block_size, m->shard.n_kv_heads,
                           m->cfg.head_dim, err) ||
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
    const int T = b->n_tokens, nl = b->n_logits;
    size_t tab = (size_t)b->n_seqs * (size_t)b->max_blocks;
    size_t n = 3 * (size_t)T + tab + (size_t)nl * (1 + ROW_INTS);
    if (T < 0 || nl < 0 || b->n_seqs < 0 || b->max_blocks < 0 || n > e->body_cap)
        return base_errf(err, "step of %d tokens, %d sequences x %d blocks, %d logits exceeds the job's limits", T,
                       b->n_seqs, b->max_blocks, nl);
    int32_t *p = e->body;
    memcpy(p, b->tokens, (size_t)T * 4), p += T;
    memcpy(p, b->pos, (size_t)T * 4), p += T;
    memcpy(p, b->seq, (size_t)T * 4), p += T;
    memcpy(p, b->block_tables, tab * 4), p += tab;
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
    h[H_BODY] = (int32_t)n;
    return 0;
}

static void unpack(rt_engine *e, const int32_t *h, rt_batch *b)
{
    const int T = h[H_TOKENS], nl = h[H_LOGITS];
    const int32_t *p = e->body;
    *b = (rt_batch){.n_tokens = T, .n_seqs = h[H_SEQS], .max_blocks = h[H_MAXBLK], .n_logits = nl};
    b->tokens = p, p += T;
    b->pos = p, p += T;
    b->seq = p, p += T;
    b->block_tables = p, p += (size_t)b->n_seqs * (size_t)b->max_blocks;
    b->logit_rows = p, p += nl;
    for (int i = 0; i < nl; i++, p += ROW_INTS) {
        rt_step_sampling *r = &e->rows[i];
        r->params = (rt_sampling){.temperature = i2f(p[0]), .top_k = p[1], .top_p = i2f(p[2]), .n_logprobs = p[3]};
        r->rng.state = (uint64_t)(uint32_t)p[4] | (uint64_t)(uint32_t)p[5] << 32;
    }
}

/* This rank's part of a step: forward and sampling on the sampling rank, then the samples (and
 * advanced rng states) to rank 0 when that is another rank. */
static int run_step(rt_engine *e, const rt_batch *b, rt_step_sampling *rows, rt_sample_out *out,
                    comm_counters before, base_err *err)
{
    if (rt_forward_step(e->fw, b, rows, out, err))
        return -1;
    const int me = my_rank(e), sr = sampler_rank(e), nl = b->n_logits;
    if (sr != 0 && nl > 0 && (me == sr || me == 0)) {
        comm_group *w = comm_topo(e->comm)->world;
        int rc = me == sr ? comm_send(w, out, (size_t)nl * sizeof *out, COMM_U8, 0, err) ||
                                comm_send(w, rows, (size_t)nl * sizeof *rows, COMM_U8, 0, err)
                          : comm_recv(w, out, (size_t)nl * sizeof *out, COMM_U8, sr, err) ||
                                comm_recv(w, rows, (size_t)nl * sizeof *rows, COMM_U8, sr, err);
        if (rc)
            return -1;
    }
    if (e->comm && b->n_tokens == nl) { /* a decode step: every sequence has its one token */
        comm_counters now = comm_get_counters(e->comm);
        e->traffic.decode_tokens += (uint64_t)b->n_tokens;
        e->traffic.tp_bytes += now.tp_bytes - before.tp_bytes;
        e->traffic.pp_bytes += now.pp_bytes - before.pp_bytes;
        e->traffic.world_bytes += now.world_bytes - before.world_bytes;
    }
    return 0;
}

static comm_counters counters_now(const rt_engine *e)
{
    return e->comm ? comm_get_counters(e->comm) : (comm_counters){0};
}

int rt_engine_step(rt_engine *e, const rt_batch *b, rt_step_sampling *rows, rt_sample_out *out, base_err *err)
{
    comm_counters before = counters_now(e);
    if (e->comm && comm_topo(e->comm)->world_size > 1) {
        int32_t h[H_LEN];
        if (pack(e, b, rows, h, err))
            return -1;
        comm_group *w = comm_topo(e->comm)->world;
        if (comm_bcast_idle(w, h, H_LEN, COMM_I32, 0, err) || comm_bcast(w, e->body, (size_t)h[H_BODY], COMM_I32, 0, err))
            return -1;
    }
    return run_step(e, b, rows, out, before, err);
}

int rt_engine_follow(rt_engine *e, base_err *err)
{
    comm_group *w = comm_topo(e->comm)->world;
    for (;;) {
        int32_t h[H_LEN];
        comm_counters before = counters_now(e);
        if (comm_bcast_idle(w, h, H_LEN, COMM_I32, 0, err))
            return -1;
        if (h[H_KIND] == PLAN_STOP)
            return 0;
        if (h[H_BODY] < 0 || (size_t)h[H_BODY] > e->body_cap || h[H_LOGITS] > e->geo.lim.max_logits)
            return base_errf(err, "step plan of %d ints exceeds the %zu this rank allocated", h[H_BODY], e->body_cap);
        if (comm_bcast(w, e->body, (size_t)h[H_BODY], COMM_I32, 0, err))
            return -1;
        rt_batch b;
        unpack(e, h, &b);
        if (run_step(e, &b, e->rows, e->out, before, err))
            return -1;
    }
}

int rt_engine_finish(rt_engine *e, base_err *err)
{
    if (!e->comm || comm_topo(e->comm)->world_size == 1)
        return 0;
    int32_t h[H_LEN] = {PLAN_STOP};
    return comm_bcast_idle(comm_topo(e->comm)->world, h, H_LEN, COMM_I32, 0, err);
}
