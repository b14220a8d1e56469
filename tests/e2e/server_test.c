/* End-to-end tests of a running dinfer-server (started by tests/e2e/server.sh under mpirun):
 *   server_test HOST:PORT FIXTURE_DIR [AUTH_TOKEN]
 * Concurrent clients get exactly the tokens of the offline single-request run (computed here from
 * the same model folder); seeded sampling is reproducible whatever else runs; every kind of bad
 * input gets its status code and message while the server keeps serving; the KV cache is empty
 * once everything ended. With AUTH_TOKEN the server requires it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/client.h"
#include "runtime/generate.h"

static const char *host;
static int port;
static const char *token;
static base_err cerr; /* what a failed client call says */
static rt_backend *be;
static rt_model model;

static dinfer_client *connect_ok(void)
{
    dinfer_client *c;
    if (dinfer_connect(&c, host, port, token, &cerr))
        fail_msg("%s", cerr.msg);
    return c;
}

/* The offline single-request run of p (greedy or seeded), as dinfer-run computes it. */
static void offline(const dinfer_params *p, rt_gen_result *out)
{
    rt_gen_request r = {.prompt = p->prompt, .prompt_len = (int)p->prompt_len, .max_tokens = (int)p->max_tokens,
                        .sampling = {.temperature = p->temperature, .top_k = p->top_k, .top_p = p->top_p,
                                     .seed = p->seed},
                        .ignore_eos = p->ignore_eos};
    rt_gen_options o = {.max_batch_tokens = 256, .block_size = 16};
    rt_gen_stats st;
    base_err err;
    if (rt_generate_local(&model, &r, 1, &o, out, &st, &err))
        fail_msg("offline run: %s", err.msg);
}

static int64_t stat_of(const char *which);
static void expect_idle_and_free(void);

typedef struct stream {
    dinfer_params p;
    int32_t prompt[64];
    int32_t got[128];
    float lp[128];
    int n, status;
    bool done;
} stream;

/* Runs every stream at once, stream i on connection conns[i % n_conns], until all end. */
static void run_streams(stream *s, int n, dinfer_client **conns, int n_conns)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(dinfer_send_generate(conns[i % n_conns], (uint64_t)i + 1, &s[i].p, &cerr), 0);
    int left = n;
    while (left > 0) {
        struct pollfd pfd[64];
        for (int k = 0; k < n_conns; k++)
            pfd[k] = (struct pollfd){.fd = dinfer_fd(conns[k]), .events = POLLIN};
        assert_true(poll(pfd, (nfds_t)n_conns, 30000) > 0);
        for (int k = 0; k < n_conns; k++) {
            if (!pfd[k].revents)
                continue;
            wire_frame *f;
            while (dinfer_next_frame(conns[k], 0, &f, &cerr) == 1) {
                stream *x = &s[f->request_id - 1];
                if (f->body_case == DINFER__V1__FRAME__BODY_CHUNK) {
                    for (size_t j = 0; j < f->chunk->n_tokens && x->n < 128; j++) {
                        x->got[x->n] = f->chunk->tokens[j];
                        x->lp[x->n++] = f->chunk->logprobs[j];
                    }
                } else {
                    x->done = true;
                    x->status = f->body_case == DINFER__V1__FRAME__BODY_ERROR ? (int)f->error->code : 0;
                    left--;
                }
                wire_frame_free(f);
            }
        }
    }
}

static void test_concurrent_clients_match_offline(void **state)
{
    (void)state;
    enum { N = 32 };
    static stream s[N];
    dinfer_client *conns[N];
    for (int i = 0; i < N; i++) {
        conns[i] = connect_ok();
        memset(&s[i], 0, sizeof s[i]);
        dinfer_params_init(&s[i].p);
        int len = 1 + (i * 7) % 40; /* prompts of 1 to 40 tokens */
        for (int j = 0; j < len; j++)
            s[i].prompt[j] = (int32_t)((i * 31 + j * 17 + 3) % model.cfg.vocab_size);
        s[i].p.prompt = s[i].prompt;
        s[i].p.prompt_len = (size_t)len;
        s[i].p.max_tokens = 1 + (uint32_t)((i * 5) % 24); /* and 1 to 24 new tokens */
        s[i].p.ignore_eos = true;
    }
    run_streams(s, N, conns, N);
    for (int i = 0; i < N; i++) {
        rt_gen_result ref;
        offline(&s[i].p, &ref);
        assert_int_equal(s[i].status, 0);
        assert_int_equal(s[i].n, ref.n_tokens);
        assert_memory_equal(s[i].got, ref.tokens, (size_t)ref.n_tokens * sizeof(int32_t));
        for (int j = 0; j < ref.n_tokens; j++)
            assert_true(fabsf(s[i].lp[j] - ref.logprobs[j]) < 1e-4f);
        rt_gen_result_free(&ref);
        dinfer_close(conns[i]);
    }
    /* the server script gives the cache too few blocks for all 32 at once: some were preempted
     * and recomputed, and still gave exactly their tokens */
    assert_true(stat_of("preemptions") > 0);
}

