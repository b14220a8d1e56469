#include "runtime/generate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/kv_cache.h"
#include "base/clock.h"
#include "runtime/scheduler.h"

static rt_sched_request sched_request(const rt_gen_request *r, uint64_t id)
{
    return (rt_sched_request){.id = id, .prompt = r->prompt, .prompt_len = r->prompt_len, .max_tokens = r->max_tokens,
                              .sampling = r->sampling, .ignore_eos = r->ignore_eos};
}

/* Blocks a request holds: the last generated token is never fed back, so it needs no KV slot. */
static int blocks_of(const rt_gen_request *r, int bs)
{
    return rt_kv_blocks_for(r->prompt_len + r->max_tokens - 1, bs);
}

int rt_gen_kv_blocks(const rt_config *cfg, const rt_gen_request *reqs, int n, int bs, int32_t *n_blocks,
                     base_err *err)
{
    if (n < 1 || bs < 1)
        return base_errf(err, "generate: need at least one request and a block size");
    long total = 0;
    for (int i = 0; i < n; i++) {
        rt_sched_request r = sched_request(&reqs[i], (uint64_t)i);
        if (rt_sched_check(cfg, &r, err)) {
            base_err_prefix(err, "request %d", i);
            return -1;
        }
        total += blocks_of(&reqs[i], bs);
    }
    if (total > 1L << 30)
        return base_errf(err, "generate: the requests need %ld KV blocks", total);
    *n_blocks = (int32_t)total;
    return 0;
}

void rt_gen_result_free(rt_gen_result *r)
{
    free(r->tokens);
    free(r->logprobs);
    memset(r, 0, sizeof *r);
}

typedef struct collect {
    const rt_gen_request *reqs;
    rt_gen_result *res;
    int failed;
    char message[160];
} collect;

static void on_event(void *ctx, const rt_sched_event *ev)
{
    collect *c = ctx;
    rt_gen_result *r = &c->res[ev->id];
    if (ev->kind == RT_EV_TOKEN) {
        r->tokens[r->n_tokens] = ev->sample->token;
        r->logprobs[r->n_tokens] = ev->sample->logprob;
        r->n_tokens++;
    } else if (ev->kind == RT_EV_DONE) {
        r->finish_reason = ev->finish_reason;
    } else {
        c->failed = 1;
        snprintf(c->message, sizeof c->message, "request %llu: %s", (unsigned long long)ev->id, ev->message);
    }
}

int rt_generate(rt_engine *e, const rt_gen_request *reqs, int n, int depth, rt_gen_result *res, rt_gen_stats *st,
                base_err *err)
{
    memset(st, 0, sizeof *st);
    memset(res, 0, (size_t)n * sizeof *res);
    const rt_engine_geometry *g = rt_engine_geom(e);
    rt_sched_options opt = {.max_batch_tokens = g->lim.max_tokens, .max_seqs = n < g->lim.max_seqs ? n : g->lim.max_seqs,
                            .pipeline_depth = depth};
    collect col = {.reqs = reqs, .res = res};
    rt_sched *s;
    if (rt_sched_create(&s, e, &opt, on_event, &col, err))
        return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        res[i].tokens = malloc((size_t)reqs[i].max_tokens * sizeof *res[i].tokens);
        res[i].logprobs = malloc((size_t)reqs[i].max_tokens * sizeof *res[i].logprobs);
        int status;
        rt_sched_request r = sched_request(&reqs[i], (uint64_t)i);
        if (!res[i].tokens || !res[i].logprobs)
            rc = base_errf(err, "generate: out of host memory");
        else if (rt_sched_add(s, &r, &status, err))
            rc = -1, base_err_prefix(err, "request %d", i);
    }
    double carried = 0.0;
    while (rc == 0 && rt_sched_has_work(s)) {
        double t0 = base_now();
        if ((rc = rt_sched_step(s, err)))
            break;
        double dt = base_now() - t0 + carried;
        int T, prefill;
        rt_sched_last_timed(s, &T, &prefill);
        /* a call that only took a step back started none; with run-ahead, one that took none back
         * (the first) is timed with the next */
        carried = T > 0 ? 0.0 : dt;
        st->steps += T > 0;
        if (prefill) {
            st->prefill_seconds += dt;
            st->prefill_tokens += prefill;
        } else if (T > 0) {
            st->decode_seconds += dt;
            st->decode_tokens += T;
        }
        if (col.failed)
            rc = base_errf(err, "%s", col.message);
    }
    st->decode_seconds += carried;
    rt_sched_stats ss;
    rt_sched_get_stats(s, &ss);
    st->steps_overlapped = (long)ss.steps_overlapped;
    st->run_ahead = rt_sched_runs_ahead(s);
    rt_sched_destroy(s);
    if (rc)
        for (int i = 0; i < n; i++)
            rt_gen_result_free(&res[i]);
    return rc;
}

int rt_generate_local(rt_model *m, const rt_gen_request *reqs, int n, const rt_gen_options *opt,
                      rt_gen_result *results, rt_gen_stats *stats, base_err *err)
{
    rt_sched_options so = {.max_batch_tokens = opt->max_batch_tokens, .max_seqs = n};
    rt_engine_geometry g = rt_sched_geometry(&m->cfg, &so, 0, opt->block_size);
    rt_engine *e;
    if (rt_gen_kv_blocks(&m->cfg, reqs, n, opt->block_size, &g.n_blocks, err) ||
        rt_engine_create(&e, m, NULL, &g, err))
        return -1;
    int rc = rt_generate(e, reqs, n, 1, results, stats, err);
    rt_engine_destroy(e);
    return rc;
}
