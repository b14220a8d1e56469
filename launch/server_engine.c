/* The engine loop of dinfer-server (rank 0's main thread): takes requests from the network thread,
 * turns them into scheduler requests, runs steps while there is work (each step broadcast to every
 * rank), and queues the resulting frames for the network thread. Stops on SIGTERM / SIGINT after
 * draining: no new requests, running ones finish within the drain time, the rest end UNAVAILABLE. */
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launch/server.h"
#include "base/clock.h"
#include "base/log.h"

typedef struct live {
    uint64_t sched_id, conn, rid;
    bool want_top;
} live;

typedef struct eng {
    srv_shared *s;
    rt_sched *sched;
    const rt_config *cfg;
    live *lv;
    int n_live, cap_live;
    uint64_t next_id;
    srv_out *out_head, *out_tail; /* this round's frames, handed over together */
} eng;

static srv_out *out_for(eng *e, uint64_t conn)
{
    for (srv_out *o = e->out_head; o; o = o->next)
        if (o->conn == conn)
            return o;
    srv_out *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->conn = conn;
    if (e->out_tail)
        e->out_tail->next = o;
    else
        e->out_head = o;
    e->out_tail = o;
    return o;
}

static void send_frame(eng *e, uint64_t conn, wire_frame *f)
{
    srv_out *o = out_for(e, conn);
    if (o)
        wire_buf_append(&o->buf, f);
}

static void send_error(eng *e, uint64_t conn, uint64_t rid, int code, const char *msg)
{
    Dinfer__V1__Error er = DINFER__V1__ERROR__INIT;
    er.has_code = 1, er.code = (Dinfer__V1__StatusCode)code;
    er.message = (char *)msg;
    wire_frame f = DINFER__V1__FRAME__INIT;
    f.has_request_id = 1, f.request_id = rid;
    f.body_case = DINFER__V1__FRAME__BODY_ERROR;
    f.error = &er;
    send_frame(e, conn, &f);
}

/* Hands this round's frames to the network thread. */
static void flush_out(eng *e)
{
    if (!e->out_head)
        return;
    srv_shared *s = e->s;
    pthread_mutex_lock(&s->mu);
    if (s->out_tail)
        s->out_tail->next = e->out_head;
    else
        s->out_head = e->out_head;
    s->out_tail = e->out_tail;
    pthread_mutex_unlock(&s->mu);
    e->out_head = e->out_tail = NULL;
    srv_wake(s->net_wake);
}

static int find_by_sched(eng *e, uint64_t id)
{
    for (int i = 0; i < e->n_live; i++)
        if (e->lv[i].sched_id == id)
            return i;
    return -1;
}

static int find_by_client(eng *e, uint64_t conn, uint64_t rid)
{
    for (int i = 0; i < e->n_live; i++)
        if (e->lv[i].conn == conn && e->lv[i].rid == rid)
            return i;
    return -1;
}

static void drop_live(eng *e, int i)
{
    e->lv[i] = e->lv[--e->n_live];
}

static void on_event(void *ctx, const rt_sched_event *ev)
{
    eng *e = ctx;
    int i = find_by_sched(e, ev->id);
    if (i < 0)
        return;
    live *l = &e->lv[i];
    wire_frame f = DINFER__V1__FRAME__INIT;
    f.has_request_id = 1, f.request_id = l->rid;
    if (ev->kind == RT_EV_TOKEN) {
        const rt_sample_out *o = ev->sample;
        Dinfer__V1__TokenChunk ch = DINFER__V1__TOKEN_CHUNK__INIT;
        int32_t tok = o->token;
        float lp = o->logprob;
        Dinfer__V1__TopLogprobs top = DINFER__V1__TOP_LOGPROBS__INIT, *tops = &top;
        ch.n_tokens = 1, ch.tokens = &tok;
        ch.n_logprobs = 1, ch.logprobs = &lp;
        if (l->want_top) {
            top.n_token_ids = (size_t)o->n_top, top.token_ids = (int32_t *)o->top_ids;
            top.n_logprobs = (size_t)o->n_top, top.logprobs = (float *)o->top_logprobs;
            ch.n_top = 1, ch.top = &tops;
        }
        f.body_case = DINFER__V1__FRAME__BODY_CHUNK;
        f.chunk = &ch;
        send_frame(e, l->conn, &f);
        return;
    }
    if (ev->kind == RT_EV_DONE) {
        Dinfer__V1__GenerateDone d = DINFER__V1__GENERATE_DONE__INIT;
        d.finish_reason = (char *)ev->finish_reason;
        d.has_prompt_tokens = 1, d.prompt_tokens = (uint32_t)ev->prompt_tokens;
        d.has_completion_tokens = 1, d.completion_tokens = (uint32_t)ev->completion_tokens;
        d.has_ttft_ms = 1, d.ttft_ms = ev->ttft_seconds * 1e3;
        d.has_total_ms = 1, d.total_ms = ev->total_seconds * 1e3;
        f.body_case = DINFER__V1__FRAME__BODY_DONE;
        f.done = &d;
        send_frame(e, l->conn, &f);
    } else {
        send_error(e, l->conn, l->rid, ev->status, ev->message);
    }
    drop_live(e, i);
}

