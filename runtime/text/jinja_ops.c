/* What expressions do to values: attribute and item access, slices, Python's arithmetic and
 * comparisons, `in`, and what iterating a value walks. Undefined values fail here, when used,
 * with the message they were made with. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "runtime/text/jinja_impl.h"

jv jx_undef(jctx *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return jv_undef(jx_str_new(c, msg, strlen(msg))->s);
}

void jx_fail_undef(jctx *c, int line, jv u)
{
    jx_fail(c, line, "%s", u.u.undef_name ? u.u.undef_name : "a value is undefined");
}

/* ---- access ---- */

static jv loop_attr(jctx *c, const jloop *l, const char *name)
{
    const size_t n = l->items->n, i = l->i;
    if (!strcmp(name, "index"))
        return jv_int((int64_t)i + 1);
    if (!strcmp(name, "index0"))
        return jv_int((int64_t)i);
    if (!strcmp(name, "revindex"))
        return jv_int((int64_t)(n - i));
    if (!strcmp(name, "revindex0"))
        return jv_int((int64_t)(n - i - 1));
    if (!strcmp(name, "first"))
        return jv_bool(i == 0);
    if (!strcmp(name, "last"))
        return jv_bool(i + 1 == n);
    if (!strcmp(name, "length"))
        return jv_int((int64_t)n);
    if (!strcmp(name, "depth"))
        return jv_int(1);
    if (!strcmp(name, "depth0"))
        return jv_int(0);
    if (!strcmp(name, "previtem"))
        return i > 0 ? l->items->v[i - 1] : jx_undef(c, "there is no previous item");
    if (!strcmp(name, "nextitem"))
        return i + 1 < n ? l->items->v[i + 1] : jx_undef(c, "there is no next item");
    return jx_undef(c, "'LoopContext' has no attribute '%s'", name);
}

jv jx_getattr(jctx *c, int line, jv obj, const char *name)
{
    switch (obj.t) {
    case JV_UNDEF: jx_fail_undef(c, line, obj);
    case JV_DICT:
    case JV_NS: {
        const jv *v = jx_dict_get(obj.u.d, name, strlen(name));
        return v ? *v : jx_undef(c, "'%s object' has no attribute '%s'", obj.t == JV_NS ? "Namespace" : "dict", name);
    }
    case JV_LOOP: return loop_attr(c, obj.u.loop, name);
    default: return jx_undef(c, "'%s object' has no attribute '%s'", jx_type_name(obj), name);
    }
}

jv jx_getitem(jctx *c, int line, jv obj, jv key)
{
    if (obj.t == JV_UNDEF)
        jx_fail_undef(c, line, obj);
    if (obj.t == JV_DICT || obj.t == JV_NS) {
        const jv *v = jx_dict_find(obj.u.d, key);
        if (v)
            return *v;
        if (key.t == JV_STR)
            return jx_undef(c, "'dict object' has no attribute '%s'", key.u.s->s);
        return jx_undef(c, "'dict object' has no such key");
    }
    if (key.t == JV_STR)
        return jx_getattr(c, line, obj, key.u.s->s);
    if ((obj.t == JV_LIST || obj.t == JV_STR) && (key.t == JV_INT || key.t == JV_BOOL)) {
        const size_t n = obj.t == JV_LIST ? obj.u.l->n : jx_utf8_count(obj.u.s);
        int64_t i = key.t == JV_INT ? key.u.i : key.u.b;
        if (i < 0)
            i += (int64_t)n;
        if (i < 0 || (size_t)i >= n)
            return jx_undef(c, "'%s object' has no element %lld", jx_type_name(obj), (long long)(key.t == JV_INT ? key.u.i : 0));
        if (obj.t == JV_LIST)
            return obj.u.l->v[i];
        const size_t a = jx_utf8_offset(obj.u.s, (size_t)i), b = jx_utf8_offset(obj.u.s, (size_t)i + 1);
        return jv_of_str(jx_str_new(c, obj.u.s->s + a, b - a));
    }
    return jx_undef(c, "'%s object' has no such item", jx_type_name(obj));
}

