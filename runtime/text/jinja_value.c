/* What values are and do, as in Python (jinja2 runs on Python's objects): str() and repr() of
 * each kind (floats as Python's shortest round-trip repr, strings quoted and escaped as repr
 * does), json.dumps as transformers' tojson calls it, ==, ordering, truthiness; plus the arena
 * every value lives in and the conversion of JSON input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "runtime/text/jinja_impl.h"

/* ---- arena ---- */

typedef struct jchunk {
    struct jchunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char mem[];
} jchunk;

void *jarena_alloc(jarena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    jchunk *h = a->head;
    if (!h || h->cap - h->used < n) {
        const size_t cap = n > ((size_t)64 << 10) ? n : (size_t)64 << 10;
        if (a->limit && a->used + cap > a->limit)
            return NULL;
        h = malloc(sizeof *h + cap);
        if (!h)
            return NULL;
        h->next = a->head, h->used = 0, h->cap = cap;
        a->head = h;
        a->used += cap;
    }
    void *p = h->mem + h->used;
    h->used += n;
    return p;
}

void jarena_free(jarena *a)
{
    for (jchunk *h = a->head, *next; h; h = next) {
        next = h->next;
        free(h);
    }
    a->head = NULL, a->used = 0;
}

/* ---- strings, lists, dicts ---- */

jstr *jx_str_new(jctx *c, const char *s, size_t len)
{
    jstr *r = jx_alloc(c, sizeof *r + len + 1);
    r->len = len;
    if (len)
        memcpy(r->s, s, len);
    r->s[len] = '\0';
    return r;
}

jstr *jx_str_cat(jctx *c, const jstr *a, const jstr *b)
{
    jstr *r = jx_alloc(c, sizeof *r + a->len + b->len + 1);
    r->len = a->len + b->len;
    memcpy(r->s, a->s, a->len);
    memcpy(r->s + a->len, b->s, b->len);
    r->s[r->len] = '\0';
    return r;
}

jlist *jx_list_new(jctx *c, size_t n)
{
    jlist *l = jx_alloc(c, sizeof *l);
    l->n = n;
    l->v = n ? jx_alloc(c, n * sizeof *l->v) : NULL;
    for (size_t i = 0; i < n; i++)
        l->v[i] = jv_none();
    return l;
}

jdict *jx_dict_new(jctx *c, size_t cap)
{
    jdict *d = jx_alloc(c, sizeof *d);
    d->n = 0, d->cap = cap;
    d->k = cap ? jx_alloc(c, cap * sizeof *d->k) : NULL;
    d->v = cap ? jx_alloc(c, cap * sizeof *d->v) : NULL;
    return d;
}

jv *jx_dict_find(const jdict *d, jv key)
{
    for (size_t i = 0; i < d->n; i++)
        if (jx_eq(d->k[i], key))
            return &d->v[i];
    return NULL;
}

jv *jx_dict_get(const jdict *d, const char *key, size_t len)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == JV_STR && d->k[i].u.s->len == len && memcmp(d->k[i].u.s->s, key, len) == 0)
            return &d->v[i];
    return NULL;
}

void jx_dict_set(jctx *c, jdict *d, jv key, jv val)
{
    jv *have = jx_dict_find(d, key);
    if (have) {
        *have = val;
        return;
    }
    if (d->n == d->cap) {
        const size_t cap = d->cap ? 2 * d->cap : 4;
        jv *k = jx_alloc(c, cap * sizeof *k), *v = jx_alloc(c, cap * sizeof *v);
        if (d->n) {
            memcpy(k, d->k, d->n * sizeof *k);
            memcpy(v, d->v, d->n * sizeof *v);
        }
        d->k = k, d->v = v, d->cap = cap;
    }
    d->k[d->n] = key, d->v[d->n] = val;
    d->n++;
}

/* ---- buffers ---- */

void jb_put(jbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = jx_alloc(b->c, cap);
        if (b->len)
            memcpy(p, b->p, b->len);
        b->p = p, b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void jb_puts(jbuf *b, const char *s)
{
    jb_put(b, s, strlen(s));
}

void jb_putc(jbuf *b, char ch)
{
    jb_put(b, &ch, 1);
}

jstr *jb_str(jbuf *b)
{
    return jx_str_new(b->c, b->p ? b->p : "", b->len);
}

/* ---- UTF-8 ---- */

size_t jx_utf8_count(const jstr *s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->len; i++)
        k += ((unsigned char)s->s[i] & 0xc0) != 0x80;
    return k;
}

