#include "partition/plan.h"
#include "runtime/vocab_sample.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/kv_cache.h"

/* [begin, end) of part i when n items are split into k parts as evenly as possible */
static int split_begin(int n, int k, int i)
{
    return (int)((long)n * i / k);
}

static int check_split(const rt_config *c, int tp, int pp, const int *lps, base_err *err)
{
    if (tp < 1 || tp > PLAN_MAX_TP)
        return base_errf(err, "tp=%d must be in [1, %d]", tp, PLAN_MAX_TP);
    if (pp < 1 || pp > PLAN_MAX_PP)
        return base_errf(err, "pp=%d must be in [1, %d]", pp, PLAN_MAX_PP);
    if (c->n_heads % tp != 0)
        return base_errf(err, "%d query heads cannot split over tp=%d", c->n_heads, tp);
    if (tp <= c->n_kv_heads && c->n_kv_heads % tp != 0)
        return base_errf(err, "%d KV heads cannot split over tp=%d", c->n_kv_heads, tp);
    if (tp > c->n_kv_heads && tp % c->n_kv_heads != 0)
        return base_errf(err, "tp=%d is not a multiple of the %d KV heads, so they cannot be replicated evenly",
                       tp, c->n_kv_heads);
    if (tp > c->ffn_dim)
        return base_errf(err, "%d FFN columns cannot split over tp=%d", c->ffn_dim, tp);
    if (tp > c->vocab_size)
        return base_errf(err, "%d vocabulary rows cannot split over tp=%d", c->vocab_size, tp);
    if (pp > c->n_layers)
        return base_errf(err, "pp=%d stages but the model has only %d layers", pp, c->n_layers);
    if (lps) {
        long sum = 0;
        for (int s = 0; s < pp; s++) {
            if (lps[s] < 1)
                return base_errf(err, "--layers-per-stage: stage %d has %d layers; every stage needs at least one", s,
                               lps[s]);
            sum += lps[s];
        }
        if (sum != c->n_layers)
            return base_errf(err, "--layers-per-stage sums to %ld layers, the model has %d", sum, c->n_layers);
    }
    return 0;
}

void plan_place(int tp, int rank, int *stage, int *tp_rank)
{
    *stage = rank / tp;
    *tp_rank = rank % tp;
}

int plan_rank_at(int tp, int stage, int tp_rank)
{
    return stage * tp + tp_rank;
}

int plan_make(plan *p, const rt_config *c, int tp, int pp, const int *lps, rt_dtype dtype, base_err *err)
{
    memset(p, 0, sizeof *p);
    if (check_split(c, tp, pp, lps, err))
        return -1;
    p->tp = tp;
    p->pp = pp;
    p->world = tp * pp;
    p->dtype = dtype;
    p->stage_layers = malloc((size_t)pp * sizeof *p->stage_layers);
    p->ranks = calloc((size_t)p->world, sizeof *p->ranks);
    if (!p->stage_layers || !p->ranks) {
        plan_free(p);
        return base_errf(err, "out of memory");
    }
    for (int s = 0; s < pp; s++)
        p->stage_layers[s] = lps ? lps[s] : c->n_layers / pp + (s < c->n_layers % pp);
    const bool replicate_kv = tp > c->n_kv_heads;
    for (int s = 0, first_layer = 0; s < pp; first_layer += p->stage_layers[s++]) {
        for (int t = 0; t < tp; t++) {
            const int rank = plan_rank_at(tp, s, t);
            plan_rank *r = &p->ranks[rank];
            r->rank = rank;
            plan_place(tp, rank, &r->stage, &r->tp_rank);
            rt_shard *sh = &r->shard;
            sh->layer_begin = first_layer;
            sh->layer_end = first_layer + p->stage_layers[s];
            sh->n_heads = c->n_heads / tp;
            sh->head_begin = t * sh->n_heads;
            if (replicate_kv) {
                /* tp / n_kv consecutive ranks share one KV head: the one their query heads read */
                sh->n_kv_heads = 1;
                sh->kv_head_begin = t / (tp / c->n_kv_heads);
            } else {
                sh->n_kv_heads = c->n_kv_heads / tp;
                sh->kv_head_begin = t * sh->n_kv_heads;
            }
            sh->ffn_begin = split_begin(c->ffn_dim, tp, t);
            sh->ffn_end = split_begin(c->ffn_dim, tp, t + 1);
            sh->vocab_begin = split_begin(c->vocab_size, tp, t);
            sh->vocab_end = split_begin(c->vocab_size, tp, t + 1);
            sh->first_stage = s == 0;
            sh->last_stage = s == pp - 1;
            sh->adds_row_bias = t == 0;
            sh->sampler_rank = plan_rank_at(tp, pp - 1, 0);
            r->weight_bytes = rt_shard_weight_bytes(c, sh, dtype);
            r->kv_bytes_per_token = rt_kv_bytes_per_token(p->stage_layers[s], sh->n_kv_heads, c->head_dim, dtype, rt_kv_kind_of(c));
        }
    }
    return 0;
}

void plan_free(plan *p)
{
    free(p->stage_layers);
    free(p->ranks);
    memset(p, 0, sizeof *p);
}

int plan_choose(const rt_config *c, int hosts, int per_host, int *tp, int *pp, base_err *err)
{
    if (hosts < 1 || per_host < 1)
        return base_errf(err, "need at least one host with at least one GPU (got %d hosts x %d)", hosts, per_host);
    base_err why = {{0}};
    for (int t = per_host; t >= 1; t--) {
        if (per_host % t != 0)
            continue;
        long p = (long)hosts * (per_host / t);
        if (p > PLAN_MAX_PP)
            continue;
        if (check_split(c, t, (int)p, NULL, &why) == 0) {
            *tp = t;
            *pp = (int)p;
            return 0;
        }
    }
    return base_errf(err, "no split of %d host(s) x %d GPU(s) fits the model (%d layers, %d query heads, %d KV heads): "
                        "with tp=1 it would need %ld pipeline stages (%s); use fewer GPUs, or --tp/--pp",
                   hosts, per_host, c->n_layers, c->n_heads, c->n_kv_heads, (long)hosts * per_host, why.msg);
}

int plan_check_world(const plan *p, int world, base_err *err)
{
    if (world != p->world)
        return base_errf(err, "the job has %d ranks but tp=%d x pp=%d needs %d", world, p->tp, p->pp, p->world);
    return 0;
}

size_t plan_comm_bytes_per_token(const plan *p, const rt_config *c, int rank)
{
    const plan_rank *r = &p->ranks[rank];
    const size_t act = (size_t)c->dim * sizeof(float);
    size_t n = 0;
    if (p->tp > 1) {
        n += act * 2 * (size_t)(r->shard.layer_end - r->shard.layer_begin); /* attention and MLP */
        if (r->shard.first_stage)
            n += act; /* vocab-parallel embedding */
        if (r->shard.last_stage) /* a greedy row's share of the vocab-parallel sampling */
            n += rt_vocab_row_bytes(1, r->tp_rank);
    }
    if (!r->shard.last_stage)
        n += act; /* hidden state to the next stage */
    return n;
}
