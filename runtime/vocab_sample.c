#include "runtime/vocab_sample.h"

#include <omp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* A slice's part of one row on the wire: sum (8 bytes), n (4), 4 bytes of padding, then the
 * step's most candidates (8 bytes each) of which the first n count. */
#define PART_HEAD 16
#define PART_BYTES(need) ((size_t)PART_HEAD + (size_t)(need) * sizeof(rt_sample_cand))

size_t rt_vocab_row_bytes(int need, int tp_rank)
{
    return sizeof(float) + (tp_rank != 0 ? PART_BYTES(need) : 0);
}

struct rt_vocab_sampler {
    comm_group *tp;
    int n_ranks, rank, vocab, max_logits;
    int32_t begin, end;
    int32_t *ranges;  /* (n_ranks, 2) every rank's [begin, end) */
    size_t *counts;   /* (n_ranks) elements each rank sends */
    float *gathered;  /* (max_logits, vocab) tp rank 0: the slices as they arrive */
    float *whole;     /* (max_logits, vocab) tp rank 0: whole rows */
    float *maxes;     /* (n_ranks, max_logits) every rank's row maxima */
    float *row_max;   /* (max_logits) */
    char *mine;       /* (max_logits, PART_BYTES(RT_SAMPLE_PART_MAX)) this rank's parts */
    char *parts;      /* (n_ranks, max_logits, PART_BYTES(...)) tp rank 0: everyone's */
    rt_sample_part *merge; /* (n_ranks) one row's parts, unpacked */
    double *mass;     /* (max_logits) this slice's mass of each row drawn by mass */
    double *masses;   /* (n_ranks, max_logits) every slice's */
    rt_sample_cand *drawn; /* (max_logits) the token this slice's walk landed on, id -1 when none */
    rt_sample_cand *drawns; /* (n_ranks, max_logits) tp rank 0: every slice's */
    rt_rng *saved;    /* (max_logits) the streams of rows drawn by mass, before their draw */
    void *scratch;    /* rt_sample's, 8 * vocab bytes per OpenMP thread */
};

int rt_vocab_sampler_create(rt_vocab_sampler **out, comm_group *tp, int vocab, int32_t begin, int32_t end,
                            int max_logits, base_err *err)
{
    const int n = comm_group_size(tp);
    const size_t L = (size_t)(max_logits > 0 ? max_logits : 1), V = (size_t)vocab;
    rt_vocab_sampler *vs = calloc(1, sizeof *vs);
    const bool root = comm_group_rank(tp) == 0;
    if (vs) {
        *vs = (rt_vocab_sampler){.tp = tp, .n_ranks = n, .rank = comm_group_rank(tp), .vocab = vocab,
                                 .max_logits = (int)L, .begin = begin, .end = end};
        vs->ranges = malloc((size_t)n * 2 * sizeof *vs->ranges);
        vs->counts = malloc((size_t)n * sizeof *vs->counts);
        vs->maxes = malloc((size_t)n * L * sizeof *vs->maxes);
        vs->row_max = malloc(L * sizeof *vs->row_max);
        vs->mine = malloc(L * PART_BYTES(RT_SAMPLE_PART_MAX));
        vs->merge = malloc((size_t)n * sizeof *vs->merge);
        vs->mass = malloc(L * sizeof *vs->mass);
        vs->masses = malloc((size_t)n * L * sizeof *vs->masses);
        vs->drawn = malloc(L * sizeof *vs->drawn);
        vs->saved = malloc(L * sizeof *vs->saved);
        if (root) {
            vs->drawns = malloc((size_t)n * L * sizeof *vs->drawns);
            vs->gathered = malloc(L * V * sizeof(float));
            vs->whole = malloc(L * V * sizeof(float));
            vs->parts = malloc((size_t)n * L * PART_BYTES(RT_SAMPLE_PART_MAX));
            vs->scratch = malloc(V * 8 * (size_t)omp_get_max_threads());
        }
    }
    const int short_of_memory = !vs || !vs->ranges || !vs->counts || !vs->maxes || !vs->row_max || !vs->mine ||
                                !vs->merge || !vs->mass || !vs->masses || !vs->drawn || !vs->saved ||
                                n > RT_SAMPLE_MAX_PARTS ||
                                (root && (!vs->gathered || !vs->whole || !vs->parts || !vs->scratch || !vs->drawns));
    int any = 0;
    int32_t mine[2] = {begin, end};
    if (comm_any(tp, short_of_memory, &any, err) || any ||
        comm_allgather(tp, mine, vs->ranges, 2, COMM_I32, err)) {
        rt_vocab_sampler_destroy(vs);
        if (any && n > RT_SAMPLE_MAX_PARTS)
            return base_errf(err, "vocab-parallel sampling takes at most %d tp ranks, not %d", RT_SAMPLE_MAX_PARTS, n);
        return any ? base_errf(err, "out of host memory for the vocab-parallel sampler") : -1;
    }
    *out = vs;
    return 0;
}

