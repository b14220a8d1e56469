/* A model's chat template: the Jinja text that turns a conversation into the prompt the model was
 * trained on, rendered as transformers' apply_chat_template(messages, add_generation_prompt=True)
 * renders it (runtime/text/jinja.h), with the tokenizer's special tokens (bos_token, eos_token, ...)
 * as variables.
 *
 * Where it comes from, first found wins: a file given by the operator (--chat-template), the model
 * folder's chat_template.jinja, tokenizer_config.json's "chat_template" (a string, or a list of
 * {"name", "template"} from which "default" is taken). A model's own template that uses what the
 * interpreter lacks still loads: rendering then refuses, naming the construct. */
#ifndef DINFER_RUNTIME_TEXT_CHAT_TEMPLATE_H
#define DINFER_RUNTIME_TEXT_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "base/err.h"

#define RT_CHAT_TEMPLATE_MAX_BYTES ((size_t)1 << 20) /* a template file larger than this is refused */

typedef struct rt_chat rt_chat;

/* Loads the chat template for the model folder dir (override: a template file, or NULL). 0 with
 * *out, NULL when there is none; -1 with err for a file that cannot be read or is not valid JSON /
 * UTF-8, and for an override that does not parse (the operator asked for that file). */
int rt_chat_load(const char *dir, const char *override_path, rt_chat **out, base_err *err);
/* The same from template text in memory (tests); special tokens from a tokenizer_config.json's
 * JSON text (may be NULL). */
int rt_chat_parse(const char *src, size_t len, const char *tokenizer_config, rt_chat **out, base_err *err);
void rt_chat_free(rt_chat *c);

/* Where the template came from ("tokenizer_config.json", a path), for logs. */
const char *rt_chat_source(const rt_chat *c);
/* NULL when the template parsed; else why it cannot be used ("line 3: the 'include' tag is not
 * supported"). */
const char *rt_chat_problem(const rt_chat *c);

/* The prompt for messages (a JSON array of {"role", "content", ...} objects, passed to the template
 * as they are) with the generation prompt when add_generation_prompt. Malloc'd, NUL-terminated, *len
 * its length; NULL with err (the template's own raise_exception message, an undefined value, a
 * limit: every one the request's fault or the template's, never a crash). */
char *rt_chat_render(const rt_chat *c, const cJSON *messages, bool add_generation_prompt, size_t *len, base_err *err);

#endif
