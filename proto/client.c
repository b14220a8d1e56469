#include "proto/client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HELD_MAX 4096

struct dinfer_client {
    int fd;
    char *token;
    wire_decoder dec;
    uint64_t next_id;
    wire_frame **held; /* frames received for other streams while waiting for one */
    int n_held, head;
};

void dinfer_params_init(dinfer_params *p)
{
    memset(p, 0, sizeof *p);
    p->max_tokens = 16;
    p->top_p = 1.0f;
}

int dinfer_connect(dinfer_client **out, const char *host, int port, const char *auth_token, base_err *err)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g != 0)
        return base_errf(err, "%s:%d: %s", host, port, gai_strerror(g));
    int fd = -1, saved = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            saved = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return base_errf(err, "%s:%d: cannot connect: %s", host, port, strerror(saved));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    dinfer_client *c = calloc(1, sizeof *c);
    if (c)
        c->held = calloc(HELD_MAX, sizeof *c->held);
    if (!c || !c->held || (auth_token && !(c->token = strdup(auth_token)))) {
        if (c)
            free(c->held);
        free(c);
        close(fd);
        return base_errf(err, "out of memory");
    }
    c->fd = fd;
    c->next_id = 1u << 30; /* ids of the blocking calls, apart from small user-chosen ones */
    wire_decoder_init(&c->dec, 64u << 20);
    *out = c;
    return 0;
}

void dinfer_close(dinfer_client *c)
{
    if (!c)
        return;
    close(c->fd);
    for (int i = 0; i < c->n_held; i++)
        wire_frame_free(c->held[(c->head + i) % HELD_MAX]);
    free(c->held);
    wire_decoder_free(&c->dec);
    free(c->token);
    free(c);
}

int dinfer_fd(const dinfer_client *c) { return c->fd; }

int dinfer_send_frame(dinfer_client *c, const wire_frame *f, base_err *err)
{
    if (wire_send(c->fd, f) != 0)
        return base_errf(err, "send failed: %s", errno ? strerror(errno) : "the server closed the connection");
    return 0;
}

static void init_frame(dinfer_client *c, wire_frame *f, uint64_t id)
{
    dinfer__v1__frame__init(f);
    f->has_request_id = 1;
    f->request_id = id;
    f->auth_token = c->token;
}

int dinfer_send_generate(dinfer_client *c, uint64_t id, const dinfer_params *p, base_err *err)
{
    Dinfer__V1__GenerateRequest g = DINFER__V1__GENERATE_REQUEST__INIT;
    g.n_prompt_tokens = p->prompt_len;
    g.prompt_tokens = (int32_t *)p->prompt;
    g.prompt_text = (char *)p->prompt_text;
    g.n_stop = p->n_stop_strings;
    g.stop = (char **)p->stop;
    g.has_max_tokens = 1, g.max_tokens = p->max_tokens;
    g.has_temperature = 1, g.temperature = p->temperature;
    g.has_top_k = 1, g.top_k = p->top_k;
    g.has_top_p = 1, g.top_p = p->top_p;
    g.has_seed = p->has_seed, g.seed = p->seed;
    g.n_stop_token_ids = p->n_stop;
    g.stop_token_ids = (int32_t *)p->stop_ids;
    g.has_ignore_eos = 1, g.ignore_eos = p->ignore_eos;
    g.has_logprobs = p->logprobs > 0, g.logprobs = p->logprobs;
    g.has_deadline_ms = p->deadline_ms > 0, g.deadline_ms = p->deadline_ms;
    wire_frame f;
    init_frame(c, &f, id);
    f.body_case = DINFER__V1__FRAME__BODY_GENERATE;
    f.generate = &g;
    return dinfer_send_frame(c, &f, err);
}

int dinfer_send_cancel(dinfer_client *c, uint64_t id, base_err *err)
{
    Dinfer__V1__Cancel x = DINFER__V1__CANCEL__INIT;
    wire_frame f;
    init_frame(c, &f, id);
    f.body_case = DINFER__V1__FRAME__BODY_CANCEL;
    f.cancel = &x;
    return dinfer_send_frame(c, &f, err);
}