/* A GenerateRequest's fields, checked where the scheduler does not (defaults as vLLM's). */
static const char *convert(const Dinfer__V1__GenerateRequest *g, const rt_config *cfg, rt_sched_request *r,
                           double arrival, char *buf, size_t n)
{
    if (g->prompt_text && *g->prompt_text)
        return "text prompts need the server's tokenizer, which this version lacks: send prompt_tokens";
    if (g->n_stop > 0)
        return "stop strings need the server's tokenizer, which this version lacks: use stop_token_ids";
    if (g->n_prompt_tokens > (size_t)cfg->max_pos) {
        snprintf(buf, n, "the prompt has %zu tokens, over the context length %d", g->n_prompt_tokens, cfg->max_pos);
        return buf;
    }
    if (g->has_max_tokens && (g->max_tokens == 0 || g->max_tokens > (uint32_t)cfg->max_pos)) {
        snprintf(buf, n, "max_tokens %u must be in [1, %d]", g->max_tokens, cfg->max_pos);
        return buf;
    }
    if (g->n_stop_token_ids > 64)
        return "at most 64 stop_token_ids";
    if (g->has_logprobs && g->logprobs > RT_MAX_TOP_LOGPROBS)
        return "logprobs must be in [0, 20]";
    *r = (rt_sched_request){
        .prompt = g->prompt_tokens, .prompt_len = (int)g->n_prompt_tokens,
        .max_tokens = g->has_max_tokens ? (int)g->max_tokens : 16,
        .sampling = {.temperature = g->has_temperature ? g->temperature : 0.0f,
                     .top_k = g->has_top_k ? g->top_k : 0,
                     .top_p = g->has_top_p ? g->top_p : 1.0f,
                     .seed = g->has_seed ? g->seed : 0,
                     .n_logprobs = g->has_logprobs ? (int)g->logprobs : 0},
        .ignore_eos = g->has_ignore_eos && g->ignore_eos,
        .stop_ids = g->stop_token_ids, .n_stop = (int)g->n_stop_token_ids,
        .deadline = g->has_deadline_ms && g->deadline_ms ? arrival + g->deadline_ms * 1e-3 : 0,
    };
    if (isnan(r->sampling.temperature))
        return "temperature must be a finite number >= 0";
    return NULL;
}

