/* What http.c (requests, responses, libmicrohttpd) and http_frames.c (the engine's frames into
 * OpenAI responses) share: a request in progress and the front end's state. Not for anyone else. */
#ifndef DINFER_LAUNCH_SERVER_HTTP_IMPL_H
#define DINFER_LAUNCH_SERVER_HTTP_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "launch/server/http.h"
#include "launch/server/openai.h"

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

/* Resumes r's suspended connection (libmicrohttpd polls it again). */
void http_resume(hreq *r);
/* Tells the engine to drop what it still runs for r (all its choices). */
void http_cancel(hreq *r);

#endif
