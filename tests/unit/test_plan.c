/* The partition plan over many configurations: every layer, head, FFN column and vocabulary row is
 * owned exactly once per tp group (KV heads replicated when tp exceeds them), and every impossible
 * split is refused with its reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "partition/plan.h"

static rt_config cfg(int layers, int heads, int kv, int ffn, int vocab)
{
    return (rt_config){.arch = RT_ARCH_LLAMA, .dim = heads * 8, .ffn_dim = ffn, .n_layers = layers, .n_heads = heads,
                       .n_kv_heads = kv, .head_dim = 8, .vocab_size = vocab, .max_pos = 64};
}

/* Checks the invariants of a plan. */
static void check_plan(const rt_config *c, const plan *p)
{
    assert_int_equal(p->world, p->tp * p->pp);
    int layer_sum = 0;
    for (int s = 0; s < p->pp; s++)
        layer_sum += p->stage_layers[s];
    assert_int_equal(layer_sum, c->n_layers);
    for (int s = 0; s < p->pp; s++) {
        int heads = 0, ffn_next = 0, vocab_next = 0;
        for (int t = 0; t < p->tp; t++) {
            const plan_rank *r = &p->ranks[s * p->tp + t];
            const rt_shard *sh = &r->shard;
            assert_int_equal(r->rank, s * p->tp + t);
            assert_int_equal(r->stage, s);
            assert_int_equal(r->tp_rank, t);
            /* layers: consecutive stages, contiguous */
            assert_int_equal(sh->layer_end - sh->layer_begin, p->stage_layers[s]);
            if (s > 0)
                assert_int_equal(sh->layer_begin, p->ranks[(s - 1) * p->tp].shard.layer_end);
            else
                assert_int_equal(sh->layer_begin, 0);
            /* heads tile [0, n_heads) in order */
            assert_int_equal(sh->head_begin, heads);
            heads += sh->n_heads;
            /* the KV heads this rank holds are the ones its query heads read */
            int group = c->n_heads / c->n_kv_heads;
            assert_int_equal(sh->kv_head_begin, sh->head_begin / group);
            assert_int_equal(sh->kv_head_begin + sh->n_kv_heads - 1, (sh->head_begin + sh->n_heads - 1) / group);
            assert_int_equal(sh->n_heads % sh->n_kv_heads, 0);
            /* FFN columns and vocabulary rows tile their ranges, near-evenly */
            assert_int_equal(sh->ffn_begin, ffn_next);
            ffn_next = sh->ffn_end;
            assert_int_equal(sh->vocab_begin, vocab_next);
            vocab_next = sh->vocab_end;
            assert_true(sh->ffn_end - sh->ffn_begin >= c->ffn_dim / p->tp);
            assert_true(sh->ffn_end - sh->ffn_begin <= c->ffn_dim / p->tp + 1);
            assert_int_equal(sh->first_stage, s == 0);
            assert_int_equal(sh->last_stage, s == p->pp - 1);
            assert_int_equal(sh->adds_row_bias, t == 0);
            assert_int_equal(r->weight_bytes, rt_shard_weight_bytes(c, sh, p->dtype));
            assert_true(r->weight_bytes > 0);
        }
        assert_int_equal(heads, c->n_heads);
        assert_int_equal(ffn_next, c->ffn_dim);
        assert_int_equal(vocab_next, c->vocab_size);
    }
}

static void test_many_configurations(void **state)
{
    (void)state;
    int shapes[][5] = {{5, 8, 4, 172, 512}, {4, 8, 2, 100, 203}, {32, 32, 8, 14336, 128256}, {3, 12, 12, 37, 11},
                       {7, 16, 1, 64, 1000}, {1, 4, 4, 8, 8}};
    int splits[][2] = {{1, 1}, {2, 1}, {1, 2}, {2, 2}, {4, 1}, {1, 4}, {2, 4}, {8, 1}, {4, 3}, {16, 1}, {3, 1}, {1, 7}};
    int checked = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (size_t j = 0; j < sizeof splits / sizeof *splits; j++) {
            rt_config c = cfg(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], shapes[i][4]);
            plan p;
            base_err err;
            if (plan_make(&p, &c, splits[j][0], splits[j][1], NULL, RT_BF16, &err) == 0) {
                check_plan(&c, &p);
                plan_free(&p);
                checked++;
            }
        }
    assert_true(checked >= 40);
}

static void test_even_layers_and_explicit_split(void **state)
{
    (void)state;
    rt_config c = cfg(5, 8, 4, 172, 512);
    plan p;
    base_err err;
    assert_int_equal(plan_make(&p, &c, 1, 4, NULL, RT_F32, &err), 0);
    int want[4] = {2, 1, 1, 1}; /* the remainder goes to the earliest stages */
    assert_memory_equal(p.stage_layers, want, sizeof want);
    plan_free(&p);
    int lps[2] = {4, 1};
    assert_int_equal(plan_make(&p, &c, 2, 2, lps, RT_F32, &err), 0);
    check_plan(&c, &p);
    assert_int_equal(p.ranks[2].shard.layer_begin, 4);
    assert_int_equal(p.ranks[3].shard.layer_end, 5);
    plan_free(&p);
}

static void test_kv_replication(void **state)
{
    (void)state;
    rt_config c = cfg(2, 8, 2, 64, 64);
    plan p;
    base_err err;
    assert_int_equal(plan_make(&p, &c, 8, 1, NULL, RT_F32, &err), 0);
    for (int t = 0; t < 8; t++) {
        assert_int_equal(p.ranks[t].shard.n_kv_heads, 1);
        assert_int_equal(p.ranks[t].shard.kv_head_begin, t / 4);
    }
    check_plan(&c, &p);
    plan_free(&p);
}

