/* Hugging Face tokenizer.json in C (tokenizer.h). The pipeline is the one `tokenizers` runs:
 *
 *   text -> added tokens split out (non-normalized ones on the raw text) -> each other segment
 *   normalized -> normalized added tokens split out -> pre-tokenized into words -> each word
 *   through the BPE model -> ids -> the post-processor's special tokens around them.
 *
 * Decoding maps ids back to token strings (added tokens by their content) and runs the decoder
 * chain over them. Strings are UTF-8 throughout; words live in one growing buffer per call (an
 * arena of byte ranges), so encoding allocates a few buffers, not one per word. */
#include "runtime/tokenizer.h"

#include <cjson/cJSON.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "base/file.h"

/* ---- small containers ---- */

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static int buf_reserve(buf *b, size_t more)
{
    if (b->n + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap * 2 : 256;
    while (cap < b->n + more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p, b->cap = cap;
    return 0;
}

static int buf_add(buf *b, const void *s, size_t n)
{
    if (buf_reserve(b, n + 1))
        return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

typedef struct ids_vec {
    int32_t *v;
    size_t n, cap;
} ids_vec;

static int ids_push(ids_vec *a, int32_t id)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v)
            return -1;
        a->v = v, a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

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

/* String -> int32 map, open addressing over FNV-1a hashes; keys point into the owner's storage.
 * A slot holds the key's hash bits, so a probe reads its string only when they agree. */
typedef struct str_slot {
    const char *key; /* NULL: empty */
    uint32_t len, hash;
    int32_t val;
} str_slot;

typedef struct str_map {
    str_slot *slot;
    size_t cap; /* a power of two */
    size_t n;
} str_map;

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static int str_map_init(str_map *m, size_t expect)
{
    size_t cap = 16;
    while (cap < expect * 2)
        cap *= 2;
    m->slot = calloc(cap, sizeof *m->slot);
    m->cap = cap, m->n = 0;
    return m->slot ? 0 : -1;
}

static void str_map_free(str_map *m)
{
    free(m->slot);
}

static int32_t str_map_get(const str_map *m, const char *s, size_t n)
{
    if (!m->cap)
        return -1;
    const uint64_t h = fnv1a(s, n);
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const str_slot *e = &m->slot[i];
        if (!e->key)
            return -1;
        if (e->hash == (uint32_t)(h >> 32) && e->len == n && memcmp(e->key, s, n) == 0)
            return e->val;
    }
}

/* Inserts (the map never fills: sized for twice its entries): true, or false when the key is
 * there already (it keeps its value). */
static bool str_map_put(str_map *m, const char *s, size_t n, int32_t v)
{
    const uint64_t h = fnv1a(s, n);
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        str_slot *e = &m->slot[i];
        if (!e->key) {
            *e = (str_slot){s, (uint32_t)n, (uint32_t)(h >> 32), v};
            m->n++;
            return true;
        }
        if (e->hash == (uint32_t)(h >> 32) && e->len == n && memcmp(e->key, s, n) == 0)
            return false;
    }
}

/* (left id, right id) -> merge rank and the merged token's id, one slot a cache line's quarter. */
typedef struct merge_slot {
    uint64_t key; /* (left + 1) << 32 | right; 0 = empty */
    int32_t rank, merged;
} merge_slot;

typedef struct merge_map {
    merge_slot *slot;
    size_t cap;
} merge_map;

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static bool merge_get(const merge_map *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged)
{
    if (!m->cap || a < 0 || b < 0)
        return false;
    const uint64_t k = ((uint64_t)a + 1) << 32 | (uint32_t)b;
    for (size_t i = mix64(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const merge_slot *e = &m->slot[i];
        if (e->key == 0)
            return false;
        if (e->key == k) {
            *rank = e->rank, *merged = e->merged;
            return true;
        }
    }
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid there. */
static inline int utf8_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate(s, (utf8proc_ssize_t)(n < 4 ? n : 4), &cp);
    return k > 0 ? (int)k : 0;
}

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

/* ---- the parts of the pipeline ---- */

typedef enum { NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD, NORM_LOWERCASE, NORM_PREPEND, NORM_REPLACE } norm_kind;

typedef struct norm_step {
    norm_kind kind;
    char *text;    /* Prepend: what is prepended; Replace: the literal pattern (NULL with a regex) */
    char *content; /* Replace: the replacement */
    pcre2_code *re; /* Replace: the pattern, compiled (a literal as a literal) */
} norm_step;

/* Split's behaviours, as tokenizers names them */
typedef enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT } split_behavior;

typedef enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE } pre_kind;

typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } prepend_scheme;

typedef struct pre_step {
    pre_kind kind;
    pcre2_code *re;       /* Split (a literal pattern compiled as a literal); ByteLevel with use_regex */
    split_behavior behavior;
    bool add_prefix_space; /* ByteLevel */
    char repl[8];          /* Metaspace: the replacement character, UTF-8 */
    prepend_scheme scheme; /* Metaspace */
    bool split;            /* Metaspace: split on the replacement */
} pre_step;

typedef enum { DEC_BYTELEVEL, DEC_METASPACE, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP } dec_kind;

typedef struct dec_step {
    dec_kind kind;
    char *from, *to;       /* Replace (a literal pattern) */
    char repl[8];          /* Metaspace */
    prepend_scheme scheme; /* Metaspace */
    char strip[8];         /* Strip: the character */
    int start, stop;       /* Strip: how many at most from each end */
} dec_step;

