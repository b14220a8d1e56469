/* The CUDA backend's sampler (backend.h's sample) against the host's rt_sample_with on the same
 * logits and uniform draws: greedy rows, seeded draws under temperature, top-k and top-p (each
 * token's count within the host's over thousands of draws), logprobs, and rows of a batch that
 * differ. Without a GPU the test skips (exit 77). Moved out of test_backend_ops.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/backend.h"
#include "runtime/cuda/cuda_device.h"
#include "runtime/dtype.h"
#include "runtime/sampler.h"
#include "tests/tools/lse.h"

static rt_backend *gpu; /* F32 activations: the sampler reads fp32 logits whatever the type */

/* Samples n rows of logits (n, V) on the GPU with rows[i]; out gets the samples. */
static void gpu_sample(const float *logits, int n, int V, const rt_sample_row *rows, rt_sample_out *out)
{
    rt_backend *be = gpu;
    float *dl = be->ops->alloc(be, (size_t)n * V * sizeof *dl);
    rt_sample_row *dr = be->ops->alloc(be, (size_t)n * sizeof *dr);
    rt_sample_out *dout = be->ops->alloc(be, (size_t)n * sizeof *dout);
    assert_true(dl && dr && dout);
    be->ops->upload(be, dl, logits, (size_t)n * V * sizeof *dl);
    be->ops->upload(be, dr, rows, (size_t)n * sizeof *dr);
    be->ops->sample(be, dout, dl, n, V, dr);
    be->ops->download(be, out, dout, (size_t)n * sizeof *out);
    base_err err;
    if (be->ops->check(be, &err))
        fail_msg("sample: %s", err.msg);
    be->ops->free(be, dl), be->ops->free(be, dr), be->ops->free(be, dout);
}

/* logits (V) of one row: scale * uniform(-1, 1), rounded to bf16 when ties are wanted (a bf16 LM
 * head gives many equal logits). */
static float *sample_logits(int V, float scale, bool ties, uint64_t seed)
{
    rt_rng r;
    rt_rng_seed(&r, seed);
    float *l = malloc((size_t)V * sizeof *l);
    for (int i = 0; i < V; i++) {
        l[i] = scale * (rt_rng_uniform(&r) * 2.0f - 1.0f);
        if (ties)
            l[i] = rt_bf16_to_f32(rt_f32_to_bf16(l[i]));
    }
    return l;
}

/* N draws of one row at the stratified uniforms (i + 0.5) / N on both samplers: each token's count
 * is N times its probability within one, on either side, so the counts agree within 2 when the two
 * keep the same tokens with the same probabilities; and since both walk the kept tokens in the
 * same order, the same u gives the same token but at a rounding boundary (at most 1 in 1,000).
 * Prints the chi-square of the GPU's counts against the CPU's. All N rows go in one launch. */
static void check_sample_distribution(const float *l, int V, rt_sampling p, int N)
{
    float *rows_l = malloc((size_t)N * V * sizeof *rows_l);
    rt_sample_row *rows = malloc((size_t)N * sizeof *rows);
    rt_sample_out *got = malloc((size_t)N * sizeof *got);
    int *n_cpu = calloc((size_t)V, sizeof *n_cpu), *n_gpu = calloc((size_t)V, sizeof *n_gpu);
    int *tok_cpu = malloc((size_t)N * sizeof *tok_cpu), differ = 0;
    void *scratch = malloc((size_t)V * 8);
    const double lse = row_lse(l, V);
    for (int i = 0; i < N; i++) {
        memcpy(rows_l + (size_t)i * V, l, (size_t)V * sizeof *l);
        rows[i] = (rt_sample_row){p.temperature, p.top_p, ((float)i + 0.5f) / (float)N, p.top_k, p.n_logprobs};
        rt_sample_out ref;
        rt_sample_with(l, V, &p, rows[i].u, scratch, &ref);
        n_cpu[ref.token]++;
        tok_cpu[i] = ref.token;
    }
    gpu_sample(rows_l, N, V, rows, got);
    for (int i = 0; i < N; i++) {
        assert_true(got[i].token >= 0 && got[i].token < V);
        n_gpu[got[i].token]++;
        differ += got[i].token != tok_cpu[i];
        if (fabs(got[i].logprob - (l[got[i].token] - lse)) > 1e-4)
            fail_msg("row %d: logprob %g of token %d, expected %g", i, got[i].logprob, got[i].token,
                     l[got[i].token] - lse);
    }
    double chi2 = 0;
    int df = 0;
    for (int t = 0; t < V; t++) {
        if (abs(n_gpu[t] - n_cpu[t]) > 2)
            fail_msg("T %g top_k %d top_p %g (vocab %d): token %d drawn %d times on the GPU, %d on the CPU",
                     p.temperature, p.top_k, p.top_p, V, t, n_gpu[t], n_cpu[t]);
        if (n_cpu[t] > 0)
            chi2 += (double)(n_gpu[t] - n_cpu[t]) * (n_gpu[t] - n_cpu[t]) / n_cpu[t], df++;
    }
    printf("  sample T %-4g top_k %-3d top_p %-4g vocab %-6d: %d tokens drawn, chi-square %.2f, %d of %d draws differ\n",
           p.temperature, p.top_k, p.top_p, V, df, chi2, differ, N);
    if (differ * 1000 > N)
        fail_msg("%d of %d draws differ from the host sampler's", differ, N);
    free(tok_cpu), free(rows_l), free(rows), free(got), free(n_cpu), free(n_gpu), free(scratch);
}

