/* Sampling: greedy, logprobs, top-k / top-p filters, temperature, and the seeded random stream. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "runtime/sampler.h"

#define V 6
static const float logits[V] = {1.0f, 3.0f, 0.5f, 3.0f, -2.0f, 2.0f};
static char scratch[V * 8];

static double lse(void)
{
    double s = 0;
    for (int i = 0; i < V; i++)
        s += exp(logits[i]);
    return log(s);
}

static void test_greedy_and_logprobs(void **state)
{
    (void)state;
    rt_sampling p = {.top_p = 1.0f, .n_logprobs = 3};
    rt_rng r;
    rt_rng_seed(&r, 1);
    rt_sample_out o;
    rt_sample(logits, V, &p, &r, scratch, &o);
    assert_int_equal(o.token, 1); /* the first of the tied maxima */
    assert_true(fabs(o.logprob - (3.0 - lse())) < 1e-6);
    assert_int_equal(o.n_top, 3);
    assert_int_equal(o.top_ids[0], 1);
    assert_int_equal(o.top_ids[1], 3);
    assert_int_equal(o.top_ids[2], 5);
    assert_true(fabs(o.top_logprobs[2] - (2.0 - lse())) < 1e-6);
}

/* Empirical frequencies of 60000 draws against the exact filtered distribution. */
static void check_distribution(const rt_sampling *p, const double *want)
{
    int counts[V] = {0};
    rt_rng r;
    rt_rng_seed(&r, p->seed);
    const int N = 60000;
    for (int i = 0; i < N; i++) {
        rt_sample_out o;
        rt_sample(logits, V, p, &r, scratch, &o);
        counts[o.token]++;
        /* the logprob reported is always the model's, whatever the filters */
        assert_true(fabs(o.logprob - (logits[o.token] - lse())) < 1e-5);
    }
    for (int i = 0; i < V; i++)
        if (fabs((double)counts[i] / N - want[i]) > 0.01)
            fail_msg("token %d drawn %.4f of the time, expected %.4f", i, (double)counts[i] / N, want[i]);
}

static void test_distributions(void **state)
{
    (void)state;
    double want[V], z = 0;
    /* temperature 2, no filter */
    for (int i = 0; i < V; i++)
        z += exp(logits[i] / 2);
    for (int i = 0; i < V; i++)
        want[i] = exp(logits[i] / 2) / z;
    rt_sampling p = {.temperature = 2.0f, .top_p = 1.0f, .seed = 7};
    check_distribution(&p, want);
    /* top-k 3: tokens 1, 3, 5 renormalized at temperature 1 */
    double e3 = exp(3.0), e2 = exp(2.0);
    double k3[V] = {0, e3 / (2 * e3 + e2), 0, e3 / (2 * e3 + e2), 0, e2 / (2 * e3 + e2)};
    p = (rt_sampling){.temperature = 1.0f, .top_k = 3, .top_p = 1.0f, .seed = 8};
    check_distribution(&p, k3);
    /* top-p 0.6: the two tokens at 3.0 hold about 0.66 of the mass, so only they remain */
    double p2[V] = {0, 0.5, 0, 0.5, 0, 0};
    p = (rt_sampling){.temperature = 1.0f, .top_p = 0.6f, .seed = 9};
    check_distribution(&p, p2);
}

static void test_seed_stream(void **state)
{
    (void)state;
    rt_rng a, b;
    rt_rng_seed(&a, 5);
    rt_rng_seed(&b, 5);
    for (int i = 0; i < 100; i++)
        assert_true(rt_rng_next(&a) == rt_rng_next(&b));
    rt_rng_seed(&b, 6);
    assert_true(rt_rng_next(&a) != rt_rng_next(&b));
    for (int i = 0; i < 1000; i++) {
        float u = rt_rng_uniform(&a);
        assert_true(u >= 0.0f && u < 1.0f);
    }
}

/* Filters that would keep nothing keep the most likely token; temperatures whose inverse overflows
 * are greedy. Before: top-p read c[-1] (ASan abort, or token 0), 1e-40 gave NaN and the last id. */