typedef struct added_token {
    char *content;
    size_t len;
    char *pattern; /* what is matched: the content, normalized for a normalized token */
    size_t plen;
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
} added_token;

#define MAX_STEPS 16
#define MAX_TEMPLATE 16

struct rt_tokenizer {
    /* the model: vocabulary, merges, options */
    char *strings;       /* every vocabulary string, NUL-separated */
    const char **tok;    /* (n_vocab) id -> string (NULL for an id the vocabulary skips) */
    uint32_t *tok_len;
    int n_vocab;         /* ids of the model are below this */
    str_map vocab;
    merge_map merges;
    bool byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;      /* -1: none */
    int32_t byte_id[256]; /* byte fallback: the id of "<0xXX>", -1 when missing */

    norm_step norm[MAX_STEPS];
    int n_norm;
    pre_step pre[MAX_STEPS];
    int n_pre;
    dec_step dec[MAX_STEPS];
    int n_dec;
    bool has_decoder;

    added_token *added;
    int n_added;
    str_map added_map; /* content -> index in added */
    bool added_first[256]; /* a byte some added token starts with */
    int n_ids;         /* max id + 1 over vocabulary and added tokens */

    /* the post-processor's single template: ids before and after the sequence */
    int32_t prefix[MAX_TEMPLATE], suffix[MAX_TEMPLATE];
    int n_prefix, n_suffix;

    char byte_char[256][3]; /* ByteLevel: each byte's character, UTF-8 (NUL-terminated) */
    int16_t char_byte[324]; /* ByteLevel: a character below U+0144 -> its byte, -1 otherwise */
    int32_t ascii_id[128];  /* the vocabulary id of each one-byte character, -1 if none */
    int32_t latin_id[256];  /* of U+0080 .. U+017F (ByteLevel's characters), -1 if none */
};

/* ---- loading ---- */

/* Patterns are compiled by PCRE2 for UTF-8 with Unicode properties (\\p{L}, \\s as Unicode White_Space
 * (UCP)) and JIT-compiled where the platform allows; matching is PCRE2's, as `tokenizers`' is
 * Oniguruma's: the same splits on the tokenizer corpus (unit.tokenizer), about 4x the speed. */
static int compile_pattern(pcre2_code **re, const char *pat, size_t len, uint32_t flags, const char *where,
                           base_err *err)
{
    int code;
    PCRE2_SIZE at;
    /* PCRE2_LITERAL admits no UCP (nothing in a literal needs it) */
    *re = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | (flags & PCRE2_LITERAL ? 0 : PCRE2_UCP) | flags, &code, &at,
                        NULL);
    if (!*re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return base_errf(err, "%s: regex does not compile at offset %zu: %s", where, (size_t)at, (const char *)msg);
    }
    pcre2_jit_compile(*re, PCRE2_JIT_COMPLETE); /* without a JIT the interpreter matches alike */
    return 0;
}

static int compile_regex(pcre2_code **re, const char *pat, size_t len, const char *where, base_err *err)
{
    return compile_pattern(re, pat, len, 0, where, err);
}

static int compile_literal(pcre2_code **re, const char *s, const char *where, base_err *err)
{
    return compile_pattern(re, s, strlen(s), PCRE2_LITERAL, where, err);
}

static bool valid_utf8(const char *s)
{
    const size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        const int k = utf8_len((const unsigned char *)s + i, n - i);
        if (k == 0)
            return false;
        i += (size_t)k;
    }
    return true;
}

static const char *jstr(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool jbool(const cJSON *o, const char *name, bool dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

/* {"String": s} or {"Regex": r}: a compiled regex; *literal gets s for a string pattern. */
static int load_pattern(const cJSON *o, const char *where, pcre2_code **re, const char **literal, base_err *err)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const char *s = jstr(p, "String"), *r = jstr(p, "Regex");
    if (literal)
        *literal = s;
    if (s)
        return compile_literal(re, s, where, err);
    if (r)
        return compile_regex(re, r, strlen(r), where, err);
    return base_errf(err, "%s.pattern: neither {\"String\": ...} nor {\"Regex\": ...}", where);
}

static int load_normalizer(rt_tokenizer *t, const cJSON *n, const char *where, base_err *err)
{
    if (cJSON_IsNull(n) || !n)
        return 0;
    const char *type = jstr(n, "type");
    if (!type)
        return base_errf(err, "%s: no \"type\"", where);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list))
            return base_errf(err, "%s.normalizers: not a list", where);
        int i = 0;
        for (const cJSON *e = list->child; e; e = e->next, i++) {
            char w[128];
            snprintf(w, sizeof w, "%s.normalizers[%d]", where, i);
            if (load_normalizer(t, e, w, err))
                return -1;
        }
        return 0;
    }
    if (t->n_norm == MAX_STEPS)
        return base_errf(err, "%s: more than %d normalizers", where, MAX_STEPS);
    norm_step *s = &t->norm[t->n_norm];
    memset(s, 0, sizeof *s);
    if (strcmp(type, "NFC") == 0) {
        s->kind = NORM_NFC;
    } else if (strcmp(type, "NFD") == 0) {
        s->kind = NORM_NFD;
    } else if (strcmp(type, "NFKC") == 0) {
        s->kind = NORM_NFKC;
    } else if (strcmp(type, "NFKD") == 0) {
        s->kind = NORM_NFKD;
    } else if (strcmp(type, "Lowercase") == 0) {
        s->kind = NORM_LOWERCASE;
    } else if (strcmp(type, "Prepend") == 0) {
        const char *p = jstr(n, "prepend");
        if (!p)
            return base_errf(err, "%s: Prepend without a \"prepend\" string", where);
        s->kind = NORM_PREPEND;
        s->text = strdup(p);
    } else if (strcmp(type, "Replace") == 0) {
        const char *c = jstr(n, "content"), *lit = NULL;
        if (!c)
            return base_errf(err, "%s: Replace without a \"content\" string", where);
        s->kind = NORM_REPLACE;
        if (load_pattern(n, where, &s->re, &lit, err))
            return -1;
        s->content = strdup(c);
    } else {
        return base_errf(err, "%s: normalizer type \"%s\" is not supported (NFC, NFD, NFKC, NFKD, Lowercase, "
                              "Prepend, Replace, Sequence are)",
                         where, type);
    }
    t->n_norm++;
    return 0;
}

