/* Hugging Face tokenizer.json, read and run in C: the same ids as the `tokenizers` library.
 *
 * The parts real checkpoints use: a BPE model (byte-level, as Llama 3, Qwen and GPT-2 use it, or
 * SentencePiece-style with byte fallback, as Llama 2 and Mistral use it); the normalizers NFC, NFD,
 * NFKC, NFKD, Lowercase, Prepend, Replace and Sequence (Unicode from utf8proc); the pre-tokenizers
 * Split (its regex run by PCRE2, JIT-compiled: the splits `tokenizers`' Oniguruma makes), ByteLevel,
 * Metaspace and Sequence; added tokens matched before the model (lstrip, rstrip, single_word, normalized); the
 * TemplateProcessing and ByteLevel post-processors; the ByteLevel, Metaspace, Replace,
 * ByteFallback, Fuse and Strip decoders. Anything else is refused when the file loads, naming the
 * type and where it stands in the file. No MPI, no backend: the coordinator tokenizes. */
#ifndef DINFER_RUNTIME_TEXT_TOKENIZER_H
#define DINFER_RUNTIME_TEXT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define RT_TOKENIZER_MAX_BYTES ((size_t)256 << 20) /* a tokenizer.json larger than this is refused */

typedef struct rt_tokenizer rt_tokenizer;

/* Loads path: a tokenizer.json, or a model folder holding one. NULL on failure, with err naming
 * the file and the problem (a missing file, bad JSON, an unsupported type and its place). */
rt_tokenizer *rt_tokenizer_load(const char *path, base_err *err);
/* The same from len bytes of JSON in memory; name stands for the file in messages. */
rt_tokenizer *rt_tokenizer_parse(const char *json, size_t len, const char *name, base_err *err);
void rt_tokenizer_free(rt_tokenizer *t);

/* The ids of len bytes of UTF-8 text, in a malloc'd *ids (the caller frees it; NULL when there are
 * none). add_special: with what the post-processor adds (a BOS). Returns the count, or -1 with err
 * (invalid UTF-8 names the byte offset). Safe to call from several threads at once. */
int rt_tokenizer_encode(const rt_tokenizer *t, const char *text, size_t len, bool add_special, int32_t **ids,
                        base_err *err);

/* The text of n ids, malloc'd and NUL-terminated (*len its length when len is not NULL);
 * skip_special leaves out special added tokens. NULL with err for an id outside the vocabulary. */
char *rt_tokenizer_decode(const rt_tokenizer *t, const int32_t *ids, int n, bool skip_special, size_t *len,
                          base_err *err);
/* The text of ids as the continuation of ctx (n_ctx ids before them: a prompt), as a stream primed
 * with ctx gives it (rt_detok_prime). */
char *rt_tokenizer_decode_after(const rt_tokenizer *t, const int32_t *ctx, int n_ctx, const int32_t *ids, int n,
                                bool skip_special, size_t *len, base_err *err);

/* Streaming detokenization: ids in, text out as soon as it is final. A character split over
 * several tokens waits until it is complete, and SentencePiece's leading space comes out as a
 * whole decode would give it: the pieces' concatenation (with the flush) equals decoding all the
 * ids at once. Each call decodes a window of the last few tokens, not the whole stream. */
typedef struct rt_detok {
    const rt_tokenizer *t;
    bool skip_special;
    int32_t *ids; /* (n) every id so far */
    int n, cap;
    int prefix;   /* ids[prefix, read): context, already emitted; ids[read, n): not yet emitted */
    int read;
} rt_detok;

void rt_detok_init(rt_detok *d, const rt_tokenizer *t, bool skip_special);
/* What came before the stream (a prompt's ids; its last few are kept as context): the stream's
 * text then continues that text, as vLLM's detokenizer gives it (a SentencePiece piece's leading
 * space is kept, not stripped as at the start of a text). Call before the first rt_detok_add. */
int rt_detok_prime(rt_detok *d, const int32_t *ids, int n, base_err *err);
/* Adds an id; *text (malloc'd, NUL-terminated, possibly "") gets the text it made final. */
int rt_detok_add(rt_detok *d, int32_t id, char **text, size_t *len, base_err *err);
/* The text still held back at the end of the stream (an incomplete character comes out as U+FFFD). */
int rt_detok_flush(rt_detok *d, char **text, size_t *len, base_err *err);
void rt_detok_free(rt_detok *d);

/* The id of tokenizer_config.json's eos_token (a string or {"content": ...}) in a model folder:
 * 0 with *id, or 1 when the folder has no such file or field, -1 with err when the file is bad or
 * names a token the tokenizer lacks. */
int rt_tokenizer_config_eos(const rt_tokenizer *t, const char *dir, int32_t *id, base_err *err);

/* Ids are below this (the model's vocabulary and the added tokens). */
int rt_tokenizer_n_ids(const rt_tokenizer *t);

/* The id of a token's exact text (an added token or a vocabulary entry), or -1. */
int32_t rt_tokenizer_token_id(const rt_tokenizer *t, const char *token);

#endif
