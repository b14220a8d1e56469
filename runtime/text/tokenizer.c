/* Hugging Face tokenizer.json in C (tokenizer.h). The pipeline is the one `tokenizers` runs:
 *
 *   text -> added tokens split out (non-normalized ones on the raw text) -> each other segment
 *   normalized -> normalized added tokens split out -> pre-tokenized into words -> each word
 *   through the BPE model (tokenizer_bpe.c) -> ids -> the post-processor's special tokens around them.
 *
 * Strings are UTF-8 throughout; words live in one growing buffer per call (an arena of byte
 * ranges), so encoding allocates a few buffers, not one per word. Decoding: tokenizer_decode.c. */
#include "runtime/text/tokenizer_impl.h"

/* ---- the runner's containers ---- */

/* A piece of text: bytes [off, off + len) of an arena; id >= 0 for an added token already found. */
typedef struct piece {
    size_t off, len;
    int32_t id;
    bool first; /* the first piece of the input (Metaspace's prepend_scheme "first") */
} piece;

typedef struct pieces {
    piece *v;
    size_t n, cap;
} pieces;

static int pieces_push(pieces *a, piece p)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        piece *v = realloc(a->v, cap * sizeof *v);
        if (!v)
            return -1;
        a->v = v, a->cap = cap;
    }
    a->v[a->n++] = p;
    return 0;
}

/* ---- encoding ---- */

/* The working state of one encode call. */
typedef struct enc {
    const rt_tokenizer *t;
    buf arena;        /* every piece's bytes */
    pieces a, b;      /* the pieces before and after a step */
    ids_vec out;
    pcre2_match_data *md; /* this call's match (PCRE2's code is shared, its match data is not) */
    rt_bpe bpe;       /* the BPE model's scratch */
    bool runaway;         /* normalizing a piece went past norm_limit */
} enc;

/* A word character as the \\w of Rust's regex crate, which tokenizers' single_word uses: letters,
 * marks, decimal digits, letter numbers, connector punctuation, the joiners. */
static bool is_word_char(const char *s, size_t n)
{
    utf8proc_int32_t cp;
    if (utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp) <= 0)
        return false;
    const utf8proc_category_t c = utf8proc_category(cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) || (c >= UTF8PROC_CATEGORY_MN && c <= UTF8PROC_CATEGORY_ME) ||
           c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_PC || cp == 0x200C ||
           cp == 0x200D;
}

