/* The HTTP front end of dinfer-server (see http.h). A request's life: its headers arrive (route,
 * method, authentication and the declared body size are checked at once), its body is gathered up
 * to --max-frame-bytes, then it is answered on the spot (health, metrics, models, tokenize) or
 * becomes n GenerateRequest frames for the engine while the connection is suspended. The engine's
 * frames resume it: a streamed request answers 200 with Server-Sent Events from the first frame on
 * (so an early refusal still gets its 4xx), a whole one answers when the last choice ends. A client
 * that goes away cancels its request; one that stops reading is cut off when its unread output
 * passes --max-conn-buffer, as on the socket protocol. */
#include "launch/server/http.h"

#include <errno.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "launch/server/metrics.h"
#include "launch/server/openai.h"
#include "proto/frames.h"

typedef enum route {
    R_UNKNOWN,
    R_HEALTH,
    R_METRICS,
    R_MODELS,
    R_COMPLETIONS,
    R_CHAT,
    R_TOKENIZE,
    R_DETOKENIZE,
} route;

typedef struct choice {
    char *text; /* (len) whole responses: the text so far */
    size_t len, cap;
    const char *finish; /* "stop" / "length" once ended */
    bool role_sent;     /* chat streams: the first chunk (delta.role) went out */
    oai_logprobs lp;    /* with logprobs: every token so far (streams: this chunk's) */
} choice;

typedef struct hreq {
    struct srv_http *h;
    struct MHD_Connection *mc;
    struct hreq *prev, *next;
    route rt;
    bool post;
    char *body;
    size_t body_len;
    bool failed; /* answer err */
    oai_err err;
    bool dispatched;
    /* a generate request */
    uint64_t id; /* its connection id with the engine; 0 when none was sent */
    oai_request req;
    char cmpl_id[48];
    long created;
    choice ch[OAI_MAX_N];
    int n_done;
    uint64_t prompt_tokens, completion_tokens;
    bool done;      /* every choice ended, or the request failed */
    bool started;   /* streams: the 200 is queued */
    bool suspended;
    bool dropped;   /* stopped reading: cut off */
    char *out;      /* (out_len) stream bytes not yet taken by libmicrohttpd, from out_off */
    size_t out_len, out_off, out_cap;
} hreq;

struct srv_http {
    srv_shared *s;
    struct MHD_Daemon *d;
    int listen_fd;
    bool listening; /* libmicrohttpd owns listen_fd and has not been quiesced */
    hreq *reqs; /* every request in progress */
    int n_reqs;
    uint64_t next_id;
    long started;
    uint64_t seed_state;
};

/* ---- requests in progress ---- */

