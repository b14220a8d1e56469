/* jinja2's filters that chat templates use; tojson is transformers' (json.dumps with ensure_ascii
 * off: no HTML escaping), not jinja2's. Keyword arguments are folded into positions by each
 * filter's parameter names; an argument left out is undefined. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <utf8proc.h>

#include "runtime/text/jinja_impl.h"

static bool given(const jv *a, size_t n, size_t i)
{
    return i < n && a[i].t != JV_UNDEF;
}

static bool flag(const jv *a, size_t n, size_t i)
{
    return given(a, n, i) && jx_truthy(a[i]);
}

/* obj.a.0.b: jinja2's attribute paths (integer parts index) */
static jv attr_path(jctx *c, int line, jv v, const jv *path)
{
    if (!path || path->t == JV_UNDEF || path->t == JV_NONE)
        return v;
    if (path->t == JV_INT) {
        const jlist *l = v.t == JV_LIST ? v.u.l : NULL;
        return l && path->u.i >= 0 && (size_t)path->u.i < l->n ? l->v[path->u.i] : jv_undef(NULL);
    }
    const jstr *p = jx_to_str(c, *path);
    for (size_t i = 0; i <= p->len;) {
        size_t j = i;
        while (j < p->len && p->s[j] != '.')
            j++;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(j - i), p->s + i);
        bool digits = j > i;
        for (size_t k = i; k < j; k++)
            digits = digits && p->s[k] >= '0' && p->s[k] <= '9';
        if (v.t == JV_UNDEF)
            return v;
        if (digits && v.t == JV_LIST) {
            const size_t idx = (size_t)strtoull(name, NULL, 10);
            v = idx < v.u.l->n ? v.u.l->v[idx] : jv_undef(NULL);
        } else {
            v = jx_getattr(c, line, v, name);
        }
        i = j + 1;
    }
    return v;
}

/* the key a value sorts and compares by: its attribute, lowercased unless case matters */
static jv sort_key(jctx *c, int line, jv v, const jv *attribute, bool case_sensitive)
{
    v = attr_path(c, line, v, attribute);
    if (!case_sensitive && v.t == JV_STR)
        return jv_of_str(jx_str_case(c, v.u.s, 'l'));
    return v;
}

/* a stable merge sort of v (n) by keys k (n), both permuted together */
static void merge_sort(jctx *c, int line, jv *v, jv *k, size_t n, bool reverse)
{
    if (n < 2)
        return;
    const size_t h = n / 2;
    merge_sort(c, line, v, k, h, reverse);
    merge_sort(c, line, v + h, k + h, n - h, reverse);
    jv *tv = jx_alloc(c, n * sizeof *tv), *tk = jx_alloc(c, n * sizeof *tk);
    size_t i = 0, j = h, o = 0;
    while (i < h || j < n) {
        bool left = j >= n;
        if (!left && i < h) {
            const int r = jx_cmp(c, line, k[i], k[j]);
            left = reverse ? r >= 0 : r <= 0;
        }
        const size_t s = left ? i++ : j++;
        tv[o] = v[s], tk[o] = k[s];
        o++;
    }
    memcpy(v, tv, n * sizeof *v);
    memcpy(k, tk, n * sizeof *k);
}

static jlist *copy_list(jctx *c, const jlist *l)
{
    jlist *r = jx_list_new(c, l->n);
    if (l->n)
        memcpy(r->v, l->v, l->n * sizeof *r->v);
    return r;
}

/* ---- filters ---- */

typedef jv (*filter_fn)(jctx *c, int line, jv in, const jv *a, size_t n);

static jv f_abs(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)a, (void)n;
    if (in.t == JV_INT)
        return jv_int(in.u.i < 0 ? -in.u.i : in.u.i);
    if (in.t == JV_FLOAT)
        return jv_float(fabs(in.u.f));
    if (in.t == JV_BOOL)
        return jv_int(in.u.b);
    jx_fail(c, line, "abs: bad operand type '%s'", jx_type_name(in));
}

static jv f_attr(jctx *c, int line, jv in, const jv *a, size_t n)
{
    return given(a, n, 0) ? jx_getattr(c, line, in, jx_to_str(c, a[0])->s) : jv_undef(NULL);
}

static jv f_capitalize(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)line, (void)a, (void)n;
    return jv_of_str(jx_str_case(c, jx_to_str(c, in), 'c'));
}

