/* The tokenizer against Hugging Face tokenizers: for each real tokenizer.json under
 * ../shared/tokenizers (llama3, qwen3, llama2) and each text of tests/tokenizer/corpus.json, the
 * ids with and without special tokens and both decodes must equal tests/tokenizer/expected.json
 * (written by tests/tokenizer/make_expected.py with tokenizers itself). Skips, saying so, when the
 * tokenizer files are absent. Also: errors that name the problem for bad files and bad text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "base/file.h"
#include "runtime/text/tokenizer.h"

static cJSON *read_json(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    base_err err;
    if (base_read_file(path, (size_t)64 << 20, &text, &len, &err)) {
        fail_msg("%s", err.msg);
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    assert_non_null(j);
    return j;
}

static int ids_equal(const cJSON *want, const int32_t *got, int n)
{
    if (cJSON_GetArraySize(want) != n)
        return 0;
    int i = 0;
    for (const cJSON *e = want->child; e; e = e->next, i++)
        if ((int32_t)e->valuedouble != got[i])
            return 0;
    return 1;
}

static void print_ids(const char *what, const int32_t *v, int n)
{
    fprintf(stderr, "    %s (%d):", what, n);
    for (int i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", v[i]);
    fprintf(stderr, "%s\n", n > 40 ? " ..." : "");
}

static void check_one(const char *name)
{
    char path[4096];
    if (strcmp(name, "stories260K") == 0) /* the quickstart's, written by llama2c_convert */
        snprintf(path, sizeof path, "%s/launch/stories260K/tokenizer.json", DINFER_SOURCE_DIR);
    else if (strcmp(name, "flags") == 0) /* added tokens with every flag, hand-made */
        snprintf(path, sizeof path, "%s/tests/tokenizer/flags/tokenizer.json", DINFER_SOURCE_DIR);
    else
        snprintf(path, sizeof path, "%s/%s/tokenizer.json", DINFER_SHARED_TOKENIZERS, name);
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "SKIP %s: %s is absent\n", name, path);
        skip();
    }
    base_err err;
    rt_tokenizer *t = rt_tokenizer_load(path, &err);
    if (!t)
        fail_msg("%s", err.msg);
    cJSON *corpus = read_json(DINFER_SOURCE_DIR "/tests/tokenizer/corpus.json");
    cJSON *expected = read_json(DINFER_SOURCE_DIR "/tests/tokenizer/expected.json");
    const cJSON *rows = cJSON_GetObjectItem(cJSON_GetObjectItem(expected, "tokenizers"), name);
    assert_int_equal(cJSON_GetArraySize(rows), cJSON_GetArraySize(corpus));
    int bad = 0, i = 0;
    const cJSON *row = rows->child;
    for (const cJSON *c = corpus->child; c; c = c->next, row = row->next, i++) {
        const char *text = c->valuestring;
        for (int special = 1; special >= 0; special--) {
            int32_t *ids = NULL;
            const int n = rt_tokenizer_encode(t, text, strlen(text), special, &ids, &err);
            if (n < 0)
                fail_msg("%s text %d: %s", name, i, err.msg);
            const cJSON *want = cJSON_GetObjectItem(row, special ? "ids" : "ids_no_special");
            if (!ids_equal(want, ids, n)) {
                if (bad++ < 12) {
                    fprintf(stderr, "%s text %d (special %d) differs: \"%.80s\"\n", name, i, special, text);
                    int32_t w[4096];
                    int k = 0;
                    for (const cJSON *e = want->child; e && k < 4096; e = e->next)
                        w[k++] = (int32_t)e->valuedouble;
                    print_ids("tokenizers", w, k);
                    print_ids("dinfer    ", ids, n);
                }
            } else {
                /* streamed one id at a time: every piece whole characters, all of them the decode */
                rt_detok d;
                rt_detok_init(&d, t, false);
                char *all = calloc(1, 1);
                size_t all_len = 0;
                for (int j = 0; j <= n; j++) {
                    char *piece = NULL;
                    size_t pl = 0;
                    if ((j < n ? rt_detok_add(&d, ids[j], &piece, &pl, &err) : rt_detok_flush(&d, &piece, &pl, &err)))
                        fail_msg("%s text %d: %s", name, i, err.msg);
                    const bool fffd = strstr(cJSON_GetObjectItem(row, "decoded")->valuestring, "\xEF\xBF\xBD");
                    if (j < n && pl >= 3 && memcmp(piece + pl - 3, "\xEF\xBF\xBD", 3) == 0 && !fffd)
                        fail_msg("%s text %d: piece %d ends in a broken character", name, i, j);
                    if (j == n && pl > 0 && !fffd) /* whole characters come out with their last token */
                        fail_msg("%s text %d: %zu bytes held back to the flush", name, i, pl);
                    all = realloc(all, all_len + pl + 1);
                    memcpy(all + all_len, piece, pl + 1);
                    all_len += pl;
                    free(piece);
                }
                rt_detok_free(&d);
                const char *dw = cJSON_GetObjectItem(row, special ? "decoded" : "decoded_no_special")->valuestring;
                if (strcmp(all, dw) != 0 && bad++ < 12)
                    fprintf(stderr, "%s text %d (special %d): streamed \"%.80s\", tokenizers \"%.80s\"\n", name, i,
                            special, all, dw);
                free(all);
                char *whole = rt_tokenizer_decode(t, ids, n, false, NULL, &err);
                if (!whole)
                    fail_msg("%s text %d: %s", name, i, err.msg);
                if (strcmp(whole, dw) != 0 && bad++ < 12)
                    fprintf(stderr, "%s text %d (special %d): decode \"%.80s\", tokenizers \"%.80s\"\n", name, i,
                            special, whole, dw);
                free(whole);
            }
            free(ids);
        }
    }
    fprintf(stderr, "%s: %d texts, %d differences\n", name, i, bad);
    cJSON_Delete(corpus);
    cJSON_Delete(expected);
    rt_tokenizer_free(t);
    assert_int_equal(bad, 0);
}

