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
#include "runtime/tokenizer.h"

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
                const char *dw = cJSON_GetObjectItem(row, special ? "decoded" : "decoded_no_special")->valuestring;
                char *d = rt_tokenizer_decode(t, ids, n, false, NULL, &err);
                if (!d)
                    fail_msg("%s text %d: %s", name, i, err.msg);
                if (strcmp(d, dw) != 0 && bad++ < 12)
                    fprintf(stderr, "%s text %d (special %d): decode \"%.80s\", tokenizers \"%.80s\"\n", name, i,
                            special, d, dw);
                free(d);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_qwen3),
        cmocka_unit_test(test_llama2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
