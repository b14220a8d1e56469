/* Token sampling from one row of logits: greedy, temperature, top-k, top-p, a per-sequence seeded
 * random stream (so a seed gives the same tokens whatever else is in the batch), the logprob of
 * the chosen token and the top-n logprobs, all from the model's unscaled distribution. */
#ifndef DINFER_RUNTIME_SAMPLER_H
#define DINFER_RUNTIME_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#define RT_MAX_TOP_LOGPROBS 20
/* A temperature below this samples greedily (vLLM's epsilon): dividing by a smaller one would
 * overflow and turn the distribution into NaN. */
#define RT_GREEDY_TEMPERATURE 1e-5f

typedef struct rt_sampling {
    float temperature; /* 0 (or below RT_GREEDY_TEMPERATURE): greedy */
    int top_k;         /* 0: no limit */
    float top_p;       /* 1: no limit; in (0, 1] */
    uint64_t seed;
    int n_logprobs;    /* top-n logprobs to report, <= RT_MAX_TOP_LOGPROBS */
} rt_sampling;

typedef struct rt_rng {
    uint64_t state;
} rt_rng;

void rt_rng_seed(rt_rng *r, uint64_t seed);
uint64_t rt_rng_next(rt_rng *r);
float rt_rng_uniform(rt_rng *r); /* [0, 1) */

typedef struct rt_sample_out {
    int token;
    float logprob; /* log softmax of the logits at token */
    int n_top;
    int top_ids[RT_MAX_TOP_LOGPROBS];
    float top_logprobs[RT_MAX_TOP_LOGPROBS];
} rt_sample_out;

/* Samples one token from logits (vocab). scratch holds 2 * vocab floats' worth of space
 * (vocab floats + vocab ints). Greedy ties go to the lowest id. Top-k and top-p always keep at
 * least the most likely token, whatever the temperature (as vLLM does). Draws one uniform from
 * rng when the temperature is not greedy, none otherwise. */
void rt_sample(const float *logits, int vocab, const rt_sampling *p, rt_rng *rng, void *scratch,
               rt_sample_out *out);
/* The same with the uniform draw u in [0, 1) given (ignored when greedy): the candidates, best
 * first, are walked until their cumulative probability passes u. */
void rt_sample_with(const float *logits, int vocab, const rt_sampling *p, float u, void *scratch,
                    rt_sample_out *out);

/* ---- vocab-parallel logits (tp > 1): each rank holds a slice of every row ----
 * Instead of gathering whole rows, each slice sends per row the sum of exp(logit - the row's
 * max) over it and its best few candidates; the merge gives exactly what rt_sample gives on the
 * whole row (greedy, top-k up to RT_SAMPLE_PART_MAX with or without top-p, top-n logprobs). */
#define RT_SAMPLE_PART_MAX 64 /* candidates a slice sends for one row */
#define RT_SAMPLE_MAX_PARTS 64 /* slices (the tp degree) a merge takes */

typedef struct rt_sample_cand {
    float logit;
    int32_t id; /* in the whole vocabulary */
} rt_sample_cand;

typedef struct rt_sample_part {
    double sum; /* of expf(logit - the row's max over every slice) over this slice, in id order */
    int32_t n;  /* candidates, best first (highest logit, then lowest id) */
    int32_t pad;
    rt_sample_cand c[RT_SAMPLE_PART_MAX];
} rt_sample_part;

/* Candidates a row sampled with p needs from each slice: 0 when the draw needs the whole row (a
 * top-k over RT_SAMPLE_PART_MAX: the slices then send whole rows). */
int rt_sample_part_need(const rt_sampling *p, int vocab);
/* Temperature with neither top-k nor top-p: rt_sample's draw walks the whole row in id order, so
 * the slices send their masses (rt_sample_slice_mass: sum of exp((logit - the row's max) /
 * temperature)) and the slice the draw lands in finds the token (rt_sample_mass_draw); the
 * candidates then serve the logprobs only. The token is rt_sample's but when the draw falls
 * within a double's rounding of the boundary between two tokens. */
bool rt_sample_by_mass(const rt_sampling *p, int vocab);
double rt_sample_slice_mass(const float *logits, int n, float mx, float temperature);
/* Slice `part` of n_parts (ids from id0, every slice's mass in masses, u the row's uniform draw):
 * the id the draw lands on and its *logit, or -1 when it lands in another slice. */
int32_t rt_sample_mass_draw(const float *logits, int n, int32_t id0, float mx, float temperature,
                            const double *masses, int n_parts, int part, float u, float *logit);
/* Top-p with no top-k: each slice sends its RT_SAMPLE_PART_MAX best and its mass (the masses' sum
 * is the whole distribution's, rt_sample's `full`); rt_sample_nucleus_ready says, before any draw,
 * whether the nucleus closes within the merged candidates ahead of anything a slice did not send
 * (else the step gathers whole rows), and rt_sample_merge_nucleus then draws as rt_sample would. */
bool rt_sample_by_nucleus(const rt_sampling *p, int vocab);
bool rt_sample_nucleus_ready(const rt_sample_part *parts, int n_parts, float mx, double full, const rt_sampling *p);
void rt_sample_merge_nucleus(const rt_sample_part *parts, int n_parts, float mx, double full, const rt_sampling *p,
                             rt_rng *rng, rt_sample_out *out);
/* As rt_sample_merge for a row whose token (and its logit) the draw by mass chose. */
void rt_sample_merge_drawn(const rt_sample_part *parts, int n_parts, float mx, const rt_sampling *p, int32_t token,
                           float logit, rt_sample_out *out);
/* The largest of a slice's n logits (the row's max is the largest over the slices). */
float rt_sample_slice_max(const float *logits, int n);
/* A slice's part of a row: its n logits start at vocabulary id id0; mx is the row's max. */
void rt_sample_part_make(const float *logits, int n, int32_t id0, float mx, int need, rt_sample_part *out);
/* The sample of a row from every slice's part (in vocabulary order), as rt_sample would give it
 * on the whole row: draws one uniform from rng when the temperature is not greedy. */
void rt_sample_merge(const rt_sample_part *parts, int n_parts, float mx, const rt_sampling *p, rt_rng *rng,
                     rt_sample_out *out);

/* One logit row's sampling as a device sampler takes it: the parameters and the row's uniform draw
 * (taken on the host from the row's rng, exactly as rt_sample would take it). */
typedef struct rt_sample_row {
    float temperature;
    float top_p;
    float u;
    int32_t top_k;
    int32_t n_logprobs;
} rt_sample_row;

/* The row of p for a step: draws u from rng when the temperature is not greedy. */
rt_sample_row rt_sample_row_draw(const rt_sampling *p, rt_rng *rng);

/* Checks sampling parameters; returns NULL when valid, else what is wrong. */
const char *rt_sampling_check(const rt_sampling *p);

#endif
