/* POST /v1/chat/completions: the request (its messages checked and normalized for the chat
 * template) and the replies, whole (chat.completion) and streamed (chat.completion.chunk), as
 * OpenAI sends them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch/server/openai.h"
#include "launch/server/openai_impl.h"
#include "runtime/sampler.h" /* RT_MAX_TOP_LOGPROBS */

/* content: a string, or a list of {"type": "text", "text": ...} parts joined by newlines (as vLLM
 * joins them for templates that take a string) */
static int message_content(const cJSON *c, size_t i, cJSON *out, oai_err *e)
{
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].content", i);
    if (cJSON_IsString(c))
        return cJSON_AddStringToObject(out, "content", c->valuestring) ? 0 : oai_fail(e, 500, NULL, "out of memory");
    if (!cJSON_IsArray(c))
        return oai_fail(e, 400, param, "%s must be a string or a list of text parts", param);
    size_t len = 0, k = 0;
    for (const cJSON *p = c->child; p; p = p->next, k++) {
        const cJSON *type = cJSON_IsObject(p) ? cJSON_GetObjectItemCaseSensitive(p, "type") : NULL;
        const cJSON *text = cJSON_IsObject(p) ? cJSON_GetObjectItemCaseSensitive(p, "text") : NULL;
        if (!cJSON_IsString(type))
            return oai_fail(e, 400, param, "%s[%zu] must be an object with a \"type\"", param, k);
        if (strcmp(type->valuestring, "text") != 0)
            return oai_fail(e, 400, param, "%s[%zu]: content parts of type \"%.40s\" are not supported (text only)",
                            param, k, type->valuestring);
        if (!cJSON_IsString(text))
            return oai_fail(e, 400, param, "%s[%zu].text must be a string", param, k);
        for (const cJSON *f = p->child; f; f = f->next)
            if (strcmp(f->string, "type") != 0 && strcmp(f->string, "text") != 0)
                return oai_fail(e, 400, param, "%s[%zu]: unknown field \"%.40s\"", param, k, f->string);
        len += strlen(text->valuestring) + 1;
    }
    char *joined = malloc(len + 1), *at = joined;
    if (!joined)
        return oai_fail(e, 500, NULL, "out of memory");
    *at = '\0';
    for (const cJSON *p = c->child; p; p = p->next) {
        const char *t = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        if (at != joined)
            *at++ = '\n';
        const size_t n = strlen(t);
        memcpy(at, t, n + 1);
        at += n;
    }
    const int rc = cJSON_AddStringToObject(out, "content", joined) ? 0 : oai_fail(e, 500, NULL, "out of memory");
    free(joined);
    return rc;
}

int oai_parse_messages(const cJSON *m, cJSON **out, oai_err *e)
{
    *out = NULL;
    if (!cJSON_IsArray(m) || !m->child)
        return oai_fail(e, 400, "messages", "messages must be a non-empty list");
    cJSON *list = cJSON_CreateArray();
    if (!list)
        return oai_fail(e, 500, NULL, "out of memory");
    size_t i = 0;
    int rc = 0;
    for (const cJSON *x = m->child; x && !rc; x = x->next, i++) {
        char param[64];
        snprintf(param, sizeof param, "messages[%zu]", i);
        cJSON *msg = cJSON_CreateObject();
        if (!msg || !cJSON_AddItemToArray(list, msg)) {
            cJSON_Delete(msg);
            rc = oai_fail(e, 500, NULL, "out of memory");
            break;
        }
        if (!cJSON_IsObject(x)) {
            rc = oai_fail(e, 400, param, "%s must be an object with a role and content", param);
            break;
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(x, "role");
        if (!cJSON_IsString(role)) {
            rc = oai_fail(e, 400, param, "%s.role must be \"system\", \"user\" or \"assistant\"", param);
            break;
        }
        if (strcmp(role->valuestring, "system") && strcmp(role->valuestring, "user") &&
            strcmp(role->valuestring, "assistant")) {
            rc = oai_fail(e, 400, param, "%s.role \"%.40s\" is not supported: \"system\", \"user\" or \"assistant\"%s",
                          param, role->valuestring,
                          !strcmp(role->valuestring, "tool") ? " (dinfer does not call tools)" : "");
            break;
        }
        cJSON_AddStringToObject(msg, "role", role->valuestring);
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(x, "content");
        if (!content || cJSON_IsNull(content)) {
            rc = oai_fail(e, 400, param, "%s.content is required", param);
            break;
        }
        rc = message_content(content, i, msg, e);
        for (const cJSON *f = x->child; f && !rc; f = f->next) {
            if (!strcmp(f->string, "role") || !strcmp(f->string, "content"))
                continue;
            if (!strcmp(f->string, "name") && cJSON_IsString(f)) {
                cJSON_AddStringToObject(msg, "name", f->valuestring);
                continue;
            }
            if (!strcmp(f->string, "name"))
                rc = oai_fail(e, 400, param, "%s.name must be a string", param);
            else if (!strcmp(f->string, "tool_calls") || !strcmp(f->string, "function_call") ||
                     !strcmp(f->string, "tool_call_id"))
                rc = oai_fail(e, 400, param, "%s.%s is not supported (dinfer does not call tools)", param, f->string);
            else
                rc = oai_fail(e, 400, param, "%s: unknown field \"%.40s\"", param, f->string);
        }
    }
    if (rc) {
        cJSON_Delete(list);
        return -1;
    }
    *out = list;
    return 0;
}

int oai_parse_chat(const char *body, size_t len, oai_request *r, oai_err *e)
{
    static const char *known[] = {OAI_COMMON_FIELDS, "messages", "max_tokens", "max_completion_tokens", "logprobs",
                                  "top_logprobs", "add_generation_prompt"};
    *r = (oai_request){.temperature = 1.0f, .top_p = 1.0f, .n = 1, .logprobs = -1, .chat = true,
                       .add_generation_prompt = true};
    cJSON *j = oai_parse_body(body, len, e);
    if (!j)
        return -1;
    int rc = oai_refuse_unknown(j, known, sizeof known / sizeof *known, e) || oai_parse_common(j, r, e) ||
             oai_parse_messages(cJSON_GetObjectItemCaseSensitive(j, "messages"), &r->messages, e);
    double mt = 0, mct = 0, top = 0;
    bool lp = false;
    rc = rc || oai_get_num(j, "max_tokens", 1, INT32_MAX, true, &mt, e) ||
         oai_get_num(j, "max_completion_tokens", 1, INT32_MAX, true, &mct, e) || oai_get_bool(j, "logprobs", &lp, e) ||
         oai_get_num(j, "top_logprobs", 0, RT_MAX_TOP_LOGPROBS, true, &top, e) ||
         oai_get_bool(j, "add_generation_prompt", &r->add_generation_prompt, e);
    if (!rc && mt && mct && mt != mct)
        rc = oai_fail(e, 400, "max_completion_tokens", "max_tokens and max_completion_tokens differ: send one");
    if (!rc && top > 0 && !lp)
        rc = oai_fail(e, 400, "top_logprobs", "top_logprobs needs \"logprobs\": true");
    r->max_tokens = (int)(mct ? mct : mt); /* 0: what the context leaves */
    r->logprobs = lp ? (int)top : -1;
    cJSON_Delete(j);
    if (rc) {
        oai_request_free(r);
        return -1;
    }
    return 0;
}

/* ---- replies ---- */

static cJSON *chat_head(const char *id, long created, const char *model, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", model);
    return o;
}

/* a token's text and its UTF-8 bytes, as the chat API gives each */
static cJSON *token_entry(const char *text, float lp)
{
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "token", text);
    cJSON_AddNumberToObject(t, "logprob", oai_finite_lp(lp));
    cJSON *bytes = cJSON_AddArrayToObject(t, "bytes");
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        cJSON_AddItemToArray(bytes, cJSON_CreateNumber(*p));
    return t;
}

