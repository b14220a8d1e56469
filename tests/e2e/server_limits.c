/* What a hostile but fair client can do to a dinfer-server, each bounded (server_limits.sh starts
 * the servers):
 *   flood ADDR PID       millions of 8-byte Health frames, never reading the replies: the server's
 *                        memory stays bounded and other clients are still served
 *   conns ADDR MAX       MAX connections are served; the next is refused with RESOURCE_EXHAUSTED;
 *                        after one closes, a new one is served again
 *   idle ADDR            a silent connection is closed (UNAVAILABLE) after --idle-timeout; an active
 *                        one is not
 *   frame ADDR           a frame begun and never finished is ended (DEADLINE_EXCEEDED) after
 *                        --frame-timeout
 *   rid0 ADDR            a generate with request_id 0 is refused (INVALID_ARGUMENT)
 *   emfile ADDR PID N    N connections against a server short of descriptors (ulimit -n): it does
 *                        not spin, and the connections it has are still served
 * Each prints what it measured and exits 1 on a failure. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "proto/client.h"
#include "proto/wire.h"

static const char *host;
static int port;
static base_err cerr; /* what a failed client call says */

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            fprintf(stderr, "FAIL (%s:%d): ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                  \
            fprintf(stderr, "\n");                         \
            exit(1);                                       \
        }                                                  \
    } while (0)

static int raw_connect(void)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, ps, &hints, &res) != 0)
        return -1;
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* The encoded Health frame (request_id rid, no token). */
static size_t health_frame(uint64_t rid, uint8_t *out, size_t cap)
{
    Dinfer__V1__HealthRequest h = DINFER__V1__HEALTH_REQUEST__INIT;
    wire_frame f = DINFER__V1__FRAME__INIT;
    f.has_request_id = 1, f.request_id = rid;
    f.body_case = DINFER__V1__FRAME__BODY_HEALTH;
    f.health = &h;
    wire_buf b = {0};
    CHECK(wire_buf_append(&b, &f) == 0 && b.len <= cap, "cannot encode a health frame");
    memcpy(out, b.data, b.len);
    size_t n = b.len;
    wire_buf_free(&b);
    return n;
}

/* Reads frames until one of the given body (or of body2), an EOF, or the timeout. Returns the frame
 * (free it), or NULL; *eof tells whether the server closed the connection. */
static wire_frame *read_until2(int fd, wire_decoder *d, int body, int body2, double seconds, int *eof)
{
    const double until = base_now() + seconds;
    *eof = 0;
    for (;;) {
        wire_frame *f = NULL;
        base_err why;
        wire_status st;
        while ((st = wire_decode_next(d, &f, &why)) == WIRE_FRAME) {
            if ((int)f->body_case == body || (int)f->body_case == body2)
                return f;
            wire_frame_free(f);
        }
        if (st != WIRE_NEED_MORE)
            return NULL;
        double left = until - base_now();
        if (left <= 0)
            return NULL;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
            continue;
        uint8_t buf[65536];
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r <= 0) {
            *eof = 1;
            return NULL;
        }
        wire_decoder_feed(d, buf, (size_t)r);
    }
}

static wire_frame *read_until(int fd, wire_decoder *d, int body, double seconds, int *eof)
{
    return read_until2(fd, d, body, body, seconds, eof);
}

/* The Error the server sends before closing, and whether it then closed: its code, or -1. */
static int error_then_eof(int fd, double seconds, char *msg, size_t n, int *closed)
{
    wire_decoder d;
    wire_decoder_init(&d, 1 << 20);
    int eof = 0, code = -1;
    wire_frame *f = read_until(fd, &d, DINFER__V1__FRAME__BODY_ERROR, seconds, &eof);
    if (f) {
        code = f->error->code;
        snprintf(msg, n, "%s", f->error->message ? f->error->message : "");
        wire_frame_free(f);
        read_until(fd, &d, -1, 2.0, &eof);
    }
    *closed = eof;
    wire_decoder_free(&d);
    return code;
}

/* A health request answered on a connection of the client library: the server still serves. */
static int served(const char *token)
{
    dinfer_client *c;
    if (dinfer_connect(&c, host, port, token, &cerr) != 0)
        return 0;
    wire_frame *f = NULL;
    int ok = dinfer_health(c, &f, &cerr) == 0 && f->body_case == DINFER__V1__FRAME__BODY_HEALTH_RESPONSE;
    wire_frame_free(f);
    dinfer_close(c);
    return ok;
}

/* A health request answered on a raw connection already open. */
static int raw_health_ok(int fd)
{
    uint8_t fr[64];
    size_t n = health_frame(77, fr, sizeof fr);
    if (send(fd, fr, n, MSG_NOSIGNAL) != (ssize_t)n)
        return 0;
    wire_decoder d;
    wire_decoder_init(&d, 1 << 20);
    int eof;
    /* with an auth token required the answer is an Error: still an answer */
    wire_frame *f =
        read_until2(fd, &d, DINFER__V1__FRAME__BODY_HEALTH_RESPONSE, DINFER__V1__FRAME__BODY_ERROR, 5.0, &eof);
    int ok = f != NULL;
    wire_frame_free(f);
    wire_decoder_free(&d);
    return ok;
}

