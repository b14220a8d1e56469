/* Test helper: runs a generation command on a golden fixture and compares its output with the
 * reference recorded by tests/golden/make_golden.py (Hugging Face transformers).
 *
 *   golden_check [--tol 1e-4] [--first-token] FIXTURE_DIR -- COMMAND ARGS...
 *
 * appends `--model FIXTURE_DIR --tokens P1 --tokens P2 ... --max-tokens N --temperature 0
 * --ignore-eos --json` to the command, runs it, and checks that it prints one JSON object per
 * prompt whose tokens are identical to the reference and whose logprobs are within the tolerance.
 * With --first-token (reduced precision), the first token of every prompt must be identical and its
 * logprob within the tolerance; later steps are reported, not held to it.
 * Exits 0 on a match, 1 with the first difference otherwise. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "runtime/config.h"

/* A growing command line. */
typedef struct sb {
    char *s;
    size_t len, cap;
} sb;

static void sb_add(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sb *b, const char *fmt, ...)
{
    if (!b->s) {
        b->cap = 256;
        b->s = calloc(1, b->cap);
        if (!b->s)
            exit(3);
    }
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        b->cap = (b->cap + (size_t)(n > 0 ? n : 0)) * 2 + 256;
        b->s = realloc(b->s, b->cap);
        if (!b->s)
            exit(3);
    }
}

/* One shell word in single quotes, embedded quotes closed and escaped. */
static void sb_quoted(sb *b, const char *w)
{
    sb_add(b, "'");
    for (const char *c = w; *c; c++)
        sb_add(b, *c == '\'' ? "'\\''" : "%c", *c);
    sb_add(b, "' ");
}

int main(int argc, char **argv)
{
    double tol = 1e-4;
    int i = 1, first_token = 0;
    for (;;) {
        if (i + 1 < argc && strcmp(argv[i], "--tol") == 0) {
            tol = atof(argv[i + 1]);
            i += 2;
        } else if (i < argc && strcmp(argv[i], "--first-token") == 0) {
            first_token = 1;
            i++;
        } else {
            break;
        }
    }
    if (i + 2 >= argc || strcmp(argv[i + 1], "--") != 0) {
        fprintf(stderr, "usage: golden_check [--tol T] FIXTURE_DIR -- COMMAND ARGS...\n");
        return 2;
    }
    const char *dir = argv[i];
    char path[4096];
    snprintf(path, sizeof path, "%s/golden.json", dir);
    char *text;
    size_t tlen;
    base_err err;
    if (base_read_file(path, (size_t)256 << 20, &text, &tlen, &err)) {
        fprintf(stderr, "golden_check: %s\n", err.msg);
        return 2;
    }
    cJSON *g = cJSON_Parse(text);
    free(text);
    const cJSON *prompts = cJSON_GetObjectItem(g, "prompts"), *tokens = cJSON_GetObjectItem(g, "tokens");
    const cJSON *lps = cJSON_GetObjectItem(g, "logprobs");
    int n_gen = cJSON_GetObjectItem(g, "n_gen") ? cJSON_GetObjectItem(g, "n_gen")->valueint : 0;
    if (!cJSON_IsArray(prompts) || !cJSON_IsArray(tokens) || !cJSON_IsArray(lps) || n_gen < 1) {
        fprintf(stderr, "golden_check: %s: not a golden fixture\n", path);
        return 2;
    }
    sb cmd = {0};
    for (int k = i + 2; k < argc; k++)
        sb_quoted(&cmd, argv[k]);
    sb_add(&cmd, "--model ");
    sb_quoted(&cmd, dir);
    for (const cJSON *p = prompts->child; p; p = p->next) {
        sb_add(&cmd, "--tokens ");
        for (const cJSON *t = p->child; t; t = t->next)
            sb_add(&cmd, t->next ? "%d," : "%d ", t->valueint);
    }
    sb_add(&cmd, "--max-tokens %d --temperature 0 --ignore-eos --json", n_gen);
    FILE *f = popen(cmd.s, "r");
    if (!f) {
        fprintf(stderr, "golden_check: cannot run: %s\n", cmd.s);
        return 2;
    }
    int bad = 0, k = 0, diverged = 0;
    double later = 0.0; /* --first-token: the largest logprob difference after the first step */
    double worst = 0.0;
    char line[1 << 16];
    const cJSON *want_t = tokens->child, *want_l = lps->child;
    while (fgets(line, sizeof line, f)) {
        cJSON *o = cJSON_Parse(line);
        const cJSON *got_t = cJSON_GetObjectItem(o, "tokens"), *got_l = cJSON_GetObjectItem(o, "logprobs");
        if (!got_t || !got_l) {
            fprintf(stderr, "golden_check: unexpected output line: %s", line);
            bad = 1;
        } else if (!want_t) {
            fprintf(stderr, "golden_check: more outputs than the %d prompts\n", cJSON_GetArraySize(prompts));
            bad = 1;
        } else {
            int nt = cJSON_GetArraySize(got_t);
            if (nt != cJSON_GetArraySize(want_t) || nt != cJSON_GetArraySize(got_l)) {
                fprintf(stderr, "golden_check: prompt %d: %d tokens, expected %d\n", k, nt, cJSON_GetArraySize(want_t));
                bad = 1;
            }
            for (int j = 0; j < nt && !bad; j++) {
                int a = cJSON_GetArrayItem(got_t, j)->valueint, b = cJSON_GetArrayItem(want_t, j)->valueint;
                double la = cJSON_GetArrayItem(got_l, j)->valuedouble, lb = cJSON_GetArrayItem(want_l, j)->valuedouble;
                if (first_token && j > 0) {
                    /* reduced precision drifts and may take another path later: only the first
                     * step is held to the tolerance; the rest is reported */
                    if (a != b) {
                        diverged++;
                        break;
                    }
                    later = fabs(la - lb) > later ? fabs(la - lb) : later;
                    continue;
                }
                if (a != b) {
                    fprintf(stderr, "golden_check: prompt %d step %d: token %d, transformers chose %d\n", k, j, a, b);
                    bad = 1;
                } else if (!(fabs(la - lb) <= tol)) {
                    fprintf(stderr, "golden_check: prompt %d step %d: logprob %.7f, transformers %.7f (tolerance %g)\n",
                            k, j, la, lb, tol);
                    bad = 1;
                }
                if (fabs(la - lb) > worst)
                    worst = fabs(la - lb);
            }
            want_t = want_t->next;
            want_l = want_l->next;
        }
        cJSON_Delete(o);
        k++;
    }
    int rc = pclose(f);
    if (rc != 0) {
        fprintf(stderr, "golden_check: the command failed (status %d): %s\n", rc, cmd.s);
        bad = 1;
    } else if (want_t && !bad) {
        fprintf(stderr, "golden_check: only %d outputs for %d prompts\n", k, cJSON_GetArraySize(prompts));
        bad = 1;
    }
    if (!bad)
        printf("golden_check: %s: %d prompts x %d tokens %s, max |logprob diff| %.2e\n", dir, k, n_gen,
               first_token ? "with identical first tokens" : "identical", worst);
    if (!bad && first_token)
        printf("golden_check: after the first step: max |logprob diff| %.3f while the tokens agreed; %d of %d prompts "
               "took another token later\n", later, diverged, k);
    free(cmd.s);
    cJSON_Delete(g);
    return bad;
}
