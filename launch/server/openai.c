/* OpenAI's request and reply JSON (see openai.h). Parsing is strict: a field of the wrong type or
 * out of range, or one dinfer does not implement, is a 400 that names it; nothing is ignored but
 * `user`. */
#include "launch/server/openai.h"
#include "launch/server/openai_impl.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "runtime/sampler.h" /* RT_MAX_TOP_LOGPROBS */

int oai_fail(oai_err *e, int status, const char *param, const char *fmt, ...)
{
    e->status = status;
    e->type = status == 401 ? "authentication_error"
              : status == 404 ? "not_found_error"
              : status == 429 ? "rate_limit_error"
              : status >= 500 ? "server_error"
                              : "invalid_request_error";
    e->code = NULL;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* cJSON's printer, freed with free() (its default allocator). */
char *oai_print_free(cJSON *o)
{
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}

char *oai_error_json(const oai_err *e)
{
    cJSON *o = cJSON_CreateObject(), *er = cJSON_AddObjectToObject(o, "error");
    if (!er) {
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddStringToObject(er, "message", e->message);
    cJSON_AddStringToObject(er, "type", e->type ? e->type : "invalid_request_error");
    if (e->param[0])
        cJSON_AddStringToObject(er, "param", e->param);
    else
        cJSON_AddNullToObject(er, "param");
    if (e->code)
        cJSON_AddStringToObject(er, "code", e->code);
    else
        cJSON_AddNullToObject(er, "code");
    return oai_print_free(o);
}

/* JSON text must be UTF-8 (RFC 8259); -1 with the offset of the first bad byte. */
static int check_utf8(const char *s, size_t len, oai_err *e)
{
    size_t i = 0;
    while (i < len) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        utf8proc_int32_t cp;
        const utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0)
            return oai_fail(e, 400, NULL, "the body is not valid UTF-8 (byte %zu)", i);
        i += (size_t)k;
    }
    return 0;
}

cJSON *oai_parse_body(const char *body, size_t len, oai_err *e)
{
    if (check_utf8(body, len, e))
        return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!j) {
        const size_t at = end ? (size_t)(end - body) : 0;
        oai_fail(e, 400, NULL, "the body is not valid JSON (at byte %zu)", at <= len ? at : len);
        return NULL;
    }
    for (; end && (size_t)(end - body) < len && strchr(" \t\r\n", *end); end++) {
    }
    if (end && (size_t)(end - body) < len) {
        oai_fail(e, 400, NULL, "the body has more after its JSON value (at byte %zu)", (size_t)(end - body));
        cJSON_Delete(j);
        return NULL;
    }
    if (!cJSON_IsObject(j)) {
        oai_fail(e, 400, NULL, "the body must be a JSON object");
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

/* A number field in [lo, hi]; absent or null leaves *v. Integers must be whole. */
int oai_get_num(const cJSON *o, const char *name, double lo, double hi, bool integer, double *v, oai_err *e)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!f || cJSON_IsNull(f))
        return 0;
    if (!cJSON_IsNumber(f))
        return oai_fail(e, 400, name, "%s must be %s", name, integer ? "an integer" : "a number");
    const double d = f->valuedouble;
    if (!isfinite(d) || (integer && d != floor(d)))
        return oai_fail(e, 400, name, "%s must be %s", name, integer ? "an integer" : "a finite number");
    if (d < lo || d > hi)
        return oai_fail(e, 400, name, "%s is %g: it must be in [%g, %g]", name, d, lo, hi);
    *v = d;
    return 0;
}

int oai_get_bool(const cJSON *o, const char *name, bool *v, oai_err *e)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!f || cJSON_IsNull(f))
        return 0;
    if (!cJSON_IsBool(f))
        return oai_fail(e, 400, name, "%s must be true or false", name);
    *v = cJSON_IsTrue(f);
    return 0;
}

/* The fields of OpenAI's API dinfer does not implement: a 400 naming them unless they hold their
 * default (absent, null, false, 0, "", {} or 1 for best_of). */
int oai_refuse_unsupported(const cJSON *o, oai_err *e)
{
    static const char *names[] = {"echo", "best_of", "suffix", "logit_bias", "presence_penalty", "frequency_penalty",
                                  "repetition_penalty", "min_tokens", "response_format", "tools", "tool_choice",
                                  "functions", "function_call", "guided_json", "guided_regex", "guided_choice"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, names[i]);
        if (!f || cJSON_IsNull(f) || cJSON_IsFalse(f) || (cJSON_IsString(f) && !*f->valuestring) ||
            (cJSON_IsObject(f) && !f->child) || (cJSON_IsArray(f) && !f->child))
            continue;
        if (cJSON_IsNumber(f) && (f->valuedouble == 0 || (strcmp(names[i], "best_of") == 0 && f->valuedouble == 1)))
            continue;
        return oai_fail(e, 400, names[i], "%s is not supported by dinfer", names[i]);
    }
    return 0;
}

