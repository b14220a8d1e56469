/* The network thread of dinfer-server: a poll loop over the listening socket, every connection
 * and a wake pipe. It decodes frames, checks authentication, answers Health and Stats from the
 * engine's snapshot, hands Generate and Cancel to the engine loop, and writes the frames the engine
 * queues, never blocking on a client. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <signal.h>
#include <unistd.h>

#include "launch/server.h"
#include "base/clock.h"
#include "base/log.h"

typedef struct conn {
    uint64_t id;
    int fd;
    wire_decoder dec;
    wire_buf out;
    bool closing; /* close once out is written (after a broken stream) */
} conn;

typedef struct net {
    srv_shared *s;
    int listen_fd;
    conn **conns;
    int n_conns;
    uint64_t next_id;
} net;

void srv_wake(int fds[2])
{
    char b = 1;
    ssize_t r = write(fds[1], &b, 1); /* a full pipe already means "wake up" */
    (void)r;
}

static void drain_pipe(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

static int make_pipe(int fds[2])
{
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
        return -1;
    return 0;
}

int srv_shared_init(srv_shared *s, const srv_options *opt)
{
    memset(s, 0, sizeof *s);
    s->opt = *opt;
    pthread_mutex_init(&s->mu, NULL);
    if (make_pipe(s->engine_wake) || make_pipe(s->net_wake))
        return -1;
    return 0;
}

void srv_shared_destroy(srv_shared *s)
{
    for (srv_in *m = s->in_head, *n; m; m = n) {
        n = m->next;
        wire_frame_free(m->frame);
        free(m);
    }
    for (srv_out *o = s->out_head, *n; o; o = n) {
        n = o->next;
        wire_buf_free(&o->buf);
        free(o);
    }
    close(s->engine_wake[0]), close(s->engine_wake[1]);
    close(s->net_wake[0]), close(s->net_wake[1]);
    pthread_mutex_destroy(&s->mu);
}

static void push_in(srv_shared *s, srv_in_kind kind, uint64_t conn, uint64_t rid, wire_frame *f)
{
    srv_in *m = calloc(1, sizeof *m);
    if (!m) {
        wire_frame_free(f);
        return;
    }
    *m = (srv_in){.kind = kind, .conn = conn, .rid = rid, .frame = f, .arrival = base_now()};
    pthread_mutex_lock(&s->mu);
    if (s->in_tail)
        s->in_tail->next = m;
    else
        s->in_head = m;
    s->in_tail = m;
    pthread_mutex_unlock(&s->mu);
    srv_wake(s->engine_wake);
}

/* ---- replies the network thread writes itself ---- */

static void reply(conn *c, const wire_frame *f)
{
    if (wire_buf_append(&c->out, f) != 0)
        c->closing = true;
}

static void reply_error(conn *c, uint64_t rid, int code, const char *msg)
{
    Dinfer__V1__Error e = DINFER__V1__ERROR__INIT;
    e.has_code = 1, e.code = (Dinfer__V1__StatusCode)code;
    e.message = (char *)msg;
    wire_frame f = DINFER__V1__FRAME__INIT;
    f.has_request_id = 1, f.request_id = rid;
    f.body_case = DINFER__V1__FRAME__BODY_ERROR;
    f.error = &e;
    reply(c, &f);
}

static void reply_health(net *n, conn *c, uint64_t rid)
{
    srv_shared *s = n->s;
    Dinfer__V1__HealthResponse h = DINFER__V1__HEALTH_RESPONSE__INIT;
    pthread_mutex_lock(&s->mu);
    srv_snapshot snap = s->snap;
    bool ready = s->ready && !s->stop;
    pthread_mutex_unlock(&s->mu);
    h.has_ready = 1, h.ready = ready;
    h.model = snap.model, h.architecture = snap.arch;
    h.has_tp = 1, h.tp = (uint32_t)snap.tp;
    h.has_pp = 1, h.pp = (uint32_t)snap.pp;
    h.has_world_size = 1, h.world_size = (uint32_t)snap.world;
    h.has_vocab_size = 1, h.vocab_size = (uint32_t)snap.vocab;
    h.has_max_context = 1, h.max_context = (uint32_t)snap.max_context;
    wire_frame f = DINFER__V1__FRAME__INIT;
    f.has_request_id = 1, f.request_id = rid;
    f.body_case = DINFER__V1__FRAME__BODY_HEALTH_RESPONSE;
    f.health_response = &h;
    reply(c, &f);
}

static void reply_stats(net *n, conn *c, uint64_t rid)
{
    srv_shared *s = n->s;
    pthread_mutex_lock(&s->mu);
    srv_snapshot snap = s->snap;
    uint32_t conns = (uint32_t)n->n_conns;
    pthread_mutex_unlock(&s->mu);
    const rt_sched_stats st = snap.st;
    Dinfer__V1__StatsResponse r = DINFER__V1__STATS_RESPONSE__INIT;
#define SET(field, v) (r.has_##field = 1, r.field = (v))
    SET(queue_length, (uint32_t)st.waiting);
    SET(running, (uint32_t)st.running);
    SET(kv_blocks_used, (uint32_t)st.kv_blocks_used);
    SET(kv_blocks_free, (uint32_t)st.kv_blocks_free);
    SET(kv_block_size, (uint32_t)st.kv_block_size);
    SET(tokens_per_second, st.tokens_per_second);
    SET(ttft_p50_ms, st.ttft_p50 * 1e3);
    SET(ttft_p99_ms, st.ttft_p99 * 1e3);
    SET(tpot_p50_ms, st.tpot_p50 * 1e3);
    SET(tpot_p99_ms, st.tpot_p99 * 1e3);
    SET(requests_finished, st.finished);
    SET(steps, st.steps);
    SET(avg_tokens_per_step, st.steps ? (double)st.step_tokens / (double)st.steps : 0.0);
    SET(preemptions, st.preemptions);
    SET(connections, conns);
    SET(weight_bytes, snap.weight_bytes);
    SET(workspace_bytes, snap.workspace_bytes);
    SET(kv_cache_bytes, snap.kv_cache_bytes);
#undef SET
    r.device = snap.device;
    wire_frame f = DINFER__V1__FRAME__INIT;
    f.has_request_id = 1, f.request_id = rid;
    f.body_case = DINFER__V1__FRAME__BODY_STATS_RESPONSE;
    f.stats_response = &r;
    reply(c, &f);
}

/* Constant-time comparison, so the token cannot be guessed a byte at a time. */
static bool token_ok(const char *want, const char *got)
{
    if (!want)
        return true;
    if (!got)
        return false;
    size_t a = strlen(want), b = strlen(got);
    unsigned char d = (unsigned char)(a != b);
    for (size_t i = 0; i < a; i++)
        d |= (unsigned char)(want[i] ^ got[i < b ? i : 0]);
    return d == 0;
}

static void handle_frame(net *n, conn *c, wire_frame *f)
{
    srv_shared *s = n->s;
    uint64_t rid = f->request_id;
    bool request = f->body_case == DINFER__V1__FRAME__BODY_GENERATE || f->body_case == DINFER__V1__FRAME__BODY_CANCEL ||
                   f->body_case == DINFER__V1__FRAME__BODY_HEALTH || f->body_case == DINFER__V1__FRAME__BODY_STATS;
    if (!request) {
        char msg[96];
        snprintf(msg, sizeof msg, "unknown or unexpected message (frame body %d): send generate, cancel, health or stats",
                 (int)f->body_case);
        reply_error(c, rid, DINFER__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, msg);
    } else if (!token_ok(s->opt.auth_token, f->auth_token)) {
        reply_error(c, rid, DINFER__V1__STATUS_CODE__STATUS_UNAUTHENTICATED,
                    f->auth_token && *f->auth_token ? "wrong auth token" : "this server needs an auth token");
    } else if (f->body_case == DINFER__V1__FRAME__BODY_HEALTH) {
        reply_health(n, c, rid);
    } else if (f->body_case == DINFER__V1__FRAME__BODY_STATS) {
        reply_stats(n, c, rid);
    } else if (f->body_case == DINFER__V1__FRAME__BODY_CANCEL) {
        push_in(s, SRV_CANCEL, c->id, rid, NULL);
    } else if (s->stop) {
        reply_error(c, rid, DINFER__V1__STATUS_CODE__STATUS_UNAVAILABLE, "the server is shutting down");
    } else {
        push_in(s, SRV_GENERATE, c->id, rid, f);
        return; /* the engine owns the frame now */
    }
    wire_frame_free(f);
}

static void close_conn(net *n, int i, const char *why)
{
    conn *c = n->conns[i];
    if (why)
        base_log(0, "connection %llu closed: %s", (unsigned long long)c->id, why);
    push_in(n->s, SRV_DISCONNECT, c->id, 0, NULL);
    close(c->fd);
    wire_decoder_free(&c->dec);
    wire_buf_free(&c->out);
    free(c);
    n->conns[i] = n->conns[--n->n_conns];
    pthread_mutex_lock(&n->s->mu);
    n->s->connections = n->n_conns;
    pthread_mutex_unlock(&n->s->mu);
}

/* Reads what is there and handles every complete frame. False when the connection must close. */
static bool on_readable(net *n, conn *c, const char **why)
{
    uint8_t buf[65536];
    for (;;) {
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (r <= 0) {
            *why = r == 0 ? (wire_decoder_pending(&c->dec) ? "the client closed it in the middle of a frame" : NULL)
                          : strerror(errno);
            return false;
        }
        if (wire_decoder_feed(&c->dec, buf, (size_t)r) != 0) {
            *why = "out of memory";
            return false;
        }
        if ((size_t)r < sizeof buf)
            break;
    }
    for (;;) {
        wire_frame *f = NULL;
        char msg[160];
        wire_status st = wire_decode_next(&c->dec, &f, msg, sizeof msg);
        if (st == WIRE_NEED_MORE)
            return true;
        if (st == WIRE_BAD_FRAME) {
            reply_error(c, 0, DINFER__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, msg);
            continue;
        }
        if (st == WIRE_TOO_LARGE) { /* the stream cannot be followed past this: say so, then close */
            reply_error(c, 0, DINFER__V1__STATUS_CODE__STATUS_RESOURCE_EXHAUSTED, msg);
            c->closing = true;
            return true;
        }
        handle_frame(n, c, f);
    }
}

static bool on_writable(conn *c, const char **why)
{
    while (wire_buf_pending(&c->out) > 0) {
        ssize_t w = send(c->fd, c->out.data + c->out.off, wire_buf_pending(&c->out), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (w <= 0) {
            *why = strerror(errno);
            return false;
        }
        wire_buf_consume(&c->out, (size_t)w);
    }
    return true;
}

static conn *find_conn(net *n, uint64_t id)
{
    for (int i = 0; i < n->n_conns; i++)
        if (n->conns[i]->id == id)
            return n->conns[i];
    return NULL;
}

/* Moves the engine's frames into their connections' buffers. */
static void take_outbound(net *n)
{
    srv_shared *s = n->s;
    pthread_mutex_lock(&s->mu);
    srv_out *o = s->out_head;
    s->out_head = s->out_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (o) {
        srv_out *next = o->next;
        conn *c = find_conn(n, o->conn);
        if (c && !c->closing) {
            size_t k = wire_buf_pending(&o->buf);
            if (wire_buf_pending(&c->out) + k > s->opt.max_conn_buffer) {
                /* a client that does not read: drop it rather than buffer without end */
                c->closing = true;
                wire_buf_free(&c->out);
                base_log(0, "connection %llu: over %zu bytes unread, dropping the client",
                        (unsigned long long)c->id, s->opt.max_conn_buffer);
            } else if (c->out.len == 0) {
                wire_buf_free(&c->out);
                c->out = o->buf; /* hand the buffer over whole */
                o->buf = (wire_buf){0};
            } else {
                size_t need = c->out.len + k;
                if (need > c->out.cap) {
                    uint8_t *nd = realloc(c->out.data, need);
                    if (nd) {
                        c->out.data = nd;
                        c->out.cap = need;
                    }
                }
                if (need <= c->out.cap) {
                    memcpy(c->out.data + c->out.len, o->buf.data + o->buf.off, k);
                    c->out.len += k;
                } else {
                    c->closing = true;
                }
            }
        }
        wire_buf_free(&o->buf);
        free(o);
        o = next;
    }
}

static int open_listener(srv_shared *s, char *err, size_t errlen)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", s->opt.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    int g = getaddrinfo(s->opt.host, ps, &hints, &res);
    if (g != 0) {
        snprintf(err, errlen, "--host %s: %s", s->opt.host, gai_strerror(g));
        return -1;
    }
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, res->ai_protocol);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 256) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", s->opt.host, s->opt.port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    struct sockaddr_storage a;
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (a.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&a)->sin_addr, host, sizeof host);
        port = ntohs(((struct sockaddr_in *)&a)->sin_port);
    } else if (a.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a)->sin6_addr, host, sizeof host);
        port = ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
    }
    snprintf(s->bound, sizeof s->bound, "%s:%d", host, port);
    return fd;
}