void rt_vocab_sampler_destroy(rt_vocab_sampler *vs)
{
    if (!vs)
        return;
    free(vs->ranges), free(vs->counts), free(vs->gathered), free(vs->whole), free(vs->maxes);
    free(vs->row_max), free(vs->mine), free(vs->parts), free(vs->merge), free(vs->scratch);
    free(vs->mass), free(vs->masses), free(vs->drawn), free(vs->drawns), free(vs->saved);
    free(vs);
}

/* Whole rows gathered on tp rank 0, laid out by each rank's range, and sampled there. */
static int sample_whole(rt_vocab_sampler *vs, const float *slice, int nl, rt_step_sampling *rows, rt_sample_out *out,
                        base_err *err)
{
    const size_t V = (size_t)vs->vocab, n = (size_t)(vs->end - vs->begin);
    for (int r = 0; r < vs->n_ranks; r++)
        vs->counts[r] = (size_t)nl * (size_t)(vs->ranges[2 * r + 1] - vs->ranges[2 * r]);
    if (comm_gatherv(vs->tp, slice, (size_t)nl * n, vs->gathered, vs->counts, 0, COMM_F32, err))
        return -1;
    if (vs->rank != 0)
        return 0;
    const float *blk = vs->gathered;
    for (int r = 0; r < vs->n_ranks; r++) {
        const size_t v0 = (size_t)vs->ranges[2 * r], w = vs->counts[r] / (size_t)nl;
        for (int i = 0; i < nl; i++)
            memcpy(vs->whole + (size_t)i * V + v0, blk + (size_t)i * w, w * sizeof(float));
        blk += vs->counts[r];
    }
#pragma omp parallel for schedule(dynamic, 1) if (nl > 1)
    for (int i = 0; i < nl; i++)
        rt_sample(vs->whole + (size_t)i * V, vs->vocab, &rows[i].params, &rows[i].rng,
                  (char *)vs->scratch + (size_t)omp_get_thread_num() * 8 * V, &out[i]);
    return 0;
}

/* Rows drawn by mass or by nucleus: every slice's mass (at the row's temperature) to every rank. */
static int exchange_masses(rt_vocab_sampler *vs, const float *slice, int nl, const rt_step_sampling *rows,
                           base_err *err)
{
    const int n = vs->end - vs->begin;
#pragma omp parallel for schedule(static) if (nl > 1)
    for (int i = 0; i < nl; i++)
        vs->mass[i] = rt_sample_by_mass(&rows[i].params, vs->vocab) || rt_sample_by_nucleus(&rows[i].params, vs->vocab)
                          ? rt_sample_slice_mass(slice + (size_t)i * (size_t)n, n, vs->row_max[i],
                                                 rows[i].params.temperature)
                          : 0.0;
    return comm_allgather(vs->tp, vs->mass, vs->masses, (size_t)nl * sizeof *vs->mass, COMM_U8, err);
}

