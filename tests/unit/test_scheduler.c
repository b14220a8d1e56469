/* The scheduler under pressure: a KV pool too small for every sequence at once forces preemption
 * by recomputation, yet every sequence gets the tokens it gets alone; cancellation and deadlines
 * end requests and free their blocks; requests join a running batch; with several steps in flight,
 * or with --prompt-spread, a wave of prompts raises the step size a little for several cycles, not
 * one step a lot. */
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
#include "runtime/scheduler.h"
#include "tests/unit/tiny_model.h"

static char *dir;
static rt_backend *be;
static rt_model model;

typedef struct log {
    int32_t tokens[8][128];
    int n[8];
    int done[8], error[8];
    int status[8];
} event_log;

static void on_event(void *ctx, const rt_sched_event *ev)
{
    event_log *l = ctx;
    int i = (int)ev->id;
    if (ev->kind == RT_EV_TOKEN)
        l->tokens[i][l->n[i]++] = ev->sample->token;
    else if (ev->kind == RT_EV_DONE)
        l->done[i]++;
    else {
        l->error[i]++;
        l->status[i] = ev->status;
    }
}

static int setup(void **state)
{
    (void)state;
    base_err err;
    rt_config c = tiny_config();
    dir = tiny_tmpdir();
    be = rt_cpu_backend_create(0);
    rt_shard s;
    rt_shard_whole(&s, &c);
    if (tiny_model_write(dir, &c, RT_F32, 0, &err) || rt_model_load(&model, &c, &s, dir, be, &err))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rt_model_free(&model);
    be->ops->destroy(be);
    tiny_rmtree(dir);
    free(dir);
    return 0;
}

static int32_t prompts[4][40];
static const int plen[4] = {30, 9, 21, 2};
static const int gen[4] = {40, 35, 30, 50};

static void reference(int i, rt_sampling smp, int32_t *out)
{
    rt_gen_request r = {prompts[i], plen[i], gen[i], smp, true};
    rt_gen_options o = {64, 16};
    rt_gen_result res;
    rt_gen_stats st;
    base_err err;
    if (rt_generate_local(&model, &r, 1, &o, &res, &st, &err))
        fail_msg("%s", err.msg);
    memcpy(out, res.tokens, (size_t)gen[i] * sizeof *out);
    rt_gen_result_free(&res);
}

static rt_engine *make_engine(int n_blocks, int block_size, const rt_sched_options *o)
{
    rt_engine_geometry g = rt_sched_geometry(&model.cfg, o, n_blocks, block_size);
    rt_engine *e;
    base_err err;
    if (rt_engine_create(&e, &model, NULL, &g, &err))
        fail_msg("%s", err.msg);
    return e;
}

static void test_preemption_keeps_outputs(void **state)
{
    (void)state;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < plen[i]; j++)
            prompts[i][j] = (int32_t)((i * 7 + j * 13) % 60 + 3);
    for (int sampled = 0; sampled < 2; sampled++) {
        rt_sampling smp = sampled ? (rt_sampling){.temperature = 1.0f, .top_p = 0.9f, .seed = 5}
                                  : (rt_sampling){.top_p = 1.0f};
        int32_t ref[4][128];
        for (int i = 0; i < 4; i++)
            reference(i, smp, ref[i]);
        /* 4-token blocks, 16 of them: 64 token slots for sequences that reach 70, 44, 51, 52 */
        rt_sched_options o = {.max_batch_tokens = 8, .max_seqs = 4};
        rt_engine *e = make_engine(19, 4, &o);
        event_log l = {0};
        rt_sched *s;
        base_err err;
        assert_int_equal(rt_sched_create(&s, e, &o, on_event, &l, &err), 0);
        int status;
        for (int i = 0; i < 4; i++) {
            rt_sched_request r = {.id = (uint64_t)i, .prompt = prompts[i], .prompt_len = plen[i],
                                  .max_tokens = gen[i], .sampling = smp, .ignore_eos = true};
            assert_int_equal(rt_sched_add(s, &r, &status, &err), 0);
        }
        int steps = 0;
        while (rt_sched_has_work(s) && steps++ < 10000)
            assert_int_equal(rt_sched_step(s, &err), 0);
        rt_sched_stats st;
        rt_sched_get_stats(s, &st);
        assert_true(st.preemptions > 0);
        assert_int_equal(st.kv_blocks_used, 0);
        assert_int_equal(st.finished, 4);
        assert_true(st.step_tokens / st.steps <= 8);
        for (int i = 0; i < 4; i++) {
            assert_int_equal(l.done[i], 1);
            assert_int_equal(l.n[i], gen[i]);
            assert_memory_equal(l.tokens[i], ref[i], (size_t)gen[i] * sizeof(int32_t));
        }
        rt_sched_destroy(s);
        rt_engine_destroy(e);
    }
}