static void test_llama3(void **state)
{
    (void)state;
    check_one("llama3");
}

static void test_qwen3(void **state)
{
    (void)state;
    check_one("qwen3");
}

static void test_llama2(void **state)
{
    (void)state;
    check_one("llama2");
}

/* A tokenizer.json written to a temporary file, loaded: NULL and err on failure. */
static rt_tokenizer *load_text(const char *json, base_err *err)
{
    char path[] = "/tmp/dinfer-tok-XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    rt_tokenizer *t = rt_tokenizer_load(path, err);
    unlink(path);
    return t;
}

#define TINY_VOCAB "\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"<unk>\": 3}"

static void expect_refused(const char *json, const char *needle)
{
    base_err err = {{0}};
    rt_tokenizer *t = load_text(json, &err);
    if (t)
        fail_msg("loaded, expected a refusal naming \"%s\"", needle);
    if (!strstr(err.msg, needle))
        fail_msg("error \"%s\" does not name \"%s\"", err.msg, needle);
}

/* A small hand-written BPE file: merges by rank, unk fused, the template's BOS; and every kind of
 * bad file refused with a message that names the problem and where it is. */
/* the tokenizer.json llama2c_convert wrote for stories260K: tokenizers reads it as dinfer does */
static void test_stories260k(void **state)
{
    (void)state;
    check_one("stories260K");
}

/* A stream primed with a prompt continues its text: SentencePiece's leading space stays (it is
 * stripped only at the start of a text), as vLLM's detokenizer gives it; from BOS alone it does not. */
