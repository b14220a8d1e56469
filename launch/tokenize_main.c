/* dinfer-tokenize: a model's tokenizer.json from the command line, with the ids Hugging Face
 * tokenizers gives. Text to ids (a JSON array on one line), ids to text, the encoder's speed, or a
 * conversation through the model's chat template (its text or its ids, as apply_chat_template). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/clock.h"
#include "launch/cli.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/tokenizer.h"

#define MAX_INPUT ((size_t)256 << 20)

static void usage(FILE *f)
{
    fprintf(f, "usage: dinfer-tokenize --tokenizer PATH [--text S] [--no-special]\n"
               "       dinfer-tokenize --tokenizer PATH --decode [--ids 1,5,9] [--skip-special]\n"
               "       dinfer-tokenize --tokenizer PATH --bench [--text S]\n"
               "       dinfer-tokenize --tokenizer DIR --chat [--render] [--chat-template F] [--no-generation-prompt] [--bench]\n"
               "PATH is a tokenizer.json or a model folder holding one. Without --text the UTF-8 text is read\n"
               "from stdin; the ids are printed as one JSON array. --no-special leaves out what the\n"
               "post-processor adds (a BOS). --decode reads a JSON array of ids from stdin (or --ids) and\n"
               "prints their text exactly, with no newline added; --skip-special leaves special tokens out.\n"
               "--bench prints the load time and the encoding speed of the text (MB/s, one thread).\n"
               "--chat reads a JSON list of messages ({\"role\", \"content\"}) from stdin (or --text), renders it\n"
               "with the folder's chat template (or --chat-template F) and the generation prompt, and prints the\n"
               "ids (no special tokens added: the template writes them), or with --render the text itself;\n"
               "with --bench, the time to render and encode it.\n");
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

/* A JSON list of messages through the chat template of the folder at path (or of template_path):
 * the rendered text in *out (malloc'd, *len); with bench, the mean time of a rendering in *secs. */
static int chat_text(const char *path, const char *template_path, const char *json, size_t json_len, bool gen_prompt,
                     bool bench, char **out, size_t *len, double *secs, base_err *err)
{
    *out = NULL;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    const size_t n = strlen(dir);
    if (n > 15 && strcmp(dir + n - 15, "/tokenizer.json") == 0)
        dir[n - 15] = '\0';
    rt_chat *c = NULL;
    if (rt_chat_load(dir, template_path, &c, err) != 0)
        return -1;
    if (!c)
        return base_errf(err, "%s has no chat template (chat_template.jinja or tokenizer_config.json's "
                              "chat_template): give --chat-template FILE", dir);
    cJSON *messages = cJSON_ParseWithLength(json, json_len);
    int rc = 0;
    if (!cJSON_IsArray(messages)) {
        rc = base_errf(err, "--chat: the input is not a JSON list of messages");
    } else {
        const double t0 = base_now();
        int reps = 0;
        do {
            free(*out);
            *out = rt_chat_render(c, messages, gen_prompt, len, err);
            reps++;
        } while (*out && bench && base_now() - t0 < 0.5);
        *secs = (base_now() - t0) / reps;
        rc = *out ? 0 : -1;
    }
    cJSON_Delete(messages);
    rt_chat_free(c);
    return rc;
}

static int run(int argc, char **argv, base_err *err)
{
    enum { O_TOKENIZER = 1, O_TEXT, O_NO_SPECIAL, O_DECODE, O_IDS, O_SKIP_SPECIAL, O_BENCH, O_HELP, O_CHAT, O_RENDER,
           O_TEMPLATE, O_NO_GEN };
    static const struct option opts[] = {
        {"tokenizer", required_argument, 0, O_TOKENIZER}, {"text", required_argument, 0, O_TEXT},
        {"no-special", no_argument, 0, O_NO_SPECIAL},     {"decode", no_argument, 0, O_DECODE},
        {"ids", required_argument, 0, O_IDS},             {"skip-special", no_argument, 0, O_SKIP_SPECIAL},
        {"bench", no_argument, 0, O_BENCH},               {"help", no_argument, 0, O_HELP},
        {"chat", no_argument, 0, O_CHAT},                 {"render", no_argument, 0, O_RENDER},
        {"chat-template", required_argument, 0, O_TEMPLATE}, {"no-generation-prompt", no_argument, 0, O_NO_GEN},
        {0, 0, 0, 0}};
    const char *path = NULL, *text = NULL, *ids_arg = NULL, *template_path = NULL;
    bool special = true, decode = false, skip_special = false, bench = false, chat = false, render = false,
         gen_prompt = true;
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
        case O_CHAT: chat = true; break;
        case O_RENDER: render = true; break;
        case O_TEMPLATE: template_path = optarg; break;
        case O_NO_GEN: gen_prompt = false; break;
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
    if (chat && decode)
        return base_errf(err, "--chat and --decode do not go together");
    if ((render || template_path || !gen_prompt) && !chat)
        return base_errf(err, "--render, --chat-template and --no-generation-prompt go with --chat");
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
    char *rendered = NULL;
    double render_s = 0;
    if (chat) { /* the conversation becomes the text to encode, without added special tokens */
        rc = chat_text(path, template_path, text, len, gen_prompt, bench, &rendered, &len, &render_s, err);
        text = rendered, special = false;
        if (!rc && render) {
            fwrite(rendered, 1, len, stdout);
            if (bench)
                printf("\nrender: %.3f ms each\n", render_s * 1e3);
            free(rendered), free(input);
            rt_tokenizer_free(t);
            return 0;
        }
    }
    if (rc) {
    } else if (decode) {
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
            if (chat)
                printf("render: the chat template in %.3f ms each\n", render_s * 1e3);
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
    free(input), free(rendered);
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
