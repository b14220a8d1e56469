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

/* The token drawn with u from the candidates c (n >= 1), as rt_sample_with says: c best first
 * whenever top_p < 1, full the whole distribution's mass at this temperature when only top-p
 * filtered them (else 0). */
static int pick(const cand *c, int n, float mx, double full, const rt_sampling *p, float u)
{
    const double inv_t = 1.0 / (double)p->temperature; /* in double: at most 1e5, never infinite */
    /* cut c to the smallest prefix whose probability reaches top_p (after top-k, vLLM's order),
     * then renormalize; the prefix keeps c[0] */
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
    for (int i = 0; i < n; i++) {
        run += exp(((double)c[i].logit - mx) * inv_t);
        if (target < run)
            return c[i].id;
    }
    return c[n - 1].id;
}

/* out's token (given), its logprob and the top-n logprobs from best (n_best, best first). */
static void fill_out(rt_sample_out *out, const float *logit_of_token, int token, float lse, const cand *best,
                     int n_best)
{
    out->token = token;
    out->logprob = *logit_of_token - lse;
    out->n_top = n_best;
    for (int i = 0; i < n_best; i++) {
        out->top_ids[i] = best[i].id;
        out->top_logprobs[i] = best[i].logit - lse;
    }
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
        const double inv_t = 1.0 / (double)p->temperature;
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
        token = pick(c, n, mx, full, p, u);
    }
    cand best[RT_MAX_TOP_LOGPROBS];
    const int n_best = p->n_logprobs < vocab ? p->n_logprobs : vocab;
    if (n_best > 0)
        top_n(logits, vocab, n_best, best);
    fill_out(out, &logits[token], token, lse, best, n_best);
}

/* ---- vocab-parallel logits: each rank's slice reduced to a few numbers a row ---- */

bool rt_sample_by_mass(const rt_sampling *p, int vocab)
{
    return !greedy(p) && (p->top_k <= 0 || p->top_k >= vocab) && !(p->top_p < 1.0f);
}

bool rt_sample_by_nucleus(const rt_sampling *p, int vocab)
{
    return !greedy(p) && (p->top_k <= 0 || p->top_k >= vocab) && p->top_p < 1.0f;
}

int rt_sample_part_need(const rt_sampling *p, int vocab)
{
    int need = p->n_logprobs > 1 ? p->n_logprobs : 1;
    if (rt_sample_by_mass(p, vocab))
        return need; /* the draw goes by the slices' masses; candidates only for the logprobs */
    if (rt_sample_by_nucleus(p, vocab))
        return RT_SAMPLE_PART_MAX; /* as many as a slice sends: the nucleus must fit in them */
    if (!greedy(p)) {
        if (p->top_k <= 0 || p->top_k >= vocab || p->top_k > RT_SAMPLE_PART_MAX)
            return 0; /* the draw walks the whole distribution */
        need = p->top_k > need ? p->top_k : need;
    }
    return need;
}

float rt_sample_slice_max(const float *logits, int n)
{
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    return mx;
}

void rt_sample_part_make(const float *logits, int n, int32_t id0, float mx, int need, rt_sample_part *out)
{
    double sum = 0.0; /* the terms rt_sample_with adds, in its order */
    for (int i = 0; i < n; i++)
        sum += (double)expf(logits[i] - mx);
    out->sum = sum;
    out->n = need < n ? need : n;
    cand c[RT_SAMPLE_PART_MAX];
    top_n(logits, n, out->n, c);
    for (int i = 0; i < out->n; i++)
        out->c[i] = (rt_sample_cand){c[i].logit, c[i].id + id0};
}

double rt_sample_slice_mass(const float *logits, int n, float mx, float temperature)
{
    const double inv_t = 1.0 / (double)temperature; /* pick's arithmetic, term for term */
    double m = 0.0;
    for (int i = 0; i < n; i++)
        m += exp(((double)logits[i] - mx) * inv_t);
    return m;
}

int32_t rt_sample_mass_draw(const float *logits, int n, int32_t id0, float mx, float temperature,
                            const double *masses, int n_parts, int part, float u, float *logit)
{
    double before = 0.0, tot = 0.0;
    for (int r = 0; r < n_parts; r++) {
        before += r < part ? masses[r] : 0.0;
        tot += masses[r];
    }
    const double target = (double)u * tot, slack = 1e-9 * tot;
    const bool last = part == n_parts - 1;
    if (n <= 0 || target + slack < before || (!last && target >= before + masses[part] + slack))
        return -1; /* the walk lands in another slice */
    const double inv_t = 1.0 / (double)temperature;
    double run = before;
    for (int i = 0; i < n; i++) {
        run += exp(((double)logits[i] - mx) * inv_t);
        if (target < run) {
            *logit = logits[i];
            return id0 + i;
        }
    }
    if (!last)
        return -1;
    *logit = logits[n - 1]; /* a draw past the whole mass: the last id, as the walk over one row */
    return id0 + n - 1;
}