/* Rows drawn by mass: each rank walks its slice for the rows whose draw may land there (each rank
 * draws the row's uniform from its copy of the row's random stream: the same on every rank, and
 * rank 0's advanced once, as rt_sample would). */
static void draw_by_mass(rt_vocab_sampler *vs, const float *slice, int nl, rt_step_sampling *rows)
{
    const int n = vs->end - vs->begin;
#pragma omp parallel for schedule(static) if (nl > 1)
    for (int i = 0; i < nl; i++) {
        vs->drawn[i] = (rt_sample_cand){0.0f, -1};
        if (!rt_sample_by_mass(&rows[i].params, vs->vocab))
            continue;
        double masses[RT_SAMPLE_MAX_PARTS];
        for (int r = 0; r < vs->n_ranks; r++)
            masses[r] = vs->masses[(size_t)r * (size_t)nl + (size_t)i];
        vs->saved[i] = rows[i].rng;
        const float u = rt_rng_uniform(&rows[i].rng);
        float logit = 0.0f;
        const int32_t id = rt_sample_mass_draw(slice + (size_t)i * (size_t)n, n, vs->begin, vs->row_max[i],
                                               rows[i].params.temperature, masses, vs->n_ranks, vs->rank, u, &logit);
        vs->drawn[i] = (rt_sample_cand){logit, id};
    }
}

/* tp rank 0: row i's parts from every slice into vs->merge; the sum of the slices' masses when
 * they were exchanged (with_mass), else 0. */
static double unpack_row(rt_vocab_sampler *vs, int i, int nl, size_t pb, bool with_mass)
{
    double full = 0.0;
    for (int r = 0; r < vs->n_ranks; r++) {
        const char *at = vs->parts + ((size_t)r * (size_t)nl + (size_t)i) * pb;
        rt_sample_part *p = &vs->merge[r];
        memcpy(p, at, PART_HEAD);
        memcpy(p->c, at + PART_HEAD, (size_t)p->n * sizeof *p->c);
        full += with_mass ? vs->masses[(size_t)r * (size_t)nl + (size_t)i] : 0.0;
    }
    return full;
}

/* Whether every top-p row's nucleus is within the candidates sent (tp rank 0 decides, every rank
 * learns): when one is not, the step gathers whole rows. */
static int nuclei_ready(rt_vocab_sampler *vs, int nl, const rt_step_sampling *rows, size_t pb, bool *ready,
                        base_err *err)
{
    int32_t ok = 1;
    for (int i = 0; i < nl && vs->rank == 0 && ok; i++)
        if (rt_sample_by_nucleus(&rows[i].params, vs->vocab)) {
            const double full = unpack_row(vs, i, nl, pb, true);
            ok = rt_sample_nucleus_ready(vs->merge, vs->n_ranks, vs->row_max[i], full, &rows[i].params);
        }
    if (comm_bcast(vs->tp, &ok, 1, COMM_I32, 0, err))
        return -1;
    *ready = ok != 0;
    return 0;
}