static jv f_length(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)a, (void)n;
    switch (in.t) {
    case JV_UNDEF: return jv_int(0);
    case JV_STR: return jv_int((int64_t)jx_utf8_count(in.u.s));
    case JV_LIST: return jv_int((int64_t)in.u.l->n);
    case JV_DICT:
    case JV_NS: return jv_int((int64_t)in.u.d->n);
    default: jx_fail(c, line, "object of type '%s' has no len()", jx_type_name(in));
    }
}

static jv f_default(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)line;
    if (in.t == JV_UNDEF || (flag(a, n, 1) && !jx_truthy(in)))
        return given(a, n, 0) ? a[0] : jv_of_str(jx_str_new(c, "", 0));
    return in;
}

static jv f_dictsort(jctx *c, int line, jv in, const jv *a, size_t n)
{
    if (in.t != JV_DICT)
        jx_fail(c, line, "dictsort: a dict is needed, not %s", jx_type_name(in));
    const bool by_value = given(a, n, 1) && !strcmp(jx_to_str(c, a[1])->s, "value");
    jlist *l = jx_list_new(c, in.u.d->n);
    jv *keys = jx_alloc(c, (l->n ? l->n : 1) * sizeof *keys);
    for (size_t i = 0; i < l->n; i++) {
        jlist *pair = jx_list_new(c, 2);
        pair->v[0] = in.u.d->k[i], pair->v[1] = in.u.d->v[i];
        l->v[i] = jv_of_list(pair, true);
        keys[i] = sort_key(c, line, pair->v[by_value], NULL, flag(a, n, 0));
    }
    merge_sort(c, line, l->v, keys, l->n, flag(a, n, 2));
    return jv_of_list(l, false);
}

static jv f_escape(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)line, (void)a, (void)n;
    const jstr *s = jx_to_str(c, in);
    jbuf b = {.c = c};
    for (size_t i = 0; i < s->len; i++) {
        const char ch = s->s[i];
        if (ch == '&')
            jb_puts(&b, "&amp;");
        else if (ch == '<')
            jb_puts(&b, "&lt;");
        else if (ch == '>')
            jb_puts(&b, "&gt;");
        else if (ch == '"')
            jb_puts(&b, "&#34;");
        else if (ch == '\'')
            jb_puts(&b, "&#39;");
        else
            jb_putc(&b, ch);
    }
    return jv_of_str(jb_str(&b));
}

static jv f_first(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)a, (void)n;
    const jlist *l = jx_iter(c, line, in);
    return l->n ? l->v[0] : jv_undef("No first item, sequence was empty.");
}

static jv f_last(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)a, (void)n;
    const jlist *l = jx_iter(c, line, in);
    return l->n ? l->v[l->n - 1] : jv_undef("No last item, sequence was empty.");
}

static jv f_float(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)line;
    if (jx_is_number(in))
        return jv_float(jx_num(in));
    if (in.t == JV_STR) {
        const jstr *s = jx_str_strip(c, in.u.s, NULL, true, true);
        char *end;
        const double d = strtod(s->s, &end);
        if (s->len && *end == '\0')
            return jv_float(d);
    }
    return given(a, n, 0) ? a[0] : jv_float(0.0);
}

static jv f_int(jctx *c, int line, jv in, const jv *a, size_t n)
{
    if (in.t == JV_INT || in.t == JV_BOOL)
        return jv_int(in.t == JV_INT ? in.u.i : in.u.b);
    if (in.t == JV_FLOAT && isfinite(in.u.f) && fabs(in.u.f) < 9.2e18)
        return jv_int((int64_t)in.u.f);
    if (in.t == JV_STR) {
        const jstr *s = jx_str_strip(c, in.u.s, NULL, true, true);
        const int base = given(a, n, 1) ? (int)jx_need_int(c, line, "int: base", a[1]) : 10;
        char *end;
        const long long v = strtoll(s->s, &end, base);
        if (s->len && *end == '\0')
            return jv_int(v);
        const double d = strtod(s->s, &end); /* "3.7" -> 3, as jinja2 does */
        if (s->len && *end == '\0' && isfinite(d) && fabs(d) < 9.2e18)
            return jv_int((int64_t)d);
    }
    return given(a, n, 0) ? a[0] : jv_int(0);
}