static void test_cancel_deadline_and_joining(void **state)
{
    (void)state;
    rt_sched_options o = {.max_batch_tokens = 16, .max_seqs = 4};
    rt_engine *e = make_engine(24, 4, &o);
    event_log l = {0};
    rt_sched *s;
    base_err err;
    int status;
    assert_int_equal(rt_sched_create(&s, e, &o, on_event, &l, &err), 0);
    rt_sampling greedy = {.top_p = 1.0f};
    rt_sched_request r = {.id = 0, .prompt = prompts[0], .prompt_len = plen[0], .max_tokens = 40,
                          .sampling = greedy, .ignore_eos = true};
    assert_int_equal(rt_sched_add(s, &r, &status, &err), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(rt_sched_step(s, &err), 0);
    assert_int_equal(rt_sched_running(s), 1);
    /* a second request joins the running batch at the next step */
    r.id = 1, r.prompt = prompts[1], r.prompt_len = plen[1], r.max_tokens = 5;
    assert_int_equal(rt_sched_add(s, &r, &status, &err), 0);
    assert_int_equal(rt_sched_step(s, &err), 0);
    assert_int_equal(rt_sched_running(s), 2);
    /* the same id again is refused while live */
    assert_int_equal(rt_sched_add(s, &r, &status, &err), -1);
    assert_int_equal(status, RT_STATUS_INVALID_ARGUMENT);
    /* cancel frees at once */
    assert_int_equal(rt_sched_cancel(s, 0, RT_STATUS_CANCELLED, "cancelled"), 0);
    assert_int_equal(l.error[0], 1);
    assert_int_equal(l.status[0], RT_STATUS_CANCELLED);
    assert_int_equal(rt_sched_cancel(s, 0, RT_STATUS_CANCELLED, "again"), -1);
    while (rt_sched_has_work(s))
        assert_int_equal(rt_sched_step(s, &err), 0);
    assert_int_equal(l.done[1], 1);
    /* a deadline already past ends the request before it runs */
    r.id = 2, r.deadline = 1e-9;
    assert_int_equal(rt_sched_add(s, &r, &status, &err), 0);
    assert_int_equal(rt_sched_step(s, &err), 0);
    assert_int_equal(l.status[2], RT_STATUS_DEADLINE_EXCEEDED);
    /* a request larger than the whole cache can never run */
    r.id = 3, r.deadline = 0, r.prompt_len = 30, r.max_tokens = 98;
    assert_int_equal(rt_sched_add(s, &r, &status, &err), -1);
    assert_int_equal(status, RT_STATUS_RESOURCE_EXHAUSTED);
    rt_sched_stats st;
    rt_sched_get_stats(s, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.kv_blocks_free, 24);
    rt_sched_destroy(s);
    rt_engine_destroy(e);
}

/* The 4 requests of test_preemption_keeps_outputs through a scheduler with run-ahead on (1) or off
 * (-1), request 1 cancelled after `cancel_at` calls (0: never); the stats at the end. */
static void run_four(int ahead, int n_blocks, int mbt, rt_sampling smp, const int32_t *stop, int n_stop, int cancel_at,
                     event_log *l, rt_sched_stats *st)
{
    rt_sched_options o = {.max_batch_tokens = mbt, .max_seqs = 4, .run_ahead = ahead};
    rt_engine *e = make_engine(n_blocks, 4, &o);
    rt_sched *s;
    base_err err;
    int status;
    memset(l, 0, sizeof *l);
    assert_int_equal(rt_sched_create(&s, e, &o, on_event, l, &err), 0);
    for (int i = 0; i < 4; i++) {
        rt_sched_request r = {.id = (uint64_t)i, .prompt = prompts[i], .prompt_len = plen[i], .max_tokens = gen[i],
                              .sampling = smp, .ignore_eos = true, .stop_ids = stop, .n_stop = n_stop};
        assert_int_equal(rt_sched_add(s, &r, &status, &err), 0);
    }
    for (int calls = 1; rt_sched_has_work(s) && calls < 10000; calls++) {
        assert_int_equal(rt_sched_step(s, &err), 0);
        if (calls == cancel_at)
            assert_int_equal(rt_sched_cancel(s, 1, RT_STATUS_CANCELLED, "cancelled"), 0);
    }
    assert_false(rt_sched_has_work(s));
    rt_sched_get_stats(s, st);
    rt_sched_destroy(s);
    rt_engine_destroy(e);
}

/* Run-ahead (each step queued before the host reads the one ahead of it, its decodes taking that
 * step's samples on the device), forced on here on the host backend: every request gets the tokens
 * it gets without it, greedy or drawn from its seed, under preemption and chunked prompts (a KV pool
 * and a step budget too small for all four), when a stop token ends a sequence while the next step
 * holds it, and when a request is cancelled with two steps in flight; every block comes back. */
static void test_run_ahead_same_outputs(void **state)
{
    (void)state;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < plen[i]; j++)
            prompts[i][j] = (int32_t)((i * 7 + j * 13) % 60 + 3);
    static event_log off, on;
    rt_sched_stats st_off, st_on;
    for (int sampled = 0; sampled < 2; sampled++) {
        rt_sampling smp = sampled ? (rt_sampling){.temperature = 1.0f, .top_p = 0.9f, .seed = 5}
                                  : (rt_sampling){.top_p = 1.0f};
        for (int roomy = 0; roomy < 2; roomy++) {
            const int blocks = roomy ? 80 : 19, mbt = roomy ? 64 : 8;
            run_four(-1, blocks, mbt, smp, NULL, 0, 0, &off, &st_off);
            run_four(1, blocks, mbt, smp, NULL, 0, 0, &on, &st_on);
            assert_int_equal(st_off.steps_overlapped, 0);
            assert_true(st_on.steps_overlapped > 0);
            assert_true(roomy || st_on.preemptions > 0);
            assert_int_equal(st_on.finished, 4);
            assert_int_equal(st_on.kv_blocks_used, 0);
            assert_memory_equal(&on, &off, sizeof on);
            /* a stop token each sequence meets part way */
            int32_t stop[4];
            for (int i = 0; i < 4; i++)
                stop[i] = off.tokens[i][5 + 3 * i];
            run_four(-1, blocks, mbt, smp, stop, 4, 0, &off, &st_off);
            run_four(1, blocks, mbt, smp, stop, 4, 0, &on, &st_on);
            for (int i = 0; i < 4; i++)
                assert_true(on.n[i] <= 6 + 3 * i && on.done[i] == 1);
            assert_int_equal(st_on.kv_blocks_used, 0);
            assert_memory_equal(&on, &off, sizeof on);
            /* request 1 cancelled mid-way: the others as before */
            run_four(-1, blocks, mbt, smp, NULL, 0, 0, &off, &st_off);
            run_four(1, blocks, mbt, smp, NULL, 0, 12, &on, &st_on);
            assert_int_equal(on.error[1], 1);
            assert_int_equal(on.status[1], RT_STATUS_CANCELLED);
            assert_true(on.n[1] < gen[1]);
            assert_memory_equal(on.tokens[1], off.tokens[1], (size_t)on.n[1] * sizeof(int32_t));
            for (int i = 0; i < 4; i++)
                if (i != 1) {
                    assert_int_equal(on.n[i], off.n[i]);
                    assert_memory_equal(on.tokens[i], off.tokens[i], sizeof on.tokens[i]);
                }
            assert_int_equal(st_on.kv_blocks_used, 0);
        }
    }
}