int rt_vocab_sample(rt_vocab_sampler *vs, const float *slice, int nl, rt_step_sampling *rows, rt_sample_out *out,
                    base_err *err)
{
    if (nl <= 0)
        return 0;
    int most = 1; /* candidates the step's hungriest row needs from a slice */
    bool by_mass = false, by_nucleus = false; /* rows drawn by the slices' masses, rows of top-p alone */
    for (int i = 0; i < nl; i++) {
        const int need = rt_sample_part_need(&rows[i].params, vs->vocab);
        if (need == 0)
            return sample_whole(vs, slice, nl, rows, out, err);
        most = need > most ? need : most;
        by_mass |= rt_sample_by_mass(&rows[i].params, vs->vocab);
        by_nucleus |= rt_sample_by_nucleus(&rows[i].params, vs->vocab);
    }
    const int n = vs->end - vs->begin;
    /* every row's max over the whole vocabulary: each slice's sum is taken against it (rows on
     * the rank's threads: a row is a pass over the slice, tens of thousands of logits) */
#pragma omp parallel for schedule(static) if (nl > 1)
    for (int i = 0; i < nl; i++)
        vs->row_max[i] = rt_sample_slice_max(slice + (size_t)i * (size_t)n, n);
    if (comm_allgather(vs->tp, vs->row_max, vs->maxes, (size_t)nl, COMM_F32, err))
        return -1;
    for (int i = 0; i < nl; i++)
        for (int r = 0; r < vs->n_ranks; r++)
            vs->row_max[i] = vs->maxes[(size_t)r * (size_t)nl + (size_t)i] > vs->row_max[i]
                                 ? vs->maxes[(size_t)r * (size_t)nl + (size_t)i]
                                 : vs->row_max[i];
    if ((by_mass || by_nucleus) && exchange_masses(vs, slice, nl, rows, err))
        return -1;
    if (by_mass)
        draw_by_mass(vs, slice, nl, rows);
    const size_t pb = PART_BYTES(most);
#pragma omp parallel for schedule(static) if (nl > 1)
    for (int i = 0; i < nl; i++) {
        rt_sample_part p;
        rt_sample_part_make(slice + (size_t)i * (size_t)n, n, vs->begin, vs->row_max[i],
                            rt_sample_part_need(&rows[i].params, vs->vocab), &p);
        char *at = vs->mine + (size_t)i * pb;
        memcpy(at, &p, PART_HEAD);
        memcpy(at + PART_HEAD, p.c, (size_t)p.n * sizeof *p.c);
    }
    for (int r = 0; r < vs->n_ranks; r++)
        vs->counts[r] = (size_t)nl * pb;
    if (comm_gatherv(vs->tp, vs->mine, (size_t)nl * pb, vs->parts, vs->counts, 0, COMM_U8, err))
        return -1;
    for (int r = 0; r < vs->n_ranks && by_mass; r++)
        vs->counts[r] = (size_t)nl * sizeof *vs->drawn;
    if (by_mass && comm_gatherv(vs->tp, vs->drawn, (size_t)nl * sizeof *vs->drawn, vs->drawns, vs->counts, 0, COMM_U8,
                                err))
        return -1;
    bool ready = true;
    if (by_nucleus && nuclei_ready(vs, nl, rows, pb, &ready, err))
        return -1;
    if (!ready) { /* the draws by mass taken back: the whole rows draw again */
        for (int i = 0; i < nl; i++)
            if (rt_sample_by_mass(&rows[i].params, vs->vocab))
                rows[i].rng = vs->saved[i];
        return sample_whole(vs, slice, nl, rows, out, err);
    }
    if (vs->rank != 0)
        return 0;
    for (int i = 0; i < nl; i++) { /* merges are small: one thread */
        const rt_sampling *p = &rows[i].params;
        const double full = unpack_row(vs, i, nl, pb, by_mass || by_nucleus);
        if (rt_sample_by_nucleus(p, vs->vocab)) {
            rt_sample_merge_nucleus(vs->merge, vs->n_ranks, vs->row_max[i], full, p, &rows[i].rng, &out[i]);
        } else if (!rt_sample_by_mass(p, vs->vocab)) {
            rt_sample_merge(vs->merge, vs->n_ranks, vs->row_max[i], p, &rows[i].rng, &out[i]);
        } else {
            const rt_sample_cand *d = NULL; /* the first slice, in id order, whose walk landed */
            for (int r = 0; r < vs->n_ranks && !d; r++)
                if (vs->drawns[(size_t)r * (size_t)nl + (size_t)i].id >= 0)
                    d = &vs->drawns[(size_t)r * (size_t)nl + (size_t)i];
            if (!d)
                return base_errf(err, "vocab-parallel sampling: no slice holds row %d's draw", i);
            rt_sample_merge_drawn(vs->merge, vs->n_ranks, vs->row_max[i], p, d->id, d->logit, &out[i]);
        }
    }
    return 0;
}
