/* libFuzzer target: encoding arbitrary bytes with a byte-level BPE tokenizer built the way
 * Llama 3's is (NFC, the Split regex, ByteLevel, added tokens with lstrip/rstrip/single_word).
 * Invalid UTF-8 must be refused; valid text must give ids in range whose streamed decode equals
 * the whole decode. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/text/tokenizer.h"

static rt_tokenizer *tok;

/* the 256 byte characters as the vocabulary, a few merges, three added tokens */
static rt_tokenizer *build(void)
{
    static char json[1 << 16];
    size_t n = 0;
    n += (size_t)snprintf(json + n, sizeof json - n,
                          "{\"normalizer\": {\"type\": \"NFC\"}, \"pre_tokenizer\": {\"type\": \"Sequence\", "
                          "\"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": "
                          "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| "
                          "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}, "
                          "\"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", "
                          "\"add_prefix_space\": false, \"use_regex\": false}]}, "
                          "\"decoder\": {\"type\": \"ByteLevel\"}, \"added_tokens\": ["
                          "{\"id\": 300, \"content\": \"<|s|>\", \"special\": true},"
                          "{\"id\": 301, \"content\": \"[X]\", \"lstrip\": true, \"rstrip\": true},"
                          "{\"id\": 302, \"content\": \"ab\", \"single_word\": true, \"normalized\": true}],"
                          "\"model\": {\"type\": \"BPE\", \"ignore_merges\": true, \"vocab\": {");
    /* GPT-2's byte characters, as JSON escapes */
    int k = 0;
    for (int b = 0; b < 256; b++) {
        const int self = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        const int cp = self ? b : 256 + k++;
        n += (size_t)snprintf(json + n, sizeof json - n, "%s\"\\u%04x\": %d", b ? ", " : "", cp, b);
    }
    n += (size_t)snprintf(json + n, sizeof json - n,
                          ", \"\\u0120t\": 256, \"he\": 257, \"\\u0120the\": 258, \"in\": 259}, "
                          "\"merges\": [\"\\u0120 t\", \"h e\", \"\\u0120t he\", \"i n\"]}}");
    base_err err;
    rt_tokenizer *t = rt_tokenizer_parse(json, n, "fuzz_tokenizer_encode", &err);
    if (!t) {
        fprintf(stderr, "%s\n", err.msg);
        abort();
    }
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tok)
        tok = build();
    base_err err;
    int32_t *ids = NULL;
    const int n = rt_tokenizer_encode(tok, (const char *)data, size, true, &ids, &err);
    if (n < 0)
        return 0; /* invalid UTF-8, refused */
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= rt_tokenizer_n_ids(tok))
            abort();
    size_t len = 0;
    char *whole = rt_tokenizer_decode(tok, ids, n, false, &len, &err);
    if (!whole)
        abort();
    rt_detok d;
    rt_detok_init(&d, tok, false);
    size_t at = 0;
    for (int i = 0; i <= n; i++) {
        char *piece = NULL;
        size_t pl = 0;
        if ((i < n ? rt_detok_add(&d, ids[i], &piece, &pl, &err) : rt_detok_flush(&d, &piece, &pl, &err)) ||
            at + pl > len || memcmp(whole + at, piece, pl) != 0)
            abort();
        at += pl;
        free(piece);
    }
    if (at != len)
        abort();
    rt_detok_free(&d);
    free(whole);
    free(ids);
    return 0;
}