/* Two stages, two micro-batches of 32 decoding sequences each, and a wave of 32 prompts of 32 tokens
 * arriving at once (a closed-loop client's next requests): the steps the share rule forms, each
 * taking its micro-batch's decodes first and then prompt tokens. Stage 1 works on step i while
 * stage 0 works on step i + 1, so sum |size(i + 1) - size(i)| is the tokens' worth of time the
 * stages stand idle. Taking the wave in one or two steps (the old rule: half of everything there
 * was) made a 528-token step after a 32-token one. */
static void test_pipeline_share_spreads_prompts(void **state)
{
    (void)state;
    const int depth = 2, mbt = 2048, decodes = 32, cyc = RT_SCHED_PROMPT_CYCLES;
    long prompts = 32 * 32, in_flight = decodes, idle = 0, most = 0, absorbed_at = -1;
    int prev = decodes;
    for (int step = 0; step < 200; step++) {
        const int seqs = (int)((prompts + 31) / 32);
        const int share = rt_sched_share(in_flight, decodes, prompts, seqs, depth, mbt, cyc, 0);
        assert_true(share >= decodes); /* every decode fits, as in a steady pipeline */
        const long take_prompt = share - decodes < prompts ? share - decodes : prompts;
        const int size = decodes + (int)take_prompt;
        prompts -= take_prompt;
        idle += labs((long)size - prev);
        most = size > most ? size : most;
        prev = size, in_flight = size;
        if (prompts == 0 && absorbed_at < 0)
            absorbed_at = step;
    }
    idle += labs((long)decodes - prev);
    print_message("wave of 1,024 prompt tokens over 32 decodes a step: largest step %ld, absorbed after %ld steps, "
                  "idle %ld token-steps\n", most, absorbed_at + 1, idle);
    assert_true(most <= decodes + 32 * 32 / RT_SCHED_PROMPT_CYCLES); /* the old rule: 528 */
    assert_true(absorbed_at >= 0 && absorbed_at < 4 * RT_SCHED_PROMPT_CYCLES * depth); /* no starvation */
    assert_true(idle <= 2 * (most - decodes) + 2);

    /* a lone prompt with nothing in flight takes whole steps; a backlog fills whole steps; no work, 1 */
    assert_int_equal(rt_sched_share(0, 0, 4000, 1, depth, mbt, cyc, 0), mbt);
    assert_int_equal(rt_sched_share(0, 0, 300, 1, depth, mbt, cyc, 0), 300);
    assert_int_equal(rt_sched_share(32, 32, (long)RT_SCHED_PROMPT_CYCLES * depth * mbt, 100, depth, mbt, cyc, 0), mbt);
    assert_int_equal(rt_sched_share(0, 0, 0, 0, depth, mbt, cyc, 0), 1);
    /* decodes alone: an even split of them over the stages */
    assert_int_equal(rt_sched_share(0, 64, 0, 0, depth, mbt, cyc, 0), 32);
    assert_int_equal(rt_sched_share(32, 32, 0, 0, depth, mbt, cyc, 0), 32);
    /* a GPU's prompts in whole steps (cycles 1): 64 prompts of 128 tokens, 2,048 a step, where 8
     * cycles would take 512 */
    assert_int_equal(rt_sched_share(0, 0, 64 * 128, 64, depth, mbt, 1, 0), mbt);
    assert_int_equal(rt_sched_share(0, 0, 64 * 128, 64, depth, mbt, cyc, 0), 512);
    assert_int_equal(rt_sched_share(32, 32, 1000, 10, depth, mbt, 1, 0), (32 + 32 + 1000 + 1) / 2);
}