/* Unicode White_Space: the ASCII controls, U+0085 and the separators (Zs, Zl, Zp) */
static bool is_space_at(const char *s, size_t n, int *k)
{
    utf8proc_int32_t cp;
    utf8proc_ssize_t m = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    if (m <= 0)
        return false;
    *k = (int)m;
    const utf8proc_category_t c = utf8proc_category(cp);
    return (cp >= 0x09 && cp <= 0x0D) || cp == ' ' || cp == 0x85 || c == UTF8PROC_CATEGORY_ZS ||
           c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

/* Where the character ending at byte `at` starts (not before `start`). */
static size_t char_before(const char *s, size_t start, size_t at)
{
    size_t c = at - 1;
    while (c > start && ((unsigned char)s[c] & 0xC0) == 0x80)
        c--;
    return c;
}

/* Splits pieces [from a] on the added tokens of one kind (normalized or not): each match becomes
 * a piece with its id. Leftmost match, the longest at that place; lstrip/rstrip take the spaces
 * beside it into the match; single_word needs no word character on either side. */
static int split_added(enc *e, bool normalized)
{
    const rt_tokenizer *t = e->t;
    bool any = false;
    for (int i = 0; i < t->n_added; i++)
        any |= t->added[i].normalized == normalized;
    if (!any)
        return 0;
    e->b.n = 0;
    for (size_t pi = 0; pi < e->a.n; pi++) {
        piece p = e->a.v[pi];
        if (p.id >= 0) {
            if (pieces_push(&e->b, p))
                return -1;
            continue;
        }
        size_t start = p.off, at = p.off;
        const size_t end = p.off + p.len;
        bool first = p.first;
        while (at < end) {
            const char *s = e->arena.p;
            if (!t->added_first[(unsigned char)s[at]]) {
                at++;
                continue;
            }
            /* the longest token starting here (tokenizers' leftmost-longest Aho-Corasick) */
            int best = -1;
            size_t best_len = 0;
            for (int i = 0; i < t->n_added; i++) {
                const added_token *a = &t->added[i];
                if (a->normalized != normalized || a->plen > end - at || (best >= 0 && a->plen <= best_len) ||
                    memcmp(s + at, a->pattern, a->plen) != 0)
                    continue;
                best = i, best_len = a->plen;
            }
            if (best < 0) {
                at++;
                continue;
            }
            const added_token *a = &t->added[best];
            if (a->single_word && ((at > p.off && is_word_char(s + char_before(s, p.off, at), at - char_before(s, p.off, at))) ||
                                   (at + a->plen < end && is_word_char(s + at + a->plen, end - at - a->plen)))) {
                at += a->plen; /* not a word of its own: passed over, the search goes on after it */
                continue;
            }
            size_t m0 = at, m1 = at + a->plen;
            int k;
            if (a->lstrip)
                while (m0 > start) {
                    const size_t c = char_before(s, start, m0);
                    if (!is_space_at(s + c, m0 - c, &k))
                        break;
                    m0 = c;
                }
            if (a->rstrip)
                while (m1 < end && is_space_at(s + m1, end - m1, &k))
                    m1 += (size_t)k;
            if (m0 > start && pieces_push(&e->b, (piece){start, m0 - start, -1, first}))
                return -1;
            if (m0 > start)
                first = false;
            if (pieces_push(&e->b, (piece){m0, m1 - m0, a->id, false}))
                return -1;
            first = false;
            start = at = m1;
        }
        if (end > start && pieces_push(&e->b, (piece){start, end - start, -1, first}))
            return -1;
    }
    pieces tmp = e->a;
    e->a = e->b, e->b = tmp;
    return 0;
}

/* Appends s (n bytes) to the arena: its new offset in *off. */
static int arena_add(enc *e, const char *s, size_t n, size_t *off)
{
    *off = e->arena.n;
    return buf_add(&e->arena, s, n);
}

/* arena_add of a range of the arena itself (the arena may move) */
static int arena_copy(enc *e, size_t from, size_t n, size_t *off)
{
    if (buf_reserve(&e->arena, n + 1))
        return -1;
    return arena_add(e, e->arena.p + from, n, off);
}

/* The leftmost match of re in arena bytes [at, end): -1 when none. */
static int find(enc *e, const pcre2_code *re, size_t at, size_t end, size_t *m0, size_t *m1)
{
    /* every string here is valid UTF-8 (checked on the way in), so PCRE2 need not check it again
     * on each call, which would cost the whole subject each time */
    const int r = pcre2_match(re, (PCRE2_SPTR)e->arena.p, end, at, PCRE2_NO_UTF_CHECK, e->md, NULL);
    if (r < 0) /* PCRE2_ERROR_NOMATCH, or a resource limit: no (more) matches either way */
        return -1;
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
    *m0 = (size_t)ov[0], *m1 = (size_t)ov[1];
    return 0;
}

static int replace_all(enc *e, piece *p, const pcre2_code *re, const char *content, size_t limit)
{
    buf o = {0};
    const size_t clen = strlen(content);
    size_t at = p->off;
    const size_t end = p->off + p->len;
    while (at <= end) {
        const unsigned char *s = (const unsigned char *)e->arena.p;
        size_t m0, m1;
        if (find(e, re, at, end, &m0, &m1))
            break;
        if (m1 == m0) { /* an empty match replaces nothing: step over one character */
            if (m0 >= end)
                break;
            int k = utf8_len(s + m0, end - m0);
            m1 = m0 + (size_t)(k ? k : 1);
            if (buf_add(&o, e->arena.p + at, m1 - at))
                goto oom;
            at = m1;
            continue;
        }
        if (buf_add(&o, e->arena.p + at, m0 - at) || buf_add(&o, content, clen))
            goto oom;
        at = m1;
        if (o.n > limit) {
            e->runaway = true;
            goto oom;
        }
    }
    if (at < end && buf_add(&o, e->arena.p + at, end - at))
        goto oom;
    int rc = arena_add(e, o.p ? o.p : "", o.n, &p->off);
    p->len = o.n;
    free(o.p);
    return rc;
oom:
    free(o.p);
    return -1;
}

/* The normalizers over one piece; -1 when memory ran out or the piece grew past norm_limit
 * (e->runaway). */
static int normalize_piece(enc *e, piece *p)
{
    const rt_tokenizer *t = e->t;
    const size_t limit = rt_tok_growth_limit(p->len);
    for (int i = 0; i < t->n_norm; i++) {
        if (p->len > limit) {
            e->runaway = true;
            return -1;
        }
        const norm_step *s = &t->norm[i];
        switch (s->kind) {
        case NORM_NFC:
        case NORM_NFD:
        case NORM_NFKC:
        case NORM_NFKD:
        case NORM_LOWERCASE: {
            if (p->len == 0)
                break;
            int opt = UTF8PROC_STABLE;
            opt |= s->kind == NORM_NFC || s->kind == NORM_NFKC ? UTF8PROC_COMPOSE : 0;
            opt |= s->kind == NORM_NFD || s->kind == NORM_NFKD ? UTF8PROC_DECOMPOSE : 0;
            opt |= s->kind == NORM_NFKC || s->kind == NORM_NFKD ? UTF8PROC_COMPAT : 0;
            utf8proc_uint8_t *out = NULL;
            utf8proc_ssize_t n;
            if (s->kind == NORM_LOWERCASE) {
                buf o = {0};
                for (size_t at = p->off; at < p->off + p->len;) {
                    utf8proc_int32_t cp;
                    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)e->arena.p + at,
                                                          (utf8proc_ssize_t)(p->off + p->len - at), &cp);
                    utf8proc_uint8_t c[4];
                    utf8proc_ssize_t m = utf8proc_encode_char(utf8proc_tolower(cp), c);
                    if (buf_add(&o, c, (size_t)m)) {
                        free(o.p);
                        return -1;
                    }
                    at += (size_t)(k > 0 ? k : 1);
                }
                int rc = arena_add(e, o.p ? o.p : "", o.n, &p->off);
                p->len = o.n;
                free(o.p);
                if (rc)
                    return -1;
                break;
            }
            n = utf8proc_map((const utf8proc_uint8_t *)e->arena.p + p->off, (utf8proc_ssize_t)p->len, &out,
                             (utf8proc_option_t)opt);
            if (n < 0)
                return -1;
            int rc = arena_add(e, (const char *)out, (size_t)n, &p->off);
            p->len = (size_t)n;
            free(out);
            if (rc)
                return -1;
            break;
        }
        case NORM_PREPEND:
            if (p->len > 0) {
                size_t off;
                const size_t k = strlen(s->text);
                if (arena_add(e, s->text, k, &off) || arena_copy(e, p->off, p->len, &(size_t){0}))
                    return -1;
                p->off = off, p->len += k;
            }
            break;
        case NORM_REPLACE:
            if (replace_all(e, p, s->re, s->content, limit))
                return -1;
            break;
        }
    }
    if (p->len > limit) {
        e->runaway = true;
        return -1;
    }
    return 0;
}