static long status_kb(int pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, strlen(key)) == 0)
            v = atol(line + strlen(key) + 1);
    if (f)
        fclose(f);
    return v;
}

static double cpu_seconds(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void test_flood(int pid, const char *token)
{
    long rss0 = status_kb(pid, "VmRSS:");
    int fd = raw_connect();
    CHECK(fd >= 0, "cannot connect");
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    uint8_t one[64], buf[65536];
    size_t fl = health_frame(1, one, sizeof one), k = 0;
    while (k + fl <= sizeof buf) {
        memcpy(buf + k, one, fl);
        k += fl;
    }
    size_t sent = 0, off = 0;
    const double until = base_now() + 3.0;
    while (base_now() < until) {
        ssize_t w = send(fd, buf + off, k - off, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
            off = (off + (size_t)w) % k;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 5);
        } else {
            break; /* dropped by the server: also bounded */
        }
    }
    long rss1 = status_kb(pid, "VmRSS:");
    printf("flood: %zu frames of %zu bytes sent in 3 s without reading a reply; server RSS %ld -> %ld kB\n",
           sent / fl, fl, rss0, rss1);
    CHECK(rss0 > 0 && rss1 > 0, "cannot read the server's RSS");
    CHECK(rss1 - rss0 < 48 * 1024, "the server grew by %ld kB for one client that does not read", rss1 - rss0);
    CHECK(served(token), "another client is not served during the flood");
    close(fd);
    CHECK(served(token), "another client is not served after the flood");
    printf("flood: bounded (%+ld kB), other clients served\n", rss1 - rss0);
}

static void test_conns(int max, const char *token)
{
    int *fds = calloc((size_t)max + 1, sizeof *fds);
    for (int i = 0; i < max; i++) {
        fds[i] = raw_connect();
        CHECK(fds[i] >= 0 && raw_health_ok(fds[i]), "connection %d of %d was not served", i + 1, max);
    }
    int extra = raw_connect();
    CHECK(extra >= 0, "connect failed");
    char msg[256];
    int closed = 0, code = error_then_eof(extra, 5.0, msg, sizeof msg, &closed);
    printf("conns: connection %d: code %d \"%s\", closed %d\n", max + 1, code, msg, closed);
    CHECK(code == DINFER__V1__STATUS_CODE__STATUS_RESOURCE_EXHAUSTED && strstr(msg, "--max-connections") && closed,
          "the connection over --max-connections was not refused with RESOURCE_EXHAUSTED");
    close(extra);
    close(fds[0]);
    usleep(300000);
    fds[0] = raw_connect();
    CHECK(fds[0] >= 0 && raw_health_ok(fds[0]), "a connection after one closed was not served");
    /* a burst of refusals: every one told, the log rate-limited (server_limits.sh counts lines) */
    for (int i = 0; i < 40; i++) {
        int fd = raw_connect();
        CHECK(fd >= 0, "connect failed");
        code = error_then_eof(fd, 5.0, msg, sizeof msg, &closed);
        CHECK(code == DINFER__V1__STATUS_CODE__STATUS_RESOURCE_EXHAUSTED, "refusal %d got code %d", i, code);
        close(fd);
    }
    for (int i = 0; i < max; i++)
        close(fds[i]);
    free(fds);
    (void)token;
    printf("conns: %d served, the next and 40 more refused with RESOURCE_EXHAUSTED, one served after a close\n", max);
}

static void test_idle(void)
{
    int quiet = raw_connect(), busy = raw_connect();
    CHECK(quiet >= 0 && busy >= 0, "connect failed");
    const double t0 = base_now();
    /* the busy one asks for health every 0.3 s: never idle */
    double closed_at = 0;
    char msg[256] = "";
    int code = -1;
    wire_decoder d;
    wire_decoder_init(&d, 1 << 20);
    while (base_now() - t0 < 3.0) {
        CHECK(raw_health_ok(busy), "an active connection was closed after %.1f s", base_now() - t0);
        if (closed_at == 0) {
            int eof;
            wire_frame *f = read_until(quiet, &d, DINFER__V1__FRAME__BODY_ERROR, 0.3, &eof);
            if (f) {
                code = f->error->code;
                snprintf(msg, sizeof msg, "%s", f->error->message ? f->error->message : "");
                wire_frame_free(f);
                read_until(quiet, &d, -1, 1.0, &eof);
                CHECK(eof, "the idle connection was told but not closed");
                closed_at = base_now() - t0;
            }
        } else {
            usleep(300000);
        }
    }
    wire_decoder_free(&d);
    printf("idle: the silent connection closed after %.2f s: code %d \"%s\"; the active one served for 3 s\n",
           closed_at, code, msg);
    CHECK(closed_at > 0.8 && closed_at < 2.5, "the silent connection was closed after %.2f s (--idle-timeout 1)",
          closed_at);
    CHECK(code == DINFER__V1__STATUS_CODE__STATUS_UNAVAILABLE && strstr(msg, "idle"), "wrong idle status");
    close(quiet);
    close(busy);
}

