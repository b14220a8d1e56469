/* The methods templates call on values, as Python's: str's (split, strip, startswith, replace,
 * lower, ...: indexes and lengths count code points, whitespace is str.isspace's), dict's (items,
 * keys, values, get), list's (index, count) and loop.cycle. Methods that change a list or a dict
 * are refused, as jinja2's immutable sandbox refuses them. */
#include <string.h>
#include <utf8proc.h>

#include "runtime/text/jinja_impl.h"

/* one code point of s at i: its value and byte length (a broken byte counts as itself) */
static size_t cp_at(const char *s, size_t n, size_t i, int32_t *cp)
{
    const utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), cp);
    if (k > 0)
        return (size_t)k;
    *cp = (unsigned char)s[i];
    return 1;
}

static void put_cp(jbuf *b, int32_t cp)
{
    utf8proc_uint8_t u[4];
    const utf8proc_ssize_t k = utf8proc_encode_char(cp, u);
    jb_put(b, (const char *)u, (size_t)(k > 0 ? k : 0));
}

static bool cased(int32_t cp)
{
    return utf8proc_tolower(cp) != cp || utf8proc_toupper(cp) != cp || utf8proc_totitle(cp) != cp;
}

/* mode: 'l' lower, 'u' upper, 't' str.title, 'c' str.capitalize, 'T' jinja2's title filter (each
 * piece after a run of "-", whitespace, "(", "{", "[" or "<" upper-cased at its start) */
jstr *jx_str_case(jctx *c, const jstr *s, char mode)
{
    jbuf b = {.c = c};
    bool prev_cased = false, first = true;
    for (size_t i = 0; i < s->len;) {
        int32_t cp;
        const size_t at = i;
        i += cp_at(s->s, s->len, i, &cp);
        int32_t o = cp;
        if (mode == 'l') {
            o = utf8proc_tolower(cp);
        } else if (mode == 'u') {
            o = utf8proc_toupper(cp);
        } else if (mode == 't') {
            o = prev_cased ? utf8proc_tolower(cp) : utf8proc_totitle(cp);
        } else if (mode == 'T') {
            const bool sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || jx_space_at(s->s, s->len, at);
            o = sep ? cp : first ? utf8proc_toupper(cp) : utf8proc_tolower(cp);
            first = sep;
            put_cp(&b, o);
            continue;
        } else {
            o = first ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
        }
        prev_cased = cased(cp);
        first = false;
        put_cp(&b, o);
    }
    return jb_str(&b);
}

/* does code point cp appear in chars (a string of code points)? */
static bool in_chars(const jstr *chars, int32_t cp)
{
    for (size_t i = 0; i < chars->len;) {
        int32_t x;
        i += cp_at(chars->s, chars->len, i, &x);
        if (x == cp)
            return true;
    }
    return false;
}

/* str.strip / lstrip / rstrip: chars NULL strips whitespace */
jstr *jx_str_strip(jctx *c, const jstr *s, const jstr *chars, bool left, bool right)
{
    size_t a = 0, b = s->len;
    while (left && a < b) {
        int32_t cp;
        const size_t k = chars ? cp_at(s->s, b, a, &cp) : jx_space_at(s->s, b, a);
        if (!k || (chars && !in_chars(chars, cp)))
            break;
        a += k;
    }
    while (right && b > a) {
        size_t st = b - 1;
        while (st > a && ((unsigned char)s->s[st] & 0xc0) == 0x80)
            st--;
        int32_t cp;
        const size_t k = cp_at(s->s, b, st, &cp);
        if (st + k != b || (chars ? !in_chars(chars, cp) : jx_space_at(s->s, b, st) != k))
            break;
        b = st;
    }
    return jx_str_new(c, s->s + a, b - a);
}

static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m)
{
    if (m == 0)
        return hay;
    for (size_t i = 0; i + m <= n; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0)
            return hay + i;
    return NULL;
}