static jv f_indent(jctx *c, int line, jv in, const jv *a, size_t n)
{
    jbuf ind = {.c = c};
    if (given(a, n, 0) && a[0].t == JV_STR) {
        jb_put(&ind, a[0].u.s->s, a[0].u.s->len);
    } else {
        const int64_t w = given(a, n, 0) ? jx_need_int(c, line, "indent: width", a[0]) : 4;
        for (int64_t i = 0; i < w && i < 4096; i++)
            jb_putc(&ind, ' ');
    }
    const jstr *pad = jb_str(&ind);
    const jstr *s = jx_to_str(c, in);
    jbuf t = {.c = c};
    jb_put(&t, s->s, s->len);
    jb_putc(&t, '\n'); /* as jinja2 does, so that splitlines sees the last line */
    const jv lines = jx_str_splitlines(c, jb_str(&t), false);
    jbuf b = {.c = c};
    if (flag(a, n, 1))
        jb_put(&b, pad->s, pad->len);
    for (size_t i = 0; i < lines.u.l->n; i++) {
        const jstr *ln = lines.u.l->v[i].u.s;
        if (i) {
            jb_putc(&b, '\n');
            if (ln->len || flag(a, n, 2))
                jb_put(&b, pad->s, pad->len);
        }
        jb_put(&b, ln->s, ln->len);
    }
    return jv_of_str(jb_str(&b));
}

static jv f_items(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)a, (void)n;
    if (in.t == JV_UNDEF)
        return jv_of_list(jx_list_new(c, 0), false);
    if (in.t != JV_DICT && in.t != JV_NS)
        jx_fail(c, line, "items: a dict is needed, not %s", jx_type_name(in));
    jlist *l = jx_list_new(c, in.u.d->n);
    for (size_t i = 0; i < l->n; i++) {
        jlist *pair = jx_list_new(c, 2);
        pair->v[0] = in.u.d->k[i], pair->v[1] = in.u.d->v[i];
        l->v[i] = jv_of_list(pair, true);
    }
    return jv_of_list(l, false);
}

static jv f_join(jctx *c, int line, jv in, const jv *a, size_t n)
{
    const jlist *l = jx_iter(c, line, in);
    const jstr *sep = given(a, n, 0) ? jx_to_str(c, a[0]) : NULL;
    jbuf b = {.c = c};
    for (size_t i = 0; i < l->n; i++) {
        if (i && sep)
            jb_put(&b, sep->s, sep->len);
        const jstr *s = jx_to_str(c, attr_path(c, line, l->v[i], given(a, n, 1) ? &a[1] : NULL));
        jb_put(&b, s->s, s->len);
    }
    return jv_of_str(jb_str(&b));
}

static jv f_list(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)a, (void)n;
    return jv_of_list(copy_list(c, jx_iter(c, line, in)), false);
}

static jv f_lower(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)line, (void)a, (void)n;
    return jv_of_str(jx_str_case(c, jx_to_str(c, in), 'l'));
}

static jv f_upper(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)line, (void)a, (void)n;
    return jv_of_str(jx_str_case(c, jx_to_str(c, in), 'u'));
}

static jv f_title(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)line, (void)a, (void)n;
    return jv_of_str(jx_str_case(c, jx_to_str(c, in), 'T'));
}

static jv minmax(jctx *c, int line, jv in, const jv *a, size_t n, bool want_max)
{
    const jlist *l = jx_iter(c, line, in);
    if (!l->n)
        return jv_undef("No aggregated item, sequence was empty.");
    size_t best = 0;
    jv bk = sort_key(c, line, l->v[0], given(a, n, 1) ? &a[1] : NULL, flag(a, n, 0));
    for (size_t i = 1; i < l->n; i++) {
        const jv k = sort_key(c, line, l->v[i], given(a, n, 1) ? &a[1] : NULL, flag(a, n, 0));
        const int r = jx_cmp(c, line, k, bk);
        if (want_max ? r > 0 : r < 0)
            best = i, bk = k;
    }
    return l->v[best];
}

static jv f_max(jctx *c, int line, jv in, const jv *a, size_t n)
{
    return minmax(c, line, in, a, n, true);
}

static jv f_min(jctx *c, int line, jv in, const jv *a, size_t n)
{
    return minmax(c, line, in, a, n, false);
}

static jv f_replace(jctx *c, int line, jv in, const jv *a, size_t n)
{
    if (!given(a, n, 0) || !given(a, n, 1))
        jx_fail(c, line, "replace: the old and the new text are needed");
    const int64_t count = given(a, n, 2) && a[2].t != JV_NONE ? jx_need_int(c, line, "replace: count", a[2]) : -1;
    return jv_of_str(jx_str_replace(c, jx_to_str(c, in), jx_to_str(c, a[0]), jx_to_str(c, a[1]), count));
}