static int load_scheme(const cJSON *o, const char *where, prepend_scheme *out, base_err *err)
{
    const char *s = jstr(o, "prepend_scheme");
    if (!s) /* older files: add_prefix_space */
        *out = jbool(o, "add_prefix_space", true) ? PREPEND_ALWAYS : PREPEND_NEVER;
    else if (strcmp(s, "always") == 0)
        *out = PREPEND_ALWAYS;
    else if (strcmp(s, "first") == 0)
        *out = PREPEND_FIRST;
    else if (strcmp(s, "never") == 0)
        *out = PREPEND_NEVER;
    else
        return base_errf(err, "%s.prepend_scheme: \"%s\" (always, first or never)", where, s);
    return 0;
}

static int load_char(const cJSON *o, const char *name, const char *where, char out[8], base_err *err)
{
    const char *s = jstr(o, name);
    if (!s || !*s)
        return base_errf(err, "%s: no \"%s\" character", where, name);
    const int k = utf8_len((const unsigned char *)s, strlen(s));
    if (k == 0 || s[k] != '\0')
        return base_errf(err, "%s.%s: \"%s\" is not one character", where, name, s);
    memcpy(out, s, (size_t)k + 1);
    return 0;
}

/* GPT-2's pre-tokenization regex, used by ByteLevel when use_regex is set */
static const char gpt2_regex[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int load_pre(rt_tokenizer *t, const cJSON *n, const char *where, base_err *err)
{
    if (cJSON_IsNull(n) || !n)
        return 0;
    const char *type = jstr(n, "type");
    if (!type)
        return base_errf(err, "%s: no \"type\"", where);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "pretokenizers");
        if (!cJSON_IsArray(list))
            return base_errf(err, "%s.pretokenizers: not a list", where);
        int i = 0;
        for (const cJSON *e = list->child; e; e = e->next, i++) {
            char w[128];
            snprintf(w, sizeof w, "%s.pretokenizers[%d]", where, i);
            if (load_pre(t, e, w, err))
                return -1;
        }
        return 0;
    }
    if (t->n_pre == MAX_STEPS)
        return base_errf(err, "%s: more than %d pre-tokenizers", where, MAX_STEPS);
    pre_step *s = &t->pre[t->n_pre];
    memset(s, 0, sizeof *s);
    if (strcmp(type, "Split") == 0) {
        s->kind = PRE_SPLIT;
        const char *b = jstr(n, "behavior");
        if (!b)
            return base_errf(err, "%s: Split without a \"behavior\"", where);
        if (strcmp(b, "Removed") == 0)
            s->behavior = SPLIT_REMOVED;
        else if (strcmp(b, "Isolated") == 0)
            s->behavior = SPLIT_ISOLATED;
        else if (strcmp(b, "MergedWithPrevious") == 0)
            s->behavior = SPLIT_MERGED_PREV;
        else if (strcmp(b, "MergedWithNext") == 0)
            s->behavior = SPLIT_MERGED_NEXT;
        else
            return base_errf(err, "%s.behavior: \"%s\" is not supported (Removed, Isolated, MergedWithPrevious, "
                                  "MergedWithNext are)",
                             where, b);
        if (jbool(n, "invert", false))
            return base_errf(err, "%s.invert: true is not supported", where);
        if (load_pattern(n, where, &s->re, NULL, err))
            return -1;
    } else if (strcmp(type, "ByteLevel") == 0) {
        s->kind = PRE_BYTELEVEL;
        s->add_prefix_space = jbool(n, "add_prefix_space", true);
        if (jbool(n, "use_regex", true) && compile_regex(&s->re, gpt2_regex, strlen(gpt2_regex), where, err))
            return -1;
    } else if (strcmp(type, "Metaspace") == 0) {
        s->kind = PRE_METASPACE;
        if (load_char(n, "replacement", where, s->repl, err) || load_scheme(n, where, &s->scheme, err))
            return -1;
        s->split = jbool(n, "split", true);
    } else {
        return base_errf(err, "%s: pre-tokenizer type \"%s\" is not supported (Split, ByteLevel, Metaspace, "
                              "Sequence are)",
                         where, type);
    }
    t->n_pre++;
    return 0;
}