static void test_seeded_sampling_reproducible(void **state)
{
    (void)state;
    enum { N = 12 };
    static stream s[N];
    for (int i = 0; i < N; i++) {
        memset(&s[i], 0, sizeof s[i]);
        dinfer_params_init(&s[i].p);
        for (int j = 0; j < 9; j++)
            s[i].prompt[j] = (int32_t)((j * 13 + (i ? i : 5)) % model.cfg.vocab_size);
        s[i].p.prompt = s[i].prompt;
        s[i].p.prompt_len = 9;
        s[i].p.max_tokens = 20;
        s[i].p.temperature = 0.9f;
        /* top-k with top-p; top-p alone (tp ranks: the nucleus from the slices' best, or whole rows);
         * temperature alone (tp ranks draw by their slices' masses) */
        s[i].p.top_k = i % 3 == 0 ? 30 : 0;
        s[i].p.top_p = i % 3 == 2 ? 1.0f : i % 3 == 1 ? 0.8f : 0.95f;
        s[i].p.has_seed = true;
        s[i].p.seed = 7 + (uint64_t)i;
        s[i].p.ignore_eos = true;
    }
    /* stream 0 alone, then with 11 others on two connections: the same tokens, the offline ones */
    dinfer_client *conns[2] = {connect_ok(), connect_ok()};
    stream alone = s[0];
    run_streams(&alone, 1, conns, 1);
    run_streams(s, N, conns, 2);
    assert_int_equal(alone.n, 20);
    assert_memory_equal(alone.got, s[0].got, 20 * sizeof(int32_t));
    for (int i = 0; i < N; i++) { /* each the offline tokens of its seed */
        rt_gen_result ref;
        offline(&s[i].p, &ref);
        assert_int_equal(s[i].n, 20);
        assert_memory_equal(s[i].got, ref.tokens, 20 * sizeof(int32_t));
        rt_gen_result_free(&ref);
    }
    /* another seed, another sequence */
    assert_memory_not_equal(s[0].got, s[1].got, 20 * sizeof(int32_t));
    dinfer_close(conns[0]);
    dinfer_close(conns[1]);
}

/* Requests that end while steps holding them are in flight (with pipeline parallelism several
 * are): cancelled after a few tokens, past their deadline, finishing at different lengths. What
 * each streamed is a prefix of its offline tokens (all of them when it ran to its end), the
 * others are untouched, and the cache is empty afterwards. */