/* str.replace(old, new, count) */
jstr *jx_str_replace(jctx *c, const jstr *s, const jstr *old, const jstr *new_, int64_t count)
{
    jbuf b = {.c = c};
    if (!old->len) { /* between every character and at both ends */
        int64_t k = 0;
        size_t i = 0;
        for (;;) {
            if (count < 0 || k < count) {
                jb_put(&b, new_->s, new_->len);
                k++;
            }
            if (i >= s->len)
                break;
            int32_t cp;
            const size_t step = cp_at(s->s, s->len, i, &cp);
            jb_put(&b, s->s + i, step);
            i += step;
        }
        return jb_str(&b);
    }
    size_t i = 0;
    for (int64_t k = 0; count < 0 || k < count; k++) {
        const char *p = find_bytes(s->s + i, s->len - i, old->s, old->len);
        if (!p)
            break;
        jb_put(&b, s->s + i, (size_t)(p - s->s) - i);
        jb_put(&b, new_->s, new_->len);
        i = (size_t)(p - s->s) + old->len;
    }
    jb_put(&b, s->s + i, s->len - i);
    return jb_str(&b);
}

static jv str_v(jctx *c, const char *s, size_t n)
{
    return jv_of_str(jx_str_new(c, s, n));
}

/* str.split / rsplit (sep NULL: runs of whitespace); maxsplit < 0: all */
static jv split(jctx *c, int line, const jstr *s, const jstr *sep, int64_t maxsplit, bool from_right)
{
    jv *parts = jx_alloc(c, (s->len + 2) * sizeof *parts);
    size_t n = 0;
    if (sep && !sep->len)
        jx_fail(c, line, "split: empty separator");
    if (!from_right) {
        size_t i = 0;
        if (!sep) {
            for (;;) {
                size_t k;
                while (i < s->len && (k = jx_space_at(s->s, s->len, i)) > 0)
                    i += k;
                if (i >= s->len)
                    break;
                size_t j = i;
                if (maxsplit >= 0 && (int64_t)n >= maxsplit) {
                    j = s->len; /* the rest, trailing whitespace stripped */
                    while (j > i && jx_space_at(s->s, s->len, j - 1) == 1)
                        j--;
                } else {
                    while (j < s->len && !jx_space_at(s->s, s->len, j))
                        j++;
                }
                parts[n++] = str_v(c, s->s + i, j - i);
                i = j;
            }
        } else {
            for (;;) {
                const char *p = (maxsplit < 0 || (int64_t)n < maxsplit) ? find_bytes(s->s + i, s->len - i, sep->s, sep->len)
                                                                         : NULL;
                if (!p) {
                    parts[n++] = str_v(c, s->s + i, s->len - i);
                    break;
                }
                parts[n++] = str_v(c, s->s + i, (size_t)(p - s->s) - i);
                i = (size_t)(p - s->s) + sep->len;
            }
        }
    } else { /* rsplit: the same from the end, then reversed */
        size_t j = s->len;
        if (!sep) {
            for (;;) {
                while (j > 0 && jx_space_at(s->s, s->len, j - 1) == 1)
                    j--;
                if (j == 0)
                    break;
                size_t i = j;
                if (maxsplit >= 0 && (int64_t)n >= maxsplit) {
                    i = 0;
                    size_t k;
                    while (i < j && (k = jx_space_at(s->s, j, i)) > 0)
                        i += k;
                } else {
                    while (i > 0 && jx_space_at(s->s, s->len, i - 1) != 1)
                        i--;
                }
                parts[n++] = str_v(c, s->s + i, j - i);
                j = i;
            }
        } else {
            for (;;) {
                const char *p = NULL;
                if (maxsplit < 0 || (int64_t)n < maxsplit)
                    for (size_t i = j; i >= sep->len && !p; i--)
                        if (memcmp(s->s + i - sep->len, sep->s, sep->len) == 0)
                            p = s->s + i - sep->len;
                if (!p) {
                    parts[n++] = str_v(c, s->s, j);
                    break;
                }
                const size_t at = (size_t)(p - s->s);
                parts[n++] = str_v(c, s->s + at + sep->len, j - at - sep->len);
                j = at;
            }
        }
        for (size_t a = 0, b = n ? n - 1 : 0; a < b; a++, b--) {
            const jv t = parts[a];
            parts[a] = parts[b], parts[b] = t;
        }
    }
    jlist *l = jx_list_new(c, 0);
    l->n = n, l->v = parts;
    return jv_of_list(l, false);
}

/* the length of the line break at s[i] (str.splitlines' boundaries), 0 when none */
size_t jx_linebreak_at(const char *s, size_t n, size_t i)
{
    const unsigned char ch = (unsigned char)s[i];
    if (ch == '\r')
        return i + 1 < n && s[i + 1] == '\n' ? 2 : 1;
    if (ch == '\n' || ch == '\v' || ch == '\f' || (ch >= 0x1c && ch <= 0x1e))
        return 1;
    if (ch == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] == 0x85)
        return 2;
    if (ch == 0xe2 && i + 2 < n && (unsigned char)s[i + 1] == 0x80 &&
        ((unsigned char)s[i + 2] == 0xa8 || (unsigned char)s[i + 2] == 0xa9))
        return 3;
    return 0;
}

