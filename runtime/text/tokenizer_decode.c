/* Hugging Face tokenizer.json in C (tokenizer.h): decoding. Ids map back to token strings (added
 * tokens by their content) and the decoder chain runs over them; rt_detok streams the text of
 * generated tokens as they come, holding back bytes until they complete a character. */
#include <stdio.h>

#include "runtime/text/tokenizer_impl.h"

/* Appends bytes as UTF-8, each maximal invalid subpart replaced by U+FFFD (Rust's
 * String::from_utf8_lossy, which tokenizers' decoders use). */
static int add_lossy(buf *o, const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        int k = utf8_len(s + i, n - i);
        if (k > 0) {
            if (buf_add(o, s + i, (size_t)k))
                return -1;
            i += (size_t)k;
            continue;
        }
        /* the longest prefix that could start a valid sequence is one replacement */
        size_t j = i + 1;
        const unsigned char c = s[i];
        int need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 1;
        for (int q = 1; q < need && j < n; q++, j++) {
            const unsigned char d = s[j];
            unsigned lo = 0x80, hi = 0xBF;
            if (q == 1) { /* the second byte's range depends on the first */
                if (c == 0xE0)
                    lo = 0xA0;
                else if (c == 0xED)
                    hi = 0x9F;
                else if (c == 0xF0)
                    lo = 0x90;
                else if (c == 0xF4)
                    hi = 0x8F;
            }
            if (d < lo || d > hi)
                break;
        }
        if (buf_add(o, "\xEF\xBF\xBD", 3))
            return -1;
        i = j;
    }
    return 0;
}

/* A list of token strings, each a range of one buffer. */
typedef struct toks {
    buf text;
    size_t *off, *len;
    size_t n, cap;
} toks;

static int toks_add(toks *l, const char *s, size_t n)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        size_t *a = realloc(l->off, cap * sizeof *a), *b = a ? realloc(l->len, cap * sizeof *b) : NULL;
        if (a)
            l->off = a;
        if (b)
            l->len = b;
        if (!a || !b)
            return -1;
        l->cap = cap;
    }
    l->off[l->n] = l->text.n, l->len[l->n] = n;
    l->n++;
    return buf_add(&l->text, s, n);
}

static void toks_free(toks *l)
{
    free(l->text.p), free(l->off), free(l->len);
}

/* One decoder over the whole list: src -> dst. 0, -1 when memory ran out, 1 when a Replace made
 * the text longer than limit bytes (the only decoder that grows text). */
