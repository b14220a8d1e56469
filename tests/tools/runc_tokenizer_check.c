/* Test helper: the stories260K tokenizer.json that llama2c_convert writes must encode every corpus
 * text into the ids llama2.c's own encoder (`encode` in ../shared/peers/llama2.c/run.c, compiled in
 * here unchanged) gives. Texts holding "<s>", "</s>" or "<unk>" are left out: tokenizers reads
 * those as special tokens, run.c as characters.
 *   runc_tokenizer_check TOKENIZER.bin VOCAB_SIZE tokenizer.json corpus.json */
#define main llama2c_main
#include "run.c"
#undef main

#include <cjson/cJSON.h>

#include "base/file.h"
#include "runtime/text/tokenizer.h"

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: runc_tokenizer_check TOKENIZER.bin VOCAB_SIZE tokenizer.json corpus.json\n");
        return 2;
    }
    Tokenizer lt;
    build_tokenizer(&lt, argv[1], atoi(argv[2]));
    base_err err;
    rt_tokenizer *t = rt_tokenizer_load(argv[3], &err);
    char *json = NULL;
    size_t len = 0;
    if (!t || base_read_file(argv[4], (size_t)1 << 24, &json, &len, &err)) {
        fprintf(stderr, "runc_tokenizer_check: %s\n", err.msg);
        return 1;
    }
    cJSON *corpus = cJSON_ParseWithLength(json, len);
    int n_texts = 0, bad = 0, skipped = 0;
    for (const cJSON *c = corpus ? corpus->child : NULL; c; c = c->next) {
        char *text = c->valuestring;
        if (strstr(text, "<s>") || strstr(text, "</s>") || strstr(text, "<unk>")) {
            skipped++;
            continue;
        }
        n_texts++;
        int *want = malloc((strlen(text) + 3) * sizeof *want), n_want = 0;
        encode(&lt, text, 1, 0, want, &n_want);
        int32_t *got = NULL;
        const int n_got = rt_tokenizer_encode(t, text, strlen(text), true, &got, &err);
        int same = n_got == n_want;
        for (int i = 0; same && i < n_got; i++)
            same = got[i] == want[i];
        if (!same && bad++ < 10) {
            fprintf(stderr, "differs on \"%.60s\":\n  run.c: ", text);
            for (int i = 0; i < n_want && i < 30; i++)
                fprintf(stderr, " %d", want[i]);
            fprintf(stderr, "\n  dinfer:");
            for (int i = 0; i < n_got && i < 30; i++)
                fprintf(stderr, " %d", got[i]);
            fprintf(stderr, "\n");
        }
        free(want), free(got);
    }
    printf("runc_tokenizer_check: %d texts, %d differences (%d left out: special-token strings)\n", n_texts, bad,
           skipped);
    cJSON_Delete(corpus);
    free(json);
    rt_tokenizer_free(t);
    free_tokenizer(&lt);
    return bad || n_texts == 0;
}