static int load_decoder(rt_tokenizer *t, const cJSON *n, const char *where, base_err *err)
{
    if (cJSON_IsNull(n) || !n)
        return 0;
    t->has_decoder = true;
    const char *type = jstr(n, "type");
    if (!type)
        return base_errf(err, "%s: no \"type\"", where);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "decoders");
        if (!cJSON_IsArray(list))
            return base_errf(err, "%s.decoders: not a list", where);
        int i = 0;
        for (const cJSON *e = list->child; e; e = e->next, i++) {
            char w[128];
            snprintf(w, sizeof w, "%s.decoders[%d]", where, i);
            if (load_decoder(t, e, w, err))
                return -1;
        }
        return 0;
    }
    if (t->n_dec == MAX_STEPS)
        return base_errf(err, "%s: more than %d decoders", where, MAX_STEPS);
    dec_step *s = &t->dec[t->n_dec];
    memset(s, 0, sizeof *s);
    if (strcmp(type, "ByteLevel") == 0) {
        s->kind = DEC_BYTELEVEL;
    } else if (strcmp(type, "Metaspace") == 0) {
        s->kind = DEC_METASPACE;
        if (load_char(n, "replacement", where, s->repl, err) || load_scheme(n, where, &s->scheme, err))
            return -1;
    } else if (strcmp(type, "Replace") == 0) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *from = jstr(p, "String"), *to = jstr(n, "content");
        if (!from || !*from || !to)
            return base_errf(err, "%s: a Replace decoder needs a {\"String\": ...} pattern and a content", where);
        s->kind = DEC_REPLACE;
        s->from = strdup(from), s->to = strdup(to);
    } else if (strcmp(type, "ByteFallback") == 0) {
        s->kind = DEC_BYTEFALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        s->kind = DEC_FUSE;
    } else if (strcmp(type, "Strip") == 0) {
        s->kind = DEC_STRIP;
        if (load_char(n, "content", where, s->strip, err))
            return -1;
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(n, "start"), *b = cJSON_GetObjectItemCaseSensitive(n, "stop");
        s->start = cJSON_IsNumber(a) ? a->valueint : 0;
        s->stop = cJSON_IsNumber(b) ? b->valueint : 0;
    } else {
        return base_errf(err, "%s: decoder type \"%s\" is not supported (ByteLevel, Metaspace, Replace, "
                              "ByteFallback, Fuse, Strip, Sequence are)",
                         where, type);
    }
    t->n_dec++;
    return 0;
}

static int32_t lookup_token(const rt_tokenizer *t, const char *s)
{
    int32_t a = str_map_get(&t->added_map, s, strlen(s));
    if (a >= 0)
        return t->added[a].id;
    return str_map_get(&t->vocab, s, strlen(s));
}

/* The text of an id (an added token's content, else the vocabulary's entry); NULL for none. */
static const char *token_of(const rt_tokenizer *t, int32_t id, size_t *len, bool *special)
{
    for (int j = 0; j < t->n_added; j++) /* few added tokens: a scan */
        if (t->added[j].id == id) {
            if (len)
                *len = t->added[j].len;
            if (special)
                *special = t->added[j].special;
            return t->added[j].content;
        }
    if (id >= 0 && id < t->n_vocab && t->tok[id]) {
        if (len)
            *len = t->tok_len[id];
        if (special)
            *special = false;
        return t->tok[id];
    }
    return NULL;
}

/* TemplateProcessing's "single": SpecialToken pieces before and after the Sequence. */
static int load_template(rt_tokenizer *t, const cJSON *n, const char *where, base_err *err)
{
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(n, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(n, "special_tokens");
    if (!cJSON_IsArray(single))
        return base_errf(err, "%s.single: not a list", where);
    bool seen_seq = false;
    int i = 0;
    for (const cJSON *e = single->child; e; e = e->next, i++) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
        if (cJSON_GetObjectItemCaseSensitive(e, "Sequence")) {
            if (seen_seq)
                return base_errf(err, "%s.single[%d]: a second sequence in a single template", where, i);
            seen_seq = true;
            continue;
        }
        const char *name = jstr(sp, "id");
        if (!name)
            return base_errf(err, "%s.single[%d]: neither a SpecialToken nor a Sequence", where, i);
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(specials, name), "ids");
        if (!cJSON_IsArray(ids))
            return base_errf(err, "%s.special_tokens: no ids for \"%s\"", where, name);
        for (const cJSON *id = ids->child; id; id = id->next) {
            if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= t->n_ids ||
                !token_of(t, (int32_t)id->valuedouble, NULL, NULL))
                return base_errf(err, "%s.special_tokens[\"%s\"]: id %g is no token of the vocabulary", where, name,
                                 cJSON_IsNumber(id) ? id->valuedouble : -1.0);
            int32_t *dst = seen_seq ? t->suffix : t->prefix;
            int *cnt = seen_seq ? &t->n_suffix : &t->n_prefix;
            if (*cnt == MAX_TEMPLATE)
                return base_errf(err, "%s: more than %d special tokens on one side", where, MAX_TEMPLATE);
            dst[(*cnt)++] = (int32_t)id->valuedouble;
        }
    }
    return 0;
}

static int load_post(rt_tokenizer *t, const cJSON *n, const char *where, base_err *err)
{
    if (cJSON_IsNull(n) || !n)
        return 0;
    const char *type = jstr(n, "type");
    if (!type)
        return base_errf(err, "%s: no \"type\"", where);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "processors");
        if (!cJSON_IsArray(list))
            return base_errf(err, "%s.processors: not a list", where);
        int i = 0;
        for (const cJSON *e = list->child; e; e = e->next, i++) {
            char w[128];
            snprintf(w, sizeof w, "%s.processors[%d]", where, i);
            if (load_post(t, e, w, err))
                return -1;
        }
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0) /* offsets only: no ids change */
        return 0;
    if (strcmp(type, "TemplateProcessing") == 0)
        return load_template(t, n, where, err);
    return base_errf(err, "%s: post-processor type \"%s\" is not supported (TemplateProcessing, ByteLevel, "
                          "Sequence are)",
                     where, type);
}