static jv f_reverse(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)a, (void)n;
    const jlist *l = jx_iter(c, line, in);
    jlist *r = jx_list_new(c, l->n);
    for (size_t i = 0; i < l->n; i++)
        r->v[i] = l->v[l->n - 1 - i];
    if (in.t != JV_STR)
        return jv_of_list(r, false);
    jbuf b = {.c = c};
    for (size_t i = 0; i < r->n; i++)
        jb_put(&b, r->v[i].u.s->s, r->v[i].u.s->len);
    return jv_of_str(jb_str(&b));
}

static jv f_round(jctx *c, int line, jv in, const jv *a, size_t n)
{
    if (!jx_is_number(in))
        jx_fail(c, line, "round: a number is needed, not %s", jx_type_name(in));
    const int64_t prec = given(a, n, 0) ? jx_need_int(c, line, "round: precision", a[0]) : 0;
    const char *method = given(a, n, 1) ? jx_to_str(c, a[1])->s : "common";
    const double scale = pow(10.0, (double)prec), x = jx_num(in) * scale;
    double r;
    if (!strcmp(method, "floor"))
        r = floor(x);
    else if (!strcmp(method, "ceil"))
        r = ceil(x);
    else if (!strcmp(method, "common"))
        r = nearbyint(x); /* Python's round(): halves to even */
    else
        jx_fail(c, line, "round: method must be 'common', 'ceil' or 'floor'");
    return jv_float(r / scale);
}

static jv f_string(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)line, (void)a, (void)n;
    return jv_of_str(jx_to_str(c, in));
}

static jv f_sort(jctx *c, int line, jv in, const jv *a, size_t n)
{
    jlist *l = copy_list(c, jx_iter(c, line, in));
    jv *keys = jx_alloc(c, (l->n ? l->n : 1) * sizeof *keys);
    for (size_t i = 0; i < l->n; i++)
        keys[i] = sort_key(c, line, l->v[i], given(a, n, 2) ? &a[2] : NULL, flag(a, n, 1));
    merge_sort(c, line, l->v, keys, l->n, flag(a, n, 0));
    return jv_of_list(l, false);
}

static jv f_sum(jctx *c, int line, jv in, const jv *a, size_t n)
{
    const jlist *l = jx_iter(c, line, in);
    jv acc = given(a, n, 1) ? a[1] : jv_int(0);
    for (size_t i = 0; i < l->n; i++) {
        const jv v = attr_path(c, line, l->v[i], given(a, n, 0) ? &a[0] : NULL);
        if (!jx_is_number(v) || !jx_is_number(acc))
            jx_fail(c, line, "sum: unsupported operand types '%s' and '%s'", jx_type_name(acc), jx_type_name(v));
        if (acc.t != JV_FLOAT && v.t != JV_FLOAT)
            acc = jv_int((acc.t == JV_INT ? acc.u.i : acc.u.b) + (v.t == JV_INT ? v.u.i : v.u.b));
        else
            acc = jv_float(jx_num(acc) + jx_num(v));
    }
    return acc;
}

static jv f_tojson(jctx *c, int line, jv in, const jv *a, size_t n)
{
    /* transformers' signature: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
    int indent = -1; /* none: one line */
    if (given(a, n, 1) && a[1].t != JV_NONE) {
        const int64_t w = jx_need_int(c, line, "tojson: indent", a[1]);
        indent = w < 0 ? 0 : w > 64 ? 64 : (int)w;
    }
    const char *item_sep = NULL, *key_sep = NULL;
    if (given(a, n, 2) && a[2].t != JV_NONE) {
        if (a[2].t != JV_LIST || a[2].u.l->n != 2 || a[2].u.l->v[0].t != JV_STR || a[2].u.l->v[1].t != JV_STR)
            jx_fail(c, line, "tojson: separators must be two strings");
        item_sep = a[2].u.l->v[0].u.s->s, key_sep = a[2].u.l->v[1].u.s->s;
    }
    return jv_of_str(jx_to_json(c, line, in, indent, item_sep, key_sep, flag(a, n, 3), flag(a, n, 0)));
}

static jv f_trim(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)line;
    return jv_of_str(jx_str_strip(c, jx_to_str(c, in), given(a, n, 0) && a[0].t != JV_NONE ? jx_to_str(c, a[0]) : NULL, true, true));
}