/* Every top-level field must be one this endpoint knows. */
int oai_refuse_unknown(const cJSON *o, const char *const *known, size_t n_known, oai_err *e)
{
    for (const cJSON *f = o->child; f; f = f->next) {
        bool ok = false;
        for (size_t i = 0; i < n_known && !ok; i++)
            ok = strcmp(f->string, known[i]) == 0;
        if (!ok)
            return oai_fail(e, 400, f->string, "unknown field \"%.200s\"", f->string);
    }
    return 0;
}

static int parse_prompt(const cJSON *o, oai_request *r, oai_err *e)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    if (!p || cJSON_IsNull(p))
        return oai_fail(e, 400, "prompt", "prompt is required");
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(p->child))
        p = p->child; /* ["text"]: one prompt */
    if (cJSON_IsString(p)) {
        if (!(r->prompt_text = strdup(p->valuestring)))
            return oai_fail(e, 500, NULL, "out of memory");
        return 0;
    }
    if (!cJSON_IsArray(p) || !p->child)
        return oai_fail(e, 400, "prompt", "prompt must be a string or a non-empty list of token ids");
    if (!cJSON_IsNumber(p->child))
        return oai_fail(e, 400, "prompt", "a list of prompts is not supported: send one request per prompt");
    const int n = cJSON_GetArraySize(p);
    if (!(r->prompt_ids = malloc((size_t)n * sizeof *r->prompt_ids)))
        return oai_fail(e, 500, NULL, "out of memory");
    for (const cJSON *t = p->child; t; t = t->next) {
        const double d = cJSON_IsNumber(t) ? t->valuedouble : -1;
        if (!cJSON_IsNumber(t) || d != floor(d) || d < 0 || d > INT32_MAX)
            return oai_fail(e, 400, "prompt", "prompt[%zu] is not a token id (a non-negative integer)",
                            r->n_prompt_ids);
        r->prompt_ids[r->n_prompt_ids++] = (int32_t)d;
    }
    return 0;
}

static int parse_stop(const cJSON *o, oai_request *r, oai_err *e)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "stop");
    if (!s || cJSON_IsNull(s))
        return 0;
    if (cJSON_IsString(s)) {
        if (!*s->valuestring)
            return oai_fail(e, 400, "stop", "stop strings must not be empty");
        if (!(r->stop[r->n_stop++] = strdup(s->valuestring)))
            return oai_fail(e, 500, NULL, "out of memory");
        return 0;
    }
    if (!cJSON_IsArray(s))
        return oai_fail(e, 400, "stop", "stop must be a string or a list of strings");
    if (cJSON_GetArraySize(s) > OAI_MAX_STOP)
        return oai_fail(e, 400, "stop", "at most %d stop strings", OAI_MAX_STOP);
    for (const cJSON *t = s->child; t; t = t->next) {
        if (!cJSON_IsString(t) || !*t->valuestring)
            return oai_fail(e, 400, "stop", "stop[%d] must be a non-empty string", r->n_stop);
        if (!(r->stop[r->n_stop++] = strdup(t->valuestring)))
            return oai_fail(e, 500, NULL, "out of memory");
    }
    return 0;
}

/* The fields completions and chat completions share: model, sampling, stop, n, seed, stream,
 * stream_options, user, ignore_eos (r->max_tokens and r->logprobs are the caller's). */
int oai_parse_common(const cJSON *j, oai_request *r, oai_err *e)
{
    double v;
    int rc = oai_refuse_unsupported(j, e);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "model");
    if (!rc && m && !cJSON_IsNull(m)) {
        if (!cJSON_IsString(m))
            rc = oai_fail(e, 400, "model", "model must be a string");
        else if (!(r->model = strdup(m->valuestring)))
            rc = oai_fail(e, 500, NULL, "out of memory");
    }
    double temp = r->temperature, tp = r->top_p, tk = r->top_k, n = r->n;
    rc = rc || oai_get_num(j, "temperature", 0, 100, false, &temp, e) || oai_get_num(j, "top_p", 1e-9, 1, false, &tp, e) ||
         oai_get_num(j, "top_k", -1, INT32_MAX, true, &tk, e) || oai_get_num(j, "n", 1, OAI_MAX_N, true, &n, e);
    r->temperature = (float)temp, r->top_p = (float)tp, r->top_k = tk < 0 ? 0 : (int)tk, r->n = (int)n;
    const cJSON *sd = cJSON_GetObjectItemCaseSensitive(j, "seed");
    if (!rc && sd && !cJSON_IsNull(sd) && !(rc = oai_get_num(j, "seed", -9007199254740991.0, 9007199254740991.0, true, &v, e)))
        r->has_seed = true, r->seed = (uint64_t)(int64_t)v;
    rc = rc || parse_stop(j, r, e);
    rc = rc || oai_get_bool(j, "stream", &r->stream, e) || oai_get_bool(j, "ignore_eos", &r->ignore_eos, e);
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
    if (!rc && so && !cJSON_IsNull(so)) {
        static const char *so_known[] = {"include_usage", "continuous_usage_stats"};
        if (!cJSON_IsObject(so))
            rc = oai_fail(e, 400, "stream_options", "stream_options must be an object");
        else if (!r->stream)
            rc = oai_fail(e, 400, "stream_options", "stream_options needs \"stream\": true");
        else
            rc = oai_refuse_unknown(so, so_known, 1, e) || oai_get_bool(so, "include_usage", &r->include_usage, e);
    }
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "user");
    if (!rc && u && !cJSON_IsNull(u) && !cJSON_IsString(u))
        rc = oai_fail(e, 400, "user", "user must be a string");
    return rc;
}