static void bytelevel_tables(rt_tokenizer *t)
{
    /* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the others for
     * U+0100 on, in byte order */
    int n = 0;
    for (int i = 0; i < 324; i++)
        t->char_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        const bool self = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        const int cp = self ? b : 256 + n++;
        utf8proc_uint8_t s[4];
        const utf8proc_ssize_t k = utf8proc_encode_char(cp, s);
        memcpy(t->byte_char[b], s, (size_t)k);
        t->byte_char[b][k] = '\0';
        t->char_byte[cp] = (int16_t)b;
    }
}

static int load_model(rt_tokenizer *t, const cJSON *m, base_err *err)
{
    const char *type = jstr(m, "type");
    if (!type)
        return base_errf(err, "model: no \"type\"");
    if (strcmp(type, "BPE") != 0)
        return base_errf(err, "model: type \"%s\" is not supported (BPE is)", type);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble != 0.0)
        return base_errf(err, "model.dropout: %g (BPE dropout is for training; inference needs null)",
                         dropout->valuedouble);
    const char *csp = jstr(m, "continuing_subword_prefix"), *eow = jstr(m, "end_of_word_suffix");
    if ((csp && *csp) || (eow && *eow))
        return base_errf(err, "model: continuing_subword_prefix / end_of_word_suffix \"%s\" is not supported",
                         csp && *csp ? csp : eow);
    t->byte_fallback = jbool(m, "byte_fallback", false);
    t->fuse_unk = jbool(m, "fuse_unk", false);
    t->ignore_merges = jbool(m, "ignore_merges", false);

    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    if (!cJSON_IsObject(vocab))
        return base_errf(err, "model.vocab: not an object");
    size_t n = 0, bytes = 0;
    int32_t max_id = -1;
    for (const cJSON *e = vocab->child; e; e = e->next, n++) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (1 << 30) ||
            e->valuedouble != (double)(int32_t)e->valuedouble)
            return base_errf(err, "model.vocab[\"%.40s\"]: the id is not an integer in [0, 2^30)", e->string);
        bytes += strlen(e->string) + 1;
        if ((int32_t)e->valuedouble > max_id)
            max_id = (int32_t)e->valuedouble;
    }
    t->n_vocab = max_id + 1;
    t->strings = malloc(bytes ? bytes : 1);
    t->tok = calloc((size_t)t->n_vocab + 1, sizeof *t->tok);
    t->tok_len = calloc((size_t)t->n_vocab + 1, sizeof *t->tok_len);
    if (!t->strings || !t->tok || !t->tok_len || str_map_init(&t->vocab, n))
        return base_errf(err, "out of memory");
    char *p = t->strings;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        const size_t k = strlen(e->string);
        const int32_t id = (int32_t)e->valuedouble;
        memcpy(p, e->string, k + 1);
        if (t->tok[id])
            return base_errf(err, "model.vocab: id %d given to \"%.40s\" and \"%.40s\"", id, t->tok[id], p);
        t->tok[id] = p, t->tok_len[id] = (uint32_t)k;
        if (!str_map_put(&t->vocab, p, k, id))
            return base_errf(err, "model.vocab: \"%.40s\" twice", p);
        p += k + 1;
    }
    const char *unk = jstr(m, "unk_token");
    t->unk_id = unk ? str_map_get(&t->vocab, unk, strlen(unk)) : -1;
    if (unk && t->unk_id < 0)
        return base_errf(err, "model.unk_token: \"%s\" is not in the vocabulary", unk);
    for (int c = 0; c < 128 + 256; c++) { /* single characters: looked up without hashing */
        utf8proc_uint8_t u[4];
        const utf8proc_ssize_t k = utf8proc_encode_char(c, u);
        const int32_t id = str_map_get(&t->vocab, (const char *)u, (size_t)k);
        if (c < 128)
            t->ascii_id[c] = id;
        else
            t->latin_id[c - 128] = id;
    }
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        t->byte_id[b] = str_map_get(&t->vocab, s, strlen(s));
    }

    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    if (!cJSON_IsArray(merges))
        return base_errf(err, "model.merges: not a list");
    const int nm = cJSON_GetArraySize(merges);
    size_t cap = 16;
    while (cap < (size_t)nm * 2)
        cap *= 2;
    t->merges.slot = calloc(cap, sizeof *t->merges.slot);
    t->merges.cap = cap;
    if (!t->merges.slot)
        return base_errf(err, "out of memory");
    buf joined = {0};
    int rank = 0;
    for (const cJSON *e = merges->child; e; e = e->next, rank++) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(e)) { /* "left right" */
            const char *sp = strchr(e->valuestring, ' ');
            if (!sp || sp == e->valuestring || !sp[1] || strchr(sp + 1, ' '))
                goto bad_merge;
            a = e->valuestring, la = (size_t)(sp - a), b = sp + 1, lb = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) { /* ["left", "right"] */
            a = e->child->valuestring, la = strlen(a), b = e->child->next->valuestring, lb = strlen(b);
        } else {
            goto bad_merge;
        }
        const int32_t ia = str_map_get(&t->vocab, a, la), ib = str_map_get(&t->vocab, b, lb);
        joined.n = 0;
        if (buf_add(&joined, a, la) || buf_add(&joined, b, lb)) {
            free(joined.p);
            return base_errf(err, "out of memory");
        }
        const int32_t im = str_map_get(&t->vocab, joined.p, joined.n);
        if (ia < 0 || ib < 0 || im < 0) {
            free(joined.p);
            return base_errf(err, "model.merges[%d]: \"%.*s\" + \"%.*s\": %s is not in the vocabulary", rank,
                             (int)(la < 40 ? la : 40), a, (int)(lb < 40 ? lb : 40), b,
                             ia < 0 ? "the left part" : ib < 0 ? "the right part" : "the merged token");
        }
        const uint64_t k = ((uint64_t)ia + 1) << 32 | (uint32_t)ib;
        for (size_t i = mix64(k) & (cap - 1);; i = (i + 1) & (cap - 1)) {
            merge_slot *ms = &t->merges.slot[i];
            if (ms->key == k)
                break; /* a repeated merge keeps its first (best) rank */
            if (ms->key == 0) {
                *ms = (merge_slot){k, rank, im};
                break;
            }
        }
        continue;
    bad_merge:
        free(joined.p);
        return base_errf(err, "model.merges[%d]: neither \"left right\" nor [\"left\", \"right\"]", rank);
    }
    free(joined.p);
    return 0;
}

