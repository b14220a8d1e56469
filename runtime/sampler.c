#include "runtime/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64: one 64-bit state, good statistical quality, trivially seeded */
void rt_rng_seed(rt_rng *r, uint64_t seed)
{
    r->state = seed ^ 0x5851f42d4c957f2dULL;
}

uint64_t rt_rng_next(rt_rng *r)
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

float rt_rng_uniform(rt_rng *r)
{
    return (float)(rt_rng_next(r) >> 40) * 0x1p-24f;
}

const char *rt_sampling_check(const rt_sampling *p)
{
    if (!(p->temperature >= 0.0f) || isinf(p->temperature))
        return "temperature must be a finite number >= 0";
    if (p->top_k < 0)
        return "top_k must be >= 0";
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return "top_p must be in (0, 1]";
    if (p->n_logprobs < 0 || p->n_logprobs > RT_MAX_TOP_LOGPROBS)
        return "logprobs must be in [0, 20]";
    return NULL;
}

typedef struct cand {
    float logit;
    int id;
} cand;

static int cmp_cand_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

/* Keeps the n best (logit, id) of logits in out, best first. */
static void top_n(const float *logits, int vocab, int n, cand *out)
{
    int have = 0;
    for (int i = 0; i < vocab; i++) {
        float v = logits[i];
        if (have == n && !(v > out[n - 1].logit))
            continue;
        int j = have < n ? have++ : n - 1;
        while (j > 0 && v > out[j - 1].logit) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = (cand){v, i};
    }
}

static bool greedy(const rt_sampling *p)
{
    return !(p->temperature >= RT_GREEDY_TEMPERATURE);
}

rt_sample_row rt_sample_row_draw(const rt_sampling *p, rt_rng *rng)
{
    return (rt_sample_row){.temperature = p->temperature, .top_p = p->top_p,
                           .u = greedy(p) ? 0.0f : rt_rng_uniform(rng), .top_k = p->top_k,
                           .n_logprobs = p->n_logprobs};
}

void rt_sample(const float *logits, int vocab, const rt_sampling *p, rt_rng *rng, void *scratch,
               rt_sample_out *out)
{
    rt_sample_with(logits, vocab, p, greedy(p) ? 0.0f : rt_rng_uniform(rng), scratch, out);
}

void rt_sample_with(const float *logits, int vocab, const rt_sampling *p, float u, void *scratch,
                    rt_sample_out *out)
{
    float mx = -INFINITY;
    int arg = 0;
    for (int i = 0; i < vocab; i++)
        if (logits[i] > mx) {
            mx = logits[i];
            arg = i;
        }
    /* the normalizer: expf of (logit - max) is in (0, 1], summed in double (128K terms) */
    double sum = 0.0;
    for (int i = 0; i < vocab; i++)
        sum += (double)expf(logits[i] - mx);
    const float lse = mx + (float)log(sum);

    int token = arg;
    if (!greedy(p)) {
        cand *c = scratch;
        int n = 0;
        double full = 0.0; /* the whole distribution's mass at this temperature, when filtered */
        const double inv_t = 1.0 / (double)p->temperature; /* in double: at most 1e5, never infinite */
        if (p->top_k > 0 && p->top_k < vocab) {
            top_n(logits, vocab, p->top_k, c);
            n = p->top_k;
        } else if (p->top_p < 1.0f) {
            /* a token with probability under (1 - top_p) / (vocab - 1) can never be inside the
             * nucleus: filter before sorting (as llama2.c does) */
            double cut = (1.0 - p->top_p) / (vocab > 1 ? vocab - 1 : 1);
            for (int i = 0; i < vocab; i++)
                full += exp(((double)logits[i] - mx) * inv_t);
            for (int i = 0; i < vocab; i++) /* the most likely token always stays a candidate */
                if (i == arg || exp(((double)logits[i] - mx) * inv_t) / full >= cut)
                    c[n++] = (cand){logits[i], i};
            qsort(c, (size_t)n, sizeof *c, cmp_cand_desc);
        } else {
            for (int i = 0; i < vocab; i++)
                c[n++] = (cand){logits[i], i};
        }
        /* c is sorted best-first whenever top_p < 1: cut it to the smallest prefix whose
         * probability reaches top_p (after top-k, vLLM's order), then renormalize; n >= 1 here
         * (top_k >= 1 keeps the best, and the top-p filter keeps arg) and the prefix keeps c[0] */
        double tot = 0.0;
        for (int i = 0; i < n; i++)
            tot += exp(((double)c[i].logit - mx) * inv_t);
        if (p->top_p < 1.0f) {
            double norm = full > 0.0 ? full : tot, acc = 0.0, kept = 0.0;
            int keep = n;
            for (int i = 0; i < n; i++) {
                double e = exp(((double)c[i].logit - mx) * inv_t);
                acc += e / norm;
                kept += e;
                if (acc >= p->top_p) {
                    keep = i + 1;
                    break;
                }
            }
            n = keep;
            tot = kept;
        }
        double target = (double)u * tot, run = 0.0;
        token = c[n - 1].id;
        for (int i = 0; i < n; i++) {
            run += exp(((double)c[i].logit - mx) * inv_t);
            if (target < run) {
                token = c[i].id;
                break;
            }
        }
    }
    out->token = token;
    out->logprob = logits[token] - lse;
    out->n_top = 0;
    if (p->n_logprobs > 0) {
        cand best[RT_MAX_TOP_LOGPROBS];
        int n = p->n_logprobs < vocab ? p->n_logprobs : vocab;
        top_n(logits, vocab, n, best);
        for (int i = 0; i < n; i++) {
            out->top_ids[i] = best[i].id;
            out->top_logprobs[i] = best[i].logit - lse;
        }
        out->n_top = n;
    }
}
