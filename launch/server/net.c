/* The network thread of dinfer-server: a poll loop over the listening socket, every connection
 * and the wake pipe of its queue. It decodes frames, checks authentication, answers Health and
 * Stats from the engine's snapshot, hands Generate and Cancel to the engine loop, and writes the
 * frames the engine queues, never blocking on a client. Every connection is bounded: the bytes
 * queued for it (any reply counts), how long a frame may take to arrive, how long it may sit idle;
 * and so is their number. Sockets only: the engine, the model and MPI are not seen here. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "launch/server/http.h"
#include "launch/server/server.h"
#include "proto/frames.h"

#define READ_BURST 16 /* reads of 64 KiB per connection per round: one client cannot starve the rest */

typedef struct conn {
    uint64_t id;
    int fd;
    wire_decoder dec;
    wire_buf out;
    bool closing;       /* close once out is written */
    double closing_since; /* when closing was decided: a client that does not read is not waited on long */
    int live;           /* generate requests with the engine, not ended yet */
    double last_active; /* last byte received or sent */
    double frame_start; /* when the first byte of the frame still incomplete arrived; 0: none */
} conn;

typedef struct net {
    srv_shared *s;
    int listen_fd;
    int spare_fd;        /* held so that at the descriptor limit a connection can still be answered */
    double listen_paused_until;
    conn **conns;        /* (max_connections) */
    int n_conns;
    uint64_t next_id;
    size_t pause_bytes;  /* stop reading a client while this much waits for it */
    base_ratelimit refuse_log, limit_log;
    int seen_signal, seen_sender;
    srv_http *http;      /* NULL: no --http-port */
} net;

/* ---- replies the network thread writes itself ---- */

/* Every byte queued for a connection counts against its cap; past it the client is dropped. */
static void drop_client(net *n, conn *c)
{
    base_log(0, "connection %llu: over %zu bytes unread, dropping the client", (unsigned long long)c->id,
             n->s->opt.max_conn_buffer);
    wire_buf_free(&c->out);
    c->closing = true;
}

/* After a reply was appended (rc 0) or could not be (out of memory: the stream cannot go on). */
static void queued(net *n, conn *c, int rc)
{
    if (rc != 0)
        c->closing = true;
    else if (wire_buf_pending(&c->out) > n->s->opt.max_conn_buffer)
        drop_client(n, c);
}

static void reply_error(net *n, conn *c, uint64_t rid, int code, const char *msg)
{
    if (c->closing)
        return;
    queued(n, c, wire_put_error(&c->out, rid, code, msg));
}

static void reply_health(net *n, conn *c, uint64_t rid)
{
    srv_shared *s = n->s;
    pthread_mutex_lock(&s->mu);
    srv_snapshot snap = s->snap;
    bool ready = s->ready && !s->stop;
    pthread_mutex_unlock(&s->mu);
    Dinfer__V1__HealthResponse h = DINFER__V1__HEALTH_RESPONSE__INIT;
    h.has_ready = 1, h.ready = ready;
    h.model = snap.model, h.architecture = snap.arch;
    h.has_tp = 1, h.tp = (uint32_t)snap.tp;
    h.has_pp = 1, h.pp = (uint32_t)snap.pp;
    h.has_world_size = 1, h.world_size = (uint32_t)snap.world;
    h.has_vocab_size = 1, h.vocab_size = (uint32_t)snap.vocab;
    h.has_max_context = 1, h.max_context = (uint32_t)snap.max_context;
    queued(n, c, wire_put_health(&c->out, rid, &h));
}