static void accept_all(net *n)
{
    for (;;) {
        int fd = accept4(n->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (n->n_conns >= n->s->opt.max_connections) {
            close(fd);
            base_log(0, "refused a connection: %d open already", n->n_conns);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->id = ++n->next_id;
        c->fd = fd;
        wire_decoder_init(&c->dec, n->s->opt.max_frame);
        n->conns[n->n_conns++] = c;
        pthread_mutex_lock(&n->s->mu);
        n->s->connections = n->n_conns;
        pthread_mutex_unlock(&n->s->mu);
    }
}

/* A step that does not end: past --comm-timeout, or (after a stop signal, which is also how
 * mpirun says a rank died) well past the longest step so far. Then the job cannot go on: tell
 * every client UNAVAILABLE on the connection itself (request_id 0), name the ranks found gone,
 * and exit, which makes mpirun stop the others. */
static bool step_is_stuck(srv_shared *s, double now)
{
    pthread_mutex_lock(&s->mu);
    double started = s->step_started, longest = s->longest_step;
    pthread_mutex_unlock(&s->mu);
    if (started == 0)
        return false;
    if (now - started > s->opt.comm_timeout)
        return true;
    if (!s->stop)
        return false;
    if (s->stop_at == 0)
        s->stop_at = now;
    double grace = 3 * longest > 0.25 ? 3 * longest : 0.25;
    return now - (started > s->stop_at ? started : s->stop_at) > grace;
}

/* What is wrong with a rank on this host: gone, or stopped (SIGSTOP, a debugger); NULL if it runs. */
static const char *local_rank_state(int pid)
{
    if (kill(pid, 0) != 0)
        return "gone";
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *paren = strrchr(buf, ')'); /* "pid (comm) S ..." */
    if (!paren || paren[1] != ' ')
        return NULL;
    char st = paren[2];
    return st == 'Z' || st == 'X' ? "gone" : st == 'T' || st == 't' ? "stopped" : NULL;
}

static void fail_job(net *n, double now)
{
    srv_shared *s = n->s;
    char lost[512] = "";
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    size_t used = 0;
    for (int r = 1; r < s->world && s->ranks; r++) {
        if (strcmp(s->ranks[r].host, host) != 0 || used >= sizeof lost - 80)
            continue;
        const char *what = local_rank_state(s->ranks[r].pid);
        if (what)
            used += (size_t)snprintf(lost + used, sizeof lost - used, "%srank %d (host %s, pid %d, %s)",
                                     used ? ", " : "", r, s->ranks[r].host, s->ranks[r].pid, what);
    }
    char msg[640];
    if (used) {
        snprintf(msg, sizeof msg, "the job lost %s: it is stopping", lost);
    } else {
        /* every rank here is alive: the lost or stuck one is on another host; name the candidates */
        for (int r = 1; r < s->world && s->ranks; r++)
            if (strcmp(s->ranks[r].host, host) != 0 && used < sizeof lost - 80)
                used += (size_t)snprintf(lost + used, sizeof lost - used, "%s%d (%s)", used ? ", " : "ranks ", r,
                                         s->ranks[r].host);
        snprintf(msg, sizeof msg, "a step has not finished in %.1f s: one of %s was lost or is stuck; the job is "
                                  "stopping", now - s->step_started, used ? lost : "the other ranks");
    }
    base_log(0, "%s", msg);
    for (int i = 0; i < n->n_conns; i++) {
        reply_error(n->conns[i], 0, DINFER__V1__STATUS_CODE__STATUS_UNAVAILABLE, msg);
        const char *why;
        for (double until = base_now() + 0.3; wire_buf_pending(&n->conns[i]->out) && base_now() < until;)
            if (!on_writable(n->conns[i], &why))
                break;
    }
    fflush(stderr);
    _exit(1);
}

static void *net_main(void *arg)
{
    net *n = arg;
    srv_shared *s = n->s;
    struct pollfd *pfd = calloc((size_t)s->opt.max_connections + 2, sizeof *pfd);
    double flush_deadline = 0;
    while (pfd) {
        bool done;
        pthread_mutex_lock(&s->mu);
        done = s->engine_done;
        pthread_mutex_unlock(&s->mu);
        if (s->stop && n->listen_fd >= 0) { /* draining: no new connections */
            close(n->listen_fd);
            n->listen_fd = -1;
        }
        take_outbound(n);
        if (done) {
            bool pending = false;
            for (int i = 0; i < n->n_conns; i++)
                pending |= wire_buf_pending(&n->conns[i]->out) > 0;
            if (flush_deadline == 0)
                flush_deadline = base_now() + 2.0;
            if (!pending || base_now() > flush_deadline)
                break;
        }
        int k = 0;
        pfd[k++] = (struct pollfd){.fd = s->net_wake[0], .events = POLLIN};
        pfd[k++] = (struct pollfd){.fd = n->listen_fd, .events = POLLIN};
        for (int i = 0; i < n->n_conns; i++)
            pfd[k++] = (struct pollfd){.fd = n->conns[i]->fd,
                                       .events = (short)(POLLIN | (wire_buf_pending(&n->conns[i]->out) ? POLLOUT : 0))};
        int pr = poll(pfd, (nfds_t)k, done ? 50 : s->stop ? 50 : 200);
        if (!done && step_is_stuck(s, base_now()))
            fail_job(n, base_now());
        if (pr < 0 && errno != EINTR)
            break;
        if (pfd[0].revents)
            drain_pipe(s->net_wake[0]);
        if (n->listen_fd >= 0 && (pfd[1].revents & POLLIN))
            accept_all(n);
        /* connections, walked from the end so closing one does not skip another */
        int m = k - 2;
        for (int i = m - 1; i >= 0; i--) {
            conn *c = n->conns[i];
            short re = pfd[i + 2].revents;
            const char *why = NULL;
            bool keep = true;
            if (re & (POLLIN | POLLHUP | POLLERR))
                keep = on_readable(n, c, &why);
            if (keep && (re & POLLOUT || wire_buf_pending(&c->out)))
                keep = on_writable(c, &why);
            if (keep && c->closing && wire_buf_pending(&c->out) == 0) {
                keep = false;
                why = "the stream could not continue";
            }
            if (!keep)
                close_conn(n, i, why);
        }
    }
    while (n->n_conns > 0)
        close_conn(n, n->n_conns - 1, NULL);
    if (n->listen_fd >= 0)
        close(n->listen_fd);
    free(pfd);
    free(n->conns);
    free(n);
    return NULL;
}

int srv_net_start(srv_shared *s, pthread_t *th, char *err, size_t errlen)
{
    net *n = calloc(1, sizeof *n);
    if (!n || !(n->conns = calloc((size_t)s->opt.max_connections, sizeof *n->conns))) {
        free(n);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    n->s = s;
    n->listen_fd = open_listener(s, err, errlen);
    if (n->listen_fd < 0) {
        free(n->conns);
        free(n);
        return -1;
    }
    /* signals are the engine loop's business */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = pthread_create(th, NULL, net_main, n);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        close(n->listen_fd);
        free(n->conns);
        free(n);
        snprintf(err, errlen, "cannot start the network thread");
        return -1;
    }
    return 0;
}
