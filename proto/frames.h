/* Builders of the frames a dinfer server sends, one per reply, from plain values: each appends a
 * length-prefixed Frame carrying request_id rid to b and returns 0, or -1 when out of memory (b is
 * then unchanged). Adding a reply means adding its builder here; callers never assemble a Frame. */
#ifndef DINFER_PROTO_FRAMES_H
#define DINFER_PROTO_FRAMES_H

#include <stdint.h>

#include "proto/wire.h"

/* An Error: code is a StatusCode (gRPC's numbers), msg one readable line. rid 0 means "the
 * connection": it ends every stream on it. */
int wire_put_error(wire_buf *b, uint64_t rid, int code, const char *msg);

/* A TokenChunk of one token with its logprob, and its top-n logprobs when n_top > 0; text (NULL:
 * none) is the text it made final. */
int wire_put_token(wire_buf *b, uint64_t rid, int32_t token, float logprob, int n_top, const int32_t *top_ids,
                   const float *top_logprobs, const char *text);
/* A TokenChunk of text alone (what was held back until the end). */
int wire_put_text(wire_buf *b, uint64_t rid, const char *text);

/* GenerateDone. */
typedef struct wire_done {
    const char *finish_reason; /* "length" or "stop" */
    uint32_t prompt_tokens, completion_tokens;
    double ttft_ms, total_ms;
    const char *text; /* NULL: none (no tokenizer) */
} wire_done;
int wire_put_done(wire_buf *b, uint64_t rid, const wire_done *d);

/* The unary replies, from their messages as the caller filled them. */
int wire_put_health(wire_buf *b, uint64_t rid, const Dinfer__V1__HealthResponse *h);
int wire_put_stats(wire_buf *b, uint64_t rid, const Dinfer__V1__StatsResponse *s);

#endif
