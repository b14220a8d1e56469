/* The engine loop of dinfer-server (rank 0's main thread): takes requests from the network thread,
 * turns them into scheduler requests, runs steps while there is work (each step broadcast to every
 * rank, each watched by the watchdog), and queues the resulting frames for the network thread.
 * Stops on SIGTERM / SIGINT / SIGUSR1 after draining: no new requests, running ones finish within
 * the drain time, the rest end UNAVAILABLE. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "launch/server/server.h"
#include "proto/frames.h"

#define MAX_STOP_STRINGS 16
#define MAX_STOP_BYTES 256

/* A live request; with a tokenizer, its text so far. */
typedef struct live {
    uint64_t sched_id, conn, rid;
    bool want_top;
    rt_detok *dt;     /* NULL without a tokenizer */
    char *text;       /* (text_len) the generated text: a stop string found ends it there */
    size_t text_len, text_cap, sent; /* text[0, sent) has gone out in chunks */
    char **stops;     /* (n_stops) */
    int n_stops;
    bool stopped;     /* a stop string ended the text */
    char *text_error; /* why the text could not be made (the tokenizer's decoder refused): the
                       * request ends with this error, INTERNAL */
} live;

typedef struct eng {
    srv_shared *s;
    rt_sched *sched;
    const rt_config *cfg;
    live *lv;
    int n_live, cap_live;
    uint64_t next_id;
    srv_out *out_head, *out_tail; /* this round's frames, one record per connection */
    srv_metrics m;                /* published with the snapshot after each step */
    int flight_slots[SRV_MAX_IN_FLIGHT]; /* the watchdog's slot of each step in flight, oldest first */
    int n_flight_slots;
} eng;

static srv_out *out_for(eng *e, uint64_t conn)
{
    for (srv_out *o = e->out_head; o; o = (srv_out *)o->node.next)
        if (o->conn == conn)
            return o;
    srv_out *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->conn = conn;
    if (e->out_tail)
        e->out_tail->node.next = &o->node;
    else
        e->out_head = o;
    e->out_tail = o;
    return o;
}

/* An Error for (conn, rid); ends_request when it ends a generate request the network thread counts. */
static void send_error(eng *e, uint64_t conn, uint64_t rid, int code, const char *msg, bool ends_request)
{
    srv_out *o = out_for(e, conn);
    if (!o)
        return;
    wire_put_error(&o->buf, rid, code, msg);
    o->ended += ends_request;
}

