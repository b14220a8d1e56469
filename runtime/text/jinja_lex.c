/* Template source to tokens, as jinja2's lexer makes them with trim_blocks and lstrip_blocks:
 * newlines normalized to "\n" and one trailing newline dropped; "{%-" / "-%}" strip the whitespace
 * before / after a tag; a block or comment tag alone on its line takes the line's leading
 * whitespace with it (lstrip_blocks, unless "{%+"), and the newline after it (trim_blocks, unless
 * "+%}"); inside tags, names, numbers, string literals (Python's escapes) and operators, with "}}"
 * and "%}" ending a tag only outside brackets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/text/jinja_impl.h"

typedef struct lexer {
    jarena *a;
    const char *s; /* (n) the normalized source */
    size_t n, pos;
    int line;
    bool line_starting; /* the last thing consumed ended a line */
    jtok *toks;
    size_t n_toks, cap;
    base_err *err;
    char stack[64]; /* closing brackets expected */
    int depth;
} lexer;

static int fail(lexer *l, const char *fmt, const char *arg)
{
    char msg[200];
    snprintf(msg, sizeof msg, fmt, arg);
    return base_errf(l->err, "line %d: %s", l->line, msg);
}

static jtok *push(lexer *l, int type)
{
    if (l->n_toks == l->cap) {
        const size_t cap = l->cap ? 2 * l->cap : 256;
        jtok *t = jarena_alloc(l->a, cap * sizeof *t);
        if (!t)
            return NULL;
        if (l->n_toks)
            memcpy(t, l->toks, l->n_toks * sizeof *t);
        l->toks = t, l->cap = cap;
    }
    jtok *t = &l->toks[l->n_toks++];
    memset(t, 0, sizeof *t);
    t->type = (uint8_t)type;
    t->line = l->line;
    return t;
}

static int count_lines(const char *s, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += s[i] == '\n';
    return k;
}

size_t jx_space_at(const char *s, size_t n, size_t i)
{
    const unsigned char c = (unsigned char)s[i];
    if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f))
        return 1;
    const unsigned char c1 = i + 1 < n ? (unsigned char)s[i + 1] : 0, c2 = i + 2 < n ? (unsigned char)s[i + 2] : 0;
    if (c == 0xc2 && (c1 == 0x85 || c1 == 0xa0))
        return 2;
    if (c == 0xe1 && c1 == 0x9a && c2 == 0x80) /* U+1680 */
        return 3;
    if (c == 0xe2 && c1 == 0x80 && (c2 <= 0x8a || c2 == 0xa8 || c2 == 0xa9 || c2 == 0xaf)) /* U+2000-200A, 2028/9, 202F */
        return 3;
    if ((c == 0xe2 && c1 == 0x81 && c2 == 0x9f) || (c == 0xe3 && c1 == 0x80 && c2 == 0x80)) /* U+205F, U+3000 */
        return 3;
    return 0;
}

/* The byte length of the whitespace character ending just before s[end], or 0. */
static size_t ws_before(const char *s, size_t end)
{
    for (size_t k = 1; k <= 3 && k <= end; k++)
        if (jx_space_at(s, end, end - k) == k)
            return k;
    return 0;
}

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    size_t k;
    while (i < n && (k = jx_space_at(s, n, i)) > 0)
        i += k;
    return i;
}

static int emit_data(lexer *l, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    jtok *t = push(l, JT_DATA);
    char *c = t ? jarena_alloc(l->a, n + 1) : NULL;
    if (!c)
        return base_errf(l->err, "out of memory");
    memcpy(c, s, n);
    c[n] = '\0';
    t->text = c, t->len = n;
    return 0;
}