static hreq *find_req(srv_http *h, uint64_t id)
{
    for (hreq *r = h->reqs; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

static void free_req(hreq *r)
{
    srv_http *h = r->h;
    if (r->prev)
        r->prev->next = r->next;
    else
        h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    h->n_reqs--;
    for (int i = 0; i < OAI_MAX_N; i++) {
        free(r->ch[i].text);
        oai_logprobs_free(&r->ch[i].lp);
    }
    oai_request_free(&r->req);
    free(r->body), free(r->out);
    free(r);
}

static void resume(hreq *r)
{
    if (r->suspended) {
        r->suspended = false;
        MHD_resume_connection(r->mc);
    }
}

static void suspend(hreq *r)
{
    if (!r->suspended) {
        r->suspended = true;
        MHD_suspend_connection(r->mc);
    }
}

/* Tells the engine to drop what it still runs for r (all its choices). */
static void cancel_engine_side(hreq *r)
{
    if (r->id && !r->done)
        srv_send_in(r->h->s, SRV_DISCONNECT, r->id, 0, NULL);
}

/* ---- responses ---- */

static enum MHD_Result respond(hreq *r, int status, const char *type, char *body)
{
    if (!body)
        return MHD_NO; /* out of memory: close */
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (status == 405)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->rt == R_HEALTH || r->rt == R_METRICS ||
                                                                     r->rt == R_MODELS ? "GET" : "POST");
    const enum MHD_Result rc = MHD_queue_response(r->mc, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result respond_error(hreq *r)
{
    return respond(r, r->err.status, "application/json", oai_error_json(&r->err));
}

static enum MHD_Result respond_json(hreq *r, char *body)
{
    return respond(r, 200, "application/json", body);
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
        cancel_engine_side(r);
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
            cancel_engine_side(r);
            free(s);
            return;
        }
        r->out = o, r->out_cap = c;
    }
    memcpy(r->out + r->out_len, s, n);
    r->out_len += n;
    free(s);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    hreq *r = cls;
    if (r->dropped)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    const size_t avail = r->out_len - r->out_off;
    if (avail > 0) {
        const size_t k = avail < max ? avail : max;
        memcpy(buf, r->out + r->out_off, k);
        r->out_off += k;
        return (ssize_t)k;
    }
    if (r->done)
        return MHD_CONTENT_READER_END_OF_STREAM;
    suspend(r); /* resumed when the engine sends more */
    return 0;
}

static enum MHD_Result start_stream(hreq *r)
{
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, r, NULL);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    r->started = true;
    const enum MHD_Result rc = MHD_queue_response(r->mc, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result respond_completion(hreq *r)
{
    oai_choice c[OAI_MAX_N];
    for (int i = 0; i < r->req.n; i++)
        c[i] = (oai_choice){.text = r->ch[i].text ? r->ch[i].text : "", .finish_reason = r->ch[i].finish,
                            .lp = r->req.logprobs >= 0 ? &r->ch[i].lp : NULL};
    return respond_json(r, (r->req.chat ? oai_chat_json : oai_completion_json)(r->cmpl_id, r->created,
                                                                               r->h->s->snap.model, c, r->req.n,
                                                                               r->prompt_tokens, r->completion_tokens));
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
    cancel_engine_side(r); /* the other choices */
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
        resume(r);
}

/* ---- handling a request ---- */

static route route_of(const char *url)
{
    static const struct {
        const char *path;
        route r;
    } routes[] = {{"/health", R_HEALTH},           {"/metrics", R_METRICS},     {"/v1/models", R_MODELS},
                  {"/v1/completions", R_COMPLETIONS}, {"/v1/chat/completions", R_CHAT}, {"/tokenize", R_TOKENIZE},
                  {"/detokenize", R_DETOKENIZE}};
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
        if (strcmp(url, routes[i].path) == 0)
            return routes[i].r;
    return R_UNKNOWN;
}

/* Constant-time comparison of the bearer token. */
static bool token_ok(const char *want, const char *header)
{
    if (!want)
        return true;
    if (!header || strncmp(header, "Bearer ", 7) != 0)
        return false;
    const char *got = header + 7;
    const size_t a = strlen(want), b = strlen(got);
    unsigned char d = (unsigned char)(a != b);
    for (size_t i = 0; i < a; i++)
        d |= (unsigned char)(want[i] ^ got[i < b ? i : 0]);
    return d == 0;
}

/* The first look at a request, headers only: false when it is refused (r->err set). */
static bool admit(hreq *r, const char *url, const char *method)
{
    srv_http *h = r->h;
    r->rt = route_of(url);
    r->post = strcmp(method, "POST") == 0;
    const bool get = strcmp(method, "GET") == 0;
    if (r->rt == R_UNKNOWN) {
        oai_fail(&r->err, 404, NULL, "no such endpoint: %s %.200s", method, url);
        r->err.code = "not_found";
        return false;
    }
    const bool wants_post = r->rt != R_HEALTH && r->rt != R_METRICS && r->rt != R_MODELS;
    if (wants_post ? !r->post : !get) {
        oai_fail(&r->err, 405, NULL, "%s takes %s, not %s", url, wants_post ? "POST" : "GET", method);
        return false;
    }
    /* /health and /metrics stay open (load balancers and Prometheus scrape them) */
    if (r->rt != R_HEALTH && r->rt != R_METRICS &&
        !token_ok(h->s->opt.auth_token, MHD_lookup_connection_value(r->mc, MHD_HEADER_KIND, "Authorization"))) {
        oai_fail(&r->err, 401, NULL, "this server needs \"Authorization: Bearer <token>\" with its token");
        r->err.code = "invalid_api_key";
        return false;
    }
    const char *cl = MHD_lookup_connection_value(r->mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > h->s->opt.max_frame) {
        oai_fail(&r->err, 413, NULL, "the body is %s bytes, over the limit of %zu (--max-frame-bytes)", cl,
                 h->s->opt.max_frame);
        return false;
    }
    return true;
}

static uint64_t next_seed(srv_http *h)
{
    uint64_t z = (h->seed_state += 0x9e3779b97f4a7c15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* One GenerateRequest frame per choice, packed and unpacked so the engine frees it as any other. */
static int submit(hreq *r)
{
    srv_http *h = r->h;
    const oai_request *q = &r->req;
    r->id = SRV_HTTP_CONN_BIT | ++h->next_id;
    const uint64_t base_seed = q->has_seed ? q->seed : next_seed(h);
    for (int i = 0; i < q->n; i++) {
        Dinfer__V1__GenerateRequest g = DINFER__V1__GENERATE_REQUEST__INIT;
        g.prompt_text = q->prompt_text;
        g.prompt_tokens = q->prompt_ids, g.n_prompt_tokens = q->n_prompt_ids;
        g.has_max_tokens = 1, g.max_tokens = (uint32_t)q->max_tokens;
        g.has_temperature = 1, g.temperature = q->temperature;
        g.has_top_k = 1, g.top_k = q->top_k;
        g.has_top_p = 1, g.top_p = q->top_p;
        g.has_seed = 1, g.seed = base_seed + (uint64_t)i; /* choices differ, each reproducible */
        g.stop = q->n_stop ? (char **)q->stop : NULL, g.n_stop = (size_t)q->n_stop;
        if (q->logprobs >= 0)
            g.has_logprobs = 1, g.logprobs = (uint32_t)q->logprobs;
        g.has_ignore_eos = q->ignore_eos, g.ignore_eos = q->ignore_eos;
        Dinfer__V1__Frame fr = DINFER__V1__FRAME__INIT;
        fr.has_request_id = 1, fr.request_id = (uint64_t)i + 1;
        fr.body_case = DINFER__V1__FRAME__BODY_GENERATE, fr.generate = &g;
        const size_t n = dinfer__v1__frame__get_packed_size(&fr);
        uint8_t *buf = malloc(n ? n : 1);
        wire_frame *f = buf ? (dinfer__v1__frame__pack(&fr, buf), dinfer__v1__frame__unpack(NULL, n, buf)) : NULL;
        free(buf);
        if (!f) {
            cancel_engine_side(r);
            return oai_fail(&r->err, 500, NULL, "out of memory");
        }
        srv_send_in(h->s, SRV_GENERATE, r->id, (uint64_t)i + 1, f);
    }
    return 0;
}

/* A conversation through the chat template, then the tokenizer (special tokens not added unless
 * add_special: the template writes them, as transformers and vLLM tokenize a chat); the count, or
 * -1 with a 400. */
static int chat_prompt(srv_http *h, const cJSON *messages, bool add_generation_prompt, bool add_special, int32_t **ids,
                       oai_err *e)
{
    *ids = NULL;
    if (!h->s->tok)
        return oai_fail(e, 400, "messages", "the model has no tokenizer.json: chat needs one");
    if (!h->s->chat)
        return oai_fail(e, 400, "messages",
                        "the model has no chat template (tokenizer_config.json's chat_template or chat_template.jinja): "
                        "use /v1/completions, or start the server with --chat-template FILE");
    base_err err;
    size_t len = 0;
    char *text = rt_chat_render(h->s->chat, messages, add_generation_prompt, &len, &err);
    if (!text)
        return oai_fail(e, 400, "messages", "%s", err.msg);
    const int k = rt_tokenizer_encode(h->s->tok, text, len, add_special, ids, &err);
    free(text);
    if (k < 0)
        return oai_fail(e, 400, "messages", "the rendered prompt: %s", err.msg);
    return k;
}

static enum MHD_Result answer_generate(hreq *r)
{
    srv_http *h = r->h;
    const bool chat = r->rt == R_CHAT;
    if ((chat ? oai_parse_chat : oai_parse_completion)(r->body ? r->body : "", r->body_len, &r->req, &r->err))
        return respond_error(r);
    if (r->req.model && strcmp(r->req.model, h->s->snap.model) != 0) {
        oai_fail(&r->err, 404, "model", "the model `%.200s` does not exist: this server serves `%s`", r->req.model,
                 h->s->snap.model);
        r->err.code = "model_not_found";
        return respond_error(r);
    }
    if (h->s->stop) {
        oai_fail(&r->err, 503, NULL, "the server is shutting down");
        return respond_error(r);
    }
    if (chat) {
        const int k = chat_prompt(h, r->req.messages, r->req.add_generation_prompt, false, &r->req.prompt_ids, &r->err);
        if (k < 0)
            return respond_error(r);
        r->req.n_prompt_ids = (size_t)k;
        if (!r->req.max_tokens) /* as OpenAI: what the context leaves (too long a prompt is the engine's 400) */
            r->req.max_tokens = k < h->s->snap.max_context ? h->s->snap.max_context - k : 1;
    }
    snprintf(r->cmpl_id, sizeof r->cmpl_id, "%s-%016llx", chat ? "chatcmpl" : "cmpl", (unsigned long long)next_seed(h));
    r->created = (long)time(NULL);
    if (submit(r))
        return respond_error(r);
    suspend(r);
    return MHD_YES;
}

static char *ids_json(const int32_t *ids, int k, int max_context)
{
    const size_t cap = 64 + (size_t)k * 12;
    char *json = malloc(cap);
    if (json) {
        size_t at = (size_t)snprintf(json, cap, "{\"count\":%d,\"max_model_len\":%d,\"tokens\":[", k, max_context);
        for (int i = 0; i < k; i++)
            at += (size_t)snprintf(json + at, cap - at, "%s%d", i ? "," : "", (int)ids[i]);
        snprintf(json + at, cap - at, "]}");
    }
    return json;
}

static enum MHD_Result answer_tokenize(hreq *r)
{
    srv_http *h = r->h;
    if (!h->s->tok) {
        oai_fail(&r->err, 400, NULL, "the model has no tokenizer.json");
        return respond_error(r);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    base_err err;
    char *json = NULL;
    if (r->rt == R_TOKENIZE) {
        oai_tokenize t;
        if (oai_parse_tokenize(r->body ? r->body : "", r->body_len, &t, &r->err))
            return respond_error(r);
        int k;
        if (t.messages) { /* exactly what a chat request with these messages would be prompted with */
            k = chat_prompt(h, t.messages, t.add_generation_prompt, t.add_special, &ids, &r->err);
        } else {
            k = rt_tokenizer_encode(h->s->tok, t.text, strlen(t.text), t.add_special, &ids, &err);
            if (k < 0)
                oai_fail(&r->err, 400, "prompt", "prompt: %s", err.msg);
        }
        oai_tokenize_free(&t);
        if (k < 0) {
            free(ids);
            return respond_error(r);
        }
        json = ids_json(ids, k, h->s->snap.max_context);
        free(ids);
        return respond_json(r, json);
    }
    if (oai_parse_detokenize(r->body ? r->body : "", r->body_len, &ids, &n, &r->err))
        return respond_error(r);
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= rt_tokenizer_n_ids(h->s->tok)) {
            oai_fail(&r->err, 400, "tokens", "tokens[%zu] = %d is not an id of this tokenizer (%d ids)", i,
                     (int)ids[i], rt_tokenizer_n_ids(h->s->tok));
            free(ids);
            return respond_error(r);
        }
    size_t len = 0;
    char *t = rt_tokenizer_decode(h->s->tok, ids, (int)n, false, &len, &err);
    free(ids);
    if (!t) {
        oai_fail(&r->err, 400, "tokens", "%s", err.msg);
        return respond_error(r);
    }
    json = oai_prompt_json(t);
    free(t);
    return respond_json(r, json);
}

static enum MHD_Result answer_now(hreq *r)
{
    srv_http *h = r->h;
    srv_shared *s = h->s;
    switch (r->rt) {
    case R_HEALTH: {
        pthread_mutex_lock(&s->mu);
        const bool ready = s->ready && !s->stop;
        pthread_mutex_unlock(&s->mu);
        if (ready)
            return respond_json(r, strdup("{\"status\":\"ok\"}"));
        oai_fail(&r->err, 503, NULL, s->stop ? "the server is draining" : "the server is starting");
        return respond_error(r);
    }
    case R_METRICS: {
        pthread_mutex_lock(&s->mu);
        const srv_metrics m = s->metrics;
        const rt_sched_stats st = s->snap.st;
        pthread_mutex_unlock(&s->mu);
        const int blocks = st.kv_blocks_used + st.kv_blocks_free;
        const srv_gauges g = {.running = st.running, .waiting = st.waiting,
                              .kv_usage = blocks ? (double)st.kv_blocks_used / blocks : 0.0,
                              .preemptions = st.preemptions, .connections = s->n_socket_conns,
                              .in_flight = st.in_flight, .steps = st.steps, .overlapped = st.steps_overlapped};
        size_t len;
        return respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", srv_metrics_render(&m, &g, &len));
    }
    case R_MODELS:
        return respond_json(r, oai_models_json(s->snap.model, h->started, s->snap.max_context));
    case R_COMPLETIONS:
    case R_CHAT:
        return answer_generate(r);
    case R_TOKENIZE:
    case R_DETOKENIZE:
        return answer_tokenize(r);
    default:
        oai_fail(&r->err, 404, NULL, "no such endpoint");
        return respond_error(r);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    srv_http *h = cls;
    hreq *r = *con_cls;
    if (!r) { /* the headers are in */
        if (!(r = calloc(1, sizeof *r)))
            return MHD_NO;
        r->h = h, r->mc = mc;
        r->next = h->reqs;
        if (h->reqs)
            h->reqs->prev = r;
        h->reqs = r;
        h->n_reqs++;
        *con_cls = r;
        if (!admit(r, url, method)) {
            r->failed = true;
            return respond_error(r); /* the body, if any, is never read */
        }
        return MHD_YES;
    }
    if (*upload_size > 0) { /* a piece of the body */
        const size_t n = *upload_size;
        *upload_size = 0;
        if (r->failed)
            return MHD_YES;
        if (r->body_len + n > h->s->opt.max_frame) {
            oai_fail(&r->err, 413, NULL, "the body is over the limit of %zu bytes (--max-frame-bytes)",
                     h->s->opt.max_frame);
            r->failed = true;
            return MHD_YES;
        }
        char *b = realloc(r->body, r->body_len + n + 1);
        if (!b)
            return MHD_NO;
        memcpy(b + r->body_len, upload, n);
        r->body = b, r->body_len += n;
        r->body[r->body_len] = '\0';
        return MHD_YES;
    }
    /* the whole request is in; or the engine resumed us */
    if (r->failed)
        return respond_error(r);
    if (!r->dispatched) {
        r->dispatched = true;
        return answer_now(r);
    }
    if (r->req.stream && !r->started && (r->out_len > r->out_off || r->done))
        return start_stream(r);
    if (!r->req.stream && r->done)
        return respond_completion(r);
    suspend(r); /* nothing to say yet */
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)mc, (void)toe;
    hreq *r = *con_cls;
    if (!r)
        return;
    cancel_engine_side(r); /* a client gone before the end cancels what still runs */
    free_req(r);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    base_log(0, "http: %s", msg);
}

int srv_http_start(srv_shared *s, srv_http **out, base_err *err)
{
    *out = NULL;
    srv_http *h = calloc(1, sizeof *h);
    if (!h)
        return base_errf(err, "out of memory");
    h->s = s;
    h->started = (long)time(NULL);
    h->seed_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (srv_listen(s->opt.host, s->opt.http_port, &h->listen_fd, s->http_bound, sizeof s->http_bound, err) != 0) {
        free(h);
        return -1;
    }
    /* a connection silent for --frame-timeout is closed (a slow sender, a client that stops
     * reading); oversized request lines and headers get libmicrohttpd's own 414 / 431 */
    h->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request,
                            h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET, h->listen_fd,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)s->opt.max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)(s->opt.frame_timeout > 1 ? s->opt.frame_timeout : 1), MHD_OPTION_END);
    if (!h->d) {
        close(h->listen_fd);
        free(h);
        return base_errf(err, "cannot start the HTTP server on %s (libmicrohttpd refused its options)", s->http_bound);
    }
    h->listening = true; /* the socket is libmicrohttpd's now: it closes it */
    *out = h;
    return 0;
}

int srv_http_fd(const srv_http *h)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    return i ? i->epoll_fd : -1;
}

int srv_http_timeout_ms(srv_http *h, int cap)
{
    MHD_UNSIGNED_LONG_LONG t;
    if (MHD_get_timeout(h->d, &t) != MHD_YES)
        return cap;
    return t < (MHD_UNSIGNED_LONG_LONG)cap ? (int)t : cap;
}

void srv_http_run(srv_http *h)
{
    MHD_run(h->d);
}

void srv_http_quiesce(srv_http *h)
{
    if (h->listening) {
        const MHD_socket fd = MHD_quiesce_daemon(h->d);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
        h->listening = false;
    }
}

int srv_http_active(const srv_http *h)
{
    return h->n_reqs;
}

void srv_http_stop(srv_http *h)
{
    if (!h)
        return;
    for (hreq *r = h->reqs; r; r = r->next) /* MHD may only close a suspended connection once resumed */
        resume(r);
    MHD_stop_daemon(h->d); /* each open request's on_completed frees it; the listener closes */
    while (h->reqs)
        free_req(h->reqs);
    free(h);
}