static int load_added(rt_tokenizer *t, const cJSON *list, base_err *err)
{
    t->n_ids = t->n_vocab;
    if (!list || cJSON_IsNull(list))
        return str_map_init(&t->added_map, 1) ? base_errf(err, "out of memory") : 0;
    if (!cJSON_IsArray(list))
        return base_errf(err, "added_tokens: not a list");
    const int n = cJSON_GetArraySize(list);
    t->added = calloc((size_t)(n ? n : 1), sizeof *t->added);
    if (!t->added || str_map_init(&t->added_map, (size_t)n + 1))
        return base_errf(err, "out of memory");
    const int32_t n_entries = (int32_t)t->vocab.n; /* tokenizers' get_vocab_size() */
    int32_t max_added = -1;
    int i = 0;
    for (const cJSON *e = list->child; e; e = e->next, i++) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const char *content = jstr(e, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (1 << 30) || !content || !*content)
            return base_errf(err, "added_tokens[%d]: needs an integer \"id\" and a non-empty \"content\"", i);
        if (!valid_utf8(content))
            return base_errf(err, "added_tokens[%d]: the content is not valid UTF-8", i);
        added_token *a = &t->added[t->n_added];
        a->content = strdup(content);
        if (!a->content)
            return base_errf(err, "out of memory");
        t->n_added++; /* owned from here: freed with the tokenizer, whatever follows */
        a->len = strlen(content);
        /* the id tokenizers gives it, whatever the file says: a vocabulary entry's own, else the
         * next after the vocabulary and the added tokens before it */
        const int32_t in_vocab = str_map_get(&t->vocab, a->content, a->len);
        a->id = in_vocab >= 0 ? in_vocab : max_added >= n_entries ? max_added + 1 : n_entries;
        max_added = a->id > max_added ? a->id : max_added;
        (void)id;
        a->special = jbool(e, "special", false);
        a->lstrip = jbool(e, "lstrip", false);
        a->rstrip = jbool(e, "rstrip", false);
        a->single_word = jbool(e, "single_word", false);
        a->normalized = jbool(e, "normalized", !a->special);
        if (a->id < t->n_vocab && t->tok[a->id] &&
            (t->tok_len[a->id] != a->len || memcmp(t->tok[a->id], a->content, a->len) != 0))
            return base_errf(err, "added_tokens[%d]: id %d is \"%.40s\" in the vocabulary, \"%.40s\" here", i, a->id,
                             t->tok[a->id], a->content);
        if (!str_map_put(&t->added_map, a->content, a->len, t->n_added - 1))
            return base_errf(err, "added_tokens[%d]: \"%.40s\" twice", i, a->content);
        if (a->id + 1 > t->n_ids)
            t->n_ids = a->id + 1;
    }
    return 0;
}

static int added_patterns(rt_tokenizer *t, base_err *err);

static int load_json(rt_tokenizer *t, const cJSON *root, base_err *err)
{
    if (!cJSON_IsObject(root))
        return base_errf(err, "not a JSON object");
    bytelevel_tables(t);
    if (load_model(t, cJSON_GetObjectItemCaseSensitive(root, "model"), err) ||
        load_added(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), err) ||
        load_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "normalizer", err) ||
        load_pre(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), "pre_tokenizer", err) ||
        load_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), "post_processor", err) ||
        load_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), "decoder", err))
        return -1;
    if (added_patterns(t, err))
        return -1;
    const cJSON *trunc = cJSON_GetObjectItemCaseSensitive(root, "truncation");
    if (trunc && !cJSON_IsNull(trunc))
        return base_errf(err, "truncation: not supported (dinfer refuses prompts over the context instead)");
    return 0;
}

rt_tokenizer *rt_tokenizer_load(const char *path, base_err *err)
{
    char file[4096];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(file, sizeof file, "%s/tokenizer.json", path);
    else
        snprintf(file, sizeof file, "%s", path);
    char *text = NULL;
    size_t len = 0;
    if (base_read_file(file, RT_TOKENIZER_MAX_BYTES, &text, &len, err))
        return NULL;
    rt_tokenizer *t = rt_tokenizer_parse(text, len, file, err);
    free(text);
    return t;
}

