/* The client library (proto/client.c) against a scripted server on a real socket in this process:
 * a streamed generation (chunks to the callback, frames of other streams kept for
 * dinfer_next_frame), the auth token on every frame, unary calls, an UNAVAILABLE on the connection
 * (request_id 0) ending the stream, a server that closes mid-stream, and a refused connect, each
 * failure with its reason in base_err. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/client.h"
#include "proto/frames.h"

static int listen_fd, port;
static char last_token[64];

static void send_buf(int fd, wire_buf *b)
{
    for (size_t off = b->off; off < b->len;) {
        ssize_t w = send(fd, b->data + off, b->len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    wire_buf_free(b);
}

/* The script, by max_tokens of the generate request: 1 streams two tokens (and a frame for
 * request 999 between them) then Done; 2 answers UNAVAILABLE on the connection; 3 sends a token
 * and closes. Health gets a HealthResponse. */
static void *server(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        wire_decoder d;
        wire_decoder_init(&d, 1 << 20);
        wire_frame *f;
        base_err err;
        int open = 1;
        while (open && wire_recv(fd, &d, &f, &err) == 0) {
            snprintf(last_token, sizeof last_token, "%s", f->auth_token ? f->auth_token : "");
            wire_buf b = {0};
            const uint64_t rid = f->request_id;
            if (f->body_case == DINFER__V1__FRAME__BODY_HEALTH) {
                Dinfer__V1__HealthResponse h = DINFER__V1__HEALTH_RESPONSE__INIT;
                h.has_ready = 1, h.ready = 1, h.model = "scripted";
                wire_put_health(&b, rid, &h);
            } else if (f->body_case == DINFER__V1__FRAME__BODY_GENERATE) {
                const uint32_t mode = f->generate->max_tokens;
                if (mode == 1) {
                    wire_done done = {.finish_reason = "length", .prompt_tokens = 2, .completion_tokens = 2};
                    wire_put_token(&b, rid, 10, -0.5f, 0, NULL, NULL, NULL);
                    wire_put_token(&b, 999, 77, -0.1f, 0, NULL, NULL, NULL);
                    wire_put_token(&b, rid, 11, -0.25f, 0, NULL, NULL, NULL);
                    wire_put_done(&b, rid, &done);
                } else if (mode == 2) {
                    wire_put_error(&b, 0, DINFER__V1__STATUS_CODE__STATUS_UNAVAILABLE, "the job lost rank 1");
                } else {
                    wire_put_token(&b, rid, 12, -0.5f, 0, NULL, NULL, NULL);
                    open = 0;
                }
            }
            send_buf(fd, &b);
            wire_frame_free(f);
        }
        wire_decoder_free(&d);
        close(fd);
    }
}

typedef struct got {
    int n;
    int32_t tokens[8];
} got;

static int on_chunk(void *ctx, const Dinfer__V1__TokenChunk *ch)
{
    got *g = ctx;
    for (size_t i = 0; i < ch->n_tokens && g->n < 8; i++)
        g->tokens[g->n++] = ch->tokens[i];
    return 0;
}

static dinfer_params params(uint32_t mode)
{
    static const int32_t prompt[2] = {1, 2};
    dinfer_params p;
    dinfer_params_init(&p);
    p.prompt = prompt, p.prompt_len = 2, p.max_tokens = mode;
    return p;
}

static void test_stream_and_held_frames(void **state)
{
    (void)state;
    dinfer_client *c;
    base_err err;
    assert_int_equal(dinfer_connect(&c, "127.0.0.1", port, "tok-123", &err), 0);
    dinfer_params p = params(1);
    dinfer_result r;
    got g = {0};
    assert_int_equal(dinfer_generate(c, &p, on_chunk, &g, &r, &err), 0);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.finish_reason, "length");
    assert_int_equal(r.completion_tokens, 2);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.tokens[0], 10);
    assert_int_equal(g.tokens[1], 11);
    assert_string_equal(last_token, "tok-123"); /* the token rides on every frame */
    wire_frame *f = NULL;
    assert_int_equal(dinfer_next_frame(c, 1000, &f, &err), 1); /* request 999's frame was held */
    assert_int_equal(f->request_id, 999);
    assert_int_equal(f->chunk->tokens[0], 77);
    wire_frame_free(f);
    assert_int_equal(dinfer_next_frame(c, 50, &f, &err), 0); /* nothing more: a timeout */
    assert_int_equal(dinfer_health(c, &f, &err), 0);
    assert_string_equal(f->health_response->model, "scripted");
    wire_frame_free(f);
    dinfer_close(c);
}

static void test_failures(void **state)
{
    (void)state;
    dinfer_client *c;
    base_err err;
    dinfer_result r;
    /* UNAVAILABLE for the connection ends the request with that status */
    assert_int_equal(dinfer_connect(&c, "127.0.0.1", port, NULL, &err), 0);
    dinfer_params p = params(2);
    assert_int_equal(dinfer_generate(c, &p, NULL, NULL, &r, &err), 0);
    assert_int_equal(r.status, DINFER__V1__STATUS_CODE__STATUS_UNAVAILABLE);
    assert_string_equal(r.message, "the job lost rank 1");
    dinfer_close(c);
    /* the server closes mid-stream: a failure that says so */
    assert_int_equal(dinfer_connect(&c, "127.0.0.1", port, NULL, &err), 0);
    p = params(3);
    err.msg[0] = 0;
    assert_int_equal(dinfer_generate(c, &p, NULL, NULL, &r, &err), -1);
    assert_string_equal(err.msg, "the server closed the connection");
    dinfer_close(c);
    /* nobody listening */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    getsockname(s, (struct sockaddr *)&a, &al);
    close(s); /* bound, then closed: the port refuses */
    assert_int_equal(dinfer_connect(&c, "127.0.0.1", ntohs(a.sin_port), NULL, &err), -1);
    assert_non_null(strstr(err.msg, "cannot connect"));
    assert_int_equal(dinfer_connect(&c, "no-such-host.invalid", 7070, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "no-such-host.invalid:7070"));
}

int main(void)
{
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(listen_fd, 8) != 0)
        return 1;
    getsockname(listen_fd, (struct sockaddr *)&a, &al);
    port = ntohs(a.sin_port);
    pthread_t th;
    pthread_create(&th, NULL, server, NULL);
    pthread_detach(th);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_and_held_frames),
        cmocka_unit_test(test_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
