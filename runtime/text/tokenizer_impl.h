/* The tokenizer's private parts, shared by its loader (tokenizer_load.c: tokenizer.json -> this
 * struct) and its runner (tokenizer.c: encoding, decoding, streaming). Not for other modules:
 * runtime/text/tokenizer.h is the interface. */
#ifndef DINFER_RUNTIME_TEXT_TOKENIZER_IMPL_H
#define DINFER_RUNTIME_TEXT_TOKENIZER_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "runtime/text/tokenizer.h"

/* ---- small containers ---- */

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static inline int buf_reserve(buf *b, size_t more)
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

static inline int buf_add(buf *b, const void *s, size_t n)
{
    if (buf_reserve(b, n + 1))
        return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
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

static inline uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static inline int str_map_init(str_map *m, size_t expect)
{
    size_t cap = 16;
    while (cap < expect * 2)
        cap *= 2;
    m->slot = calloc(cap, sizeof *m->slot);
    m->cap = cap, m->n = 0;
    return m->slot ? 0 : -1;
}

static inline void str_map_free(str_map *m)
{
    free(m->slot);
}

static inline int32_t str_map_get(const str_map *m, const char *s, size_t n)
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
static inline bool str_map_put(str_map *m, const char *s, size_t n, int32_t v)
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

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
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


/* The text of an id (an added token's content, else the vocabulary's entry); NULL for none. */
const char *rt_tok_token_of(const rt_tokenizer *t, int32_t id, size_t *len, bool *special);
/* The id of a token's exact text (an added token first), or -1. */
int32_t rt_tok_lookup(const rt_tokenizer *t, const char *s);
/* Each added token's pattern: its content, normalized for a normalized token (the runner's
 * normalizers do it); called once the whole file is loaded. */
int rt_tok_added_patterns(rt_tokenizer *t, base_err *err);
/* How long normalizing may make a piece of n bytes (and decoding, tokens of n bytes). Real
 * normalizers grow text a little (NFKC about 11x at most for one character, Replace(" ", "▁") 3x,
 * Prepend a constant); a chain of Replaces whose content holds its own pattern grows it
 * exponentially: nine such steps made a 2 KB tokenizer.json take 19 s to load and encode one short
 * line. Past the limit, normalizing or decoding fails and the caller names the cause. */
#define RT_TOK_GROWTH 64
#define RT_TOK_SLACK 4096
static inline size_t rt_tok_growth_limit(size_t n)
{
    return RT_TOK_GROWTH * n + RT_TOK_SLACK;
}

/* A growing array of ids. */
typedef struct ids_vec {
    int32_t *v;
    size_t n, cap;
} ids_vec;

static inline int ids_push(ids_vec *a, int32_t id)
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

/* The BPE model's scratch, kept across the words of one encode call (tokenizer_bpe.c). */
typedef struct rt_bpe {
    int32_t *sym, *prev, *next; /* the word's symbols, a linked list (sym -1: merged away) */
    size_t sym_cap;
    struct rt_bpe_item { int32_t rank, pos, merged; } *heap; /* candidate merges */
    size_t heap_n, heap_cap;
} rt_bpe;

/* One word (n bytes of UTF-8) through t's BPE model, its ids appended to out; -1 out of memory. */
int rt_bpe_word(const rt_tokenizer *t, rt_bpe *e, const char *w, size_t n, ids_vec *out);
void rt_bpe_free(rt_bpe *e);

/* Refuses a normalizer that grows a text past the limit encoding holds it to (a probe of every
 * printable ASCII character and a few others); called once the whole file is loaded. */
int rt_tok_check_normalizer(const rt_tokenizer *t, base_err *err);
/* The same for the decoders (a token of each printable ASCII character and a few others). */
int rt_tok_check_decoder(const rt_tokenizer *t, base_err *err);

#endif