jv jx_str_splitlines(jctx *c, const jstr *s, bool keepends)
{
    jv *parts = jx_alloc(c, (s->len + 1) * sizeof *parts);
    size_t n = 0, start = 0;
    for (size_t i = 0; i < s->len;) {
        const size_t k = jx_linebreak_at(s->s, s->len, i);
        if (!k) {
            i++;
            continue;
        }
        parts[n++] = str_v(c, s->s + start, (keepends ? i + k : i) - start);
        i += k;
        start = i;
    }
    if (start < s->len)
        parts[n++] = str_v(c, s->s + start, s->len - start);
    jlist *l = jx_list_new(c, 0);
    l->n = n, l->v = parts;
    return jv_of_list(l, false);
}

static bool prefix_match(const jstr *s, jv p, bool suffix)
{
    if (p.t != JV_STR)
        return false;
    if (p.u.s->len > s->len)
        return false;
    return memcmp(s->s + (suffix ? s->len - p.u.s->len : 0), p.u.s->s, p.u.s->len) == 0;
}

/* every code point passes: 'd' digit, 'a' alpha, 'n' alnum, 's' space, 'l' lower, 'u' upper */
static bool str_is(const jstr *s, char what)
{
    if (!s->len)
        return false;
    bool any_cased = false;
    for (size_t i = 0; i < s->len;) {
        int32_t cp;
        const size_t k = cp_at(s->s, s->len, i, &cp);
        const utf8proc_category_t cat = utf8proc_category(cp);
        const bool letter = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
        const bool digit = cat == UTF8PROC_CATEGORY_ND;
        switch (what) {
        case 'd': if (!digit) return false; break;
        case 'a': if (!letter) return false; break;
        case 'n': if (!letter && !digit && cat != UTF8PROC_CATEGORY_NL && cat != UTF8PROC_CATEGORY_NO) return false; break;
        case 's': if (jx_space_at(s->s, s->len, i) != k) return false; break;
        case 'l':
        case 'u':
            if (cased(cp)) {
                any_cased = true;
                if ((what == 'l' ? utf8proc_tolower(cp) : utf8proc_toupper(cp)) != cp)
                    return false;
            }
            break;
        default: return false;
        }
        i += k;
    }
    return what == 'l' || what == 'u' ? any_cased : true;
}

static const jstr *str_arg(jctx *c, int line, const char *method, const jv *args, size_t n, size_t i, bool optional)
{
    if (i >= n || (optional && args[i].t == JV_NONE))
        return NULL;
    if (args[i].t != JV_STR)
        jx_fail(c, line, "%s: argument %zu must be a string, not %s", method, i + 1, jx_type_name(args[i]));
    return args[i].u.s;
}

static int64_t int_arg(jctx *c, int line, const char *method, const jv *args, size_t n, size_t i, int64_t dflt)
{
    if (i >= n)
        return dflt;
    if (args[i].t != JV_INT && args[i].t != JV_BOOL)
        jx_fail(c, line, "%s: argument %zu must be an integer, not %s", method, i + 1, jx_type_name(args[i]));
    return args[i].t == JV_INT ? args[i].u.i : args[i].u.b;
}

/* keyword arguments folded into positions, by the method's parameter names */
static size_t fold_kw(jctx *c, int line, const char *method, const char *const *params, jv *out, const jv *args,
                      size_t n, const char **kw_names, const jv *kw_vals, size_t n_kw)
{
    size_t m = n;
    for (size_t i = 0; i < n; i++)
        out[i] = args[i];
    for (size_t k = 0; k < n_kw; k++) {
        size_t p = 0;
        while (params[p] && strcmp(params[p], kw_names[k]) != 0)
            p++;
        if (!params[p])
            jx_fail(c, line, "%s() got an unexpected keyword argument '%s'", method, kw_names[k]);
        while (m <= p)
            out[m++] = jv_none();
        out[p] = kw_vals[k];
    }
    return m;
}

