/* Chat templates against Hugging Face transformers: tests/chat/expected.json holds what
 * apply_chat_template(..., add_generation_prompt=True) rendered (tests/chat/make_expected.py, on
 * the GPU machine) for the llama3 and qwen3 tokenizers' own templates and for the templates of
 * tests/chat/templates/, over the conversations of tests/chat/conversations.json, plus the token
 * ids of the llama3 and qwen3 prompts, plus the corner cases of tests/chat/jinja_cases.json as
 * transformers' Jinja environment renders them. Every text must be identical; where the reference
 * failed (a template's raise_exception), dinfer must fail too, with the template's message. The
 * llama3 and qwen3 cases skip, saying so, when ../shared/tokenizers is absent.
 *
 * Also: constructs outside the interpreter refused by name and line (the model still loads, the
 * template does not render), --chat-template overriding, where templates are found, and the limits
 * that keep a hostile request or template from taking the server down. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "base/file.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/jinja.h"
#include "runtime/text/tokenizer.h"

static char *read_text(const char *path, size_t *len)
{
    char *text = NULL;
    size_t n = 0;
    base_err err;
    if (base_read_file(path, (size_t)64 << 20, &text, &n, &err))
        fail_msg("%s", err.msg);
    if (len)
        *len = n;
    return text;
}

static cJSON *read_json(const char *path)
{
    size_t len;
    char *text = read_text(path, &len);
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    assert_non_null(j);
    return j;
}

static cJSON *expected, *conversations;

static int setup(void **state)
{
    (void)state;
    expected = read_json(DINFER_SOURCE_DIR "/tests/chat/expected.json");
    conversations = read_json(DINFER_SOURCE_DIR "/tests/chat/conversations.json");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cJSON_Delete(expected);
    cJSON_Delete(conversations);
    return 0;
}

/* the first differing byte, for a readable failure */
static void show_diff(const char *what, const char *want, const char *got)
{
    size_t i = 0;
    while (want[i] && want[i] == got[i])
        i++;
    fprintf(stderr, "  %s: differs at byte %zu\n    want: %.80s\n    got:  %.80s\n", what, i,
            want + (i > 20 ? i - 20 : 0), got + (i > 20 ? i - 20 : 0));
}

/* One expected case against c's rendering; 1 when it matched. */
static int check_case(const rt_chat *c, const cJSON *want, const char *what, const rt_tokenizer *tok)
{
    const cJSON *conv = cJSON_GetArrayItem(conversations, cJSON_GetObjectItem(want, "conversation")->valueint);
    size_t len = 0;
    base_err err;
    char *got = rt_chat_render(c, conv, true, &len, &err);
    const cJSON *text = cJSON_GetObjectItem(want, "text"), *error = cJSON_GetObjectItem(want, "error");
    int ok = 1;
    if (error) { /* the reference refused: so must we, with the template's words */
        if (got || !strstr(err.msg, error->valuestring)) {
            fprintf(stderr, "  %s: want the error \"%s\", got %s\n", what, error->valuestring, got ? "a text" : err.msg);
            ok = 0;
        }
    } else if (!got) {
        fprintf(stderr, "  %s: %s\n", what, err.msg);
        ok = 0;
    } else if (strlen(text->valuestring) != len || memcmp(text->valuestring, got, len) != 0) {
        show_diff(what, text->valuestring, got);
        ok = 0;
    } else if (tok && cJSON_GetObjectItem(want, "ids")) { /* the prompt's ids, as transformers tokenized it */
        int32_t *ids = NULL;
        const int n = rt_tokenizer_encode(tok, got, len, false, &ids, &err);
        const cJSON *w = cJSON_GetObjectItem(want, "ids");
        int same = n == cJSON_GetArraySize(w);
        int i = 0;
        for (const cJSON *e = w->child; same && e; e = e->next, i++)
            same = (int32_t)e->valuedouble == ids[i];
        if (!same) {
            fprintf(stderr, "  %s: the prompt's ids differ (%d ids, want %d)\n", what, n, cJSON_GetArraySize(w));
            ok = 0;
        }
        free(ids);
    }
    free(got);
    return ok;
}

