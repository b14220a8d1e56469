/* OpenAI's HTTP API as dinfer-server speaks it: requests parsed from JSON into plain values (every
 * field checked, what dinfer does not do refused by name) and the JSON of its replies. No sockets
 * and no engine here: http.c carries these over libmicrohttpd, the engine loop runs them. */
#ifndef DINFER_LAUNCH_SERVER_OPENAI_H
#define DINFER_LAUNCH_SERVER_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define OAI_MAX_N 16     /* choices per request */
#define OAI_MAX_STOP 16  /* stop strings */

/* An error as OpenAI reports one: the HTTP status and the error object's fields. */
typedef struct oai_err {
    int status;        /* 400, 401, 404, 405, 413, 429, 500, 503 */
    const char *type;  /* "invalid_request_error", "authentication_error", ... */
    const char *code;  /* NULL, or e.g. "model_not_found" */
    char param[64];    /* the field at fault, "" when none */
    char message[512];
} oai_err;

/* Fills e (status, type, param) with the message; returns -1 for `return oai_fail(...)`. */
int oai_fail(oai_err *e, int status, const char *param, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* {"error": {"message", "type", "param", "code"}} (malloc'd), NULL when out of memory. */
char *oai_error_json(const oai_err *e);

/* A /v1/completions request. */
typedef struct oai_request {
    char *model;                 /* NULL: not given */
    char *prompt_text;           /* exactly one of prompt_text and prompt_ids */
    int32_t *prompt_ids;         /* (n_prompt_ids) */
    size_t n_prompt_ids;
    int max_tokens;              /* 16 when not given (OpenAI's default for completions) */
    float temperature, top_p;    /* 1 and 1 when not given, as OpenAI */
    int top_k;                   /* 0: off (vLLM's -1 means the same) */
    bool has_seed;
    uint64_t seed;
    char *stop[OAI_MAX_STOP];
    int n_stop;
    int n;                       /* choices, 1..OAI_MAX_N */
    int logprobs;                /* -1: none; else the top alternatives per token (0..20) */
    bool stream, include_usage;
    bool ignore_eos;             /* vLLM's extension: generate max_tokens whatever the model says */
    /* chat completions: the conversation, checked and normalized for the chat template (each
     * message {"role", "content" (a string: text parts joined by newlines), "name"?}) */
    bool chat;
    cJSON *messages;
    bool add_generation_prompt;  /* vLLM's extension; true unless given */
} oai_request;

/* Parses the body of POST /v1/completions; -1 with e filled (400, the field named). */
int oai_parse_completion(const char *body, size_t len, oai_request *r, oai_err *e);
/* POST /v1/chat/completions: messages (system, user and assistant roles; string content or a list
 * of text parts), max_tokens or max_completion_tokens (default: as much as the context allows, as
 * OpenAI; 0 here means that), logprobs (a boolean) with top_logprobs (0..20), the shared fields. */
int oai_parse_chat(const char *body, size_t len, oai_request *r, oai_err *e);
void oai_request_free(oai_request *r);

/* A "messages" list checked and normalized (see oai_request); -1 with a 400 naming the message and
 * field ("messages[2].role"). */
int oai_parse_messages(const cJSON *m, cJSON **out, oai_err *e);

/* POST /tokenize: {"prompt": "...", "add_special_tokens"} or, as vLLM, {"messages": [...],
 * "add_generation_prompt"} (rendered with the chat template; special tokens not added unless asked:
 * the template writes them). */
typedef struct oai_tokenize {
    char *text;       /* or */
    cJSON *messages;  /* normalized as oai_parse_messages leaves them */
    bool add_special, add_generation_prompt;
} oai_tokenize;
int oai_parse_tokenize(const char *body, size_t len, oai_tokenize *t, oai_err *e);
void oai_tokenize_free(oai_tokenize *t);
/* POST /detokenize: {"tokens": [ids]}. */
int oai_parse_detokenize(const char *body, size_t len, int32_t **ids, size_t *n, oai_err *e);

/* One choice's token logprobs, in the completions API's shape. */
typedef struct oai_logprobs {
    size_t n;          /* tokens */
    char **tokens;     /* (n) each token's text */
    float *logprob;    /* (n) */
    int n_top;         /* alternatives per token */
    char **top_tokens; /* (n, n_top) */
    float *top_logprob;
    size_t *offset;    /* (n) where each token's text starts in the choice's text */
    size_t cap;
} oai_logprobs;

void oai_logprobs_free(oai_logprobs *l);

/* A streamed completion chunk: one choice's new text (and its tokens' logprobs when lp is not
 * NULL), finish_reason NULL until the last. Malloc'd "data: {...}\n\n". */
char *oai_completion_chunk(const char *id, long created, const char *model, int index, const char *text,
                           const oai_logprobs *lp, const char *finish_reason);
/* The final usage chunk of a stream ("choices": []), and the stream's end. */
char *oai_usage_chunk(const char *id, long created, const char *model, uint64_t prompt, uint64_t completion);
#define OAI_DONE "data: [DONE]\n\n"

/* A whole (not streamed) completion: n choices. */
typedef struct oai_choice {
    const char *text;
    const char *finish_reason;
    const oai_logprobs *lp; /* NULL: "logprobs": null */
} oai_choice;
char *oai_completion_json(const char *id, long created, const char *model, const oai_choice *c, int n,
                          uint64_t prompt, uint64_t completion);

/* Chat completions' replies. A streamed chunk carries one choice's delta: role "assistant" (first
 * chunk of a choice, role not NULL), text, logprobs (its tokens') and, on the last, finish_reason. */
char *oai_chat_chunk(const char *id, long created, const char *model, int index, const char *role, const char *text,
                     const oai_logprobs *lp, const char *finish_reason);
char *oai_chat_usage_chunk(const char *id, long created, const char *model, uint64_t prompt, uint64_t completion);
char *oai_chat_json(const char *id, long created, const char *model, const oai_choice *c, int n, uint64_t prompt,
                    uint64_t completion);

/* POST /detokenize's answer: {"prompt": text}. */
char *oai_prompt_json(const char *text);

/* GET /v1/models. */
char *oai_models_json(const char *model, long created, int max_context);

#endif