int oai_parse_completion(const char *body, size_t len, oai_request *r, oai_err *e)
{
    static const char *known[] = {OAI_COMMON_FIELDS, "prompt", "max_tokens", "logprobs", "echo", "best_of", "suffix"};
    *r = (oai_request){.max_tokens = 16, .temperature = 1.0f, .top_p = 1.0f, .n = 1, .logprobs = -1};
    cJSON *j = oai_parse_body(body, len, e);
    if (!j)
        return -1;
    int rc = oai_refuse_unknown(j, known, sizeof known / sizeof *known, e) || oai_parse_common(j, r, e) ||
             parse_prompt(j, r, e);
    double mt = r->max_tokens, lp = r->logprobs;
    rc = rc || oai_get_num(j, "max_tokens", 1, INT32_MAX, true, &mt, e) ||
         oai_get_num(j, "logprobs", 0, RT_MAX_TOP_LOGPROBS, true, &lp, e);
    r->max_tokens = (int)mt, r->logprobs = (int)lp;
    cJSON_Delete(j);
    if (rc) {
        oai_request_free(r);
        return -1;
    }
    return 0;
}

void oai_request_free(oai_request *r)
{
    free(r->model), free(r->prompt_text), free(r->prompt_ids);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    cJSON_Delete(r->messages);
    memset(r, 0, sizeof *r);
}

int oai_parse_tokenize(const char *body, size_t len, oai_tokenize *t, oai_err *e)
{
    static const char *known[] = {"model", "prompt", "messages", "add_special_tokens", "add_generation_prompt"};
    *t = (oai_tokenize){.add_generation_prompt = true};
    cJSON *j = oai_parse_body(body, len, e);
    if (!j)
        return -1;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt"), *m = cJSON_GetObjectItemCaseSensitive(j, "messages");
    /* as vLLM: special tokens added to a prompt, not to a chat (its template writes them) */
    t->add_special = !m;
    int rc = oai_refuse_unknown(j, known, sizeof known / sizeof *known, e) ||
             oai_get_bool(j, "add_special_tokens", &t->add_special, e) ||
             oai_get_bool(j, "add_generation_prompt", &t->add_generation_prompt, e);
    if (!rc && !!p == !!m)
        rc = oai_fail(e, 400, p ? "messages" : "prompt", "send exactly one of prompt and messages");
    else if (!rc && p && !cJSON_IsString(p))
        rc = oai_fail(e, 400, "prompt", "prompt must be a string");
    else if (!rc && p && !(t->text = strdup(p->valuestring)))
        rc = oai_fail(e, 500, NULL, "out of memory");
    else if (!rc && m)
        rc = oai_parse_messages(m, &t->messages, e);
    cJSON_Delete(j);
    if (rc)
        oai_tokenize_free(t);
    return rc ? -1 : 0;
}

void oai_tokenize_free(oai_tokenize *t)
{
    free(t->text);
    cJSON_Delete(t->messages);
    memset(t, 0, sizeof *t);
}

int oai_parse_detokenize(const char *body, size_t len, int32_t **ids, size_t *n, oai_err *e)
{
    static const char *known[] = {"model", "tokens"};
    *ids = NULL, *n = 0;
    cJSON *j = oai_parse_body(body, len, e);
    if (!j)
        return -1;
    int rc = oai_refuse_unknown(j, known, 2, e);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "tokens");
    if (!rc && !cJSON_IsArray(t))
        rc = oai_fail(e, 400, "tokens", "tokens must be a list of token ids");
    if (!rc && !(*ids = malloc(((size_t)cJSON_GetArraySize(t) + 1) * sizeof **ids)))
        rc = oai_fail(e, 500, NULL, "out of memory");
    for (const cJSON *x = rc ? NULL : t->child; x && !rc; x = x->next) {
        const double d = cJSON_IsNumber(x) ? x->valuedouble : -1;
        if (d != floor(d) || d < 0 || d > INT32_MAX)
            rc = oai_fail(e, 400, "tokens", "tokens[%zu] is not a token id (a non-negative integer)", *n);
        else
            (*ids)[(*n)++] = (int32_t)d;
    }
    cJSON_Delete(j);
    if (rc) {
        free(*ids);
        *ids = NULL, *n = 0;
    }
    return rc ? -1 : 0;
}

