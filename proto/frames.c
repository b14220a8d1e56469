#include "proto/frames.h"

static int put(wire_buf *b, uint64_t rid, wire_frame *f)
{
    f->has_request_id = 1;
    f->request_id = rid;
    return wire_buf_append(b, f);
}

int wire_put_error(wire_buf *b, uint64_t rid, int code, const char *msg)
{
    Dinfer__V1__Error e = DINFER__V1__ERROR__INIT;
    e.has_code = 1, e.code = (Dinfer__V1__StatusCode)code;
    e.message = (char *)msg;
    wire_frame f = DINFER__V1__FRAME__INIT;
    f.body_case = DINFER__V1__FRAME__BODY_ERROR;
    f.error = &e;
    return put(b, rid, &f);
}

int wire_put_token(wire_buf *b, uint64_t rid, int32_t token, float logprob, int n_top, const int32_t *top_ids,
                   const float *top_logprobs, const char *text)
{
    Dinfer__V1__TokenChunk ch = DINFER__V1__TOKEN_CHUNK__INIT;
    Dinfer__V1__TopLogprobs top = DINFER__V1__TOP_LOGPROBS__INIT, *tops = &top;
    ch.n_tokens = 1, ch.tokens = &token;
    ch.n_logprobs = 1, ch.logprobs = &logprob;
    if (n_top > 0) {
        top.n_token_ids = (size_t)n_top, top.token_ids = (int32_t *)top_ids;
        top.n_logprobs = (size_t)n_top, top.logprobs = (float *)top_logprobs;
        ch.n_top = 1, ch.top = &tops;
    }
    ch.text = (char *)text;
    wire_frame f = DINFER__V1__FRAME__INIT;
    f.body_case = DINFER__V1__FRAME__BODY_CHUNK;
    f.chunk = &ch;
    return put(b, rid, &f);
}

int wire_put_text(wire_buf *b, uint64_t rid, const char *text)
{
    Dinfer__V1__TokenChunk ch = DINFER__V1__TOKEN_CHUNK__INIT;
    ch.text = (char *)text;
    wire_frame f = DINFER__V1__FRAME__INIT;
    f.body_case = DINFER__V1__FRAME__BODY_CHUNK;
    f.chunk = &ch;
    return put(b, rid, &f);
}

int wire_put_done(wire_buf *b, uint64_t rid, const wire_done *d)
{
    Dinfer__V1__GenerateDone m = DINFER__V1__GENERATE_DONE__INIT;
    m.finish_reason = (char *)d->finish_reason;
    m.has_prompt_tokens = 1, m.prompt_tokens = d->prompt_tokens;
    m.has_completion_tokens = 1, m.completion_tokens = d->completion_tokens;
    m.has_ttft_ms = 1, m.ttft_ms = d->ttft_ms;
    m.has_total_ms = 1, m.total_ms = d->total_ms;
    m.text = (char *)d->text;
    wire_frame f = DINFER__V1__FRAME__INIT;
    f.body_case = DINFER__V1__FRAME__BODY_DONE;
    f.done = &m;
    return put(b, rid, &f);
}

int wire_put_health(wire_buf *b, uint64_t rid, const Dinfer__V1__HealthResponse *h)
{
    wire_frame f = DINFER__V1__FRAME__INIT;
    f.body_case = DINFER__V1__FRAME__BODY_HEALTH_RESPONSE;
    f.health_response = (Dinfer__V1__HealthResponse *)h;
    return put(b, rid, &f);
}

int wire_put_stats(wire_buf *b, uint64_t rid, const Dinfer__V1__StatsResponse *s)
{
    wire_frame f = DINFER__V1__FRAME__INIT;
    f.body_case = DINFER__V1__FRAME__BODY_STATS_RESPONSE;
    f.stats_response = (Dinfer__V1__StatsResponse *)s;
    return put(b, rid, &f);
}