static void handle_in(eng *e, srv_in *m)
{
    srv_shared *s = e->s;
    if (m->kind == SRV_DISCONNECT) {
        for (int i = e->n_live - 1; i >= 0; i--)
            if (e->lv[i].conn == m->conn) {
                uint64_t id = e->lv[i].sched_id;
                drop_live(e, i); /* nobody to tell */
                rt_sched_cancel(e->sched, id, RT_STATUS_CANCELLED, "the client disconnected");
            }
        return;
    }
    if (m->kind == SRV_CANCEL) {
        int i = find_by_client(e, m->conn, m->rid);
        if (i < 0) {
            char msg[96];
            snprintf(msg, sizeof msg, "no live request %llu on this connection to cancel", (unsigned long long)m->rid);
            send_error(e, m->conn, m->rid, RT_STATUS_NOT_FOUND, msg);
            return;
        }
        rt_sched_cancel(e->sched, e->lv[i].sched_id, RT_STATUS_CANCELLED, "cancelled by the client");
        return;
    }
    if (find_by_client(e, m->conn, m->rid) >= 0) {
        send_error(e, m->conn, m->rid, RT_STATUS_ALREADY_EXISTS, "this request_id is already live on this connection");
        return;
    }
    if (e->n_live >= s->opt.max_queue) {
        send_error(e, m->conn, m->rid, RT_STATUS_RESOURCE_EXHAUSTED, "the server's request queue is full");
        return;
    }
    rt_sched_request r;
    char buf[160];
    const char *why = convert(m->frame->generate, e->cfg, &r, m->arrival, buf, sizeof buf);
    if (why) {
        send_error(e, m->conn, m->rid, RT_STATUS_INVALID_ARGUMENT, why);
        return;
    }
    if (e->n_live == e->cap_live) {
        int cap = e->cap_live ? 2 * e->cap_live : 64;
        live *nl = realloc(e->lv, (size_t)cap * sizeof *nl);
        if (!nl) {
            send_error(e, m->conn, m->rid, RT_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        e->lv = nl;
        e->cap_live = cap;
    }
    r.id = ++e->next_id;
    int status;
    base_err err;
    if (rt_sched_add(e->sched, &r, &status, &err)) {
        send_error(e, m->conn, m->rid, status, err.msg);
        return;
    }
    e->lv[e->n_live++] = (live){r.id, m->conn, m->rid, r.sampling.n_logprobs > 0};
}

static void take_inbound(eng *e)
{
    srv_shared *s = e->s;
    pthread_mutex_lock(&s->mu);
    srv_in *m = s->in_head;
    s->in_head = s->in_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (m) {
        srv_in *next = m->next;
        handle_in(e, m);
        wire_frame_free(m->frame);
        free(m);
        m = next;
    }
}

static void publish(eng *e)
{
    srv_shared *s = e->s;
    rt_sched_stats st;
    rt_sched_get_stats(e->sched, &st);
    pthread_mutex_lock(&s->mu);
    s->snap.st = st;
    s->snap.live = e->n_live;
    pthread_mutex_unlock(&s->mu);
}

static void wait_for_work(srv_shared *s, int timeout_ms)
{
    struct pollfd p = {.fd = s->engine_wake[0], .events = POLLIN};
    if (poll(&p, 1, timeout_ms) > 0) {
        char buf[256];
        while (read(s->engine_wake[0], buf, sizeof buf) > 0) {
        }
    }
}

int srv_engine_loop(srv_shared *s, rt_engine *en, const rt_sched_options *opt, base_err *err)
{
    eng e = {.s = s, .cfg = &rt_engine_model(en)->cfg};
    if (rt_sched_create(&e.sched, en, opt, on_event, &e, err))
        return -1;
    int rc = 0;
    bool draining = false;
    double drain_end = 0;
    publish(&e);
    for (;;) {
        take_inbound(&e);
        if (s->stop && !draining) {
            draining = true;
            drain_end = base_now() + s->opt.drain_seconds;
            base_log(0, "stopping: %d running request(s) get up to %.0f s to finish", rt_sched_running(e.sched),
                    s->opt.drain_seconds);
            rt_sched_cancel_waiting(e.sched, RT_STATUS_UNAVAILABLE, "the server is shutting down");
        }
        if (draining && (!rt_sched_has_work(e.sched) || base_now() > drain_end)) {
            rt_sched_cancel_waiting(e.sched, RT_STATUS_UNAVAILABLE, "the server is shutting down");
            while (e.n_live > 0) {
                live l = e.lv[e.n_live - 1];
                if (rt_sched_cancel(e.sched, l.sched_id, RT_STATUS_UNAVAILABLE,
                                    "the server shut down before the request finished") != 0) {
                    send_error(&e, l.conn, l.rid, RT_STATUS_UNAVAILABLE, "the server shut down");
                    e.n_live--;
                }
            }
            flush_out(&e);
            break;
        }
        if (rt_sched_has_work(e.sched)) {
            /* the network thread watches steps: one that never ends means a lost or stuck rank */
            double t0 = base_now();
            pthread_mutex_lock(&s->mu);
            s->step_started = t0;
            pthread_mutex_unlock(&s->mu);
            rc = rt_sched_step(e.sched, err);
            pthread_mutex_lock(&s->mu);
            s->step_started = 0;
            if (base_now() - t0 > s->longest_step)
                s->longest_step = base_now() - t0;
            pthread_mutex_unlock(&s->mu);
            if (rc)
                break;
        } else {
            flush_out(&e);
            publish(&e);
            wait_for_work(s, 1000);
            continue;
        }
        flush_out(&e);
        publish(&e);
    }
    publish(&e);
    pthread_mutex_lock(&s->mu);
    s->engine_done = true;
    pthread_mutex_unlock(&s->mu);
    srv_wake(s->net_wake);
    rt_sched_destroy(e.sched);
    free(e.lv);
    return rc;
}