/* One Split step over a piece: the regex's matches and the text between them, as the behaviour says. */
static int split_regex(enc *e, const piece *p, const pcre2_code *re, split_behavior behavior)
{
    size_t at = p->off, last = p->off; /* last: where the current unmatched text starts */
    const size_t end = p->off + p->len;
    size_t pending = (size_t)-1; /* MergedWithNext: the start of a match waiting for what follows */
    while (at < end) {
        size_t m0, m1;
        if (find(e, re, at, end, &m0, &m1))
            break;
        if (m1 == m0) { /* an empty match splits nothing */
            int k = utf8_len((const unsigned char *)e->arena.p + m0, end - m0);
            at = m0 + (size_t)(k ? k : 1);
            continue;
        }
        switch (behavior) {
        case SPLIT_REMOVED:
            if (m0 > last && pieces_push(&e->b, (piece){last, m0 - last, -1, p->first}))
                return -1;
            break;
        case SPLIT_ISOLATED:
            if (m0 > last && pieces_push(&e->b, (piece){last, m0 - last, -1, p->first}))
                return -1;
            if (pieces_push(&e->b, (piece){m0, m1 - m0, -1, p->first}))
                return -1;
            break;
        case SPLIT_MERGED_PREV: /* the match ends the piece before it */
            if (pieces_push(&e->b, (piece){last, m1 - last, -1, p->first}))
                return -1;
            break;
        case SPLIT_MERGED_NEXT: /* the match starts the next piece */
            if (pending != (size_t)-1) {
                if (pieces_push(&e->b, (piece){pending, m0 - pending, -1, p->first}))
                    return -1;
            } else if (m0 > last && pieces_push(&e->b, (piece){last, m0 - last, -1, p->first})) {
                return -1;
            }
            pending = m0;
            break;
        }
        last = at = m1;
    }
    if (behavior == SPLIT_MERGED_NEXT && pending != (size_t)-1)
        return pieces_push(&e->b, (piece){pending, end - pending, -1, p->first});
    if (end > last && pieces_push(&e->b, (piece){last, end - last, -1, p->first}))
        return -1;
    return 0;
}