static void check_tokenizer(const char *name)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", DINFER_SHARED_TOKENIZERS, name);
    if (access(dir, R_OK) != 0) {
        fprintf(stderr, "SKIPPED: %s is absent (../shared/tokenizers)\n", dir);
        skip();
    }
    rt_chat *c = NULL;
    base_err err;
    if (rt_chat_load(dir, NULL, &c, &err))
        fail_msg("%s", err.msg);
    assert_non_null(c);
    assert_null(rt_chat_problem(c));
    assert_string_equal(rt_chat_source(c), "tokenizer_config.json");
    rt_tokenizer *tok = rt_tokenizer_load(dir, &err);
    assert_non_null(tok);
    int n = 0, bad = 0;
    for (const cJSON *w = cJSON_GetObjectItem(expected, "cases")->child; w; w = w->next) {
        const cJSON *t = cJSON_GetObjectItem(w, "tokenizer");
        if (!t || strcmp(t->valuestring, name) != 0)
            continue;
        char what[64];
        snprintf(what, sizeof what, "%s, conversation %d", name, cJSON_GetObjectItem(w, "conversation")->valueint);
        bad += !check_case(c, w, what, tok);
        n++;
    }
    fprintf(stderr, "%s: %d of %d conversations as transformers renders them\n", name, n - bad, n);
    assert_true(n >= 15);
    assert_int_equal(bad, 0);
    rt_tokenizer_free(tok);
    rt_chat_free(c);
}

static void test_llama3(void **state)
{
    (void)state;
    check_tokenizer("llama3");
}

static void test_qwen3(void **state)
{
    (void)state;
    check_tokenizer("qwen3");
}

/* the templates of tests/chat/templates, with the special tokens transformers passed them */
static void test_templates(void **state)
{
    (void)state;
    char *specials = cJSON_PrintUnformatted(cJSON_GetObjectItem(expected, "special_tokens"));
    int n = 0, bad = 0, refusals = 0;
    for (const cJSON *w = cJSON_GetObjectItem(expected, "cases")->child; w; w = w->next) {
        const cJSON *t = cJSON_GetObjectItem(w, "template");
        if (!t)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/tests/chat/templates/%s", DINFER_SOURCE_DIR, t->valuestring);
        size_t len;
        char *src = read_text(path, &len);
        rt_chat *c = NULL;
        base_err err;
        assert_int_equal(rt_chat_parse(src, len, specials, &c, &err), 0);
        if (rt_chat_problem(c))
            fail_msg("%s", rt_chat_problem(c));
        char what[128];
        snprintf(what, sizeof what, "%s, conversation %d", t->valuestring, cJSON_GetObjectItem(w, "conversation")->valueint);
        bad += !check_case(c, w, what, NULL);
        refusals += cJSON_GetObjectItem(w, "error") != NULL;
        n++;
        rt_chat_free(c);
        free(src);
    }
    free(specials);
    fprintf(stderr, "templates/: %d of %d renderings as transformers gives them (%d refusals among them)\n",
            n - bad, n, refusals);
    assert_true(n >= 60);
    assert_true(refusals > 0);
    assert_int_equal(bad, 0);
}