static void test_sample_distributions(void **state)
{
    (void)state;
    const rt_sampling ps[] = {
        {.temperature = 1.0f, .top_p = 1.0f},
        {.temperature = 0.7f, .top_k = 10, .top_p = 1.0f},
        {.temperature = 1.3f, .top_p = 0.8f},
        {.temperature = 1.0f, .top_k = 20, .top_p = 0.5f},
        {.temperature = 2.0f, .top_k = 1, .top_p = 1.0f},
        {.temperature = 0.5f, .top_k = 200, .top_p = 0.95f}, /* top_k above the vocabulary */
    };
    for (size_t k = 0; k < sizeof ps / sizeof *ps; k++) {
        float *l = sample_logits(64, 3.0f, k % 2 == 1, 11 + k);
        check_sample_distribution(l, 64, ps[k], 8192);
        free(l);
    }
    /* a Llama 3 vocabulary of bf16 logits: ties everywhere, filters cutting through them */
    const rt_sampling big[] = {
        {.temperature = 0.8f, .top_k = 50, .top_p = 0.9f},
        {.temperature = 1.0f, .top_p = 0.05f},
        {.temperature = 0.6f, .top_k = 40, .top_p = 1.0f},
    };
    for (size_t k = 0; k < sizeof big / sizeof *big; k++) {
        float *l = sample_logits(128256, 8.0f, true, 5 + k);
        check_sample_distribution(l, 128256, big[k], 1024);
        free(l);
    }
}

/* Greedy rows and the top-n logprobs are exactly the host sampler's (ties to the lowest id), and a
 * row's sample does not depend on the rows beside it: with a vocabulary a multiple of 4 (Llama 3's)
 * and an odd one (GPT-2's, the rows then at every alignment). */
static void sample_greedy_and_batch(int V)
{
    enum { N = 6 };
    float *l = malloc((size_t)N * V * sizeof *l);
    rt_sample_row rows[N];
    for (int i = 0; i < N; i++) {
        float *r = sample_logits(V, 4.0f, i % 2 == 0, 100 + (uint64_t)i);
        if (i == 2) /* masked tokens: the first ones each thread meets are -inf */
            for (int t = 0; t < 5000; t++)
                r[t] = -INFINITY;
        memcpy(l + (size_t)i * V, r, (size_t)V * sizeof *r);
        free(r);
        rows[i] = (rt_sample_row){i < 3 ? 0.0f : 0.9f, i == 4 ? 0.7f : 1.0f, 0.37f * (float)i / N, i == 5 ? 30 : 0,
                                  i == 1 ? 0 : RT_MAX_TOP_LOGPROBS};
    }
    rt_sample_out all[N], one;
    gpu_sample(l, N, V, rows, all);
    void *scratch = malloc((size_t)V * 8);
    for (int i = 0; i < N; i++) {
        const float *r = l + (size_t)i * V;
        gpu_sample(r, 1, V, &rows[i], &one);
        /* alone or in a batch: the same */
        assert_int_equal(one.token, all[i].token);
        assert_true(one.logprob == all[i].logprob);
        assert_int_equal(one.n_top, all[i].n_top);
        assert_memory_equal(one.top_ids, all[i].top_ids, (size_t)one.n_top * sizeof *one.top_ids);
        assert_memory_equal(one.top_logprobs, all[i].top_logprobs, (size_t)one.n_top * sizeof *one.top_logprobs);
        rt_sampling p = {rows[i].temperature, rows[i].top_k, rows[i].top_p, 0, rows[i].n_logprobs};
        rt_sample_out ref;
        rt_sample_with(r, V, &p, rows[i].u, scratch, &ref);
        assert_int_equal(all[i].token, ref.token);
        assert_true(fabsf(all[i].logprob - (r[all[i].token] - (float)row_lse(r, V))) < 1e-4f);
        assert_int_equal(all[i].n_top, ref.n_top);
        for (int j = 0; j < ref.n_top; j++) {
            assert_int_equal(all[i].top_ids[j], ref.top_ids[j]);
            assert_true(fabsf(all[i].top_logprobs[j] - ref.top_logprobs[j]) < 1e-4f);
        }
    }
    free(l), free(scratch);
}

static void test_sample_greedy_and_batch(void **state)
{
    (void)state;
    sample_greedy_and_batch(128256);
    sample_greedy_and_batch(50257);
}

int main(void)
{
    if (rt_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device is visible\n");
        return 77;
    }
    base_err err;
    if (!(gpu = rt_cuda_backend_create(0, RT_F32, 0, &err))) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_distributions),
        cmocka_unit_test(test_sample_greedy_and_batch),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    gpu->ops->destroy(gpu);
    return rc;
}
