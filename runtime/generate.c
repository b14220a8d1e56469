#include "runtime/generate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/kv_cache.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *rt_gen_request_check(const rt_model *m, const rt_gen_request *r, char *buf, size_t n)
{
    const rt_config *c = &m->cfg;
    if (r->prompt_len < 1)
        return "the prompt is empty";
    for (int i = 0; i < r->prompt_len; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= c->vocab_size) {
            snprintf(buf, n, "prompt token %d is outside the vocabulary [0, %d)", r->prompt[i], c->vocab_size);
            return buf;
        }
    if (r->max_tokens < 1)
        return "max_tokens must be at least 1";
    if ((long)r->prompt_len + r->max_tokens > c->max_pos) {
        snprintf(buf, n, "prompt (%d tokens) + max_tokens (%d) exceeds the context length %d", r->prompt_len,
                 r->max_tokens, c->max_pos);
        return buf;
    }
    return rt_sampling_check(&r->sampling);
}

/* Blocks a request holds: the last generated token is never fed back, so it needs no KV slot. */
static int blocks_of(const rt_gen_request *r, int bs)
{
    return rt_kv_blocks_for(r->prompt_len + r->max_tokens - 1, bs);
}

int rt_gen_geometry(const rt_model *m, const rt_gen_request *reqs, int n, const rt_gen_options *opt,
                    rt_engine_geometry *g, rt_err *err)
{
    const int bs = opt->block_size, budget = opt->max_batch_tokens;
    if (n < 1 || bs < 1 || budget < 1)
        return rt_errf(err, "generate: need at least one request, a block size and a token budget");
    int max_blocks = 1;
    long total = 0;
    for (int i = 0; i < n; i++) {
        char buf[160];
        const char *why = rt_gen_request_check(m, &reqs[i], buf, sizeof buf);
        if (why)
            return rt_errf(err, "request %d: %s", i, why);
        int nb = blocks_of(&reqs[i], bs);
        max_blocks = nb > max_blocks ? nb : max_blocks;
        total += nb;
    }
    if (total > 1L << 30)
        return rt_errf(err, "generate: the requests need %ld KV blocks", total);
    *g = (rt_engine_geometry){.n_blocks = (int32_t)total, .block_size = bs,
                              .lim = {.max_tokens = budget, .max_seqs = n, .max_blocks = max_blocks, .max_logits = n}};
    return 0;
}

void rt_gen_result_free(rt_gen_result *r)
{
    free(r->tokens);
    free(r->logprobs);
    memset(r, 0, sizeof *r);
}

typedef struct seq_state {
    int done;        /* positions already in the KV cache */
    bool finished;
    rt_rng rng;
} seq_state;