static int bytelevel_map(enc *e, piece *p)
{
    const size_t off = e->arena.n;
    if (buf_reserve(&e->arena, 2 * p->len + 1))
        return -1;
    char *dst = e->arena.p + off;
    const unsigned char *src = (const unsigned char *)e->arena.p + p->off;
    for (size_t i = 0; i < p->len; i++) {
        const char *c = e->t->byte_char[src[i]];
        *dst++ = c[0];
        if (c[1])
            *dst++ = c[1];
    }
    *dst = '\0';
    e->arena.n = (size_t)(dst - e->arena.p);
    p->off = off, p->len = e->arena.n - off;
    return 0;
}

static int pre_tokenize(enc *e)
{
    const rt_tokenizer *t = e->t;
    for (int si = 0; si < t->n_pre; si++) {
        const pre_step *s = &t->pre[si];
        e->b.n = 0;
        for (size_t pi = 0; pi < e->a.n; pi++) {
            piece p = e->a.v[pi];
            if (p.id >= 0) {
                if (pieces_push(&e->b, p))
                    return -1;
                continue;
            }
            switch (s->kind) {
            case PRE_SPLIT:
                if (split_regex(e, &p, s->re, s->behavior))
                    return -1;
                break;
            case PRE_BYTELEVEL: {
                if (s->add_prefix_space && (p.len == 0 || e->arena.p[p.off] != ' ')) {
                    size_t off;
                    if (arena_add(e, " ", 1, &off) || arena_copy(e, p.off, p.len, &(size_t){0}))
                        return -1;
                    p.off = off, p.len += 1;
                }
                const size_t first = e->b.n;
                if (s->re) {
                    if (split_regex(e, &p, s->re, SPLIT_ISOLATED))
                        return -1;
                } else if (pieces_push(&e->b, p)) {
                    return -1;
                }
                for (size_t i = first; i < e->b.n; i++)
                    if (bytelevel_map(e, &e->b.v[i]))
                        return -1;
                break;
            }
            case PRE_METASPACE: {
                /* spaces -> the replacement; the replacement prepended as the scheme says */
                const size_t rl = strlen(s->repl);
                buf o = {0};
                const bool prepend = s->scheme == PREPEND_ALWAYS || (s->scheme == PREPEND_FIRST && p.first);
                if (prepend && (p.len < rl || memcmp(e->arena.p + p.off, s->repl, rl) != 0) && buf_add(&o, s->repl, rl))
                    goto oom;
                for (size_t i = 0; i < p.len; i++) {
                    const char c = e->arena.p[p.off + i];
                    if (c == ' ' ? buf_add(&o, s->repl, rl) : buf_add(&o, &c, 1))
                        goto oom;
                }
                piece q = {0, o.n, -1, p.first};
                if (arena_add(e, o.p ? o.p : "", o.n, &q.off))
                    goto oom;
                free(o.p);
                if (!s->split) {
                    if (pieces_push(&e->b, q))
                        return -1;
                    break;
                }
                /* split before each replacement (MergedWithNext) */
                size_t start = q.off;
                for (size_t i = q.off + 1; i + rl <= q.off + q.len; i++)
                    if (memcmp(e->arena.p + i, s->repl, rl) == 0) {
                        if (pieces_push(&e->b, (piece){start, i - start, -1, p.first}))
                            return -1;
                        start = i;
                    }
                if (q.off + q.len > start && pieces_push(&e->b, (piece){start, q.off + q.len - start, -1, p.first}))
                    return -1;
                break;
            oom:
                free(o.p);
                return -1;
            }
            }
        }
        pieces tmp = e->a;
        e->a = e->b, e->b = tmp;
    }
    return 0;
}

static void enc_free(enc *e)
{
    free(e->arena.p), free(e->a.v), free(e->b.v);
    rt_bpe_free(&e->bpe);
    pcre2_match_data_free(e->md);
}

/* Each added token's pattern: its content, or for a normalized one the content normalized as the
 * text it is matched in will be (tokenizers builds its normalized trie so). */