static int64_t slice_bound(jctx *c, int line, jv v, int64_t dflt)
{
    if (v.t == JV_NONE || v.t == JV_UNDEF)
        return dflt;
    if (v.t != JV_INT && v.t != JV_BOOL)
        jx_fail(c, line, "slice indices must be integers or None");
    return v.t == JV_INT ? v.u.i : v.u.b;
}

/* obj[start:stop:step] with Python's rules (strings by code point) */
jv jx_slice(jctx *c, int line, jv obj, jv start, jv stop, jv stepv)
{
    if (obj.t == JV_UNDEF)
        jx_fail_undef(c, line, obj);
    if (obj.t != JV_LIST && obj.t != JV_STR)
        jx_fail(c, line, "'%s' object is not subscriptable with a slice", jx_type_name(obj));
    const int64_t n = (int64_t)(obj.t == JV_LIST ? obj.u.l->n : jx_utf8_count(obj.u.s));
    const int64_t st = slice_bound(c, line, stepv, 1);
    if (st == 0)
        jx_fail(c, line, "slice step cannot be zero");
    int64_t a = slice_bound(c, line, start, st > 0 ? 0 : n - 1), b = slice_bound(c, line, stop, st > 0 ? n : -n - 1);
    if (a < 0)
        a += n;
    if (b < 0)
        b += n;
    if (st > 0) {
        a = a < 0 ? 0 : a > n ? n : a;
        b = b < 0 ? 0 : b > n ? n : b;
    } else {
        a = a < -1 ? -1 : a > n - 1 ? n - 1 : a;
        b = b < -1 ? -1 : b > n - 1 ? n - 1 : b;
    }
    size_t count = 0;
    for (int64_t i = a; st > 0 ? i < b : i > b; i += st)
        count++;
    if (obj.t == JV_LIST) {
        jlist *l = jx_list_new(c, count);
        size_t k = 0;
        for (int64_t i = a; st > 0 ? i < b : i > b; i += st)
            l->v[k++] = obj.u.l->v[i];
        return jv_of_list(l, obj.flags & JV_TUPLE);
    }
    /* code point offsets once, then the pieces */
    size_t *off = jx_alloc(c, ((size_t)n + 1) * sizeof *off);
    size_t k = 0;
    for (size_t i = 0; i < obj.u.s->len; i++)
        if (((unsigned char)obj.u.s->s[i] & 0xc0) != 0x80)
            off[k++] = i;
    off[k] = obj.u.s->len;
    jbuf buf = {.c = c};
    for (int64_t i = a; st > 0 ? i < b : i > b; i += st)
        jb_put(&buf, obj.u.s->s + off[i], off[i + 1] - off[i]);
    return jv_of_str(jb_str(&buf));
}

/* ---- operators ---- */

static bool is_int(jv v)
{
    return v.t == JV_INT || v.t == JV_BOOL;
}

static int64_t int_of(jv v)
{
    return v.t == JV_INT ? v.u.i : v.u.b;
}

static jv checked_int(jctx *c, int line, __int128 r)
{
    if (r > INT64_MAX || r < INT64_MIN)
        jx_fail(c, line, "an integer result is too large");
    return jv_int((int64_t)r);
}

static jv repeat(jctx *c, int line, jv seq, int64_t times)
{
    if (times < 0)
        times = 0;
    if (seq.t == JV_STR) {
        if (seq.u.s->len && (uint64_t)times > c->lim->max_output / seq.u.s->len)
            jx_fail(c, line, "a repeated string is over %zu bytes", c->lim->max_output);
        jbuf b = {.c = c};
        for (int64_t i = 0; i < times; i++)
            jb_put(&b, seq.u.s->s, seq.u.s->len);
        return jv_of_str(jb_str(&b));
    }
    if (seq.u.l->n && (uint64_t)times > c->lim->max_memory / 16 / seq.u.l->n)
        jx_fail(c, line, "a repeated list is too long");
    jlist *l = jx_list_new(c, seq.u.l->n * (size_t)times);
    for (size_t i = 0; i < l->n; i++)
        l->v[i] = seq.u.l->v[i % seq.u.l->n];
    return jv_of_list(l, seq.flags & JV_TUPLE);
}