static cJSON *chat_logprobs(const oai_logprobs *l)
{
    cJSON *o = cJSON_CreateObject(), *content = cJSON_AddArrayToObject(o, "content");
    for (size_t i = 0; i < l->n; i++) {
        cJSON *t = token_entry(l->tokens[i], l->logprob[i]);
        cJSON *tops = cJSON_AddArrayToObject(t, "top_logprobs");
        for (int k = 0; k < l->n_top; k++)
            cJSON_AddItemToArray(tops, token_entry(l->top_tokens[i * (size_t)l->n_top + (size_t)k],
                                                   l->top_logprob[i * (size_t)l->n_top + (size_t)k]));
        cJSON_AddItemToArray(content, t);
    }
    cJSON_AddNullToObject(o, "refusal");
    return o;
}

static void add_logprobs(cJSON *c, const oai_logprobs *lp)
{
    if (lp)
        cJSON_AddItemToObject(c, "logprobs", chat_logprobs(lp));
    else
        cJSON_AddNullToObject(c, "logprobs");
}

static void add_finish(cJSON *c, const char *finish)
{
    if (finish)
        cJSON_AddStringToObject(c, "finish_reason", finish);
    else
        cJSON_AddNullToObject(c, "finish_reason");
}

char *oai_chat_chunk(const char *id, long created, const char *model, int index, const char *role, const char *text,
                     const oai_logprobs *lp, const char *finish_reason)
{
    cJSON *o = chat_head(id, created, model, "chat.completion.chunk"), *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *c = cJSON_CreateObject(), *delta = cJSON_AddObjectToObject(c, "delta");
    cJSON_AddNumberToObject(c, "index", index);
    if (role)
        cJSON_AddStringToObject(delta, "role", role);
    if (text && (*text || role))
        cJSON_AddStringToObject(delta, "content", text);
    add_logprobs(c, lp);
    add_finish(c, finish_reason);
    cJSON_AddItemToArray(choices, c);
    return oai_sse(o);
}

char *oai_chat_usage_chunk(const char *id, long created, const char *model, uint64_t prompt, uint64_t completion)
{
    cJSON *o = chat_head(id, created, model, "chat.completion.chunk");
    cJSON_AddArrayToObject(o, "choices");
    oai_add_usage(o, prompt, completion);
    return oai_sse(o);
}

char *oai_chat_json(const char *id, long created, const char *model, const oai_choice *c, int n, uint64_t prompt,
                    uint64_t completion)
{
    cJSON *o = chat_head(id, created, model, "chat.completion"), *choices = cJSON_AddArrayToObject(o, "choices");
    for (int i = 0; i < n; i++) {
        cJSON *ch = cJSON_CreateObject(), *msg = cJSON_AddObjectToObject(ch, "message");
        cJSON_AddNumberToObject(ch, "index", i);
        cJSON_AddStringToObject(msg, "role", "assistant");
        cJSON_AddStringToObject(msg, "content", c[i].text ? c[i].text : "");
        add_logprobs(ch, c[i].lp);
        add_finish(ch, c[i].finish_reason);
        cJSON_AddItemToArray(choices, ch);
    }
    oai_add_usage(o, prompt, completion);
    return oai_print_free(o);
}