int rt_tok_added_patterns(rt_tokenizer *t, base_err *err)
{
    for (int i = 0; i < t->n_added; i++) {
        added_token *a = &t->added[i];
        enc e = {.t = t};
        piece p = {0, a->len, -1, true};
        e.md = pcre2_match_data_create(1, NULL);
        const bool ok = e.md && buf_add(&e.arena, a->content, a->len) == 0 &&
                        (!a->normalized || normalize_piece(&e, &p) == 0) && p.len > 0 &&
                        (a->pattern = strndup(e.arena.p + p.off, p.len)) != NULL;
        const bool runaway = e.runaway;
        enc_free(&e);
        if (!ok && runaway)
            return base_errf(err, "added_tokens[%d]: normalizing \"%.40s\" (%zu bytes) made more than %zu bytes: "
                                  "the normalizer's steps multiply the text", i, a->content, a->len, rt_tok_growth_limit(a->len));
        if (!ok)
            return base_errf(err, "added_tokens[%d]: \"%.40s\" normalizes to nothing, or out of memory", i, a->content);
        a->plen = p.len;
        t->added_first[(unsigned char)a->pattern[0]] = true;
    }
    return 0;
}

int rt_tok_check_normalizer(const rt_tokenizer *t, base_err *err)
{
    /* every printable ASCII character, the white space, a few beyond */
    char probe[160];
    size_t n = 0;
    for (int c = ' '; c < 127; c++)
        probe[n++] = (char)c;
    static const char more[] = "\t\n\r \xc3\xa9 \xe4\xb8\xad \xe2\x96\x81 \xef\xb7\xba";
    memcpy(probe + n, more, sizeof more - 1);
    n += sizeof more - 1;
    enc e = {.t = t};
    piece p = {0, n, -1, true};
    e.md = pcre2_match_data_create(1, NULL);
    const bool ok = e.md && buf_add(&e.arena, probe, n) == 0 && normalize_piece(&e, &p) == 0;
    const bool runaway = e.runaway;
    enc_free(&e);
    if (!ok && runaway)
        return base_errf(err, "normalizer: its steps make more than %zu bytes of a %zu-byte text (a Replace whose "
                              "content holds its own pattern, repeated?)", rt_tok_growth_limit(n), n);
    return ok ? 0 : base_errf(err, "normalizer: out of memory normalizing a %zu-byte text", n);
}

int rt_tokenizer_encode(const rt_tokenizer *t, const char *text, size_t len, bool add_special, int32_t **ids,
                        base_err *err)
{
    *ids = NULL;
    for (size_t i = 0; i < len;) {
        const int k = utf8_len((const unsigned char *)text + i, len - i);
        if (k == 0)
            return base_errf(err, "the text is not valid UTF-8 at byte %zu", i);
        i += (size_t)k;
    }
    enc e = {.t = t};
    e.md = pcre2_match_data_create(1, NULL);
    if (!e.md || buf_add(&e.arena, text, len) || pieces_push(&e.a, (piece){0, len, -1, true}))
        goto oom;
    if (split_added(&e, false))
        goto oom;
    /* normalize every text piece, then the normalized added tokens, then the words */
    for (size_t i = 0; i < e.a.n; i++)
        if (e.a.v[i].id < 0 && normalize_piece(&e, &e.a.v[i]))
            goto oom;
    if (split_added(&e, true) || pre_tokenize(&e))
        goto oom;
    if (add_special)
        for (int i = 0; i < t->n_prefix; i++)
            if (ids_push(&e.out, t->prefix[i]))
                goto oom;
    for (size_t i = 0; i < e.a.n; i++) {
        const piece *p = &e.a.v[i];
        if (p->id >= 0 ? ids_push(&e.out, p->id) : rt_bpe_word(t, &e.bpe, e.arena.p + p->off, p->len, &e.out))
            goto oom;
    }
    if (add_special)
        for (int i = 0; i < t->n_suffix; i++)
            if (ids_push(&e.out, t->suffix[i]))
                goto oom;
    *ids = e.out.v;
    e.out.v = NULL;
    const int n = (int)e.out.n;
    enc_free(&e);
    return n;
oom:
    free(e.out.v);
    enc_free(&e);
    if (e.runaway)
        return base_errf(err, "the tokenizer's normalizer grows a piece of this text more than %dx (a Replace "
                              "whose content holds its own pattern?): refused", RT_TOK_GROWTH);
    return base_errf(err, "out of memory");
}