int rt_generate(rt_engine *e, const rt_gen_request *reqs, int n, rt_gen_result *res, rt_gen_stats *st, rt_err *err)
{
    memset(st, 0, sizeof *st);
    memset(res, 0, (size_t)n * sizeof *res);
    const rt_engine_geometry *g = rt_engine_geom(e);
    const rt_config *c = &rt_engine_model(e)->cfg;
    const int bs = g->block_size, budget = g->lim.max_tokens, max_blocks = g->lim.max_blocks;
    if (n > g->lim.max_seqs)
        return rt_errf(err, "generate: %d requests for an engine sized for %d", n, g->lim.max_seqs);
    int32_t *tables = malloc((size_t)n * (size_t)max_blocks * sizeof *tables);
    int32_t *ints = malloc(5 * (size_t)budget * sizeof *ints);
    seq_state *ss = calloc((size_t)n, sizeof *ss);
    int *owner = malloc((size_t)n * sizeof *owner);
    rt_step_sampling *rows = malloc((size_t)n * sizeof *rows);
    rt_sample_out *outs = malloc((size_t)n * sizeof *outs);
    int rc = 0;
    if (!tables || !ints || !ss || !owner || !rows || !outs) {
        rc = rt_errf(err, "generate: out of host memory");
        goto out;
    }
    /* each sequence owns a contiguous run of the pool */
    for (int i = 0, next = 0; i < n; i++) {
        int nb = blocks_of(&reqs[i], bs);
        if (nb > max_blocks || next + nb > g->n_blocks) {
            rc = rt_errf(err, "generate: the requests need more KV blocks than the engine holds");
            goto out;
        }
        for (int j = 0; j < max_blocks; j++)
            tables[(size_t)i * max_blocks + j] = j < nb ? next + j : -1;
        next += nb;
        rt_rng_seed(&ss[i].rng, reqs[i].sampling.seed);
        res[i].tokens = malloc((size_t)reqs[i].max_tokens * sizeof *res[i].tokens);
        res[i].logprobs = malloc((size_t)reqs[i].max_tokens * sizeof *res[i].logprobs);
        if (!res[i].tokens || !res[i].logprobs) {
            rc = rt_errf(err, "generate: out of host memory");
            goto out;
        }
    }
    int32_t *tok = ints, *pos = tok + budget, *seq = pos + budget, *lrow = seq + budget;
    for (int running = n; running > 0;) {
        /* one decode token for each running sequence, prefill chunks of the others, in order */
        int T = 0, nl = 0, prefill = 0;
        for (int i = 0; i < n && T < budget; i++) {
            if (ss[i].finished)
                continue;
            const rt_gen_request *r = &reqs[i];
            int take;
            if (ss[i].done < r->prompt_len) {
                take = r->prompt_len - ss[i].done;
                take = take < budget - T ? take : budget - T;
                for (int j = 0; j < take; j++) {
                    tok[T + j] = r->prompt[ss[i].done + j];
                    pos[T + j] = ss[i].done + j;
                    seq[T + j] = i;
                }
                prefill += take;
            } else {
                take = 1;
                tok[T] = res[i].tokens[res[i].n_tokens - 1];
                pos[T] = ss[i].done;
                seq[T] = i;
            }
            ss[i].done += take;
            T += take;
            if (ss[i].done >= r->prompt_len) {
                lrow[nl] = T - 1;
                rows[nl] = (rt_step_sampling){r->sampling, ss[i].rng};
                owner[nl++] = i;
            }
        }
        rt_batch b = {.n_tokens = T, .tokens = tok, .pos = pos, .seq = seq, .n_seqs = n,
                      .block_tables = tables, .max_blocks = max_blocks, .n_logits = nl, .logit_rows = lrow};
        double t0 = now_seconds();
        if ((rc = rt_engine_step(e, &b, rows, outs, err)))
            goto out;
        for (int k = 0; k < nl; k++) {
            int i = owner[k];
            ss[i].rng = rows[k].rng;
            rt_gen_result *o = &res[i];
            o->tokens[o->n_tokens] = outs[k].token;
            o->logprobs[o->n_tokens] = outs[k].logprob;
            o->n_tokens++;
            if (!reqs[i].ignore_eos && rt_config_is_eos(c, outs[k].token))
                o->finish_reason = "stop";
            else if (o->n_tokens == reqs[i].max_tokens)
                o->finish_reason = "length";
            else
                continue;
            ss[i].finished = true;
            running--;
        }
        double dt = now_seconds() - t0;
        st->steps++;
        if (prefill) {
            st->prefill_seconds += dt;
            st->prefill_tokens += prefill;
        } else {
            st->decode_seconds += dt;
            st->decode_tokens += T;
        }
    }
out:
    free(tables);
    free(ints);
    free(ss);
    free(owner);
    free(rows);
    free(outs);
    if (rc)
        for (int i = 0; i < n; i++)
            rt_gen_result_free(&res[i]);
    return rc;
}

int rt_generate_local(rt_model *m, const rt_gen_request *reqs, int n, const rt_gen_options *opt,
                      rt_gen_result *results, rt_gen_stats *stats, rt_err *err)
{
    rt_engine_geometry g;
    rt_engine *e;
    if (rt_gen_geometry(m, reqs, n, opt, &g, err) || rt_engine_create(&e, m, NULL, &g, err))
        return -1;
    int rc = rt_generate(e, reqs, n, results, stats, err);
    rt_engine_destroy(e);
    return rc;
}