static void put_utf8(char *out, size_t *k, uint32_t cp)
{
    if (cp < 0x80) {
        out[(*k)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*k)++] = (char)(0xc0 | (cp >> 6));
        out[(*k)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[(*k)++] = (char)(0xe0 | (cp >> 12));
        out[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*k)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[(*k)++] = (char)(0xf0 | (cp >> 18));
        out[(*k)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        out[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*k)++] = (char)(0x80 | (cp & 0x3f));
    }
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A string literal's body (between its quotes) through Python's escapes. */
static int unescape(lexer *l, const char *s, size_t n, jtok *t)
{
    char *out = jarena_alloc(l->a, n + 1); /* escapes never lengthen: \x41 (4 bytes) -> at most 2 */
    if (!out)
        return base_errf(l->err, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) {
            out[k++] = s[i];
            continue;
        }
        const char e = s[++i];
        static const char simple_in[] = "\\'\"abfnrtv", simple_out[] = "\\'\"\a\b\f\n\r\t\v";
        const char *p = strchr(simple_in, e);
        if (e == '\n') {
            continue; /* a line continuation */
        } else if (p && e) {
            out[k++] = simple_out[p - simple_in];
        } else if (e >= '0' && e <= '7') {
            uint32_t v = 0;
            size_t d = 0;
            for (; d < 3 && i + d < n && s[i + d] >= '0' && s[i + d] <= '7'; d++)
                v = v * 8 + (uint32_t)(s[i + d] - '0');
            i += d - 1;
            put_utf8(out, &k, v);
        } else if (e == 'x' || e == 'u' || e == 'U') {
            const size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t v = 0;
            for (size_t d = 1; d <= digits; d++) {
                const int h = i + d < n ? hexval(s[i + d]) : -1;
                if (h < 0)
                    return fail(l, "a string literal has a truncated \\%s escape", e == 'x' ? "x" : e == 'u' ? "u" : "U");
                v = v * 16 + (uint32_t)h;
            }
            if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
                return fail(l, "a string literal escapes %s (not a Unicode scalar value)", "a surrogate or beyond U+10FFFF");
            i += digits;
            put_utf8(out, &k, v);
        } else if (e == 'N') {
            return fail(l, "%s escapes in string literals are not supported", "\\N{...}");
        } else {
            out[k++] = '\\'; /* Python keeps an unknown escape as it is */
            out[k++] = e;
        }
    }
    out[k] = '\0';
    t->text = out, t->len = k;
    return 0;
}

static bool digit(char c)
{
    return c >= '0' && c <= '9';
}

/* digits with single underscores between them, from s[i]; returns the end (i when none) */
static size_t digits(const char *s, size_t n, size_t i)
{
    if (i >= n || !digit(s[i]))
        return i;
    while (i < n && (digit(s[i]) || (s[i] == '_' && i + 1 < n && digit(s[i + 1]))))
        i++;
    return i;
}

static int lex_number(lexer *l)
{
    const char *s = l->s;
    const size_t n = l->n, start = l->pos;
    char buf[128];
    size_t k = 0;
    /* a float: digits, then a fraction and/or an exponent (not right after a '.': foo.0.1) */
    if (start == 0 || s[start - 1] != '.') {
        size_t i = digits(s, n, start), j = i;
        bool frac = false, expo = false;
        if (j < n && s[j] == '.' && digits(s, n, j + 1) > j + 1)
            j = digits(s, n, j + 1), frac = true;
        if (j < n && (s[j] == 'e' || s[j] == 'E')) {
            size_t m = j + 1;
            if (m < n && (s[m] == '+' || s[m] == '-'))
                m++;
            if (digits(s, n, m) > m)
                j = digits(s, n, m), expo = true;
        }
        if (i > start && (frac || expo)) {
            for (size_t p = start; p < j && k + 1 < sizeof buf; p++)
                if (s[p] != '_')
                    buf[k++] = s[p];
            buf[k] = '\0';
            jtok *t = push(l, JT_FLOAT);
            if (!t)
                return base_errf(l->err, "out of memory");
            t->f = strtod(buf, NULL);
            l->pos = j;
            return 0;
        }
    }
    /* an integer: 0b / 0o / 0x prefixes, or decimal (no leading zeros but 0, 00, ...) */
    int base = 10;
    size_t i = start;
    if (s[i] == '0' && i + 1 < n && strchr("bBoOxX", s[i + 1]) && s[i + 1]) {
        base = s[i + 1] == 'b' || s[i + 1] == 'B' ? 2 : s[i + 1] == 'o' || s[i + 1] == 'O' ? 8 : 16;
        i += 2;
    }
    uint64_t v = 0;
    size_t nd = 0;
    for (; i < n; i++) {
        if (s[i] == '_' && nd > 0 && i + 1 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 1]) < base)
            continue;
        const int h = hexval(s[i]);
        if (h < 0 || h >= base || (base == 10 && nd == 1 && v == 0 && s[start] == '0' && h != 0))
            break;
        if (v > (UINT64_C(1) << 62) / (uint64_t)base)
            return fail(l, "the integer literal %s is too large", "here");
        v = v * (uint64_t)base + (uint64_t)h;
        nd++;
    }
    if (nd == 0)
        return fail(l, "a malformed number (%s)", base == 2 ? "0b" : base == 8 ? "0o" : "0x");
    jtok *t = push(l, JT_INT);
    if (!t)
        return base_errf(l->err, "out of memory");
    t->i = (int64_t)v;
    l->pos = i;
    return 0;
}

