/* jinja2's tests that chat templates use, its global functions (range, namespace, dict) and the two
 * transformers adds (raise_exception, strftime_now). */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "runtime/text/jinja_impl.h"

#define MAX_RANGE 100000 /* jinja2's sandbox refuses longer ranges */

/* ---- tests ---- */

static const char *const tests[] = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "==", "even", "false", "float",
    "ge", ">=", "gt", "greaterthan", ">", "in", "integer", "iterable", "le", "<=", "lower", "lt",
    "lessthan", "<", "mapping", "ne", "!=", "none", "number", "odd", "sameas", "sequence", "string",
    "true", "undefined", "upper",
};

int jinja_test_id(const char *name)
{
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++)
        if (!strcmp(tests[i], name))
            return (int)i;
    return -1;
}

bool jx_test(jctx *c, int line, int id, jv in, const jv *args, size_t n)
{
    const char *t = tests[id];
    const jv arg = n ? args[0] : jv_undef(NULL);
    if (!strcmp(t, "defined"))
        return in.t != JV_UNDEF;
    if (!strcmp(t, "undefined"))
        return in.t == JV_UNDEF;
    if (!strcmp(t, "none"))
        return in.t == JV_NONE;
    if (!strcmp(t, "boolean"))
        return in.t == JV_BOOL;
    if (!strcmp(t, "true") || !strcmp(t, "false"))
        return in.t == JV_BOOL && in.u.b == (t[0] == 't');
    if (!strcmp(t, "integer"))
        return in.t == JV_INT;
    if (!strcmp(t, "float"))
        return in.t == JV_FLOAT;
    if (!strcmp(t, "number"))
        return jx_is_number(in);
    if (!strcmp(t, "string"))
        return in.t == JV_STR;
    if (!strcmp(t, "mapping"))
        return in.t == JV_DICT || in.t == JV_NS;
    if (!strcmp(t, "sequence"))
        return in.t == JV_STR || in.t == JV_LIST || in.t == JV_DICT;
    if (!strcmp(t, "iterable"))
        return in.t == JV_STR || in.t == JV_LIST || in.t == JV_DICT || in.t == JV_NS || in.t == JV_UNDEF;
    if (!strcmp(t, "callable"))
        return in.t == JV_MACRO || in.t == JV_FUNC;
    if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        if (in.t != JV_STR)
            return false;
        bool any = false;
        for (size_t i = 0; i < in.u.s->len;) {
            int32_t cp;
            utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)in.u.s->s + i,
                                                  (utf8proc_ssize_t)(in.u.s->len - i), &cp);
            if (k <= 0)
                k = 1, cp = 0;
            const int32_t lo = utf8proc_tolower(cp), up = utf8proc_toupper(cp);
            if (lo != up) {
                any = true;
                if ((t[0] == 'l' ? lo : up) != cp)
                    return false;
            }
            i += (size_t)k;
        }
        return any;
    }
    if (!strcmp(t, "even") || !strcmp(t, "odd")) {
        const int64_t v = jx_need_int(c, line, t, in);
        return (v % 2 == 0) == (t[0] == 'e');
    }
    if (!strcmp(t, "divisibleby")) {
        const int64_t d = jx_need_int(c, line, "divisibleby", arg);
        if (!d)
            jx_fail(c, line, "divisibleby: division by zero");
        return jx_need_int(c, line, "divisibleby", in) % d == 0;
    }
    if (!strcmp(t, "eq") || !strcmp(t, "equalto") || !strcmp(t, "==") || !strcmp(t, "sameas"))
        return jx_eq(in, arg);
    if (!strcmp(t, "ne") || !strcmp(t, "!="))
        return !jx_eq(in, arg);
    if (!strcmp(t, "in")) {
        for (size_t i = 0; arg.t == JV_LIST && i < arg.u.l->n; i++)
            if (jx_eq(arg.u.l->v[i], in))
                return true;
        if (arg.t == JV_DICT)
            return jx_dict_find(arg.u.d, in) != NULL;
        if (arg.t == JV_STR && in.t == JV_STR)
            return strstr(arg.u.s->s, in.u.s->s) != NULL;
        return false;
    }
    const int r = jx_cmp(c, line, in, arg);
    if (!strcmp(t, "lt") || !strcmp(t, "lessthan") || !strcmp(t, "<"))
        return r < 0;
    if (!strcmp(t, "le") || !strcmp(t, "<="))
        return r <= 0;
    if (!strcmp(t, "gt") || !strcmp(t, "greaterthan") || !strcmp(t, ">"))
        return r > 0;
    return r >= 0; /* ge, >= */
}

/* ---- global functions ---- */

enum { FN_RANGE, FN_NAMESPACE, FN_DICT, FN_RAISE, FN_STRFTIME };

jv jx_global(const char *name)
{
    static const char *names[] = {"range", "namespace", "dict", "raise_exception", "strftime_now"};
    for (int i = 0; i < (int)(sizeof names / sizeof *names); i++)
        if (!strcmp(names[i], name))
            return (jv){.t = JV_FUNC, .u.fn = i};
    return jv_undef(NULL);
}

jv jx_call_func(jctx *c, int line, int fn, const jv *args, size_t n, const char **kw_names, const jv *kw_vals,
                size_t n_kw)
{
    switch (fn) {
    case FN_RANGE: {
        if (n < 1 || n > 3 || n_kw)
            jx_fail(c, line, "range() takes 1 to 3 integers");
        int64_t start = 0, stop, st = 1;
        if (n == 1) {
            stop = jx_need_int(c, line, "range()", args[0]);
        } else {
            start = jx_need_int(c, line, "range()", args[0]);
            stop = jx_need_int(c, line, "range()", args[1]);
            if (n == 3 && !(st = jx_need_int(c, line, "range()", args[2])))
                jx_fail(c, line, "range() arg 3 must not be zero");
        }
        size_t count = 0;
        for (int64_t i = start; st > 0 ? i < stop : i > stop; i += st)
            if (++count > MAX_RANGE)
                jx_fail(c, line, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", MAX_RANGE);
        jlist *l = jx_list_new(c, count);
        for (size_t k = 0; k < count; k++)
            l->v[k] = jv_int(start + (int64_t)k * st);
        return jv_of_list(l, false);
    }
    case FN_NAMESPACE:
    case FN_DICT: {
        jdict *d = jx_dict_new(c, n_kw);
        for (size_t i = 0; i < n; i++) {
            if (args[i].t != JV_DICT && args[i].t != JV_NS)
                jx_fail(c, line, "%s() takes keyword arguments or a dict", fn == FN_DICT ? "dict" : "namespace");
            for (size_t k = 0; k < args[i].u.d->n; k++)
                jx_dict_set(c, d, args[i].u.d->k[k], args[i].u.d->v[k]);
        }
        for (size_t k = 0; k < n_kw; k++)
            jx_dict_set(c, d, jv_of_str(jx_str_new(c, kw_names[k], strlen(kw_names[k]))), kw_vals[k]);
        return fn == FN_DICT ? jv_of_dict(d) : (jv){.t = JV_NS, .u.d = d};
    }
    case FN_RAISE:
        jx_fail(c, line, "%s", n ? jx_to_str(c, args[0])->s : "raise_exception() was called");
    case FN_STRFTIME: {
        if (n != 1 || args[0].t != JV_STR)
            jx_fail(c, line, "strftime_now() takes a format string");
        const time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        char buf[512];
        const size_t k = strftime(buf, sizeof buf, args[0].u.s->s, &tm);
        return jv_of_str(jx_str_new(c, buf, k));
    }
    default: jx_fail(c, line, "not a function");
    }
}
