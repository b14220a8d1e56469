/* Sampling from vocab-parallel logits (tp > 1): each rank of the last stage's tp group holds its
 * slice of every logit row (its vocabulary range, as the plan cut them). The slices exchange a few
 * numbers a row instead of their logits (rt_sample_part_need): each row's max; each slice's sum of
 * exponentials and best candidates (greedy, top-k up to RT_SAMPLE_PART_MAX with or without top-p,
 * top-n logprobs); for temperature alone each slice's mass, the slice the draw lands in finding
 * the token; for top-p alone the masses and RT_SAMPLE_PART_MAX candidates a slice, enough when the
 * nucleus closes within them. A step with a row they cannot serve (a larger top-k, a wider
 * nucleus) gathers whole rows. Either way tp rank 0 gets the samples rt_sample gives on whole rows. */
#ifndef DINFER_RUNTIME_VOCAB_SAMPLE_H
#define DINFER_RUNTIME_VOCAB_SAMPLE_H

#include <stdint.h>

#include "comm/comm.h"
#include "runtime/forward.h"

typedef struct rt_vocab_sampler rt_vocab_sampler;

/* Bytes a slice sends for one row whose sampling needs `need` candidates (rt_sample_part_need):
 * its max (to every rank), then, from a rank other than 0, its part. */
size_t rt_vocab_row_bytes(int need, int tp_rank);

/* Collective over tp (it learns every rank's range [begin, end) of the vocab_size ids). */
int rt_vocab_sampler_create(rt_vocab_sampler **out, comm_group *tp, int vocab_size, int32_t begin, int32_t end,
                            int max_logits, base_err *err);
void rt_vocab_sampler_destroy(rt_vocab_sampler *vs);

/* Collective over tp: slice (nl, end - begin) is this rank's logits of the step's rows (host
 * memory, fp32). On tp rank 0, out[i] is row i's sample as rows[i] says (its rng advanced); rows
 * are read on every rank (the choice of exchange is theirs to agree on). */
int rt_vocab_sample(rt_vocab_sampler *vs, const float *slice, int nl, rt_step_sampling *rows, rt_sample_out *out,
                    base_err *err);

#endif
