/* The engine's frames for an HTTP request (http_impl.h): each choice's tokens and text gathered for a
 * whole response, or turned into Server-Sent Events for a stream (bytes held until libmicrohttpd
 * takes them, the client cut off past --max-conn-buffer unread); the end of each choice; an error,
 * which becomes the response's status before the 200 went out and an event in the stream after. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "launch/server/http_impl.h"
#include "proto/frames.h"

static hreq *find_req(srv_http *h, uint64_t id)
{
    for (hreq *r = h->reqs; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}


/* Appends stream bytes (taking s); past the connection's cap the client is cut off. */
static void stream_add(hreq *r, char *s)
{
    if (!s || r->dropped) {
        free(s);
        return;
    }
    const size_t n = strlen(s), cap = r->h->s->opt.max_conn_buffer;
    if (r->out_len - r->out_off + n > cap) {
        base_log(0, "HTTP request %s: over %zu bytes unread, dropping the client", r->cmpl_id, cap);
        r->dropped = true;
        http_cancel(r);
        r->done = true;
        free(s);
        return;
    }
    if (r->out_off > 0 && r->out_off == r->out_len)
        r->out_off = r->out_len = 0;
    if (r->out_len + n > r->out_cap) {
        size_t c = r->out_cap ? 2 * r->out_cap : 4096;
        while (c < r->out_len + n)
            c *= 2;
        char *o = realloc(r->out, c);
        if (!o) {
            r->dropped = true, r->done = true;
            http_cancel(r);
            free(s);
            return;
        }
        r->out = o, r->out_cap = c;
    }
    memcpy(r->out + r->out_len, s, n);
    r->out_len += n;
    free(s);
}


/* ---- the engine's frames ---- */

static int status_of(int code)
{
    switch (code) {
    case DINFER__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT: return 400;
    case DINFER__V1__STATUS_CODE__STATUS_NOT_FOUND: return 404;
    case DINFER__V1__STATUS_CODE__STATUS_RESOURCE_EXHAUSTED: return 429;
    case DINFER__V1__STATUS_CODE__STATUS_UNAVAILABLE: return 503;
    case DINFER__V1__STATUS_CODE__STATUS_DEADLINE_EXCEEDED: return 504;
    case DINFER__V1__STATUS_CODE__STATUS_UNAUTHENTICATED: return 401;
    default: return 500;
    }
}

/* Each token's text, for logprobs (a piece of a character shows as U+FFFD, as in vLLM). */
static char *token_text(const srv_http *h, int32_t id)
{
    size_t n = 0;
    base_err err;
    char *t = h->s->tok ? rt_tokenizer_decode(h->s->tok, &id, 1, false, &n, &err) : NULL;
    if (t)
        return t;
    char buf[24];
    snprintf(buf, sizeof buf, "<%d>", (int)id);
    return strdup(buf);
}

static int lp_add(const srv_http *h, oai_logprobs *l, int n_top, int32_t id, float lp, const Dinfer__V1__TopLogprobs *top,
                  size_t offset)
{
    if (l->n == l->cap) {
        const size_t cap = l->cap ? 2 * l->cap : 16;
        char **t = realloc(l->tokens, cap * sizeof *t);
        if (t)
            l->tokens = t;
        float *p = realloc(l->logprob, cap * sizeof *p);
        if (p)
            l->logprob = p;
        size_t *o = realloc(l->offset, cap * sizeof *o);
        if (o)
            l->offset = o;
        char **tt = realloc(l->top_tokens, cap * (size_t)(n_top ? n_top : 1) * sizeof *tt);
        if (tt)
            l->top_tokens = tt;
        float *tp = realloc(l->top_logprob, cap * (size_t)(n_top ? n_top : 1) * sizeof *tp);
        if (tp)
            l->top_logprob = tp;
        if (!t || !p || !o || !tt || !tp)
            return -1;
        l->cap = cap;
    }
    const size_t i = l->n;
    l->n_top = n_top;
    l->tokens[i] = token_text(h, id);
    l->logprob[i] = lp;
    l->offset[i] = offset;
    for (int k = 0; k < n_top; k++) {
        const bool have = top && (size_t)k < top->n_token_ids && (size_t)k < top->n_logprobs;
        l->top_tokens[i * (size_t)n_top + (size_t)k] = token_text(h, have ? top->token_ids[k] : id);
        l->top_logprob[i * (size_t)n_top + (size_t)k] = have ? top->logprobs[k] : lp;
    }
    l->n++;
    return 0;
}

static int text_add(choice *c, const char *s)
{
    const size_t n = strlen(s);
    if (c->len + n + 1 > c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 256;
        while (cap < c->len + n + 1)
            cap *= 2;
        char *t = realloc(c->text, cap);
        if (!t)
            return -1;
        c->text = t, c->cap = cap;
    }
    memcpy(c->text + c->len, s, n + 1);
    c->len += n;
    return 0;
}