/* Hands this round's frames to the network thread. */
static void flush_out(eng *e)
{
    if (!e->out_head)
        return;
    srv_queue_push(&e->s->to_net, &e->out_head->node, &e->out_tail->node);
    e->out_head = e->out_tail = NULL;
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

static void live_free(live *l)
{
    if (l->dt) {
        rt_detok_free(l->dt);
        free(l->dt);
    }
    for (int i = 0; i < l->n_stops; i++)
        free(l->stops[i]);
    free(l->stops), free(l->text), free(l->text_error);
}

static void drop_live(eng *e, int i)
{
    live_free(&e->lv[i]);
    e->lv[i] = e->lv[--e->n_live];
}

/* The request's text cannot be made (its tokens stay right): it ends with this error. */
static void text_failed(live *l, const char *why)
{
    if (l->text_error)
        return;
    const char *head = "the generated text could not be made: ";
    l->text_error = malloc(strlen(head) + strlen(why) + 1);
    if (l->text_error)
        strcat(strcpy(l->text_error, head), why);
}

static int text_add(live *l, const char *s, size_t n)
{
    if (l->text_len + n + 1 > l->text_cap) {
        size_t cap = l->text_cap ? 2 * l->text_cap : 256;
        while (cap < l->text_len + n + 1)
            cap *= 2;
        char *t = realloc(l->text, cap);
        if (!t)
            return -1;
        l->text = t, l->text_cap = cap;
    }
    memcpy(l->text + l->text_len, s, n);
    l->text_len += n;
    l->text[l->text_len] = '\0';
    return 0;
}

/* After text grew by `added` bytes: true when a stop string now occurs (the text is cut where it
 * starts); else how much may go out, holding back an ending that could begin a stop string. */
static bool stop_scan(live *l, size_t added, size_t *safe)
{
    size_t longest = 0;
    for (int i = 0; i < l->n_stops; i++)
        longest = strlen(l->stops[i]) > longest ? strlen(l->stops[i]) : longest;
    /* a match must end in the new bytes: it starts no earlier than this */
    const size_t from = l->text_len - added > longest ? l->text_len - added - longest + 1 : 0;
    size_t cut = (size_t)-1;
    for (int i = 0; i < l->n_stops; i++) {
        const char *at = memmem(l->text + from, l->text_len - from, l->stops[i], strlen(l->stops[i]));
        if (at && (size_t)(at - l->text) < cut)
            cut = (size_t)(at - l->text);
    }
    if (cut != (size_t)-1) {
        l->text_len = cut;
        l->text[cut] = '\0';
        *safe = cut;
        return true;
    }
    size_t hold = 0; /* the longest ending of the text that begins some stop string */
    for (int i = 0; i < l->n_stops; i++) {
        const size_t n = strlen(l->stops[i]);
        for (size_t k = n - 1; k > hold; k--)
            if (k <= l->text_len && memcmp(l->text + l->text_len - k, l->stops[i], k) == 0) {
                hold = k;
                break;
            }
    }
    *safe = l->text_len - hold;
    return false;
}

/* The metrics every event moves, whether or not its client is still there. */
static void observe(srv_metrics *m, const rt_sched_event *ev)
{
    if (ev->kind == RT_EV_TOKEN) {
        m->generation_tokens++;
    } else if (ev->kind == RT_EV_DONE) {
        const bool length = ev->finish_reason && strcmp(ev->finish_reason, "length") == 0;
        m->finished[length ? SRV_FINISH_LENGTH : SRV_FINISH_STOP]++;
        m->prompt_tokens += (uint64_t)ev->prompt_tokens;
        srv_hist_observe(&m->ttft, ev->ttft_seconds);
        srv_hist_observe(&m->e2e, ev->total_seconds);
        if (ev->completion_tokens > 1)
            srv_hist_observe(&m->tpot, (ev->total_seconds - ev->ttft_seconds) / (ev->completion_tokens - 1));
    } else {
        m->finished[ev->status == RT_STATUS_CANCELLED ? SRV_FINISH_CANCELLED : SRV_FINISH_ERROR]++;
    }
}

/* A finished request's last text: the bytes that waited for a character's end, then the stop
 * strings over them. An error event in *failed (returned) when the text could not be made. */
static const rt_sched_event *finish_text(live *l, const rt_sched_event *ev, rt_sched_event *failed)
{
    if (!l->stopped && !l->text_error) {
        char *rest = NULL;
        size_t rl = 0, safe = 0;
        base_err err;
        if (rt_detok_flush(l->dt, &rest, &rl, &err))
            text_failed(l, err.msg);
        else if (rl > 0 && text_add(l, rest, rl) == 0)
            l->stopped = stop_scan(l, rl, &safe);
        free(rest);
    }
    if (!l->text_error)
        return ev;
    *failed = (rt_sched_event){.kind = RT_EV_ERROR, .id = ev->id, .status = RT_STATUS_INTERNAL, .message = l->text_error};
    return failed;
}

static void on_event(void *ctx, const rt_sched_event *ev)
{
    eng *e = ctx;
    int i = find_by_sched(e, ev->id);
    rt_sched_event failed;
    if (i >= 0 && ev->kind == RT_EV_DONE && e->lv[i].dt)
        ev = finish_text(&e->lv[i], ev, &failed);
    observe(&e->m, ev);
    if (i < 0)
        return; /* its connection is gone */
    const live l = e->lv[i];
    srv_out *o = out_for(e, l.conn);
    if (!o)
        return;
    live *lp = &e->lv[i];
    if (ev->kind == RT_EV_TOKEN) {
        const rt_sample_out *s = ev->sample;
        char *piece = NULL, *out = NULL;
        size_t pl = 0, safe = 0;
        if (lp->dt && !lp->text_error) { /* the text this token made final; a stop string ends the request at its start */
            base_err err;
            if (rt_detok_add(lp->dt, s->token, &piece, &pl, &err) == 0 && text_add(lp, piece, pl) == 0) {
                if (stop_scan(lp, pl, &safe))
                    *ev->stop = lp->stopped = true;
                out = strndup(lp->text + lp->sent, safe - lp->sent);
                lp->sent = safe;
            } else { /* the request ends, with the error */
                text_failed(lp, piece ? "out of memory holding the generated text" : err.msg);
                *ev->stop = true;
            }
            free(piece);
        }
        wire_put_token(&o->buf, l.rid, s->token, s->logprob, l.want_top ? s->n_top : 0, s->top_ids, s->top_logprobs,
                       out);
        free(out);
        return;
    }
    if (ev->kind == RT_EV_DONE) {
        if (lp->dt && lp->sent < lp->text_len) { /* what could have begun a stop string */
            wire_put_text(&o->buf, l.rid, lp->text + lp->sent);
            lp->sent = lp->text_len;
        }
        wire_done d = {.finish_reason = ev->finish_reason, .prompt_tokens = (uint32_t)ev->prompt_tokens,
                       .completion_tokens = (uint32_t)ev->completion_tokens, .ttft_ms = ev->ttft_seconds * 1e3,
                       .total_ms = ev->total_seconds * 1e3, .text = lp->dt ? (lp->text ? lp->text : "") : NULL};
        wire_put_done(&o->buf, l.rid, &d);
    } else {
        wire_put_error(&o->buf, l.rid, ev->status, ev->message);
    }
    o->ended++;
    drop_live(e, i);
}

/* A GenerateRequest's fields as a scheduler request (defaults as vLLM's); rt_sched_add checks the
 * rest with the same validator offline runs use. NULL, or what is wrong. */
static const char *convert(const Dinfer__V1__GenerateRequest *g, const rt_config *cfg, const rt_tokenizer *tok,
                           rt_sched_request *r, int32_t **text_ids, double arrival, char *buf, size_t n)
{
    *text_ids = NULL;
    const int32_t *prompt = g->prompt_tokens;
    size_t prompt_len = g->n_prompt_tokens;
    if (g->prompt_text) {
        if (g->n_prompt_tokens > 0)
            return "send exactly one of prompt_tokens and prompt_text";
        if (!tok)
            return "the model has no tokenizer.json: send prompt_tokens";
        base_err err;
        const int k = rt_tokenizer_encode(tok, g->prompt_text, strlen(g->prompt_text), true, text_ids, &err);
        if (k < 0) {
            snprintf(buf, n, "prompt_text: %s", err.msg);
            return buf;
        }
        prompt = *text_ids, prompt_len = (size_t)k;
    }
    if (g->n_stop > 0 && !tok)
        return "stop strings need the model's tokenizer.json: use stop_token_ids";
    if (g->n_stop > MAX_STOP_STRINGS)
        return "at most 16 stop strings";
    for (size_t i = 0; i < g->n_stop; i++)
        if (!*g->stop[i] || strlen(g->stop[i]) > MAX_STOP_BYTES) {
            snprintf(buf, n, "stop string %zu is %s: 1 to %d bytes", i, *g->stop[i] ? "too long" : "empty",
                     MAX_STOP_BYTES);
            return buf;
        }
    if (prompt_len > (size_t)cfg->max_pos) {
        snprintf(buf, n, "the prompt has %zu tokens, over the context length %d", prompt_len, cfg->max_pos);
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
        .prompt = prompt, .prompt_len = (int)prompt_len,
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
    return NULL;
}

static void handle_generate(eng *e, const srv_in *m)
{
    if (find_by_client(e, m->conn, m->rid) >= 0) {
        /* the live one keeps running; this one ends here */
        send_error(e, m->conn, m->rid, RT_STATUS_ALREADY_EXISTS, "this request_id is already live on this connection",
                   true);
        return;
    }
    if (e->n_live >= e->s->opt.max_queue) {
        send_error(e, m->conn, m->rid, RT_STATUS_RESOURCE_EXHAUSTED, "the server's request queue is full", true);
        return;
    }
    rt_sched_request r;
    char buf[BASE_ERR_LEN + 32];
    int32_t *text_ids = NULL; /* a prompt_text's ids: the scheduler copies them */
    const Dinfer__V1__GenerateRequest *g = m->frame->generate;
    const char *why = convert(g, e->cfg, e->s->tok, &r, &text_ids, m->arrival, buf, sizeof buf);
    if (why) {
        free(text_ids);
        send_error(e, m->conn, m->rid, RT_STATUS_INVALID_ARGUMENT, why, true);
        return;
    }
    live l = {.want_top = r.sampling.n_logprobs > 0};
    if (e->s->tok) {
        l.dt = malloc(sizeof *l.dt);
        l.stops = g->n_stop ? calloc(g->n_stop, sizeof *l.stops) : NULL;
        bool ok = l.dt && (!g->n_stop || l.stops);
        if (l.dt) { /* the text continues the prompt's (a leading space stays) */
            base_err perr;
            rt_detok_init(l.dt, e->s->tok, true);
            rt_detok_prime(l.dt, r.prompt, r.prompt_len, &perr); /* bad ids: rt_sched_add names them */
        }
        for (size_t i = 0; ok && i < g->n_stop; i++)
            ok = (l.stops[l.n_stops++] = strdup(g->stop[i])) != NULL;
        if (!ok) {
            free(text_ids);
            live_free(&l);
            send_error(e, m->conn, m->rid, RT_STATUS_RESOURCE_EXHAUSTED, "out of memory", true);
            return;
        }
    }
    if (e->n_live == e->cap_live) {
        int cap = e->cap_live ? 2 * e->cap_live : 64;
        live *nl = realloc(e->lv, (size_t)cap * sizeof *nl);
        if (!nl) {
            free(text_ids);
            live_free(&l);
            send_error(e, m->conn, m->rid, RT_STATUS_RESOURCE_EXHAUSTED, "out of memory", true);
            return;
        }
        e->lv = nl;
        e->cap_live = cap;
    }
    r.id = ++e->next_id;
    int status;
    base_err err;
    const int rc = rt_sched_add(e->sched, &r, &status, &err);
    free(text_ids);
    if (rc) {
        live_free(&l);
        send_error(e, m->conn, m->rid, status, err.msg, true);
        return;
    }
    l.sched_id = r.id, l.conn = m->conn, l.rid = m->rid;
    e->lv[e->n_live++] = l;
}

static void handle_in(eng *e, const srv_in *m)
{
    if (m->kind == SRV_DISCONNECT) {
        for (int i = e->n_live - 1; i >= 0; i--)
            if (e->lv[i].conn == m->conn) {
                uint64_t id = e->lv[i].sched_id;
                drop_live(e, i); /* nobody to tell */
                rt_sched_cancel(e->sched, id, RT_STATUS_CANCELLED, "the client disconnected");
            }
    } else if (m->kind == SRV_CANCEL) {
        int i = find_by_client(e, m->conn, m->rid);
        if (i < 0) {
            char msg[96];
            snprintf(msg, sizeof msg, "no live request %llu on this connection to cancel", (unsigned long long)m->rid);
            send_error(e, m->conn, m->rid, RT_STATUS_NOT_FOUND, msg, false);
        } else {
            rt_sched_cancel(e->sched, e->lv[i].sched_id, RT_STATUS_CANCELLED, "cancelled by the client");
        }
    } else {
        handle_generate(e, m);
    }
}

static void take_inbound(eng *e)
{
    for (srv_qnode *q = srv_queue_take(&e->s->to_engine), *next; q; q = next) {
        next = q->next;
        srv_in *m = (srv_in *)q;
        handle_in(e, m);
        wire_frame_free(m->frame);
        free(m);
    }
}

static void publish(eng *e)
{
    srv_shared *s = e->s;
    rt_sched_stats st;
    rt_sched_get_stats(e->sched, &st);
    pthread_mutex_lock(&s->mu);
    s->snap.st = st;
    s->metrics = e->m;
    pthread_mutex_unlock(&s->mu);
}

static void wait_for_work(srv_shared *s, int timeout_ms)
{
    struct pollfd p = {.fd = srv_queue_fd(&s->to_engine), .events = POLLIN};
    if (poll(&p, 1, timeout_ms) > 0)
        srv_queue_clear_wake(&s->to_engine);
}

/* Every request still live ends UNAVAILABLE. */
static void end_all(eng *e)
{
    rt_sched_cancel_waiting(e->sched, RT_STATUS_UNAVAILABLE, "the server is shutting down");
    while (e->n_live > 0) {
        live l = e->lv[e->n_live - 1];
        if (rt_sched_cancel(e->sched, l.sched_id, RT_STATUS_UNAVAILABLE,
                            "the server shut down before the request finished") != 0) {
            send_error(e, l.conn, l.rid, RT_STATUS_UNAVAILABLE, "the server shut down", true);
            live_free(&e->lv[e->n_live - 1]);
            e->n_live--;
        }
    }
}

/* One scheduler step, watched: the call itself (a collective that never returns), and each engine
 * step from its start to the call that collects it (with pipeline parallelism a step stays in
 * flight across calls: a rank lost with several in flight ends the job through the oldest). */
static int watched_step(eng *e, base_err *err)
{
    srv_watchdog *wd = &e->s->wd;
    const int before = rt_sched_in_flight(e->sched);
    const double t0 = base_now();
    const int call = srv_watchdog_step_begin(wd, t0);
    const int rc = rt_sched_step(e->sched, err);
    const double t1 = base_now();
    srv_watchdog_step_end(wd, call, t1);
    srv_hist_observe(&e->m.step, t1 - t0);
    if (rc)
        return rc;
    int tokens, prefill;
    rt_sched_last_step(e->sched, &tokens, &prefill);
    const int started = tokens > 0, collected = before + started - rt_sched_in_flight(e->sched);
    if (started)
        srv_hist_observe(&e->m.iter_tokens, tokens);
    if (started && e->n_flight_slots < SRV_MAX_IN_FLIGHT)
        e->flight_slots[e->n_flight_slots++] = srv_watchdog_step_begin(wd, t0);
    for (int i = 0; i < collected && e->n_flight_slots > 0; i++) {
        srv_watchdog_step_end(wd, e->flight_slots[0], t1);
        memmove(e->flight_slots, e->flight_slots + 1, (size_t)--e->n_flight_slots * sizeof *e->flight_slots);
    }
    return 0;
}

int srv_engine_loop(srv_shared *s, rt_engine *en, const rt_sched_options *opt, base_err *err)
{
    eng e = {.s = s, .cfg = &rt_engine_model(en)->cfg};
    srv_metrics_init(&e.m);
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
            end_all(&e);
            while (rc == 0 && rt_sched_in_flight(e.sched) > 0) /* the steps in flight come back first */
                rc = watched_step(&e, err);
            flush_out(&e);
            break;
        }
        if (rt_sched_has_work(e.sched)) {
            /* the watchdog (on the network thread) sees a step that never ends */
            if ((rc = watched_step(&e, err)))
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
    srv_queue_wake(&s->to_net);
    rt_sched_stats st;
    rt_sched_get_stats(e.sched, &st);
    base_log(0, "%llu steps, %llu of them started while another was in flight", (unsigned long long)st.steps,
             (unsigned long long)st.steps_overlapped);
    rt_sched_destroy(e.sched);
    for (int i = 0; i < e.n_live; i++)
        live_free(&e.lv[i]);
    free(e.lv);
    return rc;
}
