/* dinfer-tokenize: a model's tokenizer.json from the command line, with the ids Hugging Face
 * tokenizers gives. Text to ids (a JSON array on one line), ids to text, or the encoder's speed. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/clock.h"
#include "launch/cli.h"
#include "runtime/text/tokenizer.h"

#define MAX_INPUT ((size_t)256 << 20)

static void usage(FILE *f)
{
    fprintf(f, "usage: dinfer-tokenize --tokenizer PATH [--text S] [--no-special]\n"
               "       dinfer-tokenize --tokenizer PATH --decode [--ids 1,5,9] [--skip-special]\n"
               "       dinfer-tokenize --tokenizer PATH --bench [--text S]\n"
               "PATH is a tokenizer.json or a model folder holding one. Without --text the UTF-8 text is read\n"
               "from stdin; the ids are printed as one JSON array. --no-special leaves out what the\n"
               "post-processor adds (a BOS). --decode reads a JSON array of ids from stdin (or --ids) and\n"
               "prints their text exactly, with no newline added; --skip-special leaves special tokens out.\n"
               "--bench prints the load time and the encoding speed of the text (MB/s, one thread).\n");
}

/* All of stdin, NUL-terminated, bounded. */
static char *read_stdin(size_t *len, base_err *err)
{
    size_t cap = 1 << 16, n = 0;
    char *p = malloc(cap + 1);
    if (!p) {
        base_errf(err, "out of memory");
        return NULL;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= MAX_INPUT) {
                free(p);
                base_errf(err, "stdin: more than %zu MiB", MAX_INPUT >> 20);
                return NULL;
            }
            cap *= 2;
            char *q = realloc(p, cap + 1);
            if (!q) {
                free(p);
                base_errf(err, "out of memory");
                return NULL;
            }
            p = q;
        }
        size_t k = fread(p + n, 1, cap - n, stdin);
        n += k;
        if (k == 0)
            break;
    }
    if (ferror(stdin)) {
        free(p);
        base_errf(err, "stdin: read error");
        return NULL;
    }
    p[n] = '\0';
    *len = n;
    return p;
}

/* A JSON array of integer ids. */
static int parse_ids(const char *s, size_t len, int32_t **ids, int *n, base_err *err)
{
    cJSON *j = cJSON_ParseWithLength(s, len);
    if (!cJSON_IsArray(j)) {
        cJSON_Delete(j);
        return base_errf(err, "stdin: not a JSON array of token ids");
    }
    const int k = cJSON_GetArraySize(j);
    *ids = malloc((size_t)(k ? k : 1) * sizeof **ids);
    if (!*ids) {
        cJSON_Delete(j);
        return base_errf(err, "out of memory");
    }
    int i = 0;
    for (const cJSON *e = j->child; e; e = e->next, i++)
        if (!cJSON_IsNumber(e) || e->valuedouble != (double)(int32_t)e->valuedouble) {
            cJSON_Delete(j);
            free(*ids);
            *ids = NULL;
            return base_errf(err, "stdin: element %d of the array is not an integer id", i);
        } else {
            (*ids)[i] = (int32_t)e->valuedouble;
        }
    cJSON_Delete(j);
    *n = k;
    return 0;
}

static int run(int argc, char **argv, base_err *err)
{
    enum { O_TOKENIZER = 1, O_TEXT, O_NO_SPECIAL, O_DECODE, O_IDS, O_SKIP_SPECIAL, O_BENCH, O_HELP };
    static const struct option opts[] = {
        {"tokenizer", required_argument, 0, O_TOKENIZER}, {"text", required_argument, 0, O_TEXT},
        {"no-special", no_argument, 0, O_NO_SPECIAL},     {"decode", no_argument, 0, O_DECODE},
        {"ids", required_argument, 0, O_IDS},             {"skip-special", no_argument, 0, O_SKIP_SPECIAL},
        {"bench", no_argument, 0, O_BENCH},               {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    const char *path = NULL, *text = NULL, *ids_arg = NULL;
    bool special = true, decode = false, skip_special = false, bench = false;
    int o, li = 0;
    while ((o = getopt_long(argc, argv, "", opts, &li)) != -1) {
        switch (o) {
        case O_TOKENIZER: path = optarg; break;
        case O_TEXT: text = optarg; break;
        case O_NO_SPECIAL: special = false; break;
        case O_DECODE: decode = true; break;
        case O_IDS: ids_arg = optarg; break;
        case O_SKIP_SPECIAL: skip_special = true; break;
        case O_BENCH: bench = true; break;
        case O_HELP: usage(stdout); return 1;
        default: usage(stderr); return base_errf(err, "unknown or incomplete option (see above)");
        }
    }
    if (optind < argc)
        return base_errf(err, "unexpected argument \"%.64s\"", argv[optind]);
    if (!path)
        return base_errf(err, "--tokenizer PATH is required (a tokenizer.json or a model folder)");
    if (decode && (text || bench))
        return base_errf(err, "--decode takes ids (stdin or --ids), not --text or --bench");
    if (ids_arg && !decode)
        return base_errf(err, "--ids goes with --decode");
    const double t0 = base_now();
    rt_tokenizer *t = rt_tokenizer_load(path, err);
    if (!t)
        return -1;
    const double load_s = base_now() - t0;
    char *input = NULL;
    size_t len = 0;
    int rc = 0;
    if (text) {
        len = strlen(text);
    } else if (!ids_arg) {
        input = read_stdin(&len, err);
        if (!input) {
            rt_tokenizer_free(t);
            return -1;
        }
        text = input;
    }
    if (decode) {
        int32_t *ids = NULL;
        int n = 0;
        rc = ids_arg ? cli_int_list("--ids", ids_arg, &ids, &n, err) : parse_ids(text, len, &ids, &n, err);
        size_t out_len = 0;
        char *out = rc ? NULL : rt_tokenizer_decode(t, ids, n, skip_special, &out_len, err);
        if (!rc && !out)
            rc = -1;
        if (out)
            fwrite(out, 1, out_len, stdout);
        free(out), free(ids);
    } else if (bench) {
        int32_t *ids = NULL;
        int n = rt_tokenizer_encode(t, text, len, special, &ids, err); /* once to check, and warm */
        free(ids);
        if (n < 0) {
            rc = -1;
        } else {
            int reps = 0;
            const double b0 = base_now();
            double el = 0;
            do {
                n = rt_tokenizer_encode(t, text, len, special, &ids, err);
                free(ids);
                reps++;
                el = base_now() - b0;
            } while (n >= 0 && el < 1.0);
            printf("load: %s in %.1f ms (%d ids)\n", path, load_s * 1e3, rt_tokenizer_n_ids(t));
            printf("encode: %zu bytes -> %d ids, %.2f ms each, %.1f MB/s (one thread, %d runs)\n", len, n,
                   el / reps * 1e3, (double)len * reps / el / 1e6, reps);
        }
    } else {
        int32_t *ids = NULL;
        const int n = rt_tokenizer_encode(t, text, len, special, &ids, err);
        if (n < 0) {
            rc = -1;
        } else {
            putchar('[');
            for (int i = 0; i < n; i++)
                printf(i ? ",%d" : "%d", ids[i]);
            puts("]");
        }
        free(ids);
    }
    free(input);
    rt_tokenizer_free(t);
    return rc;
}

int main(int argc, char **argv)
{
    base_err err = {{0}};
    int rc = run(argc, argv, &err);
    if (rc < 0) {
        fprintf(stderr, "dinfer-tokenize: %s\n", err.msg);
        return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