size_t jx_utf8_offset(const jstr *s, size_t k)
{
    size_t i = 0;
    for (; i < s->len; i++)
        if (((unsigned char)s->s[i] & 0xc0) != 0x80 && k-- == 0)
            return i;
    return s->len;
}

/* ---- kinds ---- */

const char *jx_type_name(jv v)
{
    switch (v.t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v.flags & JV_TUPLE ? "tuple" : "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_MACRO: return "Macro";
    case JV_FUNC: return "function";
    case JV_LOOP: return "LoopContext";
    default: return "object";
    }
}

int64_t jx_need_int(jctx *c, int line, const char *what, jv v)
{
    if (v.t != JV_INT && v.t != JV_BOOL)
        jx_fail(c, line, "%s must be an integer, not %s", what, jx_type_name(v));
    return v.t == JV_INT ? v.u.i : v.u.b;
}

bool jx_is_number(jv v)
{
    return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT;
}

double jx_num(jv v)
{
    return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : v.t == JV_BOOL ? (double)v.u.b : 0.0;
}

bool jx_truthy(jv v)
{
    switch (v.t) {
    case JV_UNDEF:
    case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return v.u.s->len > 0;
    case JV_LIST: return v.u.l->n > 0;
    case JV_DICT: return v.u.d->n > 0;
    default: return true;
    }
}

bool jx_eq(jv a, jv b)
{
    if (jx_is_number(a) && jx_is_number(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT)
            return (a.t == JV_INT ? a.u.i : a.u.b) == (b.t == JV_INT ? b.u.i : b.u.b);
        return jx_num(a) == jx_num(b);
    }
    if (a.t != b.t)
        return false;
    switch (a.t) {
    case JV_UNDEF:
    case JV_NONE: return true;
    case JV_STR: return a.u.s->len == b.u.s->len && memcmp(a.u.s->s, b.u.s->s, a.u.s->len) == 0;
    case JV_LIST:
        if ((a.flags & JV_TUPLE) != (b.flags & JV_TUPLE) || a.u.l->n != b.u.l->n)
            return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!jx_eq(a.u.l->v[i], b.u.l->v[i]))
                return false;
        return true;
    case JV_DICT:
        if (a.u.d->n != b.u.d->n)
            return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            const jv *o = jx_dict_find(b.u.d, a.u.d->k[i]);
            if (!o || !jx_eq(a.u.d->v[i], *o))
                return false;
        }
        return true;
    case JV_NS: return a.u.d == b.u.d;
    case JV_MACRO: return a.u.macro == b.u.macro;
    case JV_FUNC: return a.u.fn == b.u.fn;
    case JV_LOOP: return a.u.loop == b.u.loop;
    default: return false;
    }
}

int jx_cmp(jctx *c, int line, jv a, jv b)
{
    if (jx_is_number(a) && jx_is_number(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT) {
            const int64_t x = a.t == JV_INT ? a.u.i : a.u.b, y = b.t == JV_INT ? b.u.i : b.u.b;
            return (x > y) - (x < y);
        }
        const double x = jx_num(a), y = jx_num(b);
        return (x > y) - (x < y);
    }
    if (a.t == JV_STR && b.t == JV_STR) { /* UTF-8 byte order is code point order */
        const size_t n = a.u.s->len < b.u.s->len ? a.u.s->len : b.u.s->len;
        const int r = memcmp(a.u.s->s, b.u.s->s, n);
        if (r)
            return r < 0 ? -1 : 1;
        return (a.u.s->len > b.u.s->len) - (a.u.s->len < b.u.s->len);
    }
    if (a.t == JV_LIST && b.t == JV_LIST && (a.flags & JV_TUPLE) == (b.flags & JV_TUPLE)) {
        for (size_t i = 0; i < a.u.l->n && i < b.u.l->n; i++)
            if (!jx_eq(a.u.l->v[i], b.u.l->v[i]))
                return jx_cmp(c, line, a.u.l->v[i], b.u.l->v[i]);
        return (a.u.l->n > b.u.l->n) - (a.u.l->n < b.u.l->n);
    }
    jx_fail(c, line, "'<' not supported between instances of '%s' and '%s'", jx_type_name(a), jx_type_name(b));
}

/* ---- text of values ---- */

