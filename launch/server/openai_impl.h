/* What openai.c (completions, tokenize, the shared fields) and openai_chat.c (chat completions)
 * share: the checked field readers and the JSON helpers. Not for anyone else. */
#ifndef DINFER_LAUNCH_SERVER_OPENAI_IMPL_H
#define DINFER_LAUNCH_SERVER_OPENAI_IMPL_H

#include <cjson/cJSON.h>

#include "launch/server/openai.h"

/* the top-level fields both generate endpoints accept (the unsupported ones refused by name) */
#define OAI_COMMON_FIELDS                                                                                          \
    "model", "temperature", "top_p", "top_k", "seed", "stop", "n", "stream", "stream_options", "user", "ignore_eos", \
        "logit_bias", "presence_penalty", "frequency_penalty", "repetition_penalty", "min_tokens", "response_format", \
        "tools", "tool_choice", "functions", "function_call", "guided_json", "guided_regex", "guided_choice"

/* The body as a JSON object (valid UTF-8, nothing after it); NULL with a 400. */
cJSON *oai_parse_body(const char *body, size_t len, oai_err *e);
/* A number field in [lo, hi] (absent or null: *v unchanged); a boolean one. */
int oai_get_num(const cJSON *o, const char *name, double lo, double hi, bool integer, double *v, oai_err *e);
int oai_get_bool(const cJSON *o, const char *name, bool *v, oai_err *e);
/* A 400 naming the first field of o not in known. */
int oai_refuse_unknown(const cJSON *o, const char *const *known, size_t n_known, oai_err *e);
int oai_refuse_unsupported(const cJSON *o, oai_err *e);
/* The shared fields into r (defaults already set by the caller). */
int oai_parse_common(const cJSON *j, oai_request *r, oai_err *e);

char *oai_print_free(cJSON *o);
char *oai_sse(cJSON *o); /* "data: {json}\n\n", o freed */
void oai_add_usage(cJSON *o, uint64_t prompt, uint64_t completion);
double oai_finite_lp(float v);

#endif