static void test_frame(void)
{
    int fd = raw_connect();
    CHECK(fd >= 0, "connect failed");
    const uint8_t part[14] = {0, 0, 0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; /* 100 bytes promised, 10 sent */
    CHECK(send(fd, part, sizeof part, MSG_NOSIGNAL) == (ssize_t)sizeof part, "send failed");
    const double t0 = base_now();
    char msg[256];
    int closed = 0, code = error_then_eof(fd, 5.0, msg, sizeof msg, &closed);
    printf("frame: a frame begun and never finished: code %d \"%s\" after %.2f s, closed %d\n", code, msg,
           base_now() - t0, closed);
    CHECK(code == DINFER__V1__STATUS_CODE__STATUS_DEADLINE_EXCEEDED && closed && base_now() - t0 < 3.5,
          "the half frame was not ended within --frame-timeout");
    close(fd);
}

static void test_rid0(const char *token)
{
    dinfer_client *c;
    CHECK(dinfer_connect(&c, host, port, token, &cerr) == 0, "%s", cerr.msg);
    int32_t prompt[2] = {1, 2};
    dinfer_params p;
    dinfer_params_init(&p);
    p.prompt = prompt, p.prompt_len = 2, p.max_tokens = 2;
    CHECK(dinfer_send_generate(c, 0, &p, &cerr) == 0, "send failed");
    wire_frame *f = NULL;
    CHECK(dinfer_next_frame(c, 5000, &f, &cerr) == 1, "no reply");
    CHECK(f->body_case == DINFER__V1__FRAME__BODY_ERROR &&
              f->error->code == DINFER__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT && strstr(f->error->message, "request_id 0"),
          "request_id 0 was not refused");
    printf("rid0: \"%s\"\n", f->error->message);
    wire_frame_free(f);
    dinfer_close(c);
}

static void test_emfile(int pid, int n)
{
    int *fds = calloc((size_t)n, sizeof *fds);
    int opened = 0;
    for (int i = 0; i < n; i++) {
        fds[i] = raw_connect(); /* the kernel completes the handshake whether the server accepts or not */
        opened += fds[i] >= 0;
    }
    usleep(500000);
    const double c0 = cpu_seconds(pid), t0 = base_now();
    usleep(2000000);
    const double used = cpu_seconds(pid) - c0, wall = base_now() - t0;
    int refused = 0, told = 0;
    for (int i = n - 1; i > 0; i--) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        if (fds[i] >= 0 && poll(&p, 1, 0) > 0) {
            char msg[256];
            int closed;
            told += error_then_eof(fds[i], 0.5, msg, sizeof msg, &closed) ==
                    DINFER__V1__STATUS_CODE__STATUS_RESOURCE_EXHAUSTED;
            refused++;
        }
    }
    const int first_ok = raw_health_ok(fds[0]);
    printf("emfile: %d connections opened; the server used %.2f s of CPU in %.2f s; %d answered "
           "(%d RESOURCE_EXHAUSTED); the first connection served: %d\n",
           opened, used, wall, refused, told, first_ok);
    CHECK(used >= 0 && used < 0.5 * wall, "the server spins at the descriptor limit (%.2f s CPU in %.2f s)", used,
          wall);
    CHECK(first_ok, "a connection the server had was not served at the descriptor limit");
    CHECK(told > 0, "no refused connection was told RESOURCE_EXHAUSTED");
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: server_limits flood|conns|idle|frame|rid0|emfile HOST:PORT [PID|MAX] [N] [TOKEN]\n");
        return 2;
    }
    static char h[256];
    const char *colon = strrchr(argv[2], ':');
    CHECK(colon, "bad address");
    snprintf(h, sizeof h, "%.*s", (int)(colon - argv[2]), argv[2]);
    host = h;
    port = atoi(colon + 1);
    const char *token = getenv("DINFER_TOKEN");
    const char *mode = argv[1];
    if (strcmp(mode, "flood") == 0 && argc > 3)
        test_flood(atoi(argv[3]), token);
    else if (strcmp(mode, "conns") == 0 && argc > 3)
        test_conns(atoi(argv[3]), token);
    else if (strcmp(mode, "idle") == 0)
        test_idle();
    else if (strcmp(mode, "frame") == 0)
        test_frame();
    else if (strcmp(mode, "rid0") == 0)
        test_rid0(token);
    else if (strcmp(mode, "emfile") == 0 && argc > 4)
        test_emfile(atoi(argv[3]), atoi(argv[4]));
    else
        CHECK(0, "unknown mode %s", mode);
    return 0;
}