static int decode_step(const rt_tokenizer *t, const dec_step *s, const toks *src, toks *dst, size_t limit)
{
    buf tmp = {0};
    int rc = 0;
    switch (s->kind) {
    case DEC_BYTELEVEL: { /* every token's characters back to bytes, one lossy UTF-8 string */
        buf bytes = {0};
        for (size_t i = 0; i < src->n && !rc; i++) {
            const unsigned char *p = (const unsigned char *)src->text.p + src->off[i];
            const size_t n = src->len[i], mark = bytes.n;
            bool all = true;
            for (size_t at = 0; at < n && all;) {
                utf8proc_int32_t cp;
                utf8proc_ssize_t k = utf8proc_iterate(p + at, (utf8proc_ssize_t)(n - at), &cp);
                if (k <= 0 || cp >= 324 || t->char_byte[cp] < 0) {
                    all = false;
                    break;
                }
                const char b = (char)t->char_byte[cp];
                rc |= buf_add(&bytes, &b, 1);
                at += (size_t)k;
            }
            if (!all) { /* a token not made of byte characters stands for its own bytes */
                bytes.n = mark;
                rc |= buf_add(&bytes, p, n);
            }
        }
        rc |= add_lossy(&tmp, (const unsigned char *)(bytes.p ? bytes.p : ""), bytes.n);
        free(bytes.p);
        rc |= toks_add(dst, tmp.p ? tmp.p : "", tmp.n);
        break;
    }
    case DEC_METASPACE:
    case DEC_REPLACE: {
        const char *from = s->kind == DEC_REPLACE ? s->from : s->repl, *to = s->kind == DEC_REPLACE ? s->to : " ";
        const size_t fl = strlen(from), tl = strlen(to);
        for (size_t i = 0; i < src->n && !rc; i++) {
            const char *p = src->text.p + src->off[i];
            const size_t n = src->len[i];
            tmp.n = 0;
            for (size_t at = 0; at < n;) {
                if (at + fl <= n && memcmp(p + at, from, fl) == 0) {
                    rc |= buf_add(&tmp, to, tl);
                    at += fl;
                    if (dst->text.n + tmp.n > limit) {
                        free(tmp.p);
                        return 1;
                    }
                } else {
                    rc |= buf_add(&tmp, p + at, 1);
                    at++;
                }
            }
            size_t skip = 0;
            if (s->kind == DEC_METASPACE && i == 0 && s->scheme != PREPEND_NEVER && tmp.n > 0 && tmp.p[0] == ' ')
                skip = 1;
            rc |= toks_add(dst, tmp.p ? tmp.p + skip : "", tmp.n - skip);
        }
        break;
    }
    case DEC_BYTEFALLBACK: { /* runs of <0xXX> tokens -> their bytes as text, or one U+FFFD a byte */
        buf bytes = {0};
        for (size_t i = 0; i <= src->n && !rc; i++) {
            const char *p = i < src->n ? src->text.p + src->off[i] : NULL;
            const size_t n = i < src->n ? src->len[i] : 0;
            unsigned v;
            char tail;
            if (p && n == 6 && memcmp(p, "<0x", 3) == 0 && p[5] == '>' && sscanf(p + 3, "%2x%c", &v, &tail) == 2 &&
                tail == '>') {
                const char b = (char)v;
                rc |= buf_add(&bytes, &b, 1);
                continue;
            }
            if (bytes.n > 0) {
                bool valid = true;
                for (size_t at = 0; at < bytes.n && valid;) {
                    const int k = utf8_len((const unsigned char *)bytes.p + at, bytes.n - at);
                    valid = k > 0;
                    at += (size_t)k;
                }
                if (valid)
                    rc |= toks_add(dst, bytes.p, bytes.n);
                else
                    for (size_t j = 0; j < bytes.n; j++)
                        rc |= toks_add(dst, "\xEF\xBF\xBD", 3);
                bytes.n = 0;
            }
            if (p)
                rc |= toks_add(dst, p, n);
        }
        free(bytes.p);
        break;
    }
    case DEC_FUSE:
        for (size_t i = 0; i < src->n && !rc; i++)
            rc |= buf_add(&tmp, src->text.p + src->off[i], src->len[i]);
        rc |= toks_add(dst, tmp.p ? tmp.p : "", tmp.n);
        break;
    case DEC_STRIP: {
        const size_t cl = strlen(s->strip);
        for (size_t i = 0; i < src->n && !rc; i++) {
            const char *p = src->text.p + src->off[i];
            size_t a = 0, b = src->len[i];
            for (int k = 0; k < s->start && a + cl <= b && memcmp(p + a, s->strip, cl) == 0; k++)
                a += cl;
            for (int k = 0; k < s->stop && b >= a + cl && memcmp(p + b - cl, s->strip, cl) == 0; k++)
                b -= cl;
            rc |= toks_add(dst, p + a, b - a);
        }
        break;
    }
    }
    free(tmp.p);
    return rc;
}

/* The decoders in turn over the token strings in a (the result left in a; b scratch): 0, -1 when
 * memory ran out, 1 when the text grew past norm_limit of what it was. */
static int run_decoders(const rt_tokenizer *t, toks *a, toks *b)
{
    const size_t limit = rt_tok_growth_limit(a->text.n);
    for (int i = 0; i < t->n_dec; i++) {
        b->n = 0, b->text.n = 0;
        const int rc = decode_step(t, &t->dec[i], a, b, limit);
        if (rc)
            return rc;
        toks tmp = *a;
        *a = *b, *b = tmp;
    }
    return 0;
}