static bool name_char(unsigned char c, bool first)
{
    return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80 || (!first && c >= '0' && c <= '9');
}

/* One token inside a tag. */
static int lex_inner(lexer *l)
{
    const char *s = l->s;
    const size_t n = l->n, i = l->pos;
    const unsigned char c = (unsigned char)s[i];
    if (digit((char)c))
        return lex_number(l);
    if (name_char(c, true)) {
        size_t j = i + 1;
        while (j < n && name_char((unsigned char)s[j], false))
            j++;
        jtok *t = push(l, JT_NAME);
        char *txt = t ? jarena_alloc(l->a, j - i + 1) : NULL;
        if (!txt)
            return base_errf(l->err, "out of memory");
        memcpy(txt, s + i, j - i);
        txt[j - i] = '\0';
        t->text = txt, t->len = j - i;
        l->pos = j;
        return 0;
    }
    if (c == '\'' || c == '"') {
        size_t j = i + 1;
        while (j < n && s[j] != (char)c)
            j += s[j] == '\\' ? 2 : 1;
        if (j >= n)
            return fail(l, "%s", "a string literal is not closed");
        jtok *t = push(l, JT_STRING);
        if (!t)
            return base_errf(l->err, "out of memory");
        const int line = l->line;
        l->line += count_lines(s + i, j - i);
        t->line = line;
        l->pos = j + 1;
        return unescape(l, s + i + 1, j - i - 1, t);
    }
    static const struct {
        const char *text;
        int op;
    } two[] = {{"//", JOP_FLOORDIV}, {"**", JOP_POW}, {"==", JOP_EQ}, {"!=", JOP_NE}, {">=", JOP_GE}, {"<=", JOP_LE}};
    for (size_t k = 0; k < sizeof two / sizeof *two; k++)
        if (i + 1 < n && s[i] == two[k].text[0] && s[i + 1] == two[k].text[1]) {
            jtok *t = push(l, JT_OP);
            if (!t)
                return base_errf(l->err, "out of memory");
            t->op = two[k].op;
            l->pos = i + 2;
            return 0;
        }
    if (!c || !strchr("+-/*%~[](){}><=.:|,;", (char)c)) {
        char ch[8];
        snprintf(ch, sizeof ch, c >= 0x20 && c < 0x7f ? "'%c'" : "0x%02x", c);
        return fail(l, "unexpected character %s in a tag", ch);
    }
    if (c == '(' || c == '[' || c == '{') {
        if (l->depth == (int)sizeof l->stack)
            return fail(l, "%s", "brackets nested too deeply");
        l->stack[l->depth++] = c == '(' ? ')' : c == '[' ? ']' : '}';
    } else if (c == ')' || c == ']' || c == '}') {
        if (l->depth == 0 || l->stack[l->depth - 1] != (char)c) {
            char ch[4] = {'\'', (char)c, '\'', 0};
            return fail(l, "unexpected %s", ch);
        }
        l->depth--;
    }
    jtok *t = push(l, JT_OP);
    if (!t)
        return base_errf(l->err, "out of memory");
    t->op = c;
    l->pos = i + 1;
    return 0;
}

/* Inside {{ ... }} (block false) or {% ... %}: tokens up to the end tag, which it consumes. */
static int lex_tag(lexer *l, bool block)
{
    const char *s = l->s;
    const size_t n = l->n;
    for (;;) {
        const size_t i = skip_ws(s, n, l->pos);
        l->line += count_lines(s + l->pos, i - l->pos);
        l->pos = i;
        if (i >= n)
            return fail(l, "the template ends inside a %s", block ? "{% tag %}" : "{{ expression }}");
        const char end = block ? '%' : '}';
        if (l->depth == 0) {
            size_t e = 0; /* the end tag's length, whitespace it takes included */
            bool strip = false;
            if (block && s[i] == '+' && i + 2 < n && s[i + 1] == '%' && s[i + 2] == '}')
                e = 3;
            else if (s[i] == '-' && i + 2 < n && s[i + 1] == end && s[i + 2] == '}')
                e = 3, strip = true;
            else if (s[i] == end && i + 1 < n && s[i + 1] == '}')
                e = 2 + (block && i + 2 < n && s[i + 2] == '\n'); /* trim_blocks */
            if (e) {
                size_t j = i + e;
                if (strip)
                    j = skip_ws(s, n, j);
                if (!push(l, block ? JT_BLOCK_END : JT_VAR_END))
                    return base_errf(l->err, "out of memory");
                l->line += count_lines(s + i, j - i);
                l->line_starting = s[j - 1] == '\n';
                l->pos = j;
                return 0;
            }
        }
        if (lex_inner(l))
            return -1;
    }
}