rt_tokenizer *rt_tokenizer_parse(const char *text, size_t len, const char *file, base_err *err)
{
    for (size_t i = 0; i < len;) { /* JSON is UTF-8: every string in the file is valid text */
        uint64_t word;
        if (i + 8 <= len && (memcpy(&word, text + i, 8), (word & 0x8080808080808080ULL) == 0)) {
            i += 8; /* eight ASCII bytes at once */
            continue;
        }
        const int k = utf8_len((const unsigned char *)text + i, len - i);
        if (k == 0) {
            base_errf(err, "%s: not valid UTF-8 at byte %zu", file, i);
            return NULL;
        }
        i += (size_t)k;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        base_errf(err, "%s: not valid JSON (at byte %zu)", file, at && at >= text ? (size_t)(at - text) : (size_t)0);
        return NULL;
    }
    rt_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        cJSON_Delete(root);
        base_errf(err, "out of memory");
        return NULL;
    }
    const int rc = load_json(t, root, err);
    cJSON_Delete(root);
    if (rc) {
        base_err_prefix(err, "%s", file);
        rt_tokenizer_free(t);
        return NULL;
    }
    return t;
}

void rt_tokenizer_free(rt_tokenizer *t)
{
    if (!t)
        return;
    free(t->strings), free(t->tok), free(t->tok_len);
    str_map_free(&t->vocab);
    free(t->merges.slot);
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].text), free(t->norm[i].content);
        if (t->norm[i].re)
            pcre2_code_free(t->norm[i].re);
    }
    for (int i = 0; i < t->n_pre; i++)
        if (t->pre[i].re)
            pcre2_code_free(t->pre[i].re);
    for (int i = 0; i < t->n_dec; i++)
        free(t->dec[i].from), free(t->dec[i].to);
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].content), free(t->added[i].pattern);
    free(t->added);
    str_map_free(&t->added_map);
    free(t);
}

int rt_tokenizer_n_ids(const rt_tokenizer *t)
{
    return t->n_ids;
}

int32_t rt_tokenizer_token_id(const rt_tokenizer *t, const char *token)
{
    return lookup_token(t, token);
}

/* ---- encoding ---- */