/* jinja_cases.json: the language's corner cases, each as transformers' environment renders it */
static void test_language(void **state)
{
    (void)state;
    cJSON *jc = read_json(DINFER_SOURCE_DIR "/tests/chat/jinja_cases.json");
    const cJSON *vars = cJSON_GetObjectItem(jc, "vars"), *want = cJSON_GetObjectItem(expected, "language")->child;
    int n = 0, bad = 0;
    for (const cJSON *t = cJSON_GetObjectItem(jc, "templates")->child; t; t = t->next, want = want->next, n++) {
        assert_non_null(want);
        base_err err;
        size_t len = 0;
        jinja_template *tp = jinja_parse(t->valuestring, strlen(t->valuestring), &err);
        char *got = tp ? jinja_render(tp, vars, NULL, &len, &err) : NULL;
        const cJSON *text = cJSON_GetObjectItem(want, "text");
        if (!text && got) {
            fprintf(stderr, "  case %d %s: the reference failed (%s), dinfer gave \"%s\"\n", n, t->valuestring,
                    cJSON_GetObjectItem(want, "error")->valuestring, got);
            bad++;
        } else if (text && !got) {
            fprintf(stderr, "  case %d %s: %s\n", n, t->valuestring, err.msg);
            bad++;
        } else if (got && strlen(got) > len) {
            fprintf(stderr, "  case %d %s: \"%s\" runs past the %zu bytes rendered\n", n, t->valuestring, got, len);
            bad++;
        } else if (text && (strlen(text->valuestring) != len || memcmp(text->valuestring, got, len) != 0)) {
            fprintf(stderr, "  case %d %s:\n", n, t->valuestring);
            show_diff("text", text->valuestring, got);
            bad++;
        }
        free(got);
        jinja_free(tp);
    }
    fprintf(stderr, "language: %d of %d cases as transformers' Jinja gives them\n", n - bad, n);
    assert_true(n >= 80);
    assert_int_equal(bad, 0);
    cJSON_Delete(jc);
}

static char *render_src(const char *src, const char *vars_json, const jinja_limits *lim, base_err *err)
{
    jinja_template *t = jinja_parse(src, strlen(src), err);
    if (!t)
        return NULL;
    cJSON *vars = cJSON_Parse(vars_json ? vars_json : "{}");
    char *out = jinja_render(t, vars, lim, NULL, err);
    cJSON_Delete(vars);
    jinja_free(t);
    return out;
}