/* The earliest "{{", "{%" or "{#" at or after from; n when none. */
static size_t next_tag(const char *s, size_t n, size_t from)
{
    for (size_t i = from; i + 1 < n; i++) {
        const char *p = memchr(s + i, '{', n - 1 - i);
        if (!p)
            return n;
        i = (size_t)(p - s);
        if (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#')
            return i;
    }
    return n;
}

int jinja_lex(jarena *a, const char *src, size_t len, jtok **toks, size_t *n_toks, base_err *err)
{
    /* "\r\n" and "\r" become "\n"; one trailing newline goes (keep_trailing_newline off) */
    char *s = jarena_alloc(a, len + 1);
    if (!s)
        return base_errf(err, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            i += i + 1 < len && src[i + 1] == '\n';
        } else {
            s[n++] = src[i];
        }
    }
    if (n > 0 && s[n - 1] == '\n')
        n--;
    s[n] = '\0';
    lexer l = {.a = a, .s = s, .n = n, .line = 1, .line_starting = true, .err = err};
    while (l.pos < n) {
        const size_t at = next_tag(s, n, l.pos);
        if (at >= n) {
            if (emit_data(&l, s + l.pos, n - l.pos))
                return -1;
            break;
        }
        const char kind = s[at + 1]; /* '{', '%' or '#' */
        size_t after = at + 2;
        const char sign = after < n && (s[after] == '-' || s[after] == '+') ? s[after] : 0;
        after += sign != 0;
        size_t text_end = at;
        if (sign == '-') {
            size_t k;
            while (text_end > l.pos && (k = ws_before(s, text_end)) > 0)
                text_end -= k;
        } else if (sign != '+' && kind != '{') { /* lstrip_blocks */
            size_t line_start = at;
            while (line_start > l.pos && s[line_start - 1] != '\n')
                line_start--;
            if ((line_start > l.pos || l.line_starting) && line_start < at &&
                skip_ws(s, at, line_start) == at)
                text_end = line_start;
        }
        if (emit_data(&l, s + l.pos, text_end - l.pos))
            return -1;
        l.line += count_lines(s + l.pos, at - l.pos);
        l.pos = after;
        if (kind == '#') { /* a comment: up to "+#}", "-#}" (and the whitespace after) or "#}" ("\n") */
            size_t q = after;
            for (; q + 1 < n; q++)
                if ((s[q] == '+' || s[q] == '-') && q + 2 < n && s[q + 1] == '#' && s[q + 2] == '}')
                    break;
                else if (s[q] == '#' && s[q + 1] == '}')
                    break;
            if (q + 1 >= n)
                return fail(&l, "%s", "a comment is not closed (missing #})");
            size_t j;
            if (s[q] == '+')
                j = q + 3;
            else if (s[q] == '-')
                j = skip_ws(s, n, q + 3);
            else
                j = q + 2 + (q + 2 < n && s[q + 2] == '\n');
            l.line += count_lines(s + after, j - after);
            l.line_starting = s[j - 1] == '\n';
            l.pos = j;
            continue;
        }
        const bool block = kind == '%';
        if (!push(&l, block ? JT_BLOCK_BEGIN : JT_VAR_BEGIN))
            return base_errf(err, "out of memory");
        if (block) { /* {% raw %} is not supported: say so rather than misread it */
            const size_t w = skip_ws(s, n, l.pos);
            if (n - w >= 3 && memcmp(s + w, "raw", 3) == 0 && (w + 3 >= n || !name_char((unsigned char)s[w + 3], false)))
                return fail(&l, "the '%s' tag is not supported", "raw");
        }
        if (lex_tag(&l, block))
            return -1;
    }
    if (!push(&l, JT_EOF))
        return base_errf(err, "out of memory");
    *toks = l.toks, *n_toks = l.n_toks;
    return 0;
}