/* The working state of one encode call. */
typedef struct enc {
    const rt_tokenizer *t;
    buf arena;        /* every piece's bytes */
    pieces a, b;      /* the pieces before and after a step */
    ids_vec out;
    pcre2_match_data *md; /* this call's match (PCRE2's code is shared, its match data is not) */
    /* BPE scratch */
    int32_t *sym, *prev, *next;
    size_t sym_cap;
    struct heap_item { int32_t rank, pos, merged; } *heap;
    size_t heap_n, heap_cap;
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

static int replace_all(enc *e, piece *p, const pcre2_code *re, const char *content)
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

static int normalize_piece(enc *e, piece *p)
{
    const rt_tokenizer *t = e->t;
    for (int i = 0; i < t->n_norm; i++) {
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
            if (replace_all(e, p, s->re, s->content))
                return -1;
            break;
        }
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

/* The heap of candidate merges: lowest rank first, then leftmost. */
static bool heap_less(const struct heap_item *x, const struct heap_item *y)
{
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static int heap_push(enc *e, struct heap_item it)
{
    if (e->heap_n == e->heap_cap) {
        size_t cap = e->heap_cap ? e->heap_cap * 2 : 256;
        struct heap_item *h = realloc(e->heap, cap * sizeof *h);
        if (!h)
            return -1;
        e->heap = h, e->heap_cap = cap;
    }
    size_t i = e->heap_n++;
    while (i > 0 && heap_less(&it, &e->heap[(i - 1) / 2])) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = it;
    return 0;
}

static struct heap_item heap_pop(enc *e)
{
    struct heap_item top = e->heap[0], last = e->heap[--e->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= e->heap_n)
            break;
        if (c + 1 < e->heap_n && heap_less(&e->heap[c + 1], &e->heap[c]))
            c++;
        if (!heap_less(&e->heap[c], &last))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (e->heap_n > 0)
        e->heap[i] = last;
    return top;
}

static int push_pair(enc *e, int32_t pos)
{
    const int32_t nx = e->next[pos];
    int32_t rank, merged;
    if (nx >= 0 && merge_get(&e->t->merges, e->sym[pos], e->sym[nx], &rank, &merged))
        return heap_push(e, (struct heap_item){rank, pos, merged});
    return 0;
}

/* One word through the BPE model: its characters (or their bytes, or unk), merged by rank. */
static int bpe_word(enc *e, const char *w, size_t n)
{
    const rt_tokenizer *t = e->t;
    if (n == 0)
        return 0;
    if (t->ignore_merges) {
        int32_t id = str_map_get(&t->vocab, w, n);
        if (id >= 0)
            return ids_push(&e->out, id);
    }
    if (n + 1 > e->sym_cap) {
        size_t cap = e->sym_cap ? e->sym_cap : 64;
        while (cap < n + 1)
            cap *= 2;
        int32_t *a = realloc(e->sym, cap * sizeof *a), *b = a ? realloc(e->prev, cap * sizeof *b) : NULL,
                *c = b ? realloc(e->next, cap * sizeof *c) : NULL;
        if (a)
            e->sym = a;
        if (b)
            e->prev = b;
        if (c)
            e->next = c;
        if (!a || !b || !c)
            return -1;
        e->sym_cap = cap;
    }
    int32_t ns = 0;
    bool last_unk = false;
    for (size_t i = 0; i < n;) {
        const unsigned char c0 = (unsigned char)w[i];
        int k = c0 < 0x80 ? 1 : utf8_len((const unsigned char *)w + i, n - i);
        if (k == 0)
            k = 1;
        int32_t id;
        if (c0 < 0x80)
            id = t->ascii_id[c0];
        else if (k == 2 && c0 < 0xC6) /* U+0080 .. U+017F: ByteLevel's characters among them */
            id = t->latin_id[((c0 & 0x1F) << 6 | ((unsigned char)w[i + 1] & 0x3F)) - 0x80];
        else
            id = str_map_get(&t->vocab, w + i, (size_t)k);
        if (id >= 0) {
            e->sym[ns++] = id, last_unk = false;
        } else {
            bool bytes = t->byte_fallback;
            for (int j = 0; bytes && j < k; j++)
                bytes = t->byte_id[(unsigned char)w[i + j]] >= 0;
            if (bytes) {
                for (int j = 0; j < k; j++)
                    e->sym[ns++] = t->byte_id[(unsigned char)w[i + j]];
                last_unk = false;
            } else if (t->unk_id >= 0) {
                if (!(t->fuse_unk && last_unk))
                    e->sym[ns++] = t->unk_id;
                last_unk = true;
            } /* no unk token: the character is dropped, as tokenizers drops it */
        }
        i += (size_t)k;
    }
    for (int32_t i = 0; i < ns; i++)
        e->prev[i] = i - 1, e->next[i] = i + 1 < ns ? i + 1 : -1;
    e->heap_n = 0;
    for (int32_t i = 0; i + 1 < ns; i++)
        if (push_pair(e, i))
            return -1;
    while (e->heap_n > 0) {
        const struct heap_item it = heap_pop(e);
        if (e->sym[it.pos] < 0 || e->next[it.pos] < 0)
            continue; /* merged away, or no right neighbour any more */
        int32_t rank, merged;
        if (!merge_get(&t->merges, e->sym[it.pos], e->sym[e->next[it.pos]], &rank, &merged) || merged != it.merged)
            continue; /* the pair changed since it was queued */
        const int32_t r = e->next[it.pos];
        e->sym[it.pos] = merged;
        e->sym[r] = -1;
        e->next[it.pos] = e->next[r];
        if (e->next[r] >= 0)
            e->prev[e->next[r]] = it.pos;
        if (e->prev[it.pos] >= 0 && push_pair(e, e->prev[it.pos]))
            return -1;
        if (push_pair(e, it.pos))
            return -1;
    }
    for (int32_t i = 0; i >= 0 && i < ns; i = e->next[i])
        if (ids_push(&e->out, e->sym[i]))
            return -1;
    return 0;
}

static void enc_free(enc *e)
{
    free(e->arena.p), free(e->a.v), free(e->b.v), free(e->sym), free(e->prev), free(e->next), free(e->heap);
    pcre2_match_data_free(e->md);
}

/* Each added token's pattern: its content, or for a normalized one the content normalized as the
 * text it is matched in will be (tokenizers builds its normalized trie so). */
static int added_patterns(rt_tokenizer *t, base_err *err)
{
    for (int i = 0; i < t->n_added; i++) {
        added_token *a = &t->added[i];
        enc e = {.t = t};
        piece p = {0, a->len, -1, true};
        e.md = pcre2_match_data_create(1, NULL);
        const bool ok = e.md && buf_add(&e.arena, a->content, a->len) == 0 &&
                        (!a->normalized || normalize_piece(&e, &p) == 0) && p.len > 0 &&
                        (a->pattern = strndup(e.arena.p + p.off, p.len)) != NULL;
        enc_free(&e);
        if (!ok)
            return base_errf(err, "added_tokens[%d]: \"%.40s\" normalizes to nothing, or out of memory", i, a->content);
        a->plen = p.len;
        t->added_first[(unsigned char)a->pattern[0]] = true;
    }
    return 0;
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
        if (p->id >= 0 ? ids_push(&e.out, p->id) : bpe_word(&e, e.arena.p + p->off, p->len))
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
    return base_errf(err, "out of memory");
}

/* ---- decoding ---- */

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

/* One decoder over the whole list: src -> dst. */
static int decode_step(const rt_tokenizer *t, const dec_step *s, const toks *src, toks *dst)
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

char *rt_tokenizer_decode(const rt_tokenizer *t, const int32_t *ids, int n, bool skip_special, size_t *len,
                          base_err *err)
{
    toks a = {0}, b = {0};
    for (int i = 0; i < n; i++) {
        const int32_t id = ids[i];
        size_t k = 0;
        bool special = false;
        const char *s = token_of(t, id, &k, &special);
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
    for (int i = 0; i < t->n_dec; i++) {
        b.n = 0, b.text.n = 0;
        if (decode_step(t, &t->dec[i], &a, &b))
            goto oom;
        toks tmp = a;
        a = b, b = tmp;
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

int rt_detok_flush(rt_detok *d, char **text, size_t *len, base_err *err)
{
    size_t l;
    return detok_delta(d, true, text, len ? len : &l, err);
}

/* ---- tokenizer_config.json ---- */

int rt_tokenizer_config_eos(const rt_tokenizer *t, const char *dir, int32_t *id, base_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    base_err e;
    const int exists = base_path_exists(path, &e);
    if (exists <= 0)
        return exists < 0 ? base_err_copy(err, &e) : 1;
    char *text = NULL;
    size_t len = 0;
    if (base_read_file(path, (size_t)64 << 20, &text, &len, err))
        return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return base_errf(err, "%s: not a JSON object", path);
    }
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token");
    const char *name = cJSON_IsString(eos) ? eos->valuestring : jstr(eos, "content");
    int rc = 1;
    if (eos && !cJSON_IsNull(eos) && !name) {
        rc = base_errf(err, "%s: eos_token is neither a string nor {\"content\": ...}", path);
    } else if (name) {
        *id = lookup_token(t, name);
        rc = *id >= 0 ? 0 : base_errf(err, "%s: eos_token \"%.60s\" is no token of tokenizer.json", path, name);
    }
    cJSON_Delete(root);
    return rc;
}