static double fmod_py(double x, double y)
{
    return x - y * floor(x / y);
}

jv jx_arith(jctx *c, int line, int op, jv a, jv b)
{
    if (op == '~') {
        return jv_of_str(jx_str_cat(c, jx_to_str(c, a), jx_to_str(c, b)));
    }
    if (a.t == JV_UNDEF)
        jx_fail_undef(c, line, a);
    if (b.t == JV_UNDEF)
        jx_fail_undef(c, line, b);
    const bool nums = jx_is_number(a) && jx_is_number(b), ints = is_int(a) && is_int(b);
    switch (op) {
    case '+':
        if (ints)
            return checked_int(c, line, (__int128)int_of(a) + int_of(b));
        if (nums)
            return jv_float(jx_num(a) + jx_num(b));
        if (a.t == JV_STR && b.t == JV_STR)
            return jv_of_str(jx_str_cat(c, a.u.s, b.u.s));
        if (a.t == JV_LIST && b.t == JV_LIST && (a.flags & JV_TUPLE) == (b.flags & JV_TUPLE)) {
            jlist *l = jx_list_new(c, a.u.l->n + b.u.l->n);
            if (a.u.l->n)
                memcpy(l->v, a.u.l->v, a.u.l->n * sizeof *l->v);
            if (b.u.l->n)
                memcpy(l->v + a.u.l->n, b.u.l->v, b.u.l->n * sizeof *l->v);
            return jv_of_list(l, a.flags & JV_TUPLE);
        }
        if (a.t == JV_STR)
            jx_fail(c, line, "can only concatenate str (not \"%s\") to str", jx_type_name(b));
        break;
    case '-':
        if (ints)
            return checked_int(c, line, (__int128)int_of(a) - int_of(b));
        if (nums)
            return jv_float(jx_num(a) - jx_num(b));
        break;
    case '*':
        if (ints)
            return checked_int(c, line, (__int128)int_of(a) * int_of(b));
        if (nums)
            return jv_float(jx_num(a) * jx_num(b));
        if ((a.t == JV_STR || a.t == JV_LIST) && is_int(b))
            return repeat(c, line, a, int_of(b));
        if ((b.t == JV_STR || b.t == JV_LIST) && is_int(a))
            return repeat(c, line, b, int_of(a));
        break;
    case '/':
        if (nums) {
            if (jx_num(b) == 0.0)
                jx_fail(c, line, "division by zero");
            return jv_float(jx_num(a) / jx_num(b));
        }
        break;
    case JOP_FLOORDIV:
    case '%':
        if (nums) {
            if (jx_num(b) == 0.0)
                jx_fail(c, line, "%s by zero", op == '%' ? "modulo" : "integer division");
            if (ints) {
                const int64_t x = int_of(a), y = int_of(b);
                if (x == INT64_MIN && y == -1)
                    jx_fail(c, line, "an integer result is too large");
                int64_t q = x / y, r = x % y;
                if (r != 0 && ((r < 0) != (y < 0)))
                    q--, r += y;
                return jv_int(op == '%' ? r : q);
            }
            const double x = jx_num(a), y = jx_num(b);
            return jv_float(op == '%' ? fmod_py(x, y) : floor(x / y));
        }
        if (op == '%' && a.t == JV_STR)
            jx_fail(c, line, "printf-style string formatting ('%%') is not supported");
        break;
    case JOP_POW:
        if (ints && int_of(b) >= 0) {
            __int128 r = 1;
            for (int64_t i = 0, e = int_of(b), x = int_of(a); i < e; i++) {
                r *= x;
                if (r > INT64_MAX || r < INT64_MIN)
                    jx_fail(c, line, "an integer result is too large");
            }
            return jv_int((int64_t)r);
        }
        if (nums)
            return jv_float(pow(jx_num(a), jx_num(b)));
        break;
    default: break;
    }
    const char *sym = op == JOP_FLOORDIV ? "//" : op == JOP_POW ? "**" : op == '+' ? "+" : op == '-' ? "-"
                      : op == '*' ? "*" : op == '/' ? "/" : "%";
    jx_fail(c, line, "unsupported operand types for %s: '%s' and '%s'", sym, jx_type_name(a), jx_type_name(b));
}