static void test_ends_mid_flight(void **state)
{
    (void)state;
    enum { N = 24 };
    static stream s[N];
    bool cancel[N] = {0}, cancelled[N] = {0};
    for (int i = 0; i < N; i++) {
        memset(&s[i], 0, sizeof s[i]);
        dinfer_params_init(&s[i].p);
        for (int j = 0; j < 6; j++)
            s[i].prompt[j] = (int32_t)((i * 11 + j * 7 + 1) % model.cfg.vocab_size);
        s[i].p.prompt = s[i].prompt;
        s[i].p.prompt_len = 6;
        s[i].p.ignore_eos = true;
        s[i].p.max_tokens = 8 + (uint32_t)(i * 5) % 90; /* finishing at different steps */
        if (i % 4 == 0)
            cancel[i] = true, s[i].p.max_tokens = 110;
        if (i % 4 == 1)
            s[i].p.deadline_ms = 30 + 10 * (uint32_t)i, s[i].p.max_tokens = 110;
    }
    dinfer_client *conns[2] = {connect_ok(), connect_ok()};
    for (int i = 0; i < N; i++)
        assert_int_equal(dinfer_send_generate(conns[i % 2], (uint64_t)i + 1, &s[i].p, &cerr), 0);
    for (int left = N; left > 0;) {
        struct pollfd pfd[2] = {{.fd = dinfer_fd(conns[0]), .events = POLLIN}, {.fd = dinfer_fd(conns[1]), .events = POLLIN}};
        assert_true(poll(pfd, 2, 30000) > 0);
        for (int k = 0; k < 2; k++) {
            wire_frame *f;
            while (pfd[k].revents && dinfer_next_frame(conns[k], 0, &f, &cerr) == 1) {
                const int i = (int)f->request_id - 1;
                stream *x = &s[i];
                if (x->done) {
                    /* a cancel that arrived after its request ended: NOT_FOUND, nothing else */
                    assert_int_equal(f->body_case, DINFER__V1__FRAME__BODY_ERROR);
                    assert_int_equal((int)f->error->code, 5);
                } else if (f->body_case == DINFER__V1__FRAME__BODY_CHUNK) {
                    for (size_t j = 0; j < f->chunk->n_tokens && x->n < 128; j++)
                        x->got[x->n++] = f->chunk->tokens[j];
                    if (cancel[i] && !cancelled[i] && x->n >= 3) {
                        assert_int_equal(dinfer_send_cancel(conns[k], (uint64_t)i + 1, &cerr), 0);
                        cancelled[i] = true;
                    }
                } else {
                    x->done = true;
                    x->status = f->body_case == DINFER__V1__FRAME__BODY_ERROR ? (int)f->error->code : 0;
                    left--;
                }
                wire_frame_free(f);
            }
        }
    }
    int n_cancelled = 0;
    for (int i = 0; i < N; i++) {
        rt_gen_result ref;
        offline(&s[i].p, &ref);
        assert_true(s[i].n <= ref.n_tokens);
        assert_memory_equal(s[i].got, ref.tokens, (size_t)s[i].n * sizeof(int32_t));
        if (cancel[i])
            assert_true(s[i].status == 1 || (s[i].status == 0 && s[i].n == ref.n_tokens));
        else if (i % 4 == 1)
            assert_true(s[i].status == 4 || (s[i].status == 0 && s[i].n == ref.n_tokens));
        else
            assert_true(s[i].status == 0 && s[i].n == ref.n_tokens);
        n_cancelled += s[i].status == 1 && s[i].n < ref.n_tokens;
        rt_gen_result_free(&ref);
    }
    assert_true(n_cancelled > 0); /* at least one cancel landed while the request ran */
    dinfer_close(conns[0]);
    dinfer_close(conns[1]);
    expect_idle_and_free();
}

/* ---- bad input ---- */

/* The stream of request id ends with an error of this code and message (tokens it streamed before
 * that, as a cancelled request may have, are skipped). */
static void expect_error(dinfer_client *c, uint64_t id, int code, const char *needle)
{
    wire_frame *f;
    for (;;) {
        assert_int_equal(dinfer_next_frame(c, 10000, &f, &cerr), 1);
        if (f->request_id == id && f->body_case != DINFER__V1__FRAME__BODY_CHUNK)
            break;
        wire_frame_free(f);
    }
    if (f->body_case != DINFER__V1__FRAME__BODY_ERROR)
        fail_msg("expected an error %s for request %llu, got frame body %d", wire_status_name(code),
                 (unsigned long long)id, (int)f->body_case);
    if ((int)f->error->code != code || !strstr(f->error->message, needle))
        fail_msg("expected %s \"%s\", got %s \"%s\"", wire_status_name(code), needle, wire_status_name(f->error->code),
                 f->error->message);
    wire_frame_free(f);
}

/* The server still answers: a short greedy generation completes on connection c. */
static void still_serving(dinfer_client *c)
{
    int32_t prompt[2] = {1, 2};
    dinfer_params p;
    dinfer_params_init(&p);
    p.prompt = prompt, p.prompt_len = 2, p.max_tokens = 3, p.ignore_eos = true;
    dinfer_result r;
    assert_int_equal(dinfer_generate(c, &p, NULL, NULL, &r, &cerr), 0);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.completion_tokens, 3);
}

static int raw_connect(void)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    assert_int_equal(getaddrinfo(host, ps, &hints, &res), 0);
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, res->ai_addr, res->ai_addrlen), 0);
    freeaddrinfo(res);
    return fd;
}