void oai_logprobs_free(oai_logprobs *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->tokens[i]);
        for (int k = 0; k < l->n_top; k++)
            free(l->top_tokens[i * (size_t)l->n_top + (size_t)k]);
    }
    free(l->tokens), free(l->logprob), free(l->top_tokens), free(l->top_logprob), free(l->offset);
    memset(l, 0, sizeof *l);
}

/* -inf (a token the sampler could not pick) is not JSON: the most negative float instead */
double oai_finite_lp(float v)
{
    return isfinite(v) ? (double)v : -3.4028234663852886e38;
}

static cJSON *logprobs_json(const oai_logprobs *l)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *toks = cJSON_AddArrayToObject(o, "tokens"), *lps = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs"), *offs = cJSON_AddArrayToObject(o, "text_offset");
    if (!toks || !lps || !tops || !offs) {
        cJSON_Delete(o);
        return NULL;
    }
    for (size_t i = 0; i < l->n; i++) {
        cJSON_AddItemToArray(toks, cJSON_CreateString(l->tokens[i]));
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(oai_finite_lp(l->logprob[i])));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)l->offset[i]));
        cJSON *t = cJSON_CreateObject();
        for (int k = 0; k < l->n_top; k++) {
            const char *name = l->top_tokens[i * (size_t)l->n_top + (size_t)k];
            if (!cJSON_GetObjectItemCaseSensitive(t, name)) /* two ids of one text: the likelier */
                cJSON_AddNumberToObject(t, name, oai_finite_lp(l->top_logprob[i * (size_t)l->n_top + (size_t)k]));
        }
        cJSON_AddItemToArray(tops, t);
    }
    return o;
}

static cJSON *completion_head(const char *id, long created, const char *model)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", model);
    return o;
}

static void add_choice(cJSON *arr, int index, const char *text, const oai_logprobs *lp, const char *finish)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", index);
    cJSON_AddStringToObject(c, "text", text ? text : "");
    if (lp)
        cJSON_AddItemToObject(c, "logprobs", logprobs_json(lp));
    else
        cJSON_AddNullToObject(c, "logprobs");
    if (finish)
        cJSON_AddStringToObject(c, "finish_reason", finish);
    else
        cJSON_AddNullToObject(c, "finish_reason");
    cJSON_AddItemToArray(arr, c);
}

void oai_add_usage(cJSON *o, uint64_t prompt, uint64_t completion)
{
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)completion);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(prompt + completion));
}

/* "data: " + JSON + "\n\n" */
char *oai_sse(cJSON *o)
{
    char *j = oai_print_free(o);
    if (!j)
        return NULL;
    const size_t n = strlen(j);
    char *s = malloc(n + 9);
    if (s) {
        memcpy(s, "data: ", 6);
        memcpy(s + 6, j, n);
        memcpy(s + 6 + n, "\n\n", 3);
    }
    free(j);
    return s;
}

char *oai_completion_chunk(const char *id, long created, const char *model, int index, const char *text,
                           const oai_logprobs *lp, const char *finish_reason)
{
    cJSON *o = completion_head(id, created, model);
    add_choice(cJSON_AddArrayToObject(o, "choices"), index, text, lp, finish_reason);
    return oai_sse(o);
}

char *oai_usage_chunk(const char *id, long created, const char *model, uint64_t prompt, uint64_t completion)
{
    cJSON *o = completion_head(id, created, model);
    cJSON_AddArrayToObject(o, "choices");
    oai_add_usage(o, prompt, completion);
    return oai_sse(o);
}

char *oai_completion_json(const char *id, long created, const char *model, const oai_choice *c, int n,
                          uint64_t prompt, uint64_t completion)
{
    cJSON *o = completion_head(id, created, model), *arr = cJSON_AddArrayToObject(o, "choices");
    for (int i = 0; i < n; i++)
        add_choice(arr, i, c[i].text, c[i].lp, c[i].finish_reason);
    oai_add_usage(o, prompt, completion);
    return oai_print_free(o);
}

char *oai_models_json(const char *model, long created, int max_context)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", model);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", "dinfer");
    cJSON_AddNumberToObject(m, "max_model_len", max_context);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "data"), m);
    return oai_print_free(o);
}

char *oai_prompt_json(const char *text)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "prompt", text);
    return oai_print_free(o);
}