static void test_continuation(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/launch/stories260K/tokenizer.json", DINFER_SOURCE_DIR);
    base_err err;
    rt_tokenizer *t = rt_tokenizer_load(path, &err);
    assert_non_null(t);
    int32_t *prompt = NULL, *gen = NULL;
    const int np = rt_tokenizer_encode(t, "Once", 4, true, &prompt, &err); /* BOS, "Once" */
    const int ng = rt_tokenizer_encode(t, "upon a time", 11, false, &gen, &err); /* ▁upon ▁a ▁time */
    assert_true(np == 2 && ng > 0);
    char *alone = rt_tokenizer_decode(t, gen, ng, true, NULL, &err);
    char *after = rt_tokenizer_decode_after(t, prompt, np, gen, ng, true, NULL, &err);
    char *from_bos = rt_tokenizer_decode_after(t, prompt, 1, gen, ng, true, NULL, &err);
    assert_string_equal(alone, "upon a time");
    assert_string_equal(after, " upon a time");
    assert_string_equal(from_bos, "upon a time");
    /* streamed one id at a time, primed the same way: the same text */
    rt_detok d;
    rt_detok_init(&d, t, true);
    assert_int_equal(rt_detok_prime(&d, prompt, np, &err), 0);
    char joined[64] = "";
    for (int i = 0; i <= ng; i++) {
        char *piece;
        assert_int_equal(i < ng ? rt_detok_add(&d, gen[i], &piece, NULL, &err) : rt_detok_flush(&d, &piece, NULL, &err),
                         0);
        strncat(joined, piece, sizeof joined - strlen(joined) - 1);
        free(piece);
    }
    assert_string_equal(joined, " upon a time");
    int32_t bad = 99999;
    assert_int_not_equal(rt_detok_prime(&d, &bad, 1, &err), 0);
    rt_detok_free(&d);
    free(alone), free(after), free(from_bos), free(prompt), free(gen);
    rt_tokenizer_free(t);
}

/* added tokens' lstrip, rstrip, single_word and normalized (under a Lowercase normalizer), a
 * template with a BOS and an EOS, byte-level with GPT-2's regex: tests/tokenizer/flags */
static void test_flags(void **state)
{
    (void)state;
    check_one("flags");
}

