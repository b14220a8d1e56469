/* Offline generation over a real (small, random) model: batching, chunked prefill and paging do
 * not change any sequence's output; sampling is seeded per sequence; stop and request checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/generate.h"
#include "runtime/kv_cache.h"
#include "tests/unit/tiny_model.h"

typedef struct fixture {
    char *dir;
    rt_backend *be;
    rt_model m;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    base_err err;
    rt_config c = tiny_config();
    f->dir = tiny_tmpdir();
    if (!f->dir || tiny_model_write(f->dir, &c, RT_F32, 0, &err))
        return -1;
    f->be = rt_cpu_backend_create(0);
    rt_shard s;
    rt_shard_whole(&s, &c);
    if (rt_model_load(&f->m, &c, &s, f->dir, f->be, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rt_model_free(&f->m);
    f->be->ops->destroy(f->be);
    tiny_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static const int32_t P0[] = {5}, P1[] = {9, 3, 17, 22, 40, 41, 8}, P2[] = {
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30};

static void make_reqs(rt_gen_request *r, const rt_sampling *s, int max_tokens)
{
    const int32_t *ps[3] = {P0, P1, P2};
    int lens[3] = {1, 7, 30};
    for (int i = 0; i < 3; i++)
        r[i] = (rt_gen_request){ps[i], lens[i], max_tokens, *s, true};
}

static void run(fixture *f, const rt_gen_request *r, int n, int budget, int bs, rt_gen_result *out)
{
    rt_gen_options o = {budget, bs};
    rt_gen_stats st;
    base_err err;
    if (rt_generate_local(&f->m, r, n, &o, out, &st, &err))
        fail_msg("generate: %s", err.msg);
}

static void assert_same(const rt_gen_result *a, const rt_gen_result *b)
{
    assert_int_equal(a->n_tokens, b->n_tokens);
    assert_memory_equal(a->tokens, b->tokens, (size_t)a->n_tokens * sizeof *a->tokens);
    for (int i = 0; i < a->n_tokens; i++)
        assert_true(fabsf(a->logprobs[i] - b->logprobs[i]) < 1e-5f);
    assert_string_equal(a->finish_reason, b->finish_reason);
}

/* Every request alone with generous limits, then all together in one batch, then all together
 * with a 5-token step budget and 3-token KV blocks (chunked prefill, many blocks). */
static void check_batch_invariance(fixture *f, const rt_sampling *s)
{
    rt_gen_request r[3];
    make_reqs(r, s, 20);
    rt_gen_result alone[3], batch[3], chunked[3];
    for (int i = 0; i < 3; i++)
        run(f, &r[i], 1, 256, 16, &alone[i]);
    run(f, r, 3, 256, 16, batch);
    run(f, r, 3, 5, 3, chunked);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(alone[i].n_tokens, 20);
        assert_same(&alone[i], &batch[i]);
        assert_same(&alone[i], &chunked[i]);
        rt_gen_result_free(&alone[i]);
        rt_gen_result_free(&batch[i]);
        rt_gen_result_free(&chunked[i]);
    }
}

static void test_greedy_batch_invariance(void **state)
{
    rt_sampling greedy = {.top_p = 1.0f};
    check_batch_invariance(*state, &greedy);
}

static void test_seeded_sampling(void **state)
{
    fixture *f = *state;
    rt_sampling s = {.temperature = 0.9f, .top_k = 20, .top_p = 0.95f, .seed = 1234};
    check_batch_invariance(f, &s);
    /* a different seed gives a different sequence (30 tokens from a 64-token vocabulary) */
    rt_gen_request r[3];
    make_reqs(r, &s, 30);
    rt_gen_result a, b;
    run(f, &r[2], 1, 64, 16, &a);
    r[2].sampling.seed = 99;
    run(f, &r[2], 1, 64, 16, &b);
    assert_memory_not_equal(a.tokens, b.tokens, 30 * sizeof *a.tokens);
    rt_gen_result_free(&a);
    rt_gen_result_free(&b);
}

static void test_stop_at_eos(void **state)
{
    fixture *f = *state;
    rt_sampling greedy = {.top_p = 1.0f};
    rt_gen_request r[3];
    make_reqs(r, &greedy, 12);
    rt_gen_result full, stopped;
    run(f, &r[1], 1, 64, 16, &full);
    /* make the 4th generated token the end-of-sequence id: generation stops there, keeping it */
    int eos = full.tokens[3], first = 0;
    while (full.tokens[first] != eos)
        first++;
    rt_config saved = f->m.cfg;
    f->m.cfg.n_eos = 1;
    f->m.cfg.eos_ids[0] = eos;
    r[1].ignore_eos = false;
    run(f, &r[1], 1, 64, 16, &stopped);
    f->m.cfg = saved;
    assert_int_equal(stopped.n_tokens, first + 1);
    assert_memory_equal(stopped.tokens, full.tokens, (size_t)(first + 1) * sizeof *full.tokens);
    assert_string_equal(stopped.finish_reason, "stop");
    assert_string_equal(full.finish_reason, "length");
    rt_gen_result_free(&full);
    rt_gen_result_free(&stopped);
}