static void test_extremes(void **state)
{
    (void)state;
    /* a near-flat distribution over a large vocabulary: every token's share is under the cut */
    enum { N = 1000 };
    static float flat[N];
    static char big_scratch[N * 8];
    for (int i = 0; i < N; i++)
        flat[i] = (float)(i % 7) * 1e-3f;
    flat[500] = 0.01f; /* the most likely, by a hair */
    const struct { float temperature, top_p; int top_k; } cases[] = {
        {1e6f, 1e-7f, 0}, {1e30f, 1e-7f, 0}, {FLT_MAX, 1e-7f, 0}, {1e6f, 1e-7f, 5}, {1e-40f, 0.5f, 0},
        {1e-6f, 1.0f, 0}, {0.0f, 1e-7f, 3},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        rt_sampling p = {.temperature = cases[k].temperature, .top_p = cases[k].top_p, .top_k = cases[k].top_k};
        assert_null(rt_sampling_check(&p));
        for (uint64_t seed = 0; seed < 20; seed++) {
            rt_rng r;
            rt_rng_seed(&r, seed);
            rt_sample_out o;
            rt_sample(flat, N, &p, &r, big_scratch, &o);
            if (o.token != 500)
                fail_msg("case %zu (temperature %g, top_p %g, top_k %d), seed %llu: token %d, not the most likely 500",
                         k, (double)p.temperature, (double)p.top_p, p.top_k, (unsigned long long)seed, o.token);
            assert_true(isfinite(o.logprob));
        }
    }
    /* a tiny temperature is greedy on the small table too: the first of the tied maxima */
    rt_sampling p = {.temperature = 1e-40f, .top_p = 1.0f};
    rt_rng r;
    rt_rng_seed(&r, 3);
    rt_sample_out o;
    rt_sample(logits, V, &p, &r, scratch, &o);
    assert_int_equal(o.token, 1);
}