static void on_chunk(hreq *r, int index, const Dinfer__V1__TokenChunk *k)
{
    choice *c = &r->ch[index];
    const char *text = k->text ? k->text : "";
    const int n_top = r->req.logprobs > 0 ? r->req.logprobs : 0;
    r->completion_tokens += k->n_tokens;
    size_t offset = c->len; /* where this chunk's text begins in the choice's */
    if (r->req.stream)
        oai_logprobs_free(&c->lp); /* a chunk carries its own tokens' logprobs */
    for (size_t t = 0; r->req.logprobs >= 0 && t < k->n_tokens; t++)
        if (lp_add(r->h, &c->lp, n_top, k->tokens[t], t < k->n_logprobs ? k->logprobs[t] : 0.0f,
                   t < k->n_top ? k->top[t] : NULL, offset) != 0)
            r->dropped = true;
    if (r->req.stream) {
        if (r->req.chat && (*text || k->n_tokens || !c->role_sent)) {
            stream_add(r, oai_chat_chunk(r->cmpl_id, r->created, r->h->s->snap.model, index,
                                         c->role_sent ? NULL : "assistant", text,
                                         r->req.logprobs >= 0 && k->n_tokens ? &c->lp : NULL, NULL));
            c->role_sent = true;
        } else if (!r->req.chat && (*text || k->n_tokens)) {
            stream_add(r, oai_completion_chunk(r->cmpl_id, r->created, r->h->s->snap.model, index, text,
                                               r->req.logprobs >= 0 ? &c->lp : NULL, NULL));
        }
        c->len += strlen(text); /* offsets only */
    } else if (text_add(c, text) != 0) {
        r->dropped = true;
    }
}

static void finish_stream(hreq *r)
{
    if (r->req.include_usage)
        stream_add(r, (r->req.chat ? oai_chat_usage_chunk : oai_usage_chunk)(r->cmpl_id, r->created,
                                                                            r->h->s->snap.model, r->prompt_tokens,
                                                                            r->completion_tokens));
    stream_add(r, strdup(OAI_DONE));
}

static void on_done(hreq *r, int index, const Dinfer__V1__GenerateDone *d)
{
    choice *c = &r->ch[index];
    c->finish = d->finish_reason && strcmp(d->finish_reason, "length") == 0 ? "length" : "stop";
    r->prompt_tokens = d->has_prompt_tokens ? d->prompt_tokens : r->prompt_tokens;
    if (r->req.stream) {
        oai_logprobs_free(&c->lp);
        if (r->req.chat)
            stream_add(r, oai_chat_chunk(r->cmpl_id, r->created, r->h->s->snap.model, index,
                                         c->role_sent ? NULL : "assistant", c->role_sent ? NULL : "", NULL, c->finish));
        else
            stream_add(r, oai_completion_chunk(r->cmpl_id, r->created, r->h->s->snap.model, index, "", NULL,
                                               c->finish));
        c->role_sent = true;
    }
    if (++r->n_done == r->req.n) {
        if (r->req.stream)
            finish_stream(r);
        r->done = true;
    }
}

static void on_error(hreq *r, const Dinfer__V1__Error *e)
{
    const int code = e->has_code ? (int)e->code : DINFER__V1__STATUS_CODE__STATUS_INTERNAL;
    http_cancel(r); /* the other choices */
    oai_fail(&r->err, status_of(code), NULL, "%s", e->message ? e->message : "the request failed");
    if (status_of(code) == 400 && strstr(r->err.message, "prompt"))
        snprintf(r->err.param, sizeof r->err.param, "prompt");
    if (r->started) { /* the 200 went out: the error rides the stream */
        stream_add(r, NULL);
        char *j = oai_error_json(&r->err);
        if (j) {
            const size_t n = strlen(j);
            char *s = malloc(n + 9);
            if (s)
                snprintf(s, n + 9, "data: %s\n\n", j);
            stream_add(r, s);
            free(j);
        }
        stream_add(r, strdup(OAI_DONE));
    } else {
        r->failed = true;
    }
    r->done = true;
}

void srv_http_deliver(srv_http *h, const srv_out *o)
{
    hreq *r = find_req(h, o->conn);
    if (!r || r->done)
        return;
    wire_decoder d;
    wire_decoder_init(&d, (size_t)1 << 30);
    if (wire_decoder_feed(&d, o->buf.data + o->buf.off, wire_buf_pending(&o->buf)) != 0) {
        wire_decoder_free(&d);
        return;
    }
    wire_frame *f;
    base_err why;
    while (!r->done && wire_decode_next(&d, &f, &why) == WIRE_FRAME) {
        const int index = (int)f->request_id - 1;
        if (f->body_case == DINFER__V1__FRAME__BODY_ERROR)
            on_error(r, f->error);
        else if (index < 0 || index >= r->req.n)
            ; /* not one of ours */
        else if (f->body_case == DINFER__V1__FRAME__BODY_CHUNK)
            on_chunk(r, index, f->chunk);
        else if (f->body_case == DINFER__V1__FRAME__BODY_DONE)
            on_done(r, index, f->done);
        wire_frame_free(f);
    }
    wire_decoder_free(&d);
    /* a stream goes on from its first frame; a whole response waits for the end */
    if (r->req.stream || r->done)
        http_resume(r);
}