/* Reads from the socket until a frame is decoded or the timeout passes. */
static int read_frame(dinfer_client *c, int timeout_ms, wire_frame **out, base_err *err)
{
    for (;;) {
        base_err why;
        wire_status st = wire_decode_next(&c->dec, out, &why);
        if (st == WIRE_FRAME)
            return 1;
        if (st != WIRE_NEED_MORE)
            return base_errf(err, "from the server: %s", why.msg);
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0)
            return 0;
        uint8_t buf[65536];
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return base_errf(err, "%s", r == 0 ? "the server closed the connection" : strerror(errno));
        if (wire_decoder_feed(&c->dec, buf, (size_t)r))
            return base_errf(err, "out of memory");
    }
}

int dinfer_next_frame(dinfer_client *c, int timeout_ms, wire_frame **out, base_err *err)
{
    if (c->n_held > 0) {
        *out = c->held[c->head];
        c->head = (c->head + 1) % HELD_MAX;
        c->n_held--;
        return 1;
    }
    return read_frame(c, timeout_ms, out, err);
}

/* Waits for a frame of request id; others are held for dinfer_next_frame. */
static int frame_for(dinfer_client *c, uint64_t id, wire_frame **out, base_err *err)
{
    for (;;) {
        wire_frame *f;
        int r = read_frame(c, -1, &f, err);
        if (r <= 0)
            return -1;
        /* request_id 0 with UNAVAILABLE is about the connection: it ends every stream */
        if (f->request_id == id || (f->request_id == 0 && f->body_case == DINFER__V1__FRAME__BODY_ERROR &&
                                    f->error->code == DINFER__V1__STATUS_CODE__STATUS_UNAVAILABLE)) {
            *out = f;
            return 1;
        }
        if (c->n_held == HELD_MAX) {
            wire_frame_free(f);
            return base_errf(err, "more than %d frames of other streams held", HELD_MAX);
        }
        c->held[(c->head + c->n_held++) % HELD_MAX] = f;
    }
}

int dinfer_generate(dinfer_client *c, const dinfer_params *p, dinfer_chunk_fn on_chunk, void *ctx, dinfer_result *res,
                    base_err *err)
{
    memset(res, 0, sizeof *res);
    uint64_t id = c->next_id++;
    if (dinfer_send_generate(c, id, p, err))
        return -1;
    for (;;) {
        wire_frame *f;
        if (frame_for(c, id, &f, err) < 0)
            return -1;
        int end = 1;
        if (f->body_case == DINFER__V1__FRAME__BODY_CHUNK) {
            end = 0;
            if (on_chunk && on_chunk(ctx, f->chunk))
                dinfer_send_cancel(c, id, NULL);
        } else if (f->body_case == DINFER__V1__FRAME__BODY_DONE) {
            snprintf(res->finish_reason, sizeof res->finish_reason, "%s", f->done->finish_reason ? f->done->finish_reason : "");
            res->prompt_tokens = f->done->prompt_tokens;
            res->completion_tokens = f->done->completion_tokens;
            res->ttft_ms = f->done->ttft_ms;
            res->total_ms = f->done->total_ms;
        } else if (f->body_case == DINFER__V1__FRAME__BODY_ERROR) {
            res->status = f->error->code ? (int)f->error->code : 2;
            snprintf(res->message, sizeof res->message, "%s", f->error->message ? f->error->message : "");
        } else {
            res->status = 13;
            snprintf(res->message, sizeof res->message, "unexpected frame (body %d)", (int)f->body_case);
        }
        wire_frame_free(f);
        if (end)
            return 0;
    }
}

static int unary(dinfer_client *c, int which, wire_frame **out, base_err *err)
{
    uint64_t id = c->next_id++;
    Dinfer__V1__HealthRequest h = DINFER__V1__HEALTH_REQUEST__INIT;
    Dinfer__V1__StatsRequest s = DINFER__V1__STATS_REQUEST__INIT;
    wire_frame f;
    init_frame(c, &f, id);
    f.body_case = which;
    if (which == DINFER__V1__FRAME__BODY_HEALTH)
        f.health = &h;
    else
        f.stats = &s;
    if (dinfer_send_frame(c, &f, err))
        return -1;
    return frame_for(c, id, out, err) < 0 ? -1 : 0;
}

int dinfer_health(dinfer_client *c, wire_frame **out, base_err *err)
{
    return unary(c, DINFER__V1__FRAME__BODY_HEALTH, out, err);
}

int dinfer_stats(dinfer_client *c, wire_frame **out, base_err *err)
{
    return unary(c, DINFER__V1__FRAME__BODY_STATS, out, err);
}
