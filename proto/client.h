/* The dinfer client library: one connection to a dinfer-server coordinator, many concurrent
 * generations multiplexed on it by request id. Plain C, no MPI; link dinfer_proto.
 *
 *   base_err err;
 *   dinfer_client *c;
 *   dinfer_connect(&c, "127.0.0.1", 7070, NULL, &err);
 *   dinfer_params p;
 *   dinfer_params_init(&p);
 *   p.prompt = ids, p.prompt_len = n, p.max_tokens = 32;
 *   dinfer_result r;
 *   dinfer_generate(c, &p, on_tokens, ctx, &r, &err);   // on_tokens gets each streamed chunk
 *
 * Lower level, for many streams at once: dinfer_send_generate with your own ids, then
 * dinfer_next_frame to receive TokenChunk / GenerateDone / Error frames, each with its id.
 * Every call that can fail returns -1 with the reason in err (base/err.h, dinfer's one error
 * type), or 0 / a count. */
#ifndef DINFER_PROTO_CLIENT_H
#define DINFER_PROTO_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "proto/wire.h"

typedef struct dinfer_client dinfer_client;

typedef struct dinfer_params {
    const int32_t *prompt;
    size_t prompt_len;
    const char *prompt_text; /* instead of prompt: UTF-8, encoded by the server's tokenizer */
    const char *const *stop; /* stop strings (the server matches them on its text) */
    size_t n_stop_strings;
    uint32_t max_tokens;     /* 16 by default */
    float temperature;       /* 0: greedy */
    int32_t top_k;           /* 0: off */
    float top_p;             /* 1: off */
    bool has_seed;
    uint64_t seed;
    const int32_t *stop_ids;
    size_t n_stop;
    bool ignore_eos;
    uint32_t logprobs;       /* top-n logprobs per token */
    uint32_t deadline_ms;    /* 0: none */
} dinfer_params;

typedef struct dinfer_result {
    int status;              /* 0, or the StatusCode of the Error that ended the request */
    char message[256];       /* the server's message when status != 0 */
    char finish_reason[16];  /* "length" or "stop" */
    uint32_t prompt_tokens, completion_tokens;
    double ttft_ms, total_ms; /* as the server measured them */
} dinfer_result;

void dinfer_params_init(dinfer_params *p);

/* Connects (TCP) to host:port. auth_token may be NULL. */
int dinfer_connect(dinfer_client **out, const char *host, int port, const char *auth_token, base_err *err);
void dinfer_close(dinfer_client *c);
int dinfer_fd(const dinfer_client *c);

/* request_id must be non-zero (0 means the connection itself). */
int dinfer_send_generate(dinfer_client *c, uint64_t request_id, const dinfer_params *p, base_err *err);
int dinfer_send_cancel(dinfer_client *c, uint64_t request_id, base_err *err);
/* Sends a frame as it is (tests send malformed requests this way). */
int dinfer_send_frame(dinfer_client *c, const wire_frame *f, base_err *err);
/* The next frame from the server: 1 with *out (free with wire_frame_free), 0 after timeout_ms
 * (-1: wait forever) with nothing, -1 when the connection failed or closed. */
int dinfer_next_frame(dinfer_client *c, int timeout_ms, wire_frame **out, base_err *err);

/* Streams one generation to completion (other streams' frames on the connection are kept for
 * later dinfer_next_frame calls). on_chunk may be NULL; returning non-zero from it cancels the
 * request. Returns 0 when the request ended (res->status says how), -1 on a connection failure. */
typedef int (*dinfer_chunk_fn)(void *ctx, const Dinfer__V1__TokenChunk *chunk);
int dinfer_generate(dinfer_client *c, const dinfer_params *p, dinfer_chunk_fn on_chunk, void *ctx,
                    dinfer_result *res, base_err *err);

/* Unary calls: the response frame (health_response / stats_response, or error) in *out. */
int dinfer_health(dinfer_client *c, wire_frame **out, base_err *err);
int dinfer_stats(dinfer_client *c, wire_frame **out, base_err *err);

#endif
