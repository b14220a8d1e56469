/* Rendering: the syntax tree walked with jinja2's scoping. A for loop's body is a new scope at
 * every iteration (a `set` inside it is gone at the next one: hence namespace()); `if` is no
 * scope; a macro runs in a scope of its own whose parent is the template's top level, as it is
 * when the macro is called. Names not found anywhere are undefined: they print as nothing and are
 * false, and fail only when used as a value (arithmetic, attributes, calls). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/text/jinja_impl.h"

#define MAX_MACRO_DEPTH 64

enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE };

void jx_fail(jctx *c, int line, const char *fmt, ...)
{
    char msg[BASE_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        base_errf(c->err, "line %d: %s", line, msg);
    else
        base_errf(c->err, "%s", msg);
    longjmp(c->fail, 1);
}

void *jx_alloc(jctx *c, size_t n)
{
    void *p = jarena_alloc(&c->arena, n);
    if (!p)
        jx_fail(c, 0, "rendering the template needs more than %zu MiB", c->lim->max_memory >> 20);
    return p;
}

static void step(jctx *c, int line)
{
    if (++c->steps > c->lim->max_steps)
        jx_fail(c, line, "rendering the template takes more than %llu steps", (unsigned long long)c->lim->max_steps);
}

/* An undefined value whose use fails with msg (formatted into the arena). */
static jv undef(jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static jv undef(jctx *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return jv_undef(jx_str_new(c, msg, strlen(msg))->s);
}

_Noreturn static void fail_undef(jctx *c, int line, jv u)
{
    jx_fail(c, line, "%s", u.u.undef_name ? u.u.undef_name : "a value is undefined");
}

/* ---- output ---- */

static void out_put(jctx *c, int line, const char *s, size_t n)
{
    if (c->out_len + n > c->lim->max_output)
        jx_fail(c, line, "the rendered text is over %zu bytes", c->lim->max_output);
    if (c->out_len + n + 1 > c->out_cap) {
        size_t cap = c->out_cap ? 2 * c->out_cap : 4096;
        while (cap < c->out_len + n + 1)
            cap *= 2;
        char *o = realloc(c->out, cap);
        if (!o)
            jx_fail(c, line, "out of memory");
        c->out = o, c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
    c->out[c->out_len] = '\0';
}

/* ---- scopes ---- */

static jframe *frame_new(jctx *c, jframe *parent)
{
    jframe *f = jx_alloc(c, sizeof *f);
    memset(f, 0, sizeof *f);
    f->parent = parent;
    return f;
}

static void frame_set(jctx *c, jframe *f, const char *name, jv v)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->names[i], name) == 0) {
            f->vals[i] = v;
            return;
        }
    if (f->n == f->cap) {
        const size_t cap = f->cap ? 2 * f->cap : 8;
        const char **names = jx_alloc(c, cap * sizeof *names);
        jv *vals = jx_alloc(c, cap * sizeof *vals);
        if (f->n) {
            memcpy(names, f->names, f->n * sizeof *names);
            memcpy(vals, f->vals, f->n * sizeof *vals);
        }
        f->names = names, f->vals = vals, f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n++] = v;
}

static jv lookup(jctx *c, jframe *f, const char *name)
{
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (strcmp(f->names[i], name) == 0)
                return f->vals[i];
    const jv g = jx_global(name);
    if (g.t != JV_UNDEF)
        return g;
    return undef(c, "'%s' is undefined", name);
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
        return i > 0 ? l->items->v[i - 1] : undef(c, "there is no previous item");
    if (!strcmp(name, "nextitem"))
        return i + 1 < n ? l->items->v[i + 1] : undef(c, "there is no next item");
    return undef(c, "'LoopContext' has no attribute '%s'", name);
}