/* One step at a time (a server on one rank), --prompt-spread: a wave of 6 prompts (240 tokens)
 * arriving while 2 sequences decode goes in over several steps, at least RT_SCHED_PROMPT_FLOOR
 * tokens each, instead of one step of all of them (the default); every request's tokens are the
 * ones it gets alone either way. */
static void test_prompt_spread_one_step_at_a_time(void **state)
{
    (void)state;
    enum { N = 8, PLEN = 40, GEN = 20 };
    static int32_t p[N][PLEN];
    int32_t ref[N][GEN];
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < PLEN; j++)
            p[i][j] = (int32_t)((i * 11 + j * 5) % 60 + 3);
        rt_gen_request r = {p[i], PLEN, GEN, (rt_sampling){.top_p = 1.0f}, true};
        rt_gen_options go = {64, 16};
        rt_gen_result res;
        rt_gen_stats gs;
        base_err err;
        if (rt_generate_local(&model, &r, 1, &go, &res, &gs, &err))
            fail_msg("%s", err.msg);
        memcpy(ref[i], res.tokens, sizeof ref[i]);
        rt_gen_result_free(&res);
    }
    for (int spread = 1; spread <= 4; spread += 3) {
        rt_sched_options o = {.max_batch_tokens = 256, .max_seqs = N, .prompt_spread = spread};
        rt_engine *e = make_engine(64, 8, &o);
        event_log l = {0};
        rt_sched *s;
        base_err err;
        int status, tokens, prefill, most = 0, wave_steps = 0;
        assert_int_equal(rt_sched_create(&s, e, &o, on_event, &l, &err), 0);
        for (int i = 0; i < N; i++) {
            while (i == 2 && l.n[0] < 3) /* the first two decode before the wave comes */
                assert_int_equal(rt_sched_step(s, &err), 0);
            rt_sched_request r = {.id = (uint64_t)i, .prompt = p[i], .prompt_len = PLEN, .max_tokens = GEN,
                                  .sampling = {.top_p = 1.0f}, .ignore_eos = true};
            assert_int_equal(rt_sched_add(s, &r, &status, &err), 0);
        }
        while (rt_sched_has_work(s)) {
            assert_int_equal(rt_sched_step(s, &err), 0);
            rt_sched_last_step(s, &tokens, &prefill);
            most = prefill > most ? prefill : most;
            wave_steps += prefill > 0;
        }
        print_message("--prompt-spread %d: the wave's largest prefill %d tokens, %d steps with prefill\n", spread,
                      most, wave_steps);
        if (spread == 1) {
            assert_int_equal(most, (N - 2) * PLEN); /* whole: one step */
            assert_int_equal(wave_steps, 1);
        } else {
            assert_int_equal(most, RT_SCHED_PROMPT_FLOOR); /* 240 / 4 = 60 < the floor */
            assert_int_equal(wave_steps, 2);
        }
        for (int i = 0; i < N; i++) {
            assert_int_equal(l.done[i], 1);
            assert_int_equal(l.n[i], GEN);
            assert_memory_equal(l.tokens[i], ref[i], sizeof ref[i]);
        }
        rt_sched_destroy(s);
        rt_engine_destroy(e);
    }
    /* the share: decodes plus the prompts over the cycles, at least the floor (or all of them) */
    assert_int_equal(rt_sched_share(0, 64, 64 * 128, 64, 1, 8192, 16, RT_SCHED_PROMPT_FLOOR), 64 + 512);
    assert_int_equal(rt_sched_share(0, 64, 1000, 8, 1, 8192, 16, RT_SCHED_PROMPT_FLOOR), 64 + RT_SCHED_PROMPT_FLOOR);
    assert_int_equal(rt_sched_share(0, 64, 100, 1, 1, 8192, 16, RT_SCHED_PROMPT_FLOOR), 64 + 100);
    assert_int_equal(rt_sched_share(0, 0, 64 * 128, 64, 1, 8192, 16, RT_SCHED_PROMPT_FLOOR), 512);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preemption_keeps_outputs),
        cmocka_unit_test(test_cancel_deadline_and_joining),
        cmocka_unit_test(test_run_ahead_same_outputs),
        cmocka_unit_test(test_prompt_spread_one_step_at_a_time),
        cmocka_unit_test(test_pipeline_share_spreads_prompts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