/* Python's repr(float): the shortest digits that read back as x, positional notation for
 * exponents -4 < e < 16, with ".0" on whole numbers. */
static void float_repr(double x, jbuf *b)
{
    if (isnan(x)) {
        jb_puts(b, "nan");
        return;
    }
    if (isinf(x)) {
        jb_puts(b, x < 0 ? "-inf" : "inf");
        return;
    }
    if (x == 0.0) {
        jb_puts(b, signbit(x) ? "-0.0" : "0.0");
        return;
    }
    char buf[48];
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    /* buf: [-]d[.ddd]e(+|-)xx */
    const char *s = buf;
    if (*s == '-') {
        jb_putc(b, '-');
        s++;
    }
    char dig[24];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s != '.')
            dig[nd++] = *s;
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    const int decpt = atoi(s + 1) + 1; /* digits before the point */
    if (decpt > 16 || decpt < -3) {
        jb_putc(b, dig[0]);
        if (nd > 1) {
            jb_putc(b, '.');
            jb_put(b, dig + 1, (size_t)nd - 1);
        }
        snprintf(buf, sizeof buf, "e%c%02d", decpt - 1 < 0 ? '-' : '+', abs(decpt - 1));
        jb_puts(b, buf);
    } else if (decpt <= 0) {
        jb_puts(b, "0.");
        for (int i = 0; i < -decpt; i++)
            jb_putc(b, '0');
        jb_put(b, dig, (size_t)nd);
    } else if (decpt >= nd) {
        jb_put(b, dig, (size_t)nd);
        for (int i = nd; i < decpt; i++)
            jb_putc(b, '0');
        jb_puts(b, ".0");
    } else {
        jb_put(b, dig, (size_t)decpt);
        jb_putc(b, '.');
        jb_put(b, dig + decpt, (size_t)(nd - decpt));
    }
}

/* Python's str.isprintable for one code point */
static bool printable(int32_t cp)
{
    if (cp == ' ')
        return true;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS: return false;
    default: return true;
    }
}

static void str_repr(const jstr *s, jbuf *b)
{
    const char q = memchr(s->s, '\'', s->len) && !memchr(s->s, '"', s->len) ? '"' : '\'';
    jb_putc(b, q);
    for (size_t i = 0; i < s->len;) {
        int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s->s + i, (utf8proc_ssize_t)(s->len - i), &cp);
        if (k <= 0)
            k = 1, cp = (unsigned char)s->s[i];
        char buf[16];
        if (cp == q || cp == '\\') {
            jb_putc(b, '\\');
            jb_putc(b, (char)cp);
        } else if (cp == '\n' || cp == '\r' || cp == '\t') {
            jb_puts(b, cp == '\n' ? "\\n" : cp == '\r' ? "\\r" : "\\t");
        } else if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && !printable(cp))) {
            snprintf(buf, sizeof buf, cp < 0x100 ? "\\x%02x" : cp < 0x10000 ? "\\u%04x" : "\\U%08x", (unsigned)cp);
            jb_puts(b, buf);
        } else {
            jb_put(b, s->s + i, (size_t)k);
        }
        i += (size_t)k;
    }
    jb_putc(b, q);
}

static void str_into(jv v, jbuf *b, bool repr)
{
    char buf[32];
    switch (v.t) {
    case JV_UNDEF: jb_puts(b, repr ? "Undefined" : ""); break;
    case JV_NONE: jb_puts(b, "None"); break;
    case JV_BOOL: jb_puts(b, v.u.b ? "True" : "False"); break;
    case JV_INT:
        snprintf(buf, sizeof buf, "%lld", (long long)v.u.i);
        jb_puts(b, buf);
        break;
    case JV_FLOAT: float_repr(v.u.f, b); break;
    case JV_STR:
        if (repr)
            str_repr(v.u.s, b);
        else
            jb_put(b, v.u.s->s, v.u.s->len);
        break;
    case JV_LIST: {
        const bool tuple = v.flags & JV_TUPLE;
        jb_putc(b, tuple ? '(' : '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i)
                jb_puts(b, ", ");
            str_into(v.u.l->v[i], b, true);
        }
        if (tuple && v.u.l->n == 1)
            jb_putc(b, ',');
        jb_putc(b, tuple ? ')' : ']');
        break;
    }
    case JV_NS:
        jb_puts(b, "<Namespace ");
        /* fall through */
    case JV_DICT:
        jb_putc(b, '{');
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i)
                jb_puts(b, ", ");
            str_into(v.u.d->k[i], b, true);
            jb_puts(b, ": ");
            str_into(v.u.d->v[i], b, true);
        }
        jb_putc(b, '}');
        if (v.t == JV_NS)
            jb_putc(b, '>');
        break;
    case JV_MACRO:
        jb_puts(b, "<Macro '");
        jb_puts(b, v.u.macro->name);
        jb_puts(b, "'>");
        break;
    case JV_LOOP:
        snprintf(buf, sizeof buf, "<LoopContext %zu/%zu>", v.u.loop->i + 1, v.u.loop->items->n);
        jb_puts(b, buf);
        break;
    default: jb_puts(b, "<function>"); break;
    }
}