static jv f_unique(jctx *c, int line, jv in, const jv *a, size_t n)
{
    const jlist *l = jx_iter(c, line, in);
    jlist *r = jx_list_new(c, l->n);
    jv *seen = jx_alloc(c, (l->n ? l->n : 1) * sizeof *seen);
    r->n = 0;
    for (size_t i = 0; i < l->n; i++) {
        const jv k = sort_key(c, line, l->v[i], given(a, n, 1) ? &a[1] : NULL, flag(a, n, 0));
        bool dup = false;
        for (size_t j = 0; j < r->n && !dup; j++)
            dup = jx_eq(seen[j], k);
        if (!dup)
            seen[r->n] = k, r->v[r->n++] = l->v[i];
    }
    return jv_of_list(r, false);
}

static jv f_wordcount(jctx *c, int line, jv in, const jv *a, size_t n)
{
    (void)line, (void)a, (void)n;
    const jstr *s = jx_to_str(c, in);
    int64_t words = 0;
    bool in_word = false;
    for (size_t i = 0; i < s->len;) {
        int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s->s + i, (utf8proc_ssize_t)(s->len - i), &cp);
        if (k <= 0)
            k = 1, cp = 0;
        const utf8proc_category_t cat = utf8proc_category(cp);
        const bool w = cp == '_' || (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
                       (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
        words += w && !in_word;
        in_word = w;
        i += (size_t)k;
    }
    return jv_int(words);
}

enum { FK_PLAIN, FK_MAP, FK_SELECT, FK_REJECT, FK_SELECTATTR, FK_REJECTATTR };

/* map / select / reject / selectattr / rejectattr take their arguments as they come */
static jv map_select(jctx *c, int line, int kind, jv in, const jv *a, size_t n, const char **kw_names,
                     const jv *kw_vals, size_t n_kw)
{
    const jlist *l = jx_iter(c, line, in);
    jlist *r = jx_list_new(c, l->n);
    r->n = 0;
    if (kind == FK_MAP) {
        const jv *attribute = NULL, *dflt = NULL;
        for (size_t k = 0; k < n_kw; k++)
            if (!strcmp(kw_names[k], "attribute"))
                attribute = &kw_vals[k];
            else if (!strcmp(kw_names[k], "default"))
                dflt = &kw_vals[k];
            else
                jx_fail(c, line, "map: unexpected keyword argument '%s'", kw_names[k]);
        int fid = -1;
        if (!attribute) {
            if (!n || a[0].t != JV_STR)
                jx_fail(c, line, "map needs attribute= or the name of a filter");
            if ((fid = jinja_filter_id(a[0].u.s->s)) < 0)
                jx_fail(c, line, "map: no filter named '%s'", a[0].u.s->s);
        }
        for (size_t i = 0; i < l->n; i++) {
            jv v;
            if (attribute) {
                v = attr_path(c, line, l->v[i], attribute);
                if (v.t == JV_UNDEF && dflt)
                    v = *dflt;
            } else {
                v = jx_filter(c, line, fid, l->v[i], a + 1, n - 1, NULL, NULL, 0);
            }
            r->v[r->n++] = v;
        }
        return jv_of_list(r, false);
    }
    if (n_kw)
        jx_fail(c, line, "select and reject filters take no keyword arguments");
    const bool by_attr = kind == FK_SELECTATTR || kind == FK_REJECTATTR;
    const bool want = kind == FK_SELECT || kind == FK_SELECTATTR;
    if (by_attr && !n)
        jx_fail(c, line, "selectattr and rejectattr need an attribute name");
    const size_t t0 = by_attr ? 1 : 0; /* where the test's name is */
    int tid = -1;
    if (n > t0) {
        if (a[t0].t != JV_STR || (tid = jinja_test_id(a[t0].u.s->s)) < 0)
            jx_fail(c, line, "no test named '%s'", a[t0].t == JV_STR ? a[t0].u.s->s : "?");
    }
    for (size_t i = 0; i < l->n; i++) {
        const jv v = by_attr ? attr_path(c, line, l->v[i], &a[0]) : l->v[i];
        const bool ok = tid < 0 ? jx_truthy(v) : jx_test(c, line, tid, v, a + t0 + 1, n - t0 - 1);
        if (ok == want)
            r->v[r->n++] = l->v[i];
    }
    return jv_of_list(r, false);
}


static const struct {
    const char *name;
    filter_fn fn;
    int kind;
    const char *params[5]; /* after the input, for keyword arguments */
} filters[] = {
    {"abs", f_abs, FK_PLAIN, {NULL}},
    {"attr", f_attr, FK_PLAIN, {"name", NULL}},
    {"capitalize", f_capitalize, FK_PLAIN, {NULL}},
    {"count", f_length, FK_PLAIN, {NULL}},
    {"d", f_default, FK_PLAIN, {"default_value", "boolean", NULL}},
    {"default", f_default, FK_PLAIN, {"default_value", "boolean", NULL}},
    {"dictsort", f_dictsort, FK_PLAIN, {"case_sensitive", "by", "reverse", NULL}},
    {"e", f_escape, FK_PLAIN, {NULL}},
    {"escape", f_escape, FK_PLAIN, {NULL}},
    {"first", f_first, FK_PLAIN, {NULL}},
    {"float", f_float, FK_PLAIN, {"default", NULL}},
    {"indent", f_indent, FK_PLAIN, {"width", "first", "blank", NULL}},
    {"int", f_int, FK_PLAIN, {"default", "base", NULL}},
    {"items", f_items, FK_PLAIN, {NULL}},
    {"join", f_join, FK_PLAIN, {"d", "attribute", NULL}},
    {"last", f_last, FK_PLAIN, {NULL}},
    {"length", f_length, FK_PLAIN, {NULL}},
    {"list", f_list, FK_PLAIN, {NULL}},
    {"lower", f_lower, FK_PLAIN, {NULL}},
    {"map", NULL, FK_MAP, {NULL}},
    {"max", f_max, FK_PLAIN, {"case_sensitive", "attribute", NULL}},
    {"min", f_min, FK_PLAIN, {"case_sensitive", "attribute", NULL}},
    {"reject", NULL, FK_REJECT, {NULL}},
    {"rejectattr", NULL, FK_REJECTATTR, {NULL}},
    {"replace", f_replace, FK_PLAIN, {"old", "new", "count", NULL}},
    {"reverse", f_reverse, FK_PLAIN, {NULL}},
    {"round", f_round, FK_PLAIN, {"precision", "method", NULL}},
    {"safe", f_string, FK_PLAIN, {NULL}},
    {"select", NULL, FK_SELECT, {NULL}},
    {"selectattr", NULL, FK_SELECTATTR, {NULL}},
    {"sort", f_sort, FK_PLAIN, {"reverse", "case_sensitive", "attribute", NULL}},
    {"string", f_string, FK_PLAIN, {NULL}},
    {"sum", f_sum, FK_PLAIN, {"attribute", "start", NULL}},
    {"title", f_title, FK_PLAIN, {NULL}},
    {"tojson", f_tojson, FK_PLAIN, {"ensure_ascii", "indent", "separators", "sort_keys", NULL}},
    {"trim", f_trim, FK_PLAIN, {"chars", NULL}},
    {"unique", f_unique, FK_PLAIN, {"case_sensitive", "attribute", NULL}},
    {"upper", f_upper, FK_PLAIN, {NULL}},
    {"wordcount", f_wordcount, FK_PLAIN, {NULL}},
};

int jinja_filter_id(const char *name)
{
    for (size_t i = 0; i < sizeof filters / sizeof *filters; i++)
        if (!strcmp(filters[i].name, name))
            return (int)i;
    return -1;
}

jv jx_filter(jctx *c, int line, int id, jv in, const jv *args, size_t n, const char **kw_names, const jv *kw_vals,
             size_t n_kw)
{
    if (filters[id].kind != FK_PLAIN)
        return map_select(c, line, filters[id].kind, in, args, n, kw_names, kw_vals, n_kw);
    jv a[5];
    size_t m = n;
    if (n > 5)
        jx_fail(c, line, "filter '%s' takes at most 5 arguments", filters[id].name);
    for (size_t i = 0; i < n; i++)
        a[i] = args[i];
    for (size_t k = 0; k < n_kw; k++) {
        size_t p = 0;
        while (p < 5 && filters[id].params[p] && strcmp(filters[id].params[p], kw_names[k]) != 0)
            p++;
        if (p == 5 || !filters[id].params[p])
            jx_fail(c, line, "filter '%s' got an unexpected keyword argument '%s'", filters[id].name, kw_names[k]);
        while (m <= p)
            a[m++] = jv_undef(NULL);
        a[p] = kw_vals[k];
    }
    return filters[id].fn(c, line, in, a, m);
}
