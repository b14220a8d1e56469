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
#include "launch/server/http_impl.h"
#include "launch/server/metrics.h"
#include "launch/server/openai.h"
#include "proto/frames.h"

/* ---- requests in progress ---- */

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

void http_resume(hreq *r)
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
void http_cancel(hreq *r)
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
            http_cancel(r);
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
    http_cancel(r); /* a client gone before the end cancels what still runs */
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
        http_resume(r);
    MHD_stop_daemon(h->d); /* each open request's on_completed frees it; the listener closes */
    while (h->reqs)
        free_req(h->reqs);
    free(h);
}