/* The c (n, best first) merged from every slice's candidates: the first `need` overall. */
static int merge_candidates(const rt_sample_part *parts, int n_parts, double *sum, cand *c)
{
    int n = 0, need = 0, total = 0, at[RT_SAMPLE_MAX_PARTS] = {0};
    *sum = 0.0;
    for (int r = 0; r < n_parts; r++) {
        *sum += parts[r].sum;
        need = parts[r].n > need ? parts[r].n : need;
        total += parts[r].n;
    }
    need = need < total ? need : total;
    while (n < need) {
        int best = -1;
        for (int r = 0; r < n_parts; r++) {
            if (at[r] == parts[r].n)
                continue;
            const rt_sample_cand *x = &parts[r].c[at[r]];
            if (best < 0) {
                best = r;
                continue;
            }
            const rt_sample_cand *y = &parts[best].c[at[best]];
            if (x->logit > y->logit || (x->logit == y->logit && x->id < y->id))
                best = r;
        }
        c[n++] = (cand){parts[best].c[at[best]].logit, parts[best].c[at[best]].id};
        at[best]++;
    }
    return n;
}

/* The nucleus of a top-p row over c (n, best first): its length, or 0 when it does not close
 * within c. pick's walk, term for term. */
static int nucleus_len(const cand *c, int n, float mx, double full, const rt_sampling *p)
{
    const double inv_t = 1.0 / (double)p->temperature;
    double acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += exp(((double)c[i].logit - mx) * inv_t) / full;
        if (acc >= p->top_p)
            return i + 1;
    }
    return 0;
}

bool rt_sample_nucleus_ready(const rt_sample_part *parts, int n_parts, float mx, double full, const rt_sampling *p)
{
    cand c[RT_SAMPLE_PART_MAX];
    double sum;
    const int n = merge_candidates(parts, n_parts, &sum, c), k = nucleus_len(c, n, mx, full, p);
    if (k == 0)
        return false;
    /* a slice that sent all it could may hold more: they come after its last one sent, and the
     * nucleus must end no later than that */
    const cand last = c[k - 1];
    for (int r = 0; r < n_parts; r++) {
        if (parts[r].n < RT_SAMPLE_PART_MAX)
            continue;
        const rt_sample_cand *b = &parts[r].c[parts[r].n - 1];
        if (last.logit < b->logit || (last.logit == b->logit && last.id > b->id))
            return false;
    }
    return true;
}

/* The sample of a row from the slices' merged candidates: their best when greedy, else pick's draw
 * over the first top_k of them, or over all of them for a nucleus (full: the row's mass). */
static void merge_pick(const rt_sample_part *parts, int n_parts, float mx, double full, bool nucleus,
                       const rt_sampling *p, rt_rng *rng, rt_sample_out *out)
{
    cand c[RT_SAMPLE_PART_MAX];
    double sum;
    const int n = merge_candidates(parts, n_parts, &sum, c);
    int token = c[0].id;
    float logit = c[0].logit;
    if (!greedy(p)) {
        token = pick(c, nucleus || p->top_k >= n ? n : p->top_k, mx, full, p, rt_rng_uniform(rng));
        for (int i = 0; i < n; i++)
            if (c[i].id == token)
                logit = c[i].logit;
    }
    fill_out(out, &logit, token, mx + (float)log(sum), c, p->n_logprobs < n ? p->n_logprobs : n);
}

void rt_sample_merge_nucleus(const rt_sample_part *parts, int n_parts, float mx, double full, const rt_sampling *p,
                             rt_rng *rng, rt_sample_out *out)
{
    merge_pick(parts, n_parts, mx, full, true, p, rng, out);
}

void rt_sample_merge_drawn(const rt_sample_part *parts, int n_parts, float mx, const rt_sampling *p, int32_t token,
                           float logit, rt_sample_out *out)
{
    cand c[RT_SAMPLE_PART_MAX];
    double sum;
    const int n = merge_candidates(parts, n_parts, &sum, c);
    fill_out(out, &logit, token, mx + (float)log(sum), c, p->n_logprobs < n ? p->n_logprobs : n);
}

void rt_sample_merge(const rt_sample_part *parts, int n_parts, float mx, const rt_sampling *p, rt_rng *rng,
                     rt_sample_out *out)
{
    merge_pick(parts, n_parts, mx, 0.0, false, p, rng, out);
}