bool jx_contains(jctx *c, int line, jv item, jv seq)
{
    switch (seq.t) {
    case JV_STR:
        if (item.t != JV_STR)
            jx_fail(c, line, "'in <string>' requires string as left operand, not %s", jx_type_name(item));
        if (!item.u.s->len)
            return true;
        for (size_t i = 0; i + item.u.s->len <= seq.u.s->len; i++)
            if (memcmp(seq.u.s->s + i, item.u.s->s, item.u.s->len) == 0)
                return true;
        return false;
    case JV_LIST:
        for (size_t i = 0; i < seq.u.l->n; i++)
            if (jx_eq(seq.u.l->v[i], item))
                return true;
        return false;
    case JV_DICT:
    case JV_NS: return jx_dict_find(seq.u.d, item) != NULL;
    case JV_UNDEF: jx_fail_undef(c, line, seq);
    default: jx_fail(c, line, "argument of type '%s' is not iterable", jx_type_name(seq));
    }
}

bool jx_compare(jctx *c, int line, int op, jv a, jv b)
{
    switch (op) {
    case JOP_EQ: return jx_eq(a, b);
    case JOP_NE: return !jx_eq(a, b);
    case JOP_IN: return jx_contains(c, line, a, b);
    case JOP_NOTIN: return !jx_contains(c, line, a, b);
    default: break;
    }
    if (a.t == JV_UNDEF)
        jx_fail_undef(c, line, a);
    if (b.t == JV_UNDEF)
        jx_fail_undef(c, line, b);
    const int r = jx_cmp(c, line, a, b);
    return op == '<' ? r < 0 : op == '>' ? r > 0 : op == JOP_LE ? r <= 0 : r >= 0;
}

jv jx_unary(jctx *c, int line, int op, jv v)
{
    if (v.t == JV_UNDEF)
        jx_fail_undef(c, line, v);
    if (!jx_is_number(v))
        jx_fail(c, line, "bad operand type for unary %c: '%s'", op, jx_type_name(v));
    if (op == '+')
        return v.t == JV_BOOL ? jv_int(v.u.b) : v;
    if (v.t == JV_FLOAT)
        return jv_float(-v.u.f);
    return checked_int(c, line, -(__int128)int_of(v));
}

const jlist *jx_iter(jctx *c, int line, jv v)
{
    switch (v.t) {
    case JV_LIST: return v.u.l;
    case JV_UNDEF: return jx_list_new(c, 0);
    case JV_DICT:
    case JV_NS: {
        jlist *l = jx_list_new(c, v.u.d->n);
        for (size_t i = 0; i < l->n; i++)
            l->v[i] = v.u.d->k[i];
        return l;
    }
    case JV_STR: {
        jlist *l = jx_list_new(c, jx_utf8_count(v.u.s));
        for (size_t i = 0, k = 0; k < l->n; k++) {
            size_t j = i + 1;
            while (j < v.u.s->len && ((unsigned char)v.u.s->s[j] & 0xc0) == 0x80)
                j++;
            l->v[k] = jv_of_str(jx_str_new(c, v.u.s->s + i, j - i));
            i = j;
        }
        return l;
    }
    default: jx_fail(c, line, "'%s' object is not iterable", jx_type_name(v));
    }
}