static jv str_method(jctx *c, int line, const jstr *s, const char *name, const jv *args0, size_t n0,
                     const char **kw_names, const jv *kw_vals, size_t n_kw, bool *found)
{
    static const char *const p_split[] = {"sep", "maxsplit", NULL}, *const p_strip[] = {"chars", NULL},
                             *const p_replace[] = {"old", "new", "count", NULL}, *const p_none[] = {NULL},
                             *const p_lines[] = {"keepends", NULL};
    const char *const *params = !strcmp(name, "split") || !strcmp(name, "rsplit") ? p_split
                                : !strcmp(name, "replace")                         ? p_replace
                                : !strcmp(name, "splitlines")                      ? p_lines
                                : strstr(name, "strip")                            ? p_strip
                                                                                   : p_none;
    jv args[4];
    if (n0 > 3)
        jx_fail(c, line, "%s() takes at most 3 arguments", name);
    const size_t n = fold_kw(c, line, name, params, args, args0, n0, kw_names, kw_vals, n_kw);
    *found = true;
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        const bool suffix = name[0] == 'e';
        if (n < 1)
            jx_fail(c, line, "%s() takes a prefix", name);
        if (args[0].t == JV_LIST) {
            for (size_t i = 0; i < args[0].u.l->n; i++)
                if (prefix_match(s, args[0].u.l->v[i], suffix))
                    return jv_bool(true);
            return jv_bool(false);
        }
        str_arg(c, line, name, args, n, 0, false);
        return jv_bool(prefix_match(s, args[0], suffix));
    }
    if (!strcmp(name, "split") || !strcmp(name, "rsplit"))
        return split(c, line, s, str_arg(c, line, name, args, n, 0, true), int_arg(c, line, name, args, n, 1, -1),
                     name[0] == 'r');
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip"))
        return jv_of_str(jx_str_strip(c, s, str_arg(c, line, name, args, n, 0, true), name[0] != 'r', name[0] != 'l'));
    if (!strcmp(name, "lower") || !strcmp(name, "casefold"))
        return jv_of_str(jx_str_case(c, s, 'l'));
    if (!strcmp(name, "upper"))
        return jv_of_str(jx_str_case(c, s, 'u'));
    if (!strcmp(name, "title"))
        return jv_of_str(jx_str_case(c, s, 't'));
    if (!strcmp(name, "capitalize"))
        return jv_of_str(jx_str_case(c, s, 'c'));
    if (!strcmp(name, "replace")) {
        const jstr *old = str_arg(c, line, name, args, n, 0, false), *nw = str_arg(c, line, name, args, n, 1, false);
        if (!old || !nw)
            jx_fail(c, line, "replace() takes the old and the new text");
        return jv_of_str(jx_str_replace(c, s, old, nw, n > 2 && args[2].t != JV_NONE ? int_arg(c, line, name, args, n, 2, -1) : -1));
    }
    if (!strcmp(name, "find") || !strcmp(name, "rfind") || !strcmp(name, "index") || !strcmp(name, "rindex") ||
        !strcmp(name, "count")) {
        const jstr *sub = str_arg(c, line, name, args, n, 0, false);
        if (!sub)
            jx_fail(c, line, "%s() takes a string", name);
        if (!strcmp(name, "count")) {
            if (!sub->len)
                return jv_int((int64_t)jx_utf8_count(s) + 1);
            int64_t k = 0;
            for (const char *p = s->s; (p = find_bytes(p, s->len - (size_t)(p - s->s), sub->s, sub->len)); p += sub->len)
                k++;
            return jv_int(k);
        }
        const char *at = NULL;
        if (name[0] == 'r') {
            for (size_t i = s->len + 1; i-- > 0 && !at;)
                if (i + sub->len <= s->len && memcmp(s->s + i, sub->s, sub->len) == 0)
                    at = s->s + i;
        } else {
            at = find_bytes(s->s, s->len, sub->s, sub->len);
        }
        if (!at && strstr(name, "index"))
            jx_fail(c, line, "%s(): substring not found", name);
        if (!at)
            return jv_int(-1);
        int64_t cps = 0;
        for (const char *p = s->s; p < at; p++)
            cps += ((unsigned char)*p & 0xc0) != 0x80;
        return jv_int(cps);
    }
    if (!strcmp(name, "join")) {
        if (n < 1 || args[0].t != JV_LIST)
            jx_fail(c, line, "join() takes a list");
        jbuf b = {.c = c};
        for (size_t i = 0; i < args[0].u.l->n; i++) {
            const jv x = args[0].u.l->v[i];
            if (x.t != JV_STR)
                jx_fail(c, line, "join(): item %zu is %s, not a string", i, jx_type_name(x));
            if (i)
                jb_put(&b, s->s, s->len);
            jb_put(&b, x.u.s->s, x.u.s->len);
        }
        return jv_of_str(jb_str(&b));
    }
    if (!strcmp(name, "splitlines"))
        return jx_str_splitlines(c, s, n > 0 && jx_truthy(args[0]));
    if (!strcmp(name, "removeprefix") || !strcmp(name, "removesuffix")) {
        const jstr *a = str_arg(c, line, name, args, n, 0, false);
        if (!a)
            jx_fail(c, line, "%s() takes a string", name);
        const bool suffix = name[6] == 's';
        if (!prefix_match(s, jv_of_str((jstr *)a), suffix))
            return jv_of_str((jstr *)s);
        return str_v(c, s->s + (suffix ? 0 : a->len), s->len - a->len);
    }
    static const struct {
        const char *name;
        char what;
    } is[] = {{"isdigit", 'd'}, {"isdecimal", 'd'}, {"isnumeric", 'd'}, {"isalpha", 'a'},
              {"isalnum", 'n'}, {"isspace", 's'},   {"islower", 'l'},   {"isupper", 'u'}};
    for (size_t i = 0; i < sizeof is / sizeof *is; i++)
        if (!strcmp(name, is[i].name))
            return jv_bool(str_is(s, is[i].what));
    if (!strcmp(name, "format") || !strcmp(name, "format_map"))
        jx_fail(c, line, "str.%s() is not supported in chat templates", name);
    *found = false;
    return jv_undef(NULL);
}