static void test_small_and_errors(void **state)
{
    (void)state;
    base_err err = {{0}};
    rt_tokenizer *t = load_text(
        "{\"added_tokens\": [{\"id\": 4, \"content\": \"<s>\", \"special\": true, \"normalized\": false}],"
        " \"normalizer\": null, \"pre_tokenizer\": null, \"decoder\": {\"type\": \"Fuse\"},"
        " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}},"
        "   {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [4]}}},"
        " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, " TINY_VOCAB ","
        "   \"merges\": [\"a b\"]}}",
        &err);
    if (!t)
        fail_msg("%s", err.msg);
    int32_t *ids = NULL;
    int n = rt_tokenizer_encode(t, "abxyab<s>b", 10, true, &ids, &err);
    const int32_t want[] = {4, 2, 3, 2, 4, 1}; /* BOS, ab, one fused unk for "xy", ab, <s>, b */
    assert_int_equal(n, 6);
    assert_memory_equal(ids, want, sizeof want);
    size_t len = 0;
    char *text = rt_tokenizer_decode(t, ids, n, true, &len, &err);
    assert_string_equal(text, "ab<unk>abb");
    free(text);
    free(ids);
    /* invalid UTF-8 names its byte; an id outside the vocabulary names itself */
    assert_int_equal(rt_tokenizer_encode(t, "ab\xC3(", 4, true, &ids, &err), -1);
    assert_non_null(strstr(err.msg, "byte 2"));
    const int32_t bad[] = {1, 77};
    assert_null(rt_tokenizer_decode(t, bad, 2, false, NULL, &err));
    assert_non_null(strstr(err.msg, "77"));
    assert_int_equal(rt_tokenizer_token_id(t, "<s>"), 4);
    assert_int_equal(rt_tokenizer_token_id(t, "ab"), 2);
    assert_int_equal(rt_tokenizer_token_id(t, "zz"), -1);
    rt_tokenizer_free(t);

    assert_null(rt_tokenizer_load("/nonexistent/tokenizer.json", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/tokenizer.json"));
    expect_refused("{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": []", "not valid JSON");
    expect_refused("{\"model\": {\"type\": \"WordPiece\", " TINY_VOCAB "}}", "type \"WordPiece\"");
    expect_refused("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "Unigram");
    expect_refused("{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, "
                   "{\"type\": \"BertNormalizer\"}]}, \"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": []}}",
                   "normalizer.normalizers[1]");
    expect_refused("{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"type\": \"BPE\", " TINY_VOCAB
                   ", \"merges\": []}}",
                   "pre_tokenizer: pre-tokenizer type \"Whitespace\"");
    expect_refused("{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(unclosed\"}, "
                   "\"behavior\": \"Isolated\"}, \"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": []}}",
                   "regex does not compile");
    expect_refused("{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": [\"a b\", \"b q\"]}}",
                   "model.merges[1]");
    expect_refused("{\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": [\"ab\"]}}",
                   "neither \"left right\"");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}",
                   "model.vocab[\"a\"]");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}",
                   "id 0 given to");
    /* an id that would size the tables in gigabytes (found by fuzz_tokenizer_load) */
    expect_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 745319932}, \"merges\": []}}",
                   "model.vocab[\"b\"]: the id is not an integer in [0, 2^22)");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<x>\", " TINY_VOCAB ", \"merges\": []}}",
                   "model.unk_token");
    expect_refused("{\"model\": {\"type\": \"BPE\", \"dropout\": 0.1, " TINY_VOCAB ", \"merges\": []}}",
                   "model.dropout");
    expect_refused("{\"decoder\": {\"type\": \"WordPiece\"}, \"model\": {\"type\": \"BPE\", " TINY_VOCAB
                   ", \"merges\": []}}",
                   "decoder: decoder type \"WordPiece\"");
    expect_refused("{\"post_processor\": {\"type\": \"BertProcessing\"}, \"model\": {\"type\": \"BPE\", " TINY_VOCAB
                   ", \"merges\": []}}",
                   "post-processor type \"BertProcessing\"");
    /* a vocabulary with a hole: the id tokenizers gives "zz" (after the 4 entries) is another's */
    expect_refused("{\"added_tokens\": [{\"id\": 9, \"content\": \"zz\"}], \"model\": {\"type\": \"BPE\", "
                   "\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"<unk>\": 4}, \"merges\": []}}",
                   "added_tokens[0]: id 4 is \"<unk>\"");
    expect_refused("[1, 2]", "not a JSON object");

    /* tokenizer_config.json's eos_token: a string or {"content": ...}, a token of the tokenizer */
    char dir[] = "/tmp/dinfer-tokcfg-XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    t = load_text("{\"added_tokens\": [{\"id\": 4, \"content\": \"<s>\", \"special\": true}], "
                  "\"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": []}}",
                  &err);
    assert_non_null(t);
    int32_t eos = -1;
    assert_int_equal(rt_tokenizer_config_eos(t, dir, &eos, &err), 1); /* no file */
    const char *cases[][2] = {{"{\"eos_token\": \"<s>\"}", "4"}, {"{\"eos_token\": {\"content\": \"ab\"}}", "2"},
                              {"{\"bos_token\": \"<s>\"}", "none"}, {"{\"eos_token\": \"<zz>\"}", "no token"},
                              {"{\"eos_token\": 7}", "neither a string"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        FILE *f = fopen(path, "w");
        fputs(cases[i][0], f);
        fclose(f);
        const int rc = rt_tokenizer_config_eos(t, dir, &eos, &err);
        if (strcmp(cases[i][1], "none") == 0) {
            assert_int_equal(rc, 1);
        } else if (cases[i][1][0] >= '0' && cases[i][1][0] <= '9') {
            assert_int_equal(rc, 0);
            assert_int_equal(eos, atoi(cases[i][1]));
        } else {
            assert_int_equal(rc, -1);
            assert_non_null(strstr(err.msg, cases[i][1]));
            assert_non_null(strstr(err.msg, "tokenizer_config.json"));
        }
    }
    rt_tokenizer_free(t);
    remove(path);
    rmdir(dir);
}