static void expect_error(rt_config c, int tp, int pp, const int *lps, const char *needle)
{
    plan p;
    base_err err = {{0}};
    assert_int_equal(plan_make(&p, &c, tp, pp, lps, RT_F32, &err), -1);
    if (!strstr(err.msg, needle))
        fail_msg("\"%s\" does not say \"%s\"", err.msg, needle);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error(cfg(4, 32, 8, 64, 64), 3, 1, NULL, "32 query heads cannot split over tp=3");
    expect_error(cfg(4, 12, 4, 64, 64), 3, 1, NULL, "4 KV heads cannot split over tp=3");
    expect_error(cfg(4, 24, 4, 64, 64), 6, 1, NULL, "tp=6 is not a multiple of the 4 KV heads");
    expect_error(cfg(5, 8, 4, 64, 64), 1, 6, NULL, "pp=6 stages but the model has only 5 layers");
    int short_sum[2] = {2, 2}, zero[2] = {5, 0};
    expect_error(cfg(5, 8, 4, 64, 64), 1, 2, short_sum, "sums to 4 layers, the model has 5");
    expect_error(cfg(5, 8, 4, 64, 64), 1, 2, zero, "stage 1 has 0 layers");
    expect_error(cfg(4, 8, 8, 4, 64), 8, 1, NULL, "4 FFN columns cannot split over tp=8");
    expect_error(cfg(4, 8, 8, 64, 4), 8, 1, NULL, "4 vocabulary rows cannot split over tp=8");
    expect_error(cfg(4, 8, 8, 64, 64), 0, 1, NULL, "tp=0");
    expect_error(cfg(4, 8, 8, 64, 64), 1, 0, NULL, "pp=0");
    plan p;
    base_err err;
    rt_config c = cfg(4, 8, 8, 64, 64);
    assert_int_equal(plan_make(&p, &c, 2, 2, NULL, RT_F32, &err), 0);
    assert_int_equal(plan_check_world(&p, 4, &err), 0);
    assert_int_equal(plan_check_world(&p, 3, &err), -1);
    assert_non_null(strstr(err.msg, "the job has 3 ranks but tp=2 x pp=2 needs 4"));
    plan_free(&p);
}

static void test_memory_and_traffic(void **state)
{
    (void)state;
    rt_config c = cfg(4, 8, 8, 64, 100);
    plan one, four;
    base_err err;
    assert_int_equal(plan_make(&one, &c, 1, 1, NULL, RT_F32, &err), 0);
    assert_int_equal(plan_make(&four, &c, 4, 1, NULL, RT_F32, &err), 0);
    /* four ranks hold the model once, plus three more copies of the norms */
    size_t sum = 0;
    for (int r = 0; r < 4; r++)
        sum += four.ranks[r].weight_bytes;
    size_t norms = (size_t)(2 * c.n_layers + 1) * (size_t)c.dim * 4;
    assert_int_equal(sum, one.ranks[0].weight_bytes + 3 * norms);
    /* KV: each rank a quarter */
    assert_int_equal(four.ranks[1].kv_bytes_per_token * 4, one.ranks[0].kv_bytes_per_token);
    /* traffic: a single rank sends nothing; tp=4 sends 2 all-reduces per layer + the embedding's,
     * every rank its row max, the non-zero ranks their part of a greedy row (sum, count, best) */
    assert_int_equal(plan_comm_bytes_per_token(&one, &c, 0), 0);
    size_t act = (size_t)c.dim * 4;
    assert_int_equal(plan_comm_bytes_per_token(&four, &c, 0), act * (2 * 4 + 1) + 4);
    assert_int_equal(plan_comm_bytes_per_token(&four, &c, 1), act * (2 * 4 + 1) + 4 + 24);
    plan_free(&one);
    plan_free(&four);
}

static void test_choose_for_hosts(void **state)
{
    (void)state;
    struct { int layers, heads, kv, hosts, per_host, tp, pp; } cases[] = {
        {32, 32, 8, 1, 8, 8, 1},   /* one host of 8 GPUs: tp=8 */
        {32, 32, 8, 2, 8, 8, 2},   /* tp inside the host, pp across hosts */
        {32, 32, 8, 4, 8, 8, 4},
        {32, 32, 8, 4, 4, 4, 4},
        {32, 12, 4, 2, 8, 4, 4},   /* 12 heads cannot split 8 ways: tp=4, two stages per host */
        {32, 32, 8, 1, 1, 1, 1},
        {5, 8, 4, 1, 4, 4, 1},
        {5, 8, 4, 4, 2, 2, 4},
        {16, 6, 6, 3, 4, 2, 6},    /* 6 heads over 4: tp=2 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        rt_config c = cfg(cases[i].layers, cases[i].heads, cases[i].kv, 64, 1000);
        int tp, pp;
        base_err err;
        if (plan_choose(&c, cases[i].hosts, cases[i].per_host, &tp, &pp, &err))
            fail_msg("case %zu: %s", i, err.msg);
        assert_int_equal(tp, cases[i].tp);
        assert_int_equal(pp, cases[i].pp);
    }
    /* more GPUs than layers x heads allow */
    rt_config small = cfg(5, 4, 4, 64, 1000);
    int tp, pp;
    base_err err = {{0}};
    assert_int_equal(plan_choose(&small, 4, 8, &tp, &pp, &err), -1);
    assert_non_null(strstr(err.msg, "no split of 4 host(s) x 8 GPU(s) fits the model (5 layers, 4 query heads"));
    assert_int_equal(plan_choose(&small, 0, 8, &tp, &pp, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_configurations),
        cmocka_unit_test(test_even_layers_and_explicit_split),
        cmocka_unit_test(test_kv_replication),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_memory_and_traffic),
        cmocka_unit_test(test_choose_for_hosts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