static void reply_stats(net *n, conn *c, uint64_t rid)
{
    srv_shared *s = n->s;
    pthread_mutex_lock(&s->mu);
    srv_snapshot snap = s->snap;
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
    SET(connections, (uint32_t)n->n_conns);
    SET(weight_bytes, snap.weight_bytes);
    SET(workspace_bytes, snap.workspace_bytes);
    SET(kv_cache_bytes, snap.kv_cache_bytes);
#undef SET
    r.device = snap.device;
    queued(n, c, wire_put_stats(&c->out, rid, &r));
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

static void push_in(net *n, srv_in_kind kind, uint64_t conn_id, uint64_t rid, wire_frame *f)
{
    srv_send_in(n->s, kind, conn_id, rid, f);
}

static void handle_frame(net *n, conn *c, wire_frame *f)
{
    srv_shared *s = n->s;
    const uint64_t rid = f->request_id;
    const int bc = f->body_case;
    const bool request = bc == DINFER__V1__FRAME__BODY_GENERATE || bc == DINFER__V1__FRAME__BODY_CANCEL ||
                         bc == DINFER__V1__FRAME__BODY_HEALTH || bc == DINFER__V1__FRAME__BODY_STATS;
    if (!request) {
        char msg[96];
        snprintf(msg, sizeof msg, "unknown or unexpected message (frame body %d): send generate, cancel, health or stats",
                 bc);
        reply_error(n, c, rid, DINFER__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, msg);
    } else if (!token_ok(s->opt.auth_token, f->auth_token)) {
        reply_error(n, c, rid, DINFER__V1__STATUS_CODE__STATUS_UNAUTHENTICATED,
                    f->auth_token && *f->auth_token ? "wrong auth token" : "this server needs an auth token");
    } else if (bc == DINFER__V1__FRAME__BODY_HEALTH) {
        reply_health(n, c, rid);
    } else if (bc == DINFER__V1__FRAME__BODY_STATS) {
        reply_stats(n, c, rid);
    } else if (rid == 0) {
        reply_error(n, c, 0, DINFER__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT,
                    "request_id 0 means the connection itself: give each request a non-zero id");
    } else if (bc == DINFER__V1__FRAME__BODY_CANCEL) {
        push_in(n, SRV_CANCEL, c->id, rid, NULL);
    } else if (s->stop) {
        reply_error(n, c, rid, DINFER__V1__STATUS_CODE__STATUS_UNAVAILABLE, "the server is shutting down");
    } else {
        c->live++;
        push_in(n, SRV_GENERATE, c->id, rid, f);
        return; /* the engine owns the frame now */
    }
    wire_frame_free(f);
}

static bool reading(const net *n, const conn *c)
{
    return !c->closing && wire_buf_pending(&c->out) < n->pause_bytes;
}

/* Handles the complete frames the decoder holds while the client's replies leave room; keeps the
 * frame timer of the incomplete one. */
static void process_frames(net *n, conn *c, double now)
{
    bool progress = false;
    while (reading(n, c)) {
        wire_frame *f = NULL;
        base_err why;
        wire_status st = wire_decode_next(&c->dec, &f, &why);
        if (st == WIRE_NEED_MORE)
            break;
        progress = true;
        if (st == WIRE_BAD_FRAME) {
            reply_error(n, c, 0, DINFER__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT, why.msg);
        } else if (st == WIRE_TOO_LARGE) { /* the stream cannot be followed past this: say so, then close */
            reply_error(n, c, 0, DINFER__V1__STATUS_CODE__STATUS_RESOURCE_EXHAUSTED, why.msg);
            c->closing = true;
        } else {
            handle_frame(n, c, f);
        }
    }
    if (wire_decoder_pending(&c->dec) == 0)
        c->frame_start = 0;
    else if (progress || c->frame_start == 0)
        c->frame_start = now;
}

/* Reads what is there (a bounded amount). False when the connection must close. */
static bool on_readable(net *n, conn *c, double now, const char **why)
{
    uint8_t buf[65536];
    for (int k = 0; k < READ_BURST; k++) {
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
        c->last_active = now;
        if (wire_decoder_feed(&c->dec, buf, (size_t)r) != 0) {
            *why = "out of memory";
            return false;
        }
        if ((size_t)r < sizeof buf)
            break;
    }
    process_frames(n, c, now);
    return true;
}

static bool on_writable(conn *c, double now, const char **why)
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
        c->last_active = now;
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

static void close_conn(net *n, int i, const char *why)
{
    conn *c = n->conns[i];
    if (why)
        base_log(0, "connection %llu closed: %s", (unsigned long long)c->id, why);
    push_in(n, SRV_DISCONNECT, c->id, 0, NULL);
    close(c->fd);
    wire_decoder_free(&c->dec);
    wire_buf_free(&c->out);
    free(c);
    n->conns[i] = n->conns[--n->n_conns];
}

/* Moves the engine's frames into their connections' buffers. */
static void take_outbound(net *n)
{
    for (srv_qnode *q = srv_queue_take(&n->s->to_net), *next; q; q = next) {
        next = q->next;
        srv_out *o = (srv_out *)q;
        if (o->conn & SRV_HTTP_CONN_BIT) { /* an HTTP request's */
            if (n->http)
                srv_http_deliver(n->http, o);
            wire_buf_free(&o->buf);
            free(o);
            continue;
        }
        conn *c = find_conn(n, o->conn);
        if (c) {
            c->live -= o->ended;
            size_t k = wire_buf_pending(&o->buf);
            if (c->closing) {
                /* a dropped client: nothing more is written to it */
            } else if (wire_buf_pending(&c->out) + k > n->s->opt.max_conn_buffer) {
                drop_client(n, c); /* a client that does not read */
            } else if (c->out.len == 0) {
                wire_buf_free(&c->out);
                c->out = o->buf; /* hand the buffer over whole */
                o->buf = (wire_buf){0};
            } else if (wire_buf_pending(&c->out) + k <= n->s->opt.max_conn_buffer) {
                size_t need = c->out.len + k;
                uint8_t *nd = need > c->out.cap ? realloc(c->out.data, need) : c->out.data;
                if (nd) {
                    c->out.data = nd;
                    c->out.cap = need > c->out.cap ? need : c->out.cap;
                    memcpy(c->out.data + c->out.len, o->buf.data + o->buf.off, k);
                    c->out.len += k;
                } else {
                    c->closing = true;
                }
            }
        }
        wire_buf_free(&o->buf);
        free(o);
    }
}

int srv_listen(const char *host, int port, int *out_fd, char *bound, size_t bound_len, base_err *err)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g != 0)
        return base_errf(err, "--host %s: %s", host, gai_strerror(g));
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, res->ai_protocol);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 256) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return base_errf(err, "cannot listen on %s:%d: %s", host, port, strerror(e));
    }
    freeaddrinfo(res);
    struct sockaddr_storage a;
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    char h[INET6_ADDRSTRLEN] = "?";
    int bound_port = 0;
    if (a.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&a)->sin_addr, h, sizeof h);
        bound_port = ntohs(((struct sockaddr_in *)&a)->sin_port);
    } else if (a.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a)->sin6_addr, h, sizeof h);
        bound_port = ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
    }
    snprintf(bound, bound_len, "%s:%d", h, bound_port);
    *out_fd = fd;
    return 0;
}