/* what the interpreter lacks is refused when parsed, naming the construct and its line */
static void test_unsupported(void **state)
{
    (void)state;
    static const struct {
        const char *src, *msg;
    } cases[] = {
        {"a\n{% include 'x.jinja' %}", "line 2: the 'include' tag is not supported"},
        {"{% import 'm' as m %}", "the 'import' tag is not supported"},
        {"{% extends 'base' %}", "the 'extends' tag is not supported"},
        {"{% call m() %}x{% endcall %}", "the 'call' tag is not supported"},
        {"\n\n{% raw %}{{ x }}{% endraw %}", "line 3: the 'raw' tag is not supported"},
        {"{{ x | frobnicate }}", "unknown filter 'frobnicate'"},
        {"{{ x is frobnicated }}", "unknown test 'frobnicated'"},
        {"{% frob %}", "unknown tag 'frob'"},
        {"{% for x in y recursive %}{% endfor %}", "recursive for loops are not supported"},
        {"{% if x %}", "expected '{% endif %}'"},
        {"{% endfor %}", "'endfor' without the block it closes"},
        {"{{ 'open }}", "a string literal is not closed"},
        {"{{ x ) }}", "unexpected ')'"},
        {"{# no end", "a comment is not closed"},
        {"{{ f(*args) }}", "*args and **kwargs in calls are not supported"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        base_err err = {{0}};
        jinja_template *t = jinja_parse(cases[i].src, strlen(cases[i].src), &err);
        if (t || !strstr(err.msg, cases[i].msg))
            fail_msg("%s: want \"%s\", got \"%s\"", cases[i].src, cases[i].msg, t ? "parsed" : err.msg);
    }
    /* a model whose template the interpreter cannot run still loads; rendering says why */
    rt_chat *c = NULL;
    base_err err;
    assert_int_equal(rt_chat_parse("{% include 'x' %}", 17, NULL, &c, &err), 0);
    assert_non_null(rt_chat_problem(c));
    assert_non_null(strstr(rt_chat_problem(c), "the 'include' tag is not supported"));
    cJSON *msgs = cJSON_Parse("[{\"role\": \"user\", \"content\": \"hi\"}]");
    assert_null(rt_chat_render(c, msgs, true, NULL, &err));
    assert_non_null(strstr(err.msg, "'include'"));
    rt_chat_free(c);
    cJSON_Delete(msgs);
}

/* errors while rendering: the template's own words, undefined values, types, with their line */
static void test_render_errors(void **state)
{
    (void)state;
    static const struct {
        const char *src, *msg;
    } cases[] = {
        {"\n{{ raise_exception('Conversation roles must alternate') }}", "line 2: Conversation roles must alternate"},
        {"{{ x.y }}", "'x' is undefined"},
        {"{{ messages[0].content.z.w }}", "has no attribute 'z'"},
        {"{{ 1 + 'a' }}", "unsupported operand types for +: 'int' and 'str'"},
        {"{{ 'a' + 1 }}", "can only concatenate str (not \"int\") to str"},
        {"{{ 1 / 0 }}", "division by zero"},
        {"{{ range(200000) | length }}", "Range too big"},
        {"{% set a, b = [1] %}", "not enough values to unpack"},
        {"{{ [1].append(2) }}", "unsafe"},
        {"{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "macro calls nested more than"},
        {"{{ messages | tojson }}{{ x | tojson }}", "not JSON serializable"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        base_err err = {{0}};
        char *out = render_src(cases[i].src, "{\"messages\": [{\"content\": {}}]}", NULL, &err);
        if (out || !strstr(err.msg, cases[i].msg))
            fail_msg("%s: want \"%s\", got \"%s\"", cases[i].src, cases[i].msg, out ? out : err.msg);
    }
}

/* a hostile request or template meets a limit, with an error, in bounded time and memory */
static void test_limits(void **state)
{
    (void)state;
    const jinja_limits lim = {.max_output = 1 << 20, .max_memory = 16 << 20, .max_steps = 1000000};
    base_err err;
    char *out = render_src("{% set r = range(100000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}", NULL,
                           &lim, &err);
    assert_null(out);
    assert_non_null(strstr(err.msg, "more than 1000000 steps"));
    out = render_src("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", NULL, &lim, &err);
    assert_null(out);
    assert_non_null(strstr(err.msg, "the rendered text is over 1048576 bytes"));
    out = render_src("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                     NULL, &lim, &err);
    assert_null(out);
    assert_non_null(strstr(err.msg, "MiB"));
    /* 10,000 messages render (the qwen3-like loops are linear) */
    cJSON *vars = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(vars, "messages");
    for (int i = 0; i < 10000; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", i % 2 ? "assistant" : "user");
        cJSON_AddStringToObject(m, "content", "some words of a message");
        cJSON_AddItemToArray(msgs, m);
    }
    const char *src = "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}{% if not loop.last %}\n{% endif %}"
                      "{% endfor %}";
    jinja_template *t = jinja_parse(src, strlen(src), &err);
    size_t len = 0;
    out = jinja_render(t, vars, NULL, &len, &err);
    assert_non_null(out);
    assert_true(len > 10000 * 30);
    free(out);
    jinja_free(t);
    cJSON_Delete(vars);
}

/* A body rendered into a variable (set block, filter block, macro call) ends where the output
 * ended before it: a template whose last output is such a body leaves no trace of it past the end
 * (found by fuzz_jinja: the returned text ran on past its length). Expected texts: jinja2's. */
static void test_captures_end(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"{% set s %}perl %}perlsoup{% endset %}", ""},
        {"{% macro m() %}ab{% endmacro %}{% set x = m() %}", ""},
        {"{% filter upper %}{% endfilter %}", ""},
        {"{% set s %}ab{% endset %}{{ s }}{% set t %}cd{% endset %}", "ab"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        base_err err;
        jinja_template *t = jinja_parse(cases[i][0], strlen(cases[i][0]), &err);
        assert_non_null(t);
        cJSON *vars = cJSON_Parse("{}");
        size_t len = 99;
        char *out = jinja_render(t, vars, NULL, &len, &err);
        assert_non_null(out);
        assert_int_equal(len, strlen(cases[i][1]));
        assert_string_equal(out, cases[i][1]);
        free(out);
        cJSON_Delete(vars);
        jinja_free(t);
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* --chat-template, chat_template.jinja, tokenizer_config.json (a string or a list), none */
static void test_sources(void **state)
{
    (void)state;
    char dir[] = "/tmp/dinfer-chat-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cfg[4200], jin[4200], over[4200], bad[4200];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    snprintf(jin, sizeof jin, "%s/chat_template.jinja", dir);
    snprintf(over, sizeof over, "%s/override.jinja", dir);
    snprintf(bad, sizeof bad, "%s/bad.jinja", dir);
    rt_chat *c = NULL;
    base_err err;
    cJSON *msgs = cJSON_Parse("[{\"role\": \"user\", \"content\": \"hi\"}]");
    /* none at all */
    assert_int_equal(rt_chat_load(dir, NULL, &c, &err), 0);
    assert_null(c);
    /* a list of named templates: "default" */
    write_file(cfg, "{\"bos_token\": {\"content\": \"<B>\"}, \"chat_template\": [{\"name\": \"tool_use\", \"template\": "
                    "\"T\"}, {\"name\": \"default\", \"template\": \"{{ bos_token }}D{{ messages[0].content }}\"}]}");
    assert_int_equal(rt_chat_load(dir, NULL, &c, &err), 0);
    char *out = rt_chat_render(c, msgs, true, NULL, &err);
    assert_string_equal(out, "<B>Dhi");
    free(out);
    rt_chat_free(c);
    /* chat_template.jinja beside it wins */
    write_file(jin, "J{{ messages | length }}{% if add_generation_prompt %}+{% endif %}\n");
    assert_int_equal(rt_chat_load(dir, NULL, &c, &err), 0);
    assert_string_equal(rt_chat_source(c), "chat_template.jinja");
    out = rt_chat_render(c, msgs, true, NULL, &err);
    assert_string_equal(out, "J1+");
    free(out);
    rt_chat_free(c);
    /* --chat-template wins over both; one that does not parse stops the start, named */
    write_file(over, "O{{ eos_token }}");
    assert_int_equal(rt_chat_load(dir, over, &c, &err), 0);
    out = rt_chat_render(c, msgs, true, NULL, &err);
    assert_string_equal(out, "O");
    free(out);
    rt_chat_free(c);
    write_file(bad, "{% include 'x' %}");
    assert_int_equal(rt_chat_load(dir, bad, &c, &err), -1);
    assert_non_null(strstr(err.msg, "--chat-template"));
    assert_non_null(strstr(err.msg, "'include'"));
    assert_int_equal(rt_chat_load(dir, "/nonexistent/t.jinja", &c, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/t.jinja"));
    /* a model's own unusable template: loads, refuses to render */
    write_file(jin, "{{ x | nosuchfilter }}");
    assert_int_equal(rt_chat_load(dir, NULL, &c, &err), 0);
    assert_non_null(rt_chat_problem(c));
    assert_null(rt_chat_render(c, msgs, true, NULL, &err));
    assert_non_null(strstr(err.msg, "unknown filter 'nosuchfilter'"));
    rt_chat_free(c);
    /* a broken tokenizer_config.json is named */
    write_file(cfg, "{\"chat_template\": ");
    assert_int_equal(rt_chat_load(dir, NULL, &c, &err), -1);
    assert_non_null(strstr(err.msg, "tokenizer_config.json is not valid JSON"));
    unlink(cfg), unlink(jin), unlink(over), unlink(bad);
    rmdir(dir);
    cJSON_Delete(msgs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama3),     cmocka_unit_test(test_qwen3),         cmocka_unit_test(test_templates),
        cmocka_unit_test(test_language),   cmocka_unit_test(test_unsupported),   cmocka_unit_test(test_render_errors),
        cmocka_unit_test(test_limits),     cmocka_unit_test(test_sources),       cmocka_unit_test(test_captures_end),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