int rt_tok_check_decoder(const rt_tokenizer *t, base_err *err)
{
    if (!t->has_decoder)
        return 0;
    /* each printable ASCII character a token, and a few beyond */
    static const char *const more[] = {"\xe2\x96\x81", "\xc4\xa0", "<0x41>", "\xc3\xa9"};
    toks a = {0}, b = {0};
    int rc = 0;
    for (int c = ' '; c < 127 && !rc; c++)
        rc = toks_add(&a, &(char){(char)c}, 1);
    for (size_t i = 0; i < sizeof more / sizeof *more && !rc; i++)
        rc = toks_add(&a, more[i], strlen(more[i]));
    const size_t n = a.text.n;
    if (!rc)
        rc = run_decoders(t, &a, &b);
    toks_free(&a), toks_free(&b);
    if (rc > 0)
        return base_errf(err, "decoder: its steps make more than %zu bytes of %zu bytes of tokens (a Replace whose "
                              "content holds its own pattern, repeated?)", rt_tok_growth_limit(n), n);
    return rc ? base_errf(err, "decoder: out of memory decoding %zu bytes of tokens", n) : 0;
}

char *rt_tokenizer_decode(const rt_tokenizer *t, const int32_t *ids, int n, bool skip_special, size_t *len,
                          base_err *err)
{
    toks a = {0}, b = {0};
    for (int i = 0; i < n; i++) {
        const int32_t id = ids[i];
        size_t k = 0;
        bool special = false;
        const char *s = rt_tok_token_of(t, id, &k, &special);
        if (!s) {
            toks_free(&a);
            base_errf(err, "token id %d is outside the vocabulary of %d ids", id, t->n_ids);
            return NULL;
        }
        if (special && skip_special)
            continue;
        if (toks_add(&a, s, k))
            goto oom;
    }
    if (!t->has_decoder) { /* tokenizers joins the tokens with spaces */
        buf o = {0};
        for (size_t i = 0; i < a.n; i++)
            if ((i && buf_add(&o, " ", 1)) || buf_add(&o, a.text.p + a.off[i], a.len[i]))
                goto oom;
        toks_free(&a);
        if (len)
            *len = o.n;
        return o.p ? o.p : strdup("");
    }
    const int rc = run_decoders(t, &a, &b);
    if (rc) {
        toks_free(&a), toks_free(&b);
        if (rc > 0)
            base_errf(err, "the tokenizer's decoder grows these tokens' text more than %dx (a Replace whose content "
                           "holds its own pattern?): refused", RT_TOK_GROWTH);
        else
            base_errf(err, "out of memory");
        return NULL;
    }
    buf o = {0};
    for (size_t i = 0; i < a.n; i++)
        if (buf_add(&o, a.text.p + a.off[i], a.len[i]))
            goto oom;
    toks_free(&a), toks_free(&b);
    if (len)
        *len = o.n;
    return o.p ? o.p : strdup("");
oom:
    toks_free(&a), toks_free(&b);
    base_errf(err, "out of memory");
    return NULL;
}

/* ---- streaming ---- */

void rt_detok_init(rt_detok *d, const rt_tokenizer *t, bool skip_special)
{
    *d = (rt_detok){.t = t, .skip_special = skip_special};
}

void rt_detok_free(rt_detok *d)
{
    free(d->ids);
    d->ids = NULL;
    d->n = d->cap = 0;
}

/* The text ids[prefix, n) add after ids[prefix, read); NULL *text when it must wait (it ends in an
 * incomplete character) unless final. */