/* Normalizers and decoders that multiply the text (a Replace whose content holds its own pattern,
 * repeated: found by fuzz_tokenizer_load, 19 s on one 2 KB file) are refused at load when the
 * probe shows it, and otherwise refused per text when encoding or decoding, naming the cause;
 * other texts still encode and decode. */
static void test_normalizer_growth(void **state)
{
    (void)state;
#define REPLACE(from, to) "{\"type\": \"Replace\", \"pattern\": {\"String\": \"" from "\"}, \"content\": \"" to "\"}"
#define SPACES REPLACE(" ", "a a a a a a a a")
    expect_refused("{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [" SPACES ", " SPACES ", " SPACES
                   ", " SPACES ", " SPACES ", " SPACES "]}, \"model\": {\"type\": \"BPE\", " TINY_VOCAB
                   ", \"merges\": []}}",
                   "normalizer: its steps make more than");
    /* U+0416 is not in the probe: the file loads, a text holding it is refused */
#define ZHE REPLACE("\xd0\x96", "\xd0\x96\xd0\x96\xd0\x96\xd0\x96\xd0\x96\xd0\x96\xd0\x96\xd0\x96")
    base_err err = {{0}};
    rt_tokenizer *t = load_text("{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [" ZHE ", " ZHE ", " ZHE
                                ", " ZHE ", " ZHE ", " ZHE "]}, \"model\": {\"type\": \"BPE\", \"unk_token\": "
                                "\"<unk>\", " TINY_VOCAB ", \"merges\": [\"a b\"]}}",
                                &err);
    if (!t)
        fail_msg("%s", err.msg);
    int32_t *ids = NULL;
    assert_int_equal(rt_tokenizer_encode(t, "ab \xd0\x96", 5, false, &ids, &err), -1);
    assert_null(ids);
    assert_non_null(strstr(err.msg, "normalizer grows a piece of this text more than 64x"));
    assert_int_equal(rt_tokenizer_encode(t, "abab", 4, false, &ids, &err), 2);
    assert_int_equal(ids[0], 2);
    free(ids);
    rt_tokenizer_free(t);
    /* the same for decoders: refused at load, or the ids whose text one multiplies when decoding */
    expect_refused("{\"decoder\": {\"type\": \"Sequence\", \"decoders\": [" SPACES ", " SPACES ", " SPACES ", " SPACES
                   ", " SPACES ", " SPACES "]}, \"model\": {\"type\": \"BPE\", " TINY_VOCAB ", \"merges\": []}}",
                   "decoder: its steps make more than");
    t = load_text("{\"decoder\": {\"type\": \"Sequence\", \"decoders\": [" ZHE ", " ZHE ", " ZHE ", " ZHE ", " ZHE
                  ", " ZHE "]}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, "
                  "\"\xd0\x96\": 3}, \"merges\": [\"a b\"]}}",
                  &err);
    if (!t)
        fail_msg("%s", err.msg);
    const int32_t zhe[] = {2, 3}, plain[] = {2, 0};
    assert_null(rt_tokenizer_decode(t, zhe, 2, false, NULL, &err));
    assert_non_null(strstr(err.msg, "decoder grows these tokens' text more than 64x"));
    char *text = rt_tokenizer_decode(t, plain, 2, false, NULL, &err);
    assert_string_equal(text, "aba");
    free(text);
    rt_tokenizer_free(t);
#undef ZHE
#undef SPACES
#undef REPLACE
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_qwen3),
        cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_stories260k),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_continuation),
        cmocka_unit_test(test_small_and_errors),
        cmocka_unit_test(test_normalizer_growth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