jv jx_getattr(jctx *c, int line, jv obj, const char *name)
{
    switch (obj.t) {
    case JV_UNDEF: fail_undef(c, line, obj);
    case JV_DICT:
    case JV_NS: {
        const jv *v = jx_dict_get(obj.u.d, name, strlen(name));
        return v ? *v : undef(c, "'%s object' has no attribute '%s'", obj.t == JV_NS ? "Namespace" : "dict", name);
    }
    case JV_LOOP: return loop_attr(c, obj.u.loop, name);
    default: return undef(c, "'%s object' has no attribute '%s'", jx_type_name(obj), name);
    }
}

static jv getitem(jctx *c, int line, jv obj, jv key)
{
    if (obj.t == JV_UNDEF)
        fail_undef(c, line, obj);
    if (obj.t == JV_DICT || obj.t == JV_NS) {
        const jv *v = jx_dict_find(obj.u.d, key);
        if (v)
            return *v;
        if (key.t == JV_STR)
            return undef(c, "'dict object' has no attribute '%s'", key.u.s->s);
        return undef(c, "'dict object' has no such key");
    }
    if (key.t == JV_STR)
        return jx_getattr(c, line, obj, key.u.s->s);
    if ((obj.t == JV_LIST || obj.t == JV_STR) && (key.t == JV_INT || key.t == JV_BOOL)) {
        const size_t n = obj.t == JV_LIST ? obj.u.l->n : jx_utf8_count(obj.u.s);
        int64_t i = key.t == JV_INT ? key.u.i : key.u.b;
        if (i < 0)
            i += (int64_t)n;
        if (i < 0 || (size_t)i >= n)
            return undef(c, "'%s object' has no element %lld", jx_type_name(obj), (long long)(key.t == JV_INT ? key.u.i : 0));
        if (obj.t == JV_LIST)
            return obj.u.l->v[i];
        const size_t a = jx_utf8_offset(obj.u.s, (size_t)i), b = jx_utf8_offset(obj.u.s, (size_t)i + 1);
        return jv_of_str(jx_str_new(c, obj.u.s->s + a, b - a));
    }
    return undef(c, "'%s object' has no such item", jx_type_name(obj));
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
static jv slice(jctx *c, int line, jv obj, jv start, jv stop, jv stepv)
{
    if (obj.t == JV_UNDEF)
        fail_undef(c, line, obj);
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

static jv arith(jctx *c, int line, int op, jv a, jv b)
{
    if (op == '~') {
        return jv_of_str(jx_str_cat(c, jx_to_str(c, a), jx_to_str(c, b)));
    }
    if (a.t == JV_UNDEF)
        fail_undef(c, line, a);
    if (b.t == JV_UNDEF)
        fail_undef(c, line, b);
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

static bool contains(jctx *c, int line, jv item, jv seq)
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
    case JV_UNDEF: fail_undef(c, line, seq);
    default: jx_fail(c, line, "argument of type '%s' is not iterable", jx_type_name(seq));
    }
}

/* ---- expressions ---- */

static jv eval(jctx *c, const jnode *n, jframe *f);

static void eval_args(jctx *c, const jnode *n, jframe *f, jv **args, jv **kw)
{
    *args = n->n_kids ? jx_alloc(c, n->n_kids * sizeof **args) : NULL;
    *kw = n->n_kw ? jx_alloc(c, n->n_kw * sizeof **kw) : NULL;
    for (size_t i = 0; i < n->n_kids; i++)
        (*args)[i] = eval(c, n->kids[i], f);
    for (size_t i = 0; i < n->n_kw; i++)
        (*kw)[i] = eval(c, n->kw_vals[i], f);
}

static jv call(jctx *c, const jnode *n, jframe *f)
{
    jv *args, *kw;
    if (n->a->kind == JN_GETATTR) { /* obj.method(...) */
        const jv obj = eval(c, n->a->a, f);
        if (obj.t == JV_UNDEF)
            fail_undef(c, n->line, obj);
        eval_args(c, n, f, &args, &kw);
        bool found = false;
        const jv r = jx_call_method(c, n->line, obj, n->a->name, args, n->n_kids, n->kw_names, kw, n->n_kw, &found);
        if (found)
            return r;
        const jv callee = jx_getattr(c, n->line, obj, n->a->name);
        if (callee.t == JV_MACRO)
            return jx_call_macro(c, n->line, callee.u.macro, args, n->n_kids, n->kw_names, kw, n->n_kw);
        if (callee.t == JV_UNDEF)
            jx_fail(c, n->line, "'%s object' has no attribute '%s'", jx_type_name(obj), n->a->name);
        jx_fail(c, n->line, "'%s' object is not callable", jx_type_name(callee));
    }
    const jv callee = eval(c, n->a, f);
    eval_args(c, n, f, &args, &kw);
    if (callee.t == JV_MACRO)
        return jx_call_macro(c, n->line, callee.u.macro, args, n->n_kids, n->kw_names, kw, n->n_kw);
    if (callee.t == JV_FUNC)
        return jx_call_func(c, n->line, callee.u.fn, args, n->n_kids, n->kw_names, kw, n->n_kw);
    if (callee.t == JV_UNDEF)
        fail_undef(c, n->line, callee);
    jx_fail(c, n->line, "'%s' object is not callable", jx_type_name(callee));
}

static bool compare_op(jctx *c, int line, int op, jv a, jv b)
{
    switch (op) {
    case JOP_EQ: return jx_eq(a, b);
    case JOP_NE: return !jx_eq(a, b);
    case JOP_IN: return contains(c, line, a, b);
    case JOP_NOTIN: return !contains(c, line, a, b);
    default: break;
    }
    if (a.t == JV_UNDEF)
        fail_undef(c, line, a);
    if (b.t == JV_UNDEF)
        fail_undef(c, line, b);
    const int r = jx_cmp(c, line, a, b);
    return op == '<' ? r < 0 : op == '>' ? r > 0 : op == JOP_LE ? r <= 0 : r >= 0;
}

static jv eval(jctx *c, const jnode *n, jframe *f)
{
    step(c, n->line);
    switch (n->kind) {
    case JN_CONST: return n->val;
    case JN_NAME: return lookup(c, f, n->name);
    case JN_LIST:
    case JN_TUPLE: {
        jlist *l = jx_list_new(c, n->n_kids);
        for (size_t i = 0; i < n->n_kids; i++)
            l->v[i] = eval(c, n->kids[i], f);
        return jv_of_list(l, n->kind == JN_TUPLE);
    }
    case JN_DICT: {
        jdict *d = jx_dict_new(c, n->n_kids / 2);
        for (size_t i = 0; i + 1 < n->n_kids; i += 2) {
            const jv k = eval(c, n->kids[i], f);
            if (k.t == JV_LIST || k.t == JV_DICT || k.t == JV_UNDEF)
                jx_fail(c, n->line, "unhashable type: '%s'", jx_type_name(k));
            jx_dict_set(c, d, k, eval(c, n->kids[i + 1], f));
        }
        return jv_of_dict(d);
    }
    case JN_GETATTR: return jx_getattr(c, n->line, eval(c, n->a, f), n->name);
    case JN_GETITEM: {
        const jv obj = eval(c, n->a, f);
        return getitem(c, n->line, obj, eval(c, n->b, f));
    }
    case JN_SLICE: {
        const jv obj = eval(c, n->a, f);
        const jv a = n->b ? eval(c, n->b, f) : jv_none(), b = n->c ? eval(c, n->c, f) : jv_none();
        return slice(c, n->line, obj, a, b, n->d ? eval(c, n->d, f) : jv_none());
    }
    case JN_CALL: return call(c, n, f);
    case JN_FILTER: {
        const jv in = eval(c, n->a, f);
        jv *args, *kw;
        eval_args(c, n, f, &args, &kw);
        return jx_filter(c, n->line, n->filter_id, in, args, n->n_kids, n->kw_names, kw, n->n_kw);
    }
    case JN_TEST: {
        const jv in = eval(c, n->a, f);
        jv *args, *kw;
        eval_args(c, n, f, &args, &kw);
        return jv_bool(jx_test(c, n->line, n->test_id, in, args, n->n_kids));
    }
    case JN_NOT: return jv_bool(!jx_truthy(eval(c, n->a, f)));
    case JN_NEG:
    case JN_POS: {
        const jv v = eval(c, n->a, f);
        if (v.t == JV_UNDEF)
            fail_undef(c, n->line, v);
        if (!jx_is_number(v))
            jx_fail(c, n->line, "bad operand type for unary %c: '%s'", n->kind == JN_NEG ? '-' : '+', jx_type_name(v));
        if (n->kind == JN_POS)
            return v.t == JV_BOOL ? jv_int(v.u.b) : v;
        if (v.t == JV_FLOAT)
            return jv_float(-v.u.f);
        return checked_int(c, n->line, -(__int128)int_of(v));
    }
    case JN_AND: {
        const jv a = eval(c, n->a, f);
        return jx_truthy(a) ? eval(c, n->b, f) : a;
    }
    case JN_OR: {
        const jv a = eval(c, n->a, f);
        return jx_truthy(a) ? a : eval(c, n->b, f);
    }
    case JN_BINOP: {
        const jv a = eval(c, n->a, f);
        return arith(c, n->line, n->op, a, eval(c, n->b, f));
    }
    case JN_COMPARE: {
        jv a = eval(c, n->a, f);
        for (size_t i = 0; i < n->n_kids; i++) {
            const jv b = eval(c, n->kids[i], f);
            if (!compare_op(c, n->line, n->ops[i], a, b))
                return jv_bool(false);
            a = b;
        }
        return jv_bool(true);
    }
    case JN_COND:
        if (jx_truthy(eval(c, n->a, f)))
            return eval(c, n->b, f);
        return n->c ? eval(c, n->c, f) : undef(c, "the conditional expression has no else branch");
    default: jx_fail(c, n->line, "not an expression");
    }
}

/* ---- statements ---- */

static int exec_body(jctx *c, jnode *const *kids, size_t n, jframe *f);

static void assign(jctx *c, int line, const jnode *target, jv v, jframe *f)
{
    if (target->kind == JN_NAME) {
        frame_set(c, f, target->name, v);
    } else if (target->kind == JN_NSREF) {
        const jv ns = lookup(c, f, target->name);
        if (ns.t != JV_NS)
            jx_fail(c, line, "cannot assign attribute on non-namespace object '%s'", target->name);
        jx_dict_set(c, ns.u.d, jv_of_str(jx_str_new(c, target->name2, strlen(target->name2))), v);
    } else { /* a tuple */
        if (v.t == JV_DICT) { /* unpacking a dict takes its keys, as Python does */
            jlist *l = jx_list_new(c, v.u.d->n);
            for (size_t i = 0; i < l->n; i++)
                l->v[i] = v.u.d->k[i];
            v = jv_of_list(l, true);
        }
        if (v.t != JV_LIST)
            jx_fail(c, line, "cannot unpack a non-iterable %s object", jx_type_name(v));
        if (v.u.l->n != target->n_kids)
            jx_fail(c, line, "%s values to unpack (expected %zu, got %zu)",
                    v.u.l->n > target->n_kids ? "too many" : "not enough", target->n_kids, v.u.l->n);
        for (size_t i = 0; i < target->n_kids; i++)
            assign(c, line, target->kids[i], v.u.l->v[i], f);
    }
}

/* What a for loop walks: a list's items, a dict's keys, a string's characters. */
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

static void exec_for(jctx *c, const jnode *n, jframe *f)
{
    const jlist *all = jx_iter(c, n->line, eval(c, n->b, f));
    const jlist *items = all;
    if (n->c) { /* the `if` filter comes first: loop.length and loop.index count what passes */
        jlist *kept = jx_list_new(c, all->n);
        kept->n = 0;
        jframe *g = frame_new(c, f);
        for (size_t i = 0; i < all->n; i++) {
            g->n = 0;
            assign(c, n->line, n->a, all->v[i], g);
            if (jx_truthy(eval(c, n->c, g)))
                kept->v[kept->n++] = all->v[i];
        }
        items = kept;
    }
    jloop *loop = jx_alloc(c, sizeof *loop);
    loop->items = items;
    /* one scope, emptied at each iteration (nothing keeps a pointer to a scope past its use) */
    jframe *g = frame_new(c, f);
    for (size_t i = 0; i < items->n; i++) {
        step(c, n->line); /* an empty body still costs its iterations */
        loop->i = i;
        g->n = 0;
        frame_set(c, g, "loop", (jv){.t = JV_LOOP, .u.loop = loop});
        assign(c, n->line, n->a, items->v[i], g);
        if (exec_body(c, n->kids, n->n_kids, g) == FLOW_BREAK)
            break;
    }
    if (!items->n)
        exec_body(c, n->else_kids, n->n_else, frame_new(c, f));
}

/* Runs a body, returning what it printed (taken back off the output). */
static jstr *capture(jctx *c, jnode *const *kids, size_t n, jframe *f)
{
    const size_t mark = c->out_len;
    exec_body(c, kids, n, f);
    jstr *s = jx_str_new(c, c->out ? c->out + mark : "", c->out_len - mark);
    c->out_len = mark;
    return s;
}

static jv apply_filter(jctx *c, const jnode *flt, jv in, jframe *f)
{
    /* a chain a|b|c: the innermost (first) filter has a NULL input */
    if (flt->a)
        in = apply_filter(c, flt->a, in, f);
    jv *args, *kw;
    eval_args(c, flt, f, &args, &kw);
    return jx_filter(c, flt->line, flt->filter_id, in, args, flt->n_kids, flt->kw_names, kw, flt->n_kw);
}

static int exec(jctx *c, const jnode *n, jframe *f)
{
    step(c, n->line);
    switch (n->kind) {
    case JN_TEXT: out_put(c, n->line, n->name, n->name_len); return FLOW_NEXT;
    case JN_OUTPUT: {
        const jstr *s = jx_to_str(c, eval(c, n->a, f));
        out_put(c, n->line, s->s, s->len);
        return FLOW_NEXT;
    }
    case JN_IF:
        if (jx_truthy(eval(c, n->a, f)))
            return exec_body(c, n->kids, n->n_kids, f);
        return exec_body(c, n->else_kids, n->n_else, f);
    case JN_FOR: exec_for(c, n, f); return FLOW_NEXT;
    case JN_SET: assign(c, n->line, n->a, eval(c, n->b, f), f); return FLOW_NEXT;
    case JN_SET_BLOCK: {
        jv v = jv_of_str(capture(c, n->kids, n->n_kids, f));
        if (n->c)
            v = apply_filter(c, n->c, v, f);
        assign(c, n->line, n->a, v, f);
        return FLOW_NEXT;
    }
    case JN_MACRO: frame_set(c, f, n->name, (jv){.t = JV_MACRO, .u.macro = n}); return FLOW_NEXT;
    case JN_WITH: {
        jframe *g = frame_new(c, f);
        for (size_t i = 0; i < n->n_kw; i++)
            frame_set(c, g, n->kw_names[i], eval(c, n->kw_vals[i], f));
        return exec_body(c, n->kids, n->n_kids, g);
    }
    case JN_FILTER_BLOCK: {
        const jstr *s = jx_to_str(c, apply_filter(c, n->c, jv_of_str(capture(c, n->kids, n->n_kids, f)), f));
        out_put(c, n->line, s->s, s->len);
        return FLOW_NEXT;
    }
    case JN_BODY: return exec_body(c, n->kids, n->n_kids, f);
    case JN_BREAK: return FLOW_BREAK;
    case JN_CONTINUE: return FLOW_CONTINUE;
    default: jx_fail(c, n->line, "not a statement");
    }
}

static int exec_body(jctx *c, jnode *const *kids, size_t n, jframe *f)
{
    for (size_t i = 0; i < n; i++) {
        const int flow = exec(c, kids[i], f);
        if (flow != FLOW_NEXT)
            return flow;
    }
    return FLOW_NEXT;
}

jv jx_call_macro(jctx *c, int line, const jnode *m, const jv *args, size_t n_args, const char **kw_names,
                 const jv *kw_vals, size_t n_kw)
{
    if (c->depth >= MAX_MACRO_DEPTH)
        jx_fail(c, line, "macro calls nested more than %d deep", MAX_MACRO_DEPTH);
    jframe *g = frame_new(c, c->root);
    jlist *extra = jx_list_new(c, n_args > m->n_kw ? n_args - m->n_kw : 0);
    jdict *kwargs = jx_dict_new(c, 0);
    for (size_t i = 0; i < n_args; i++) {
        if (i < m->n_kw)
            frame_set(c, g, m->kw_names[i], args[i]);
        else
            extra->v[i - m->n_kw] = args[i];
    }
    for (size_t k = 0; k < n_kw; k++) {
        size_t i = 0;
        while (i < m->n_kw && strcmp(m->kw_names[i], kw_names[k]) != 0)
            i++;
        if (i == m->n_kw)
            jx_dict_set(c, kwargs, jv_of_str(jx_str_new(c, kw_names[k], strlen(kw_names[k]))), kw_vals[k]);
        else if (i < n_args)
            jx_fail(c, line, "macro '%s' got multiple values for argument '%s'", m->name, kw_names[k]);
        else
            frame_set(c, g, m->kw_names[i], kw_vals[k]);
    }
    for (size_t i = n_args; i < m->n_kw; i++) { /* the rest: given by keyword, a default, or undefined */
        bool given = false;
        for (size_t k = 0; k < n_kw && !given; k++)
            given = strcmp(m->kw_names[i], kw_names[k]) == 0;
        if (!given)
            frame_set(c, g, m->kw_names[i],
                      m->kw_vals[i] ? eval(c, m->kw_vals[i], g) : undef(c, "parameter '%s' was not provided", m->kw_names[i]));
    }
    frame_set(c, g, "varargs", jv_of_list(extra, true));
    frame_set(c, g, "kwargs", jv_of_dict(kwargs));
    c->depth++;
    jstr *s = capture(c, m->kids, m->n_kids, g);
    c->depth--;
    return jv_of_str(s);
}

/* The rendering itself: 0, or -1 when an error unwound to here (c->err filled). */
static int run(jctx *c, const jinja_template *t)
{
    if (setjmp(c->fail))
        return -1;
    c->globals = frame_new(c, NULL);
    if (c->vars && !cJSON_IsObject(c->vars))
        jx_fail(c, 0, "the template's variables must be a JSON object");
    for (const cJSON *v = c->vars ? c->vars->child : NULL; v; v = v->next)
        frame_set(c, c->globals, jx_str_new(c, v->string, strlen(v->string))->s, jx_from_json(c, v));
    c->root = frame_new(c, c->globals);
    out_put(c, 0, "", 0);
    exec_body(c, t->root->kids, t->root->n_kids, c->root);
    return 0;
}

char *jinja_render(const jinja_template *t, const cJSON *vars, const jinja_limits *limits, size_t *len, base_err *err)
{
    static const jinja_limits dflt = JINJA_LIMITS_DEFAULT;
    jctx *c = calloc(1, sizeof *c);
    if (!c) {
        base_errf(err, "out of memory");
        return NULL;
    }
    c->lim = limits ? limits : &dflt;
    c->arena.limit = c->lim->max_memory;
    c->err = err;
    c->vars = vars;
    if (run(c, t) != 0) {
        free(c->out);
        jarena_free(&c->arena);
        free(c);
        return NULL;
    }
    char *out = c->out;
    if (len)
        *len = c->out_len;
    jarena_free(&c->arena);
    free(c);
    return out;
}