static int detok_delta(rt_detok *d, bool final, char **text, size_t *len, base_err *err)
{
    *text = NULL, *len = 0;
    if (d->n == 0) {
        *text = strdup("");
        return *text ? 0 : base_errf(err, "out of memory");
    }
    size_t lp = 0, ln = 0;
    char *before = rt_tokenizer_decode(d->t, d->ids + d->prefix, d->read - d->prefix, d->skip_special, &lp, err);
    if (!before)
        return -1;
    char *now = rt_tokenizer_decode(d->t, d->ids + d->prefix, d->n - d->prefix, d->skip_special, &ln, err);
    if (!now) {
        free(before);
        return -1;
    }
    const bool held = ln >= 3 && memcmp(now + ln - 3, "\xEF\xBF\xBD", 3) == 0; /* U+FFFD: maybe incomplete */
    if ((ln > lp || final) && (!held || final) && ln >= lp && memcmp(now, before, lp) == 0) {
        *len = ln - lp;
        *text = malloc(*len + 1);
        if (*text) {
            memcpy(*text, now + lp, *len);
            (*text)[*len] = '\0';
        }
        d->prefix = d->read;
        d->read = d->n;
    }
    free(before), free(now);
    if (!*text) {
        *text = strdup("");
        *len = 0;
    }
    return *text ? 0 : base_errf(err, "out of memory");
}

int rt_detok_add(rt_detok *d, int32_t id, char **text, size_t *len, base_err *err)
{
    *text = NULL;
    if (id < 0 || id >= d->t->n_ids)
        return base_errf(err, "token id %d is outside the vocabulary of %d ids", id, d->t->n_ids);
    if (d->n == d->cap) {
        const int cap = d->cap ? 2 * d->cap : 64;
        int32_t *v = realloc(d->ids, (size_t)cap * sizeof *v);
        if (!v)
            return base_errf(err, "out of memory");
        d->ids = v, d->cap = cap;
    }
    d->ids[d->n++] = id;
    size_t l;
    return detok_delta(d, false, text, len ? len : &l, err);
}

#define DETOK_CONTEXT 6 /* prompt ids kept as context (vLLM keeps 5 before the last) */

int rt_detok_prime(rt_detok *d, const int32_t *ids, int n, base_err *err)
{
    const int k = n < DETOK_CONTEXT ? n : DETOK_CONTEXT;
    for (int i = 0; i < k; i++)
        if (ids[n - k + i] < 0 || ids[n - k + i] >= d->t->n_ids)
            return base_errf(err, "token id %d is outside the vocabulary of %d ids", ids[n - k + i], d->t->n_ids);
    if (k > d->cap) {
        int32_t *v = realloc(d->ids, 64 * sizeof *v);
        if (!v)
            return base_errf(err, "out of memory");
        d->ids = v, d->cap = 64;
    }
    memcpy(d->ids, ids + n - k, (size_t)k * sizeof *ids);
    d->n = d->read = k;
    d->prefix = 0;
    return 0;
}

char *rt_tokenizer_decode_after(const rt_tokenizer *t, const int32_t *ctx, int n_ctx, const int32_t *ids, int n,
                                bool skip_special, size_t *len, base_err *err)
{
    rt_detok d;
    rt_detok_init(&d, t, skip_special);
    char *out = NULL;
    size_t ol = 0, cap = 0;
    int rc = rt_detok_prime(&d, ctx, n_ctx, err);
    for (int i = 0; rc == 0 && i <= n; i++) {
        char *piece;
        size_t pl;
        rc = i < n ? rt_detok_add(&d, ids[i], &piece, &pl, err) : rt_detok_flush(&d, &piece, &pl, err);
        if (rc == 0 && ol + pl + 1 > cap) {
            cap = 2 * (ol + pl + 1) + 64;
            char *o = realloc(out, cap);
            if (!o)
                rc = base_errf(err, "out of memory");
            else
                out = o;
        }
        if (rc == 0) {
            memcpy(out + ol, piece, pl);
            ol += pl;
            out[ol] = '\0';
        }
        free(piece);
    }
    rt_detok_free(&d);
    if (rc) {
        free(out);
        return NULL;
    }
    if (len)
        *len = ol;
    return out;
}

int rt_detok_flush(rt_detok *d, char **text, size_t *len, base_err *err)
{
    size_t l;
    return detok_delta(d, true, text, len ? len : &l, err);
}

