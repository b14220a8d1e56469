/* Finding a model's chat template and rendering conversations with it (see chat_template.h). */
#include "runtime/text/chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "runtime/text/jinja.h"

struct rt_chat {
    jinja_template *t; /* NULL when it did not parse */
    char source[256];
    char problem[BASE_ERR_LEN];
    cJSON *tokens; /* {"bos_token": "...", ...}: the special tokens the template sees */
};

/* tokenizer_config.json's special tokens: each a string or {"content": ...}; the list of
 * additional ones as it is (transformers passes its special_tokens_map to the template). */
static cJSON *special_tokens(const cJSON *cfg)
{
    cJSON *t = cJSON_CreateObject();
    static const char *names[] = {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                                  "mask_token"};
    for (size_t i = 0; cfg && i < sizeof names / sizeof *names; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, names[i]);
        if (cJSON_IsObject(v))
            v = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(v))
            cJSON_AddStringToObject(t, names[i], v->valuestring);
    }
    const cJSON *extra = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "additional_special_tokens") : NULL;
    if (cJSON_IsArray(extra) && extra->child) {
        cJSON *list = cJSON_AddArrayToObject(t, "additional_special_tokens");
        for (const cJSON *x = extra->child; x; x = x->next) {
            const cJSON *v = cJSON_IsObject(x) ? cJSON_GetObjectItemCaseSensitive(x, "content") : x;
            if (cJSON_IsString(v))
                cJSON_AddItemToArray(list, cJSON_CreateString(v->valuestring));
        }
    }
    return t;
}

static rt_chat *make(const char *src, size_t len, const cJSON *cfg, const char *source)
{
    rt_chat *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    snprintf(c->source, sizeof c->source, "%s", source);
    c->tokens = special_tokens(cfg);
    base_err perr;
    if (!(c->t = jinja_parse(src, len, &perr)))
        snprintf(c->problem, sizeof c->problem, "the chat template (%s) cannot be used: %s", source, perr.msg);
    return c;
}

/* tokenizer_config.json's "chat_template": a string, or [{"name", "template"}] ("default" taken) */
static const char *config_template(const cJSON *cfg)
{
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    if (cJSON_IsString(ct))
        return ct->valuestring;
    for (const cJSON *x = cJSON_IsArray(ct) ? ct->child : NULL; x; x = x->next) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(x, "name"), *t = cJSON_GetObjectItemCaseSensitive(x, "template");
        if (cJSON_IsString(name) && !strcmp(name->valuestring, "default") && cJSON_IsString(t))
            return t->valuestring;
    }
    return NULL;
}

int rt_chat_load(const char *dir, const char *override_path, rt_chat **out, base_err *err)
{
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    char *text = NULL, *cfg_text = NULL;
    size_t len = 0, cfg_len = 0;
    const int have_cfg = base_read_file_if_present(path, (size_t)64 << 20, &cfg_text, &cfg_len, err);
    if (have_cfg < 0)
        return -1;
    cJSON *cfg = NULL;
    if (have_cfg == 0 && !(cfg = cJSON_ParseWithLength(cfg_text, cfg_len))) {
        free(cfg_text);
        return base_errf(err, "%s is not valid JSON", path);
    }
    free(cfg_text);
    /* the template's text: the operator's file, else chat_template.jinja, else the config's */
    int rc = 0;
    const char *src = NULL, *source = NULL;
    size_t src_len = 0;
    char jpath[4096];
    snprintf(jpath, sizeof jpath, "%s/chat_template.jinja", dir);
    if (override_path) {
        rc = base_read_file(override_path, RT_CHAT_TEMPLATE_MAX_BYTES, &text, &len, err);
        src = text, src_len = len, source = override_path;
    } else {
        const int have = base_read_file_if_present(jpath, RT_CHAT_TEMPLATE_MAX_BYTES, &text, &len, err);
        if (have < 0)
            rc = -1;
        else if (have == 0)
            src = text, src_len = len, source = "chat_template.jinja";
        else if (cfg && (src = config_template(cfg)))
            src_len = strlen(src), source = "tokenizer_config.json";
    }
    if (rc == 0 && src) {
        if (!(*out = make(src, src_len, cfg, source))) {
            rc = base_errf(err, "out of memory");
        } else if (override_path && (*out)->problem[0]) { /* the operator's own choice: say so now */
            rc = base_errf(err, "--chat-template %s", (*out)->problem);
            rt_chat_free(*out);
            *out = NULL;
        }
    }
    free(text);
    cJSON_Delete(cfg);
    return rc;
}

int rt_chat_parse(const char *src, size_t len, const char *tokenizer_config, rt_chat **out, base_err *err)
{
    cJSON *cfg = tokenizer_config ? cJSON_Parse(tokenizer_config) : NULL;
    if (tokenizer_config && !cfg)
        return base_errf(err, "tokenizer_config is not valid JSON");
    *out = make(src, len, cfg, "memory");
    cJSON_Delete(cfg);
    return *out ? 0 : base_errf(err, "out of memory");
}

void rt_chat_free(rt_chat *c)
{
    if (!c)
        return;
    jinja_free(c->t);
    cJSON_Delete(c->tokens);
    free(c);
}

const char *rt_chat_source(const rt_chat *c)
{
    return c->source;
}

const char *rt_chat_problem(const rt_chat *c)
{
    return c->problem[0] ? c->problem : NULL;
}

char *rt_chat_render(const rt_chat *c, const cJSON *messages, bool add_generation_prompt, size_t *len, base_err *err)
{
    if (!c->t) {
        base_errf(err, "%s", c->problem);
        return NULL;
    }
    /* the variables transformers passes: messages, tools and documents (none), the generation
     * prompt flag, the special tokens */
    cJSON *vars = cJSON_Duplicate(c->tokens, 1);
    if (!vars || !cJSON_AddItemReferenceToObject(vars, "messages", (cJSON *)messages)) { /* not copied */
        cJSON_Delete(vars);
        base_errf(err, "out of memory");
        return NULL;
    }
    cJSON_AddNullToObject(vars, "tools");
    cJSON_AddNullToObject(vars, "documents");
    cJSON_AddBoolToObject(vars, "add_generation_prompt", add_generation_prompt);
    base_err e;
    char *out = jinja_render(c->t, vars, NULL, len, &e);
    cJSON_Delete(vars);
    if (!out)
        base_errf(err, "the chat template failed: %s", e.msg);
    return out;
}