/* Sends raw bytes and reads the server's error reply; true when the server then closed. */
static bool raw_exchange(const void *bytes, size_t n, int code, const char *needle)
{
    int fd = raw_connect();
    assert_int_equal(send(fd, bytes, n, MSG_NOSIGNAL), (ssize_t)n);
    wire_decoder d;
    wire_decoder_init(&d, 0);
    wire_frame *f;
    assert_int_equal(wire_recv(fd, &d, &f, &cerr), 0);
    assert_int_equal(f->body_case, DINFER__V1__FRAME__BODY_ERROR);
    assert_int_equal((int)f->error->code, code);
    if (!strstr(f->error->message, needle))
        fail_msg("\"%s\" does not say \"%s\"", f->error->message, needle);
    wire_frame_free(f);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char b;
    bool closed = poll(&p, 1, 2000) == 1 && recv(fd, &b, 1, 0) == 0;
    wire_decoder_free(&d);
    close(fd);
    return closed;
}

static void test_broken_streams(void **state)
{
    (void)state;
    const char garbage[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_true(raw_exchange(garbage, sizeof garbage - 1, 8, "over the"));
    const uint8_t huge[8] = {0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4};
    assert_true(raw_exchange(huge, sizeof huge, 8, "frame length 2147483647 is over the"));
    /* a frame of valid length that is not a Frame: reported, and the stream goes on */
    const uint8_t junk[9] = {0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff};
    assert_false(raw_exchange(junk, sizeof junk, 3, "not a valid dinfer.v1.Frame"));
    /* a truncated frame, then the client goes away */
    int fd = raw_connect();
    const uint8_t partial[6] = {0, 0, 0, 100, 8, 1};
    assert_int_equal(send(fd, partial, sizeof partial, MSG_NOSIGNAL), 6);
    close(fd);
    dinfer_client *c = connect_ok();
    still_serving(c);
    /* frames with no message, or a message only the server sends */
    wire_frame f = DINFER__V1__FRAME__INIT;
    f.has_request_id = 1, f.request_id = 41, f.auth_token = (char *)token;
    assert_int_equal(dinfer_send_frame(c, &f, &cerr), 0);
    expect_error(c, 41, 3, "unknown or unexpected message");
    Dinfer__V1__TokenChunk ch = DINFER__V1__TOKEN_CHUNK__INIT;
    f.request_id = 42, f.body_case = DINFER__V1__FRAME__BODY_CHUNK, f.chunk = &ch;
    assert_int_equal(dinfer_send_frame(c, &f, &cerr), 0);
    expect_error(c, 42, 3, "unknown or unexpected message");
    still_serving(c);
    dinfer_close(c);
}

static void test_bad_requests(void **state)
{
    (void)state;
    dinfer_client *c = connect_ok();
    int32_t ok[3] = {1, 2, 3}, outside[2] = {1, model.cfg.vocab_size};
    dinfer_params p;
#define CASE(id, code, needle, ...)                             \
    do {                                                        \
        dinfer_params_init(&p);                                 \
        p.prompt = ok, p.prompt_len = 3, p.max_tokens = 4;      \
        __VA_ARGS__;                                            \
        assert_int_equal(dinfer_send_generate(c, id, &p, &cerr), 0);   \
        expect_error(c, id, code, needle);                      \
    } while (0)
    CASE(1, 3, "the prompt is empty", p.prompt_len = 0);
    CASE(2, 3, "outside the vocabulary", p.prompt = outside, p.prompt_len = 2);
    CASE(3, 3, "exceeds the context length", p.max_tokens = (uint32_t)model.cfg.max_pos - 1);
    CASE(4, 3, "max_tokens", p.max_tokens = 0);
    CASE(5, 3, "temperature", p.temperature = -0.5f);
    CASE(6, 3, "temperature", p.temperature = NAN);
    CASE(7, 3, "top_p", p.top_p = 0.0f);
    CASE(8, 3, "top_p", p.top_p = 1.5f);
    CASE(9, 3, "top_k", p.top_k = -1);
    CASE(10, 3, "logprobs", p.logprobs = 21);
#undef CASE
    /* a request id already live on this connection */
    int32_t long_prompt[1] = {4};
    dinfer_params_init(&p);
    p.prompt = long_prompt, p.prompt_len = 1, p.max_tokens = 100, p.ignore_eos = true;
    assert_int_equal(dinfer_send_generate(c, 77, &p, &cerr), 0);
    /* the duplicate goes once the first has streamed its first token (so it is surely live: sent
     * together, a loaded machine could finish the first before reading the second); it is refused,
     * and the first runs unharmed to its 100 tokens (its chunks and the refusal carry the same id,
     * in whatever order the server sends them) */
    int n = 0, done = 0;
    bool refused = false, sent = false;
    while (done == 0 || (!refused && done < 2)) {
        wire_frame *f;
        assert_int_equal(dinfer_next_frame(c, 10000, &f, &cerr), 1);
        assert_int_equal(f->request_id, 77);
        int body = (int)f->body_case;
        if (body == DINFER__V1__FRAME__BODY_CHUNK)
            n += (int)f->chunk->n_tokens;
        if (body == DINFER__V1__FRAME__BODY_CHUNK && !sent) {
            assert_true(n < 100);
            assert_int_equal(dinfer_send_generate(c, 77, &p, &cerr), 0);
            sent = true;
        }
        if (body == DINFER__V1__FRAME__BODY_ERROR) {
            assert_int_equal((int)f->error->code, 6);
            assert_non_null(strstr(f->error->message, "already live"));
            refused = true;
        }
        wire_frame_free(f);
        done += body == DINFER__V1__FRAME__BODY_DONE;
    }
    /* refused while the first ran (which then ran unharmed to its 100 tokens); or, on a machine so
     * loaded that this client read the first chunk after the request had ended, the second was a
     * new request of its own and ran its 100 tokens too */
    if (!refused)
        fprintf(stderr, "the first request ended before its duplicate arrived: the refusal went unchecked\n");
    assert_int_equal(n, refused ? 100 : 200);
    /* cancel: of an unknown id, then of a live request */
    assert_int_equal(dinfer_send_cancel(c, 999, &cerr), 0);
    expect_error(c, 999, 5, "no live request 999");
    /* the cancel goes once the request has streamed a token (sent back to back, a fast machine once
     * finished all 100 tokens before reading the cancel); on a machine so loaded that the request
     * still ran to its end before the server read the cancel (its end, then the cancel refused as
     * of no live request), again under a new id, up to 5 times */
    bool cancelled = false;
    for (uint64_t id = 78; !cancelled && id < 83; id++) {
        assert_int_equal(dinfer_send_generate(c, id, &p, &cerr), 0);
        wire_frame *f;
        assert_int_equal(dinfer_next_frame(c, 10000, &f, &cerr), 1);
        assert_int_equal(f->request_id, id);
        assert_int_equal((int)f->body_case, DINFER__V1__FRAME__BODY_CHUNK);
        wire_frame_free(f);
        assert_int_equal(dinfer_send_cancel(c, id, &cerr), 0);
        for (;;) { /* the request's chunks up to its end: the cancel's error, or its own end */
            assert_int_equal(dinfer_next_frame(c, 10000, &f, &cerr), 1);
            assert_int_equal(f->request_id, id);
            const int body = (int)f->body_case;
            if (body == DINFER__V1__FRAME__BODY_ERROR) {
                assert_int_equal((int)f->error->code, 1);
                assert_non_null(strstr(f->error->message, "cancelled by the client"));
                cancelled = true;
            }
            wire_frame_free(f);
            if (body == DINFER__V1__FRAME__BODY_ERROR)
                break;
            if (body == DINFER__V1__FRAME__BODY_DONE) {
                fprintf(stderr, "request %llu ended before its cancel arrived: again\n", (unsigned long long)id);
                expect_error(c, id, 5, "no live request");
                break;
            }
        }
    }
    assert_true(cancelled);
    still_serving(c);
    dinfer_close(c);
}

static int64_t stat_of(const char *which)
{
    dinfer_client *c = connect_ok();
    wire_frame *f;
    assert_int_equal(dinfer_stats(c, &f, &cerr), 0);
    assert_int_equal(f->body_case, DINFER__V1__FRAME__BODY_STATS_RESPONSE);
    const Dinfer__V1__StatsResponse *s = f->stats_response;
    int64_t v = strcmp(which, "used") == 0      ? s->kv_blocks_used
                : strcmp(which, "running") == 0   ? s->running
                : strcmp(which, "preemptions") == 0 ? (int64_t)s->preemptions
                                                    : s->queue_length;
    wire_frame_free(f);
    dinfer_close(c);
    return v;
}

/* Waits (up to 10 s) until no request runs and every KV block is free. */
static void expect_idle_and_free(void)
{
    for (int i = 0; i < 200; i++) {
        if (stat_of("used") == 0 && stat_of("running") == 0 && stat_of("queue") == 0)
            return;
        usleep(50000);
    }
    fail_msg("the server did not return to idle with every KV block free");
}

static void test_disconnects_and_silent_clients(void **state)
{
    (void)state;
    int32_t prompt[4] = {5, 6, 7, 8};
    dinfer_params p;
    dinfer_params_init(&p);
    p.prompt = prompt, p.prompt_len = 4, p.max_tokens = 100, p.ignore_eos = true;
    /* a client that disconnects mid-stream: its request is cancelled and its blocks freed */
    dinfer_client *a = connect_ok();
    assert_int_equal(dinfer_send_generate(a, 1, &p, &cerr), 0);
    wire_frame *f;
    assert_int_equal(dinfer_next_frame(a, 10000, &f, &cerr), 1);
    assert_int_equal(f->body_case, DINFER__V1__FRAME__BODY_CHUNK);
    wire_frame_free(f);
    dinfer_close(a);
    expect_idle_and_free();
    /* a client that never reads: others are served meanwhile */
    dinfer_client *silent = connect_ok();
    p.logprobs = 20;
    for (uint64_t id = 1; id <= 16; id++)
        assert_int_equal(dinfer_send_generate(silent, id, &p, &cerr), 0);
    dinfer_client *b = connect_ok();
    still_serving(b);
    dinfer_close(b);
    dinfer_close(silent);
    expect_idle_and_free();
}

static void test_health(void **state)
{
    (void)state;
    dinfer_client *c = connect_ok();
    wire_frame *f;
    assert_int_equal(dinfer_health(c, &f, &cerr), 0);
    assert_int_equal(f->body_case, DINFER__V1__FRAME__BODY_HEALTH_RESPONSE);
    assert_true(f->health_response->ready);
    assert_int_equal(f->health_response->vocab_size, (uint32_t)model.cfg.vocab_size);
    assert_int_equal(f->health_response->world_size, f->health_response->tp * f->health_response->pp);
    wire_frame_free(f);
    dinfer_close(c);
}

static void test_auth(void **state)
{
    (void)state;
    if (!token)
        skip();
    const char *saved = token;
    dinfer_client *c;
    int32_t prompt[2] = {1, 2};
    dinfer_params p;
    dinfer_params_init(&p);
    p.prompt = prompt, p.prompt_len = 2;
    const char *tries[2] = {NULL, "not-the-token"};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(dinfer_connect(&c, host, port, tries[i], &cerr), 0);
        assert_int_equal(dinfer_send_generate(c, 3, &p, &cerr), 0);
        expect_error(c, 3, 16, i == 0 ? "needs an auth token" : "wrong auth token");
        wire_frame *f;
        assert_int_equal(dinfer_health(c, &f, &cerr), 0);
        assert_int_equal(f->body_case, DINFER__V1__FRAME__BODY_ERROR);
        assert_int_equal((int)f->error->code, 16);
        wire_frame_free(f);
        dinfer_close(c);
    }
    token = saved;
    c = connect_ok();
    still_serving(c);
    dinfer_close(c);
}

