/* tokenizer.json (and tokenizer_config.json) read into the tokenizer (tokenizer.h): the model's
 * vocabulary and merges, the added tokens with the ids tokenizers gives them, and each stage of
 * the pipeline, refused by type and place when it is not one dinfer runs. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <sys/stat.h>

#include "base/file.h"
#include "runtime/text/tokenizer_impl.h"

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

typedef int (*step_loader)(rt_tokenizer *t, const cJSON *n, const char *where, base_err *err);

/* A Sequence's list n[key]: each element through load, its place named "where.key[i]". */
static int load_sequence(rt_tokenizer *t, const cJSON *n, const char *key, const char *where, step_loader load,
                         base_err *err)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, key);
    if (!cJSON_IsArray(list))
        return base_errf(err, "%s.%s: not a list", where, key);
    int i = 0;
    for (const cJSON *e = list->child; e; e = e->next, i++) {
        char w[128];
        snprintf(w, sizeof w, "%s.%s[%d]", where, key, i);
        if (load(t, e, w, err))
            return -1;
    }
    return 0;
}

static int load_normalizer(rt_tokenizer *t, const cJSON *n, const char *where, base_err *err)
{
    if (cJSON_IsNull(n) || !n)
        return 0;
    const char *type = jstr(n, "type");
    if (!type)
        return base_errf(err, "%s: no \"type\"", where);
    if (strcmp(type, "Sequence") == 0)
        return load_sequence(t, n, "normalizers", where, load_normalizer, err);
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
    if (strcmp(type, "Sequence") == 0)
        return load_sequence(t, n, "pretokenizers", where, load_pre, err);
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
    if (strcmp(type, "Sequence") == 0)
        return load_sequence(t, n, "decoders", where, load_decoder, err);
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

int32_t rt_tok_lookup(const rt_tokenizer *t, const char *s)
{
    int32_t a = str_map_get(&t->added_map, s, strlen(s));
    if (a >= 0)
        return t->added[a].id;
    return str_map_get(&t->vocab, s, strlen(s));
}

/* The text of an id (an added token's content, else the vocabulary's entry); NULL for none. */
const char *rt_tok_token_of(const rt_tokenizer *t, int32_t id, size_t *len, bool *special)
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
                !rt_tok_token_of(t, (int32_t)id->valuedouble, NULL, NULL))
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
    if (strcmp(type, "Sequence") == 0)
        return load_sequence(t, n, "processors", where, load_post, err);
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
        /* ids index arrays: 2^22 is far past any published vocabulary (256K), and keeps a
         * hostile file from making them gigabytes */
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (1 << 22) ||
            e->valuedouble != (double)(int32_t)e->valuedouble)
            return base_errf(err, "model.vocab[\"%.40s\"]: the id is not an integer in [0, 2^22)", e->string);
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
    if (rt_tok_check_normalizer(t, err) || rt_tok_check_decoder(t, err) || rt_tok_added_patterns(t, err))
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
    return rt_tok_lookup(t, token);
}

/* ---- tokenizer_config.json ---- */

int rt_tokenizer_config_eos(const rt_tokenizer *t, const char *dir, int32_t *id, base_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    char *text = NULL;
    size_t len = 0;
    const int rc_read = base_read_file_if_present(path, (size_t)64 << 20, &text, &len, err);
    if (rc_read != 0)
        return rc_read;
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
        *id = rt_tok_lookup(t, name);
        rc = *id >= 0 ? 0 : base_errf(err, "%s: eos_token \"%.60s\" is no token of tokenizer.json", path, name);
    }
    cJSON_Delete(root);
    return rc;
}