/* Tells a connection it cannot be served (one non-blocking write of RESOURCE_EXHAUSTED), closes it,
 * and logs that, at most a few lines per 10 s. */
static void refuse(net *n, int fd, const char *why, double now)
{
    wire_buf b = {0};
    if (wire_put_error(&b, 0, DINFER__V1__STATUS_CODE__STATUS_RESOURCE_EXHAUSTED, why) == 0) {
        ssize_t w = send(fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
    wire_buf_free(&b);
    close(fd);
    uint64_t held = 0;
    if (base_ratelimit_ok(&n->refuse_log, now, &held))
        base_log(0, "refused a connection: %s%s", why,
                 held ? " (and more refusals not logged)" : "");
}

static void accept_all(net *n, double now)
{
    for (int k = 0; k < 256; k++) {
        int fd = accept4(n->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            const int e = errno;
            if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM)
                return; /* EAGAIN: none left; others (ECONNABORTED, ...) concern that connection only */
            /* at the descriptor limit the listener stays readable: answer one waiting client
             * through the spare descriptor, then stop looking at the listener for a while and
             * keep serving the connections already open */
            for (int told = 0; n->spare_fd >= 0 && told < 32; told++) {
                close(n->spare_fd);
                int extra = accept4(n->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (extra >= 0)
                    refuse(n, extra, "the server is out of file descriptors (ulimit -n)", now);
                n->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (extra < 0)
                    break;
            }
            n->listen_paused_until = now + 0.1;
            uint64_t held = 0;
            if (base_ratelimit_ok(&n->limit_log, now, &held))
                base_log(0, "accept: %s with %d connections open: new connections wait", strerror(e),
                         n->n_conns);
            return;
        }
        if (n->n_conns >= n->s->opt.max_connections) {
            char why[96];
            snprintf(why, sizeof why, "the server has %d connections open (--max-connections)", n->n_conns);
            refuse(n, fd, why, now);
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
        c->last_active = now;
        wire_decoder_init(&c->dec, n->s->opt.max_frame);
        n->conns[n->n_conns++] = c;
    }
}

/* Writes what every connection has pending, all at once, for at most `seconds`. */
static void flush_all(net *n, double seconds)
{
    struct pollfd *p = calloc((size_t)n->n_conns + 1, sizeof *p);
    const double until = base_now() + seconds;
    while (p && base_now() < until) {
        int k = 0;
        for (int i = 0; i < n->n_conns; i++)
            if (wire_buf_pending(&n->conns[i]->out))
                p[k++] = (struct pollfd){.fd = n->conns[i]->fd, .events = POLLOUT};
        if (k == 0)
            break;
        poll(p, (nfds_t)k, 20);
        for (int i = 0; i < n->n_conns; i++) {
            const char *why;
            if (wire_buf_pending(&n->conns[i]->out) && !on_writable(n->conns[i], base_now(), &why))
                wire_buf_free(&n->conns[i]->out);
        }
    }
    free(p);
}

/* The job cannot go on: tell every client UNAVAILABLE on the connection itself (request_id 0, which
 * ends every stream on it), log why, and exit, which makes mpirun or srun stop the other ranks. */
static void fail_job(net *n, const char *msg) __attribute__((noreturn));
static void fail_job(net *n, const char *msg)
{
    pthread_mutex_lock(&n->s->mu);
    const int in_flight = n->s->snap.st.in_flight;
    pthread_mutex_unlock(&n->s->mu);
    base_log(0, "%s (engine steps in flight: %d)", msg, in_flight);
    for (int i = 0; i < n->n_conns; i++) {
        n->conns[i]->closing = false;
        reply_error(n, n->conns[i], 0, DINFER__V1__STATUS_CODE__STATUS_UNAVAILABLE, msg);
    }
    flush_all(n, 0.5);
    fflush(stderr);
    _exit(1);
}

/* A SIGTERM from the MPI runtime that started us (mpirun, or orted on another host): it sends one
 * when a rank fails or when mpirun itself is signalled, and SIGKILL a second later (Open MPI's
 * odls_base_sigkill_timeout), too soon for a drain. Any other sender (a user, Slurm) drains. */
static bool from_mpi_runtime(int sig, int sender, char *name, size_t n)
{
    if (sig != SIGTERM || sender <= 0 || sender != (int)getppid())
        return false;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", sender);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t k = fread(name, 1, n - 1, f);
    fclose(f);
    name[k] = 0;
    name[strcspn(name, "\n")] = 0;
    static const char *runtimes[] = {"mpirun", "mpiexec", "orterun", "orted", "prted", "prterun"};
    for (size_t i = 0; i < sizeof runtimes / sizeof *runtimes; i++)
        if (strcmp(name, runtimes[i]) == 0)
            return true;
    return false;
}

static void watch(net *n, double now, double *stop_at)
{
    srv_shared *s = n->s;
    char msg[768];
    if (s->stop && *stop_at == 0)
        *stop_at = now;
    if (s->stop && (s->stop_signal != n->seen_signal || s->stop_sender != n->seen_sender)) {
        n->seen_signal = s->stop_signal;
        n->seen_sender = s->stop_sender;
        char name[32];
        if (from_mpi_runtime(n->seen_signal, n->seen_sender, name, sizeof name)) {
            srv_watchdog_runtime_kill(&s->wd, n->seen_sender, name, msg, sizeof msg);
            fail_job(n, msg);
        }
    }
    if (srv_watchdog_check(&s->wd, now, *stop_at, msg, sizeof msg))
        fail_job(n, msg);
}

static void check_timeouts(net *n, conn *c, double now)
{
    const srv_options *o = &n->s->opt;
    if (c->closing)
        return;
    if (c->frame_start > 0 && reading(n, c) && now - c->frame_start > o->frame_timeout) {
        char msg[128];
        snprintf(msg, sizeof msg, "a frame was begun and not completed within %.0f s (--frame-timeout)",
                 o->frame_timeout);
        reply_error(n, c, 0, DINFER__V1__STATUS_CODE__STATUS_DEADLINE_EXCEEDED, msg);
        c->closing = true;
    } else if (c->live == 0 && now - c->last_active > o->idle_timeout) {
        char msg[128];
        snprintf(msg, sizeof msg, "idle for %.0f s (--idle-timeout): closing the connection", o->idle_timeout);
        reply_error(n, c, 0, DINFER__V1__STATUS_CODE__STATUS_UNAVAILABLE, msg);
        c->closing = true;
    }
}

static void *net_main(void *arg)
{
    net *n = arg;
    srv_shared *s = n->s;
    struct pollfd *pfd = calloc((size_t)s->opt.max_connections + 3, sizeof *pfd); /* wake pipe, listener, HTTP */
    double flush_deadline = 0, stop_at = 0;
    while (pfd) {
        pthread_mutex_lock(&s->mu);
        const bool done = s->engine_done;
        pthread_mutex_unlock(&s->mu);
        double now = base_now();
        if (!done)
            watch(n, now, &stop_at);
        if (s->stop && n->listen_fd >= 0) { /* draining: no new connections */
            close(n->listen_fd);
            n->listen_fd = -1;
            if (n->http)
                srv_http_quiesce(n->http);
        }
        take_outbound(n);
        s->n_socket_conns = n->n_conns;
        if (done) {
            bool pending = n->http && srv_http_active(n->http) > 0;
            for (int i = 0; i < n->n_conns; i++)
                pending |= wire_buf_pending(&n->conns[i]->out) > 0;
            if (flush_deadline == 0)
                flush_deadline = now + 2.0;
            if (!pending || now > flush_deadline)
                break;
        }
        int k = 0;
        pfd[k++] = (struct pollfd){.fd = srv_queue_fd(&s->to_net), .events = POLLIN};
        const bool listening = n->listen_fd >= 0 && now >= n->listen_paused_until;
        pfd[k++] = (struct pollfd){.fd = listening ? n->listen_fd : -1, .events = POLLIN};
        for (int i = 0; i < n->n_conns; i++) {
            conn *c = n->conns[i];
            short ev = (short)((reading(n, c) ? POLLIN : 0) | (wire_buf_pending(&c->out) ? POLLOUT : 0));
            pfd[k++] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        int wait_ms = done || s->stop ? 50 : 200;
        if (n->http) {
            srv_http_run(n->http); /* the connections take_outbound resumed are served now */
            pfd[k++] = (struct pollfd){.fd = srv_http_fd(n->http), .events = POLLIN};
            wait_ms = srv_http_timeout_ms(n->http, wait_ms);
        }
        int pr = poll(pfd, (nfds_t)k, wait_ms);
        if (pr < 0 && errno != EINTR)
            break;
        now = base_now();
        if (n->http) {
            srv_http_run(n->http);
            k--; /* the connections' entries end before it */
        }
        if (pfd[0].revents)
            srv_queue_clear_wake(&s->to_net);
        if (listening && (pfd[1].revents & POLLIN))
            accept_all(n, now);
        /* connections, walked from the end so closing one does not skip another */
        for (int i = k - 3; i >= 0; i--) {
            conn *c = n->conns[i];
            const short re = pfd[i + 2].revents;
            const char *why = NULL;
            bool keep = !(re & (POLLERR | POLLNVAL));
            if (!keep)
                why = "socket error";
            if (keep && (re & (POLLIN | POLLHUP)) && reading(n, c))
                keep = on_readable(n, c, now, &why);
            if (keep && wire_buf_pending(&c->out))
                keep = on_writable(c, now, &why);
            if (keep && !c->closing)
                process_frames(n, c, now); /* frames held while the client's replies were backed up */
            if (keep && wire_buf_pending(&c->out))
                keep = on_writable(c, now, &why);
            if (keep)
                check_timeouts(n, c, now);
            if (keep && c->closing && c->closing_since == 0)
                c->closing_since = now;
            if (keep && c->closing && (wire_buf_pending(&c->out) == 0 || now - c->closing_since > 2.0)) {
                keep = false;
                why = why ? why : "the stream could not continue";
            }
            if (!keep)
                close_conn(n, i, why);
        }
    }
    srv_http_stop(n->http);
    while (n->n_conns > 0)
        close_conn(n, n->n_conns - 1, NULL);
    if (n->listen_fd >= 0)
        close(n->listen_fd);
    if (n->spare_fd >= 0)
        close(n->spare_fd);
    free(pfd);
    free(n->conns);
    free(n);
    return NULL;
}

int srv_net_start(srv_shared *s, pthread_t *th, base_err *err)
{
    net *n = calloc(1, sizeof *n);
    if (!n || !(n->conns = calloc((size_t)s->opt.max_connections, sizeof *n->conns))) {
        free(n);
        return base_errf(err, "out of memory");
    }
    n->s = s;
    n->listen_fd = -1;
    n->pause_bytes = s->opt.max_conn_buffer / 4 < ((size_t)1 << 20) ? s->opt.max_conn_buffer / 4 : (size_t)1 << 20;
    n->refuse_log = (base_ratelimit){.interval = 10, .burst = 5};
    n->limit_log = (base_ratelimit){.interval = 10, .burst = 2};
    if (srv_listen(s->opt.host, s->opt.port, &n->listen_fd, s->bound, sizeof s->bound, err) != 0) {
        free(n->conns);
        free(n);
        return -1;
    }
    if (s->opt.http_port >= 0 && srv_http_start(s, &n->http, err) != 0) {
        close(n->listen_fd);
        free(n->conns);
        free(n);
        return -1;
    }
    if (s->opt.http_port >= 0 && srv_http_start(s, &n->http, err) != 0) {
        close(n->listen_fd);
        free(n->conns);
        free(n);
        return -1;
    }
    n->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    /* signals are the engine loop's business */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = pthread_create(th, NULL, net_main, n);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        srv_http_stop(n->http);
        close(n->listen_fd);
        if (n->spare_fd >= 0)
            close(n->spare_fd);
        free(n->conns);
        free(n);
        return base_errf(err, "cannot start the network thread");
    }
    return 0;
}