jstr *jx_to_str(jctx *c, jv v)
{
    if (v.t == JV_STR)
        return v.u.s;
    jbuf b = {.c = c};
    str_into(v, &b, false);
    return jb_str(&b);
}

void jx_repr(jv v, jbuf *b)
{
    str_into(v, b, true);
}

/* ---- json.dumps ---- */

typedef struct jsonw {
    jctx *c;
    int line;
    jbuf b;
    int indent; /* < 0: none */
    const char *item_sep, *key_sep;
    bool sort_keys, ascii;
} jsonw;

static void json_string(jsonw *w, const char *s, size_t n)
{
    jbuf *b = &w->b;
    jb_putc(b, '"');
    for (size_t i = 0; i < n;) {
        const unsigned char ch = (unsigned char)s[i];
        char buf[24];
        if (ch == '"' || ch == '\\') {
            jb_putc(b, '\\');
            jb_putc(b, (char)ch);
            i++;
        } else if (ch < 0x20) {
            static const char *named[] = {['\b'] = "\\b", ['\f'] = "\\f", ['\n'] = "\\n", ['\r'] = "\\r",
                                          ['\t'] = "\\t"};
            if (ch < sizeof named / sizeof *named && named[ch]) {
                jb_puts(b, named[ch]);
            } else {
                snprintf(buf, sizeof buf, "\\u%04x", ch);
                jb_puts(b, buf);
            }
            i++;
        } else if (ch >= 0x80 && w->ascii) {
            int32_t cp;
            utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
            if (k <= 0)
                k = 1, cp = 0xfffd;
            if (cp >= 0x10000) {
                const int32_t v = cp - 0x10000;
                snprintf(buf, sizeof buf, "\\u%04x\\u%04x", (unsigned)(0xd800 | (v >> 10)), (unsigned)(0xdc00 | (v & 0x3ff)));
            } else {
                snprintf(buf, sizeof buf, "\\u%04x", (unsigned)cp);
            }
            jb_puts(b, buf);
            i += (size_t)k;
        } else {
            size_t j = i + 1;
            while (j < n && (unsigned char)s[j] >= 0x20 && s[j] != '"' && s[j] != '\\' &&
                   !(w->ascii && (unsigned char)s[j] >= 0x80))
                j++;
            jb_put(b, s + i, j - i);
            i = j;
        }
    }
    jb_putc(b, '"');
}

static void json_newline(jsonw *w, int level)
{
    jb_putc(&w->b, '\n');
    for (int i = 0; i < level * w->indent; i++)
        jb_putc(&w->b, ' ');
}

static void json_value(jsonw *w, jv v, int level);

/* a dict key as json.dumps makes it: strings as they are; numbers, booleans and None as text */
static void json_key(jsonw *w, jv k)
{
    if (k.t == JV_STR) {
        json_string(w, k.u.s->s, k.u.s->len);
    } else if (k.t == JV_BOOL || k.t == JV_NONE) {
        json_string(w, k.t == JV_NONE ? "null" : k.u.b ? "true" : "false", k.t == JV_NONE ? 4 : k.u.b ? 4 : 5);
    } else if (k.t == JV_INT || k.t == JV_FLOAT) {
        jstr *s = jx_to_str(w->c, k);
        json_string(w, s->s, s->len);
    } else {
        jx_fail(w->c, w->line, "keys must be str, int, float, bool or None, not %s", jx_type_name(k));
    }
}