static void test_check(void **state)
{
    (void)state;
    rt_sampling ok = {.temperature = 0.7f, .top_k = 5, .top_p = 0.9f, .n_logprobs = 2};
    assert_null(rt_sampling_check(&ok));
    rt_sampling bad[] = {
        {.temperature = -0.1f, .top_p = 1}, {.temperature = NAN, .top_p = 1}, {.temperature = INFINITY, .top_p = 1},
        {.top_k = -1, .top_p = 1}, {.top_p = 0}, {.top_p = 1.01f}, {.top_p = NAN}, {.top_p = 1, .n_logprobs = 21},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_non_null(rt_sampling_check(&bad[i]));
}

/* Vocab-parallel sampling: a row cut into slices (uneven, some smaller than the candidates a
 * row needs), each reduced to its part against the row's max, merged: exactly rt_sample's token,
 * logprob and top-n on the whole row, for greedy rows, top-k with and without top-p, temperature
 * alone (drawn by the slices' masses), logprobs, ties across slices, and the same uniform draws
 * (one per non-greedy row). */
static void test_parts_merge_as_whole_rows(void **state)
{
    (void)state;
    enum { VOCAB = 1000 };
    static float row[VOCAB];
    static char big[VOCAB * 8];
    const int cuts[][5] = {{0, 500, 1000}, {0, 10, 20, 600, 1000}, {0, 333, 666, 999, 1000}};
    const int n_cuts[] = {3, 5, 5};
    const rt_sampling ps[] = {
        {.top_p = 1.0f}, {.top_p = 1.0f, .n_logprobs = 20}, {.temperature = 0.8f, .top_k = 1, .top_p = 1.0f},
        {.temperature = 0.8f, .top_k = 40, .top_p = 1.0f, .n_logprobs = 5},
        {.temperature = 1.3f, .top_k = 64, .top_p = 0.9f}, {.temperature = 0.5f, .top_k = 7, .top_p = 0.3f, .n_logprobs = 20},
        /* drawn by the slices' masses */
        {.temperature = 0.9f, .top_p = 1.0f}, {.temperature = 1.7f, .top_p = 1.0f, .n_logprobs = 5},
        {.temperature = 0.3f, .top_k = VOCAB, .top_p = 1.0f, .n_logprobs = 1},
        /* top-p alone: by the candidates when the nucleus is within them */
        {.temperature = 0.8f, .top_p = 0.9f}, {.temperature = 1.2f, .top_p = 0.5f, .n_logprobs = 3},
    };
    enum { N_PS = sizeof ps / sizeof *ps };
    int agree = 0, ready = 0, not_ready = 0;
    for (int trial = 0; trial < 40; trial++) {
        rt_rng g;
        rt_rng_seed(&g, 100 + (uint64_t)trial);
        for (int i = 0; i < VOCAB; i++) /* coarse values: many exact ties, across slices too; some peaked */
            row[i] = trial % 2 ? (float)(int)(rt_rng_uniform(&g) * 40.0f) * 0.25f
                               : (rt_rng_uniform(&g) * 8.0f - 4.0f) * (trial % 4 == 2 ? 6.0f : 1.0f);
        for (size_t k = 0; k < sizeof ps / sizeof *ps; k++) {
            const rt_sampling *p = &ps[k];
            assert_true(rt_sample_part_need(p, VOCAB) > 0);
            for (int c = 0; c < 3; c++) {
                rt_rng ra, rb;
                rt_rng_seed(&ra, 7 + (uint64_t)trial), rt_rng_seed(&rb, 7 + (uint64_t)trial);
                rt_sample_out want, got;
                rt_sample(row, VOCAB, p, &ra, big, &want);
                const int slices = n_cuts[c] - 1;
                float mx = -INFINITY;
                for (int r = 0; r < slices; r++) {
                    const float m = rt_sample_slice_max(row + cuts[c][r], cuts[c][r + 1] - cuts[c][r]);
                    mx = m > mx ? m : mx;
                }
                rt_sample_part parts[4];
                for (int r = 0; r < slices; r++)
                    rt_sample_part_make(row + cuts[c][r], cuts[c][r + 1] - cuts[c][r], cuts[c][r], mx,
                                        rt_sample_part_need(p, VOCAB), &parts[r]);
                double masses[4], full = 0.0;
                for (int r = 0; r < slices; r++)
                    full += masses[r] = rt_sample_slice_mass(row + cuts[c][r], cuts[c][r + 1] - cuts[c][r], mx,
                                                             p->temperature);
                if (rt_sample_by_nucleus(p, VOCAB)) { /* the nucleus within the candidates, or whole rows */
                    if (!rt_sample_nucleus_ready(parts, slices, mx, full, p)) {
                        not_ready++;
                        agree++;
                        continue;
                    }
                    ready++;
                    rt_sample_merge_nucleus(parts, slices, mx, full, p, &rb, &got);
                } else if (rt_sample_by_mass(p, VOCAB)) { /* as vocab_sample.c: masses, the draw, the first slice it lands in */
                    const float u = rt_rng_uniform(&rb);
                    int32_t token = -1;
                    float logit = 0.0f;
                    for (int r = 0; r < slices && token < 0; r++)
                        token = rt_sample_mass_draw(row + cuts[c][r], cuts[c][r + 1] - cuts[c][r], cuts[c][r], mx,
                                                    p->temperature, masses, slices, r, u, &logit);
                    assert_true(token >= 0);
                    rt_sample_merge_drawn(parts, slices, mx, p, token, logit, &got);
                } else {
                    rt_sample_merge(parts, slices, mx, p, &rb, &got);
                }
                assert_int_equal(got.token, want.token);
                assert_true(got.logprob == want.logprob);
                assert_int_equal(got.n_top, want.n_top);
                for (int i = 0; i < want.n_top; i++) {
                    assert_int_equal(got.top_ids[i], want.top_ids[i]);
                    assert_true(got.top_logprobs[i] == want.top_logprobs[i]);
                }
                assert_true(ra.state == rb.state); /* the same draws */
                agree++;
            }
        }
    }
    assert_int_equal(agree, 40 * N_PS * 3);
    print_message("top-p rows: %d by the candidates, %d by whole rows\n", ready, not_ready);
    assert_true(ready > 0 && not_ready > 0); /* both ways were taken */
    /* rows whose draw needs the whole distribution sorted are not reduced */
    const rt_sampling whole[] = {{.temperature = 1.0f, .top_k = 65, .top_p = 1.0f},
                                 {.temperature = 1.0f, .top_k = VOCAB - 1, .top_p = 0.5f}};
    for (size_t k = 0; k < sizeof whole / sizeof *whole; k++)
        assert_int_equal(rt_sample_part_need(&whole[k], VOCAB), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_and_logprobs),
        cmocka_unit_test(test_distributions),
        cmocka_unit_test(test_seed_stream),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_extremes),
        cmocka_unit_test(test_parts_merge_as_whole_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