static void test_request_errors(void **state)
{
    fixture *f = *state;
    rt_gen_options o = {64, 16};
    rt_gen_stats st;
    rt_gen_result res;
    base_err err;
    int32_t bad[] = {3, 64};
    struct { rt_gen_request r; const char *msg; } cases[] = {
        {{P1, 0, 4, {.top_p = 1}, false}, "empty"},
        {{bad, 2, 4, {.top_p = 1}, false}, "token 64 is outside the vocabulary"},
        {{P1, 7, 0, {.top_p = 1}, false}, "max_tokens"},
        {{P1, 7, 122, {.top_p = 1}, false}, "exceeds the context length 128"},
        {{P1, 7, 4, {.temperature = -1, .top_p = 1}, false}, "temperature"},
        {{P1, 7, 4, {.temperature = NAN, .top_p = 1}, false}, "temperature"},
        {{P1, 7, 4, {.top_p = 0}, false}, "top_p"},
        {{P1, 7, 4, {.top_p = 1.5f}, false}, "top_p"},
        {{P1, 7, 4, {.top_k = -1, .top_p = 1}, false}, "top_k"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        assert_int_equal(rt_generate_local(&f->m, &cases[i].r, 1, &o, &res, &st, &err), -1);
        if (!strstr(err.msg, cases[i].msg))
            fail_msg("case %zu: \"%s\" does not mention \"%s\"", i, err.msg, cases[i].msg);
    }
}

static void test_sharded_and_bf16_folders(void **state)
{
    fixture *f = *state;
    rt_config c = tiny_config();
    char *dir = tiny_tmpdir();
    base_err err;
    /* the same weights split over files of 20 KB load to the same model */
    assert_int_equal(tiny_model_write(dir, &c, RT_F32, 20000, &err), 0);
    rt_model m2;
    rt_shard s;
    rt_shard_whole(&s, &c);
    assert_int_equal(rt_model_load(&m2, &c, &s, dir, f->be, &err), 0);
    assert_int_equal(m2.bytes_loaded, f->m.bytes_loaded);
    rt_sampling greedy = {.top_p = 1.0f};
    rt_gen_request r[3];
    make_reqs(r, &greedy, 10);
    rt_gen_result a, b;
    run(f, &r[1], 1, 64, 16, &a);
    rt_model keep = f->m;
    f->m = m2;
    run(f, &r[1], 1, 64, 16, &b);
    f->m = keep;
    assert_same(&a, &b);
    rt_gen_result_free(&a);
    rt_gen_result_free(&b);
    rt_model_free(&m2);
    tiny_rmtree(dir);
    /* BF16 weights load at half the bytes and run */
    assert_int_equal(tiny_model_write(dir, &c, RT_BF16, 0, &err), 0);
    assert_int_equal(rt_model_load(&m2, &c, &s, dir, f->be, &err), 0);
    assert_int_equal(m2.bytes_loaded * 2, f->m.bytes_loaded);
    rt_model_free(&m2);
    tiny_rmtree(dir);
    free(dir);
}

static void test_kv_blocks(void **state)
{
    (void)state;
    rt_kv_blocks a;
    base_err err;
    int ids[8], more[8];
    assert_int_equal(rt_kv_blocks_init(&a, 8, &err), 0);
    assert_int_equal(rt_kv_blocks_alloc(&a, 5, ids), 0);
    assert_int_equal(a.n_free, 3);
    assert_int_equal(rt_kv_blocks_alloc(&a, 4, more), -1); /* all or nothing */
    assert_int_equal(a.n_free, 3);
    assert_int_equal(rt_kv_blocks_alloc(&a, 3, more), 0);
    /* every id handed out exactly once */
    int seen[8] = {0};
    for (int i = 0; i < 5; i++)
        seen[ids[i]]++;
    for (int i = 0; i < 3; i++)
        seen[more[i]]++;
    for (int i = 0; i < 8; i++)
        assert_int_equal(seen[i], 1);
    rt_kv_blocks_free(&a, 5, ids);
    rt_kv_blocks_free(&a, 3, more);
    assert_int_equal(a.n_free, 8);
    assert_int_equal(rt_kv_blocks_for(16, 16), 1);
    assert_int_equal(rt_kv_blocks_for(17, 16), 2);
    rt_kv_blocks_destroy(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_batch_invariance),
        cmocka_unit_test(test_seeded_sampling),
        cmocka_unit_test(test_stop_at_eos),
        cmocka_unit_test(test_request_errors),
        cmocka_unit_test(test_sharded_and_bf16_folders),
        cmocka_unit_test(test_kv_blocks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