jv jx_call_method(jctx *c, int line, jv obj, const char *name, const jv *args, size_t n, const char **kw_names,
                  const jv *kw_vals, size_t n_kw, bool *found)
{
    *found = false;
    if (obj.t == JV_STR)
        return str_method(c, line, obj.u.s, name, args, n, kw_names, kw_vals, n_kw, found);
    if (obj.t == JV_DICT) {
        const jdict *d = obj.u.d;
        *found = true;
        if (!strcmp(name, "items") || !strcmp(name, "keys") || !strcmp(name, "values")) {
            jlist *l = jx_list_new(c, d->n);
            for (size_t i = 0; i < d->n; i++) {
                if (name[0] == 'i') {
                    jlist *pair = jx_list_new(c, 2);
                    pair->v[0] = d->k[i], pair->v[1] = d->v[i];
                    l->v[i] = jv_of_list(pair, true);
                } else {
                    l->v[i] = name[0] == 'k' ? d->k[i] : d->v[i];
                }
            }
            return jv_of_list(l, false);
        }
        if (!strcmp(name, "get")) {
            if (n < 1)
                jx_fail(c, line, "get() takes a key");
            const jv *v = jx_dict_find(d, args[0]);
            return v ? *v : n > 1 ? args[1] : jv_none();
        }
        static const char *unsafe[] = {"pop", "popitem", "update", "setdefault", "clear"};
        for (size_t i = 0; i < sizeof unsafe / sizeof *unsafe; i++)
            if (!strcmp(name, unsafe[i]))
                jx_fail(c, line, "access to attribute '%s' of 'dict' object is unsafe (chat templates cannot change values)", name);
        *found = false;
    }
    if (obj.t == JV_LIST) {
        const jlist *l = obj.u.l;
        *found = true;
        if (!strcmp(name, "index") || !strcmp(name, "count")) {
            if (n < 1)
                jx_fail(c, line, "%s() takes a value", name);
            int64_t k = 0;
            for (size_t i = 0; i < l->n; i++)
                if (jx_eq(l->v[i], args[0])) {
                    if (name[0] == 'i')
                        return jv_int((int64_t)i);
                    k++;
                }
            if (name[0] == 'i')
                jx_fail(c, line, "index(): the value is not in the list");
            return jv_int(k);
        }
        static const char *unsafe[] = {"append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"};
        for (size_t i = 0; i < sizeof unsafe / sizeof *unsafe; i++)
            if (!strcmp(name, unsafe[i]))
                jx_fail(c, line, "access to attribute '%s' of 'list' object is unsafe (chat templates cannot change values)", name);
        *found = false;
    }
    if (obj.t == JV_LOOP && !strcmp(name, "cycle")) {
        *found = true;
        if (!n)
            jx_fail(c, line, "loop.cycle() takes at least one value");
        return args[obj.u.loop->i % n];
    }
    (void)kw_names, (void)kw_vals, (void)n_kw;
    return jv_undef(NULL);
}