static void test_kv_accounting_at_end(void **state)
{
    (void)state;
    expect_idle_and_free();
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: server_test HOST:PORT FIXTURE_DIR [AUTH_TOKEN]\n");
        return 2;
    }
    static char h[256];
    const char *colon = strrchr(argv[1], ':');
    snprintf(h, sizeof h, "%.*s", (int)(colon - argv[1]), argv[1]);
    host = h;
    port = atoi(colon + 1);
    token = argc > 3 ? argv[3] : NULL;
    base_err err;
    rt_config cfg;
    rt_shard s;
    be = rt_cpu_backend_create(1);
    if (rt_config_load(&cfg, argv[2], &err) || (rt_shard_whole(&s, &cfg), 0) ||
        rt_model_load(&model, &cfg, &s, argv[2], be, &err)) {
        fprintf(stderr, "server_test: %s\n", err.msg);
        return 2;
    }
    const struct CMUnitTest all[] = {
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_concurrent_clients_match_offline),
        cmocka_unit_test(test_seeded_sampling_reproducible),
        cmocka_unit_test(test_ends_mid_flight),
        cmocka_unit_test(test_broken_streams),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_disconnects_and_silent_clients),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_kv_accounting_at_end),
    };
    int rc = cmocka_run_group_tests(all, NULL, NULL);
    rt_model_free(&model);
    be->ops->destroy(be);
    return rc;
}
