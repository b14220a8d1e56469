/* Jinja templates, the part chat templates use: what Hugging Face transformers' apply_chat_template
 * renders (jinja2's ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and the
 * loopcontrols extension; tojson, raise_exception and strftime_now as transformers defines them).
 *
 * Statements: if / elif / else, for (tuple targets, an `if` filter, else, loop.*), set (names,
 * tuples, namespace attributes, blocks), macro (defaults, keyword arguments), with, filter blocks,
 * print, break / continue, generation. Expressions: literals, lists, tuples, dicts, attribute and
 * item access, slices, calls, filters, tests, arithmetic, comparisons, `in`, `~`, `and` / `or` /
 * `not`, conditional expressions; Python's str and list and dict methods that templates call.
 * Anything else (include, import, extends, block, call, raw, an unknown filter or test) is refused
 * when the template is parsed, naming the construct and its line; values behave as Python's (the
 * text of a float, a list, a dict; integer division; truthiness; undefined names).
 *
 * No I/O, no globals: a parsed template is read-only and may be rendered from several threads. */
#ifndef DINFER_RUNTIME_TEXT_JINJA_H
#define DINFER_RUNTIME_TEXT_JINJA_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "base/err.h"

typedef struct jinja_template jinja_template;

/* Parses len bytes of template source (UTF-8). NULL with err naming the construct and its line
 * ("line 3: the 'include' tag is not supported", "line 1: unknown filter 'frobnicate'"). */
jinja_template *jinja_parse(const char *src, size_t len, base_err *err);
void jinja_free(jinja_template *t);

/* What one rendering may use: bounded, so that a hostile request (or template) gets an error, not
 * the server's memory or a thread forever. */
typedef struct jinja_limits {
    size_t max_output; /* bytes of rendered text */
    size_t max_memory; /* bytes of values made while rendering */
    uint64_t max_steps; /* expressions and statements evaluated */
} jinja_limits;

#define JINJA_LIMITS_DEFAULT ((jinja_limits){.max_output = (size_t)64 << 20, .max_memory = (size_t)256 << 20, \
                                             .max_steps = 50000000})

/* Renders t with vars (a JSON object: its members are the template's variables, JSON values as
 * Python's json.loads gives them). Returns the text (malloc'd, NUL-terminated, *len its length) or
 * NULL with err: "line 7: <the template's raise_exception message>", "line 2: 'x' is undefined",
 * a limit. limits NULL: JINJA_LIMITS_DEFAULT. */
char *jinja_render(const jinja_template *t, const cJSON *vars, const jinja_limits *limits, size_t *len,
                   base_err *err);

#endif