static int key_order(const void *a, const void *b)
{
    const jv *x = *(const jv *const *)a, *y = *(const jv *const *)b;
    if (x->t != JV_STR || y->t != JV_STR)
        return 0;
    const size_t n = x->u.s->len < y->u.s->len ? x->u.s->len : y->u.s->len;
    const int r = memcmp(x->u.s->s, y->u.s->s, n);
    return r ? r : (x->u.s->len > y->u.s->len) - (x->u.s->len < y->u.s->len);
}

static void json_value(jsonw *w, jv v, int level)
{
    if (level > 200)
        jx_fail(w->c, w->line, "tojson: the value nests more than 200 levels deep");
    jbuf *b = &w->b;
    switch (v.t) {
    case JV_NONE: jb_puts(b, "null"); return;
    case JV_BOOL: jb_puts(b, v.u.b ? "true" : "false"); return;
    case JV_INT: str_into(v, b, false); return;
    case JV_FLOAT:
        if (isnan(v.u.f) || isinf(v.u.f))
            jb_puts(b, isnan(v.u.f) ? "NaN" : v.u.f > 0 ? "Infinity" : "-Infinity");
        else
            float_repr(v.u.f, b);
        return;
    case JV_STR: json_string(w, v.u.s->s, v.u.s->len); return;
    case JV_LIST:
        if (!v.u.l->n) {
            jb_puts(b, "[]");
            return;
        }
        jb_putc(b, '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i)
                jb_puts(b, w->item_sep);
            if (w->indent >= 0)
                json_newline(w, level + 1);
            json_value(w, v.u.l->v[i], level + 1);
        }
        if (w->indent >= 0)
            json_newline(w, level);
        jb_putc(b, ']');
        return;
    case JV_DICT: {
        const jdict *d = v.u.d;
        if (!d->n) {
            jb_puts(b, "{}");
            return;
        }
        const jv **keys = jx_alloc(w->c, d->n * sizeof *keys);
        for (size_t i = 0; i < d->n; i++)
            keys[i] = &d->k[i];
        if (w->sort_keys)
            qsort(keys, d->n, sizeof *keys, key_order);
        jb_putc(b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i)
                jb_puts(b, w->item_sep);
            if (w->indent >= 0)
                json_newline(w, level + 1);
            json_key(w, *keys[i]);
            jb_puts(b, w->key_sep);
            json_value(w, d->v[keys[i] - d->k], level + 1);
        }
        if (w->indent >= 0)
            json_newline(w, level);
        jb_putc(b, '}');
        return;
    }
    default: jx_fail(w->c, w->line, "tojson: Object of type %s is not JSON serializable", jx_type_name(v));
    }
}

jstr *jx_to_json(jctx *c, int line, jv v, int indent, const char *item_sep, const char *key_sep, bool sort_keys,
                 bool ascii)
{
    jsonw w = {.c = c, .line = line, .b = {.c = c}, .indent = indent, .sort_keys = sort_keys, .ascii = ascii};
    w.item_sep = item_sep ? item_sep : indent >= 0 ? "," : ", ";
    w.key_sep = key_sep ? key_sep : ": ";
    json_value(&w, v, 0);
    return jb_str(&w.b);
}

/* ---- JSON input ---- */

jv jx_from_json(jctx *c, const cJSON *j)
{
    if (cJSON_IsNull(j))
        return jv_none();
    if (cJSON_IsBool(j))
        return jv_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        const double d = j->valuedouble;
        if (d == floor(d) && fabs(d) < 9007199254740992.0)
            return jv_int((int64_t)d);
        return jv_float(d);
    }
    if (cJSON_IsString(j))
        return jv_of_str(jx_str_new(c, j->valuestring, strlen(j->valuestring)));
    if (cJSON_IsArray(j)) {
        jlist *l = jx_list_new(c, (size_t)cJSON_GetArraySize(j));
        size_t i = 0;
        for (const cJSON *x = j->child; x; x = x->next)
            l->v[i++] = jx_from_json(c, x);
        return jv_of_list(l, false);
    }
    if (cJSON_IsObject(j)) {
        /* appended, not looked up: an object of many members stays linear (a repeated key is
         * found at its first place) */
        jdict *d = jx_dict_new(c, (size_t)cJSON_GetArraySize(j));
        for (const cJSON *x = j->child; x; x = x->next, d->n++) {
            d->k[d->n] = jv_of_str(jx_str_new(c, x->string, strlen(x->string)));
            d->v[d->n] = jx_from_json(c, x);
        }
        return jv_of_dict(d);
    }
    return jv_undef(NULL);
}
